// samplegen-engine: runs the plug-in's engine (plugin/src/Engine.cpp) outside any host, so tests can compare
// it with Python and benchmarks can time it.
//
//   samplegen-engine BUNDLE_DIR POINTS.f32 OUT_DIR    points: B x latent_dim float32 (little-endian)
//   samplegen-engine --loop AUDIO.f32 [OUT.f32]       prints the sustain loop of a mono 44.1 kHz note:
//                                                     START END CROSSFADE; writes the crossfaded note to OUT.f32
//   samplegen-engine --pitch AUDIO.f32                 prints a mono 44.1 kHz note's f0 in Hz (0: unpitched) and
//                                                     its offset from the nearest C in semitones
//
// writes OUT_DIR/features.f32 (B x n_frames x n_bins: the decoder's output), magnitude.f32 (B x n_bins x
// n_frames), pghi.f64 (B x n_bins x n_frames: the PGHI start), wave.f32 (B x length: the raw waveform),
// note.f32 (B x length: normalised and crossfaded as the plug-in plays it), loops.txt (start end per point, 0 0: none),
// roots.txt (the key at which each note sounds at its measured pitch, as the plug-in plays it) and
// timing.txt (CPU milliseconds per note of one thread: the decoder alone, PGHI alone, the whole note, the pitch tracker).
#include "../src/Bundle.h"
#include "../src/Engine.h"

#include <cstdio>
#include <ctime>

namespace
{
template <typename T>
bool writeRaw (const juce::File& f, const std::vector<T>& v)
{
    return f.replaceWithData (v.data(), v.size() * sizeof (T));
}
} // namespace

int main (int argc, char** argv)
{
    using namespace samplegen;
    if (argc == 3 && juce::String (argv[1]) == "--pitch")
    {
        juce::MemoryBlock raw;
        if (! juce::File::getCurrentWorkingDirectory().getChildFile (argv[2]).loadFileAsData (raw))
        {
            std::fprintf (stderr, "samplegen-engine: error: cannot read %s\n", argv[2]);
            return 2;
        }
        const auto* data = static_cast<const float*> (raw.getData());
        const std::vector<float> note (data, data + raw.getSize() / sizeof (float));
        std::printf ("%.9f %.9f\n", Engine::pitchHz (note, 44100), Engine::pitchOffsetSemitones (note, 44100));
        return 0;
    }
    if ((argc == 3 || argc == 4) && juce::String (argv[1]) == "--loop")
    {
        juce::MemoryBlock raw;
        if (! juce::File::getCurrentWorkingDirectory().getChildFile (argv[2]).loadFileAsData (raw))
        {
            std::fprintf (stderr, "samplegen-engine: error: cannot read %s\n", argv[2]);
            return 2;
        }
        const auto* data = static_cast<const float*> (raw.getData());
        std::vector<float> note (data, data + raw.getSize() / sizeof (float));
        const auto loop = Engine::findLoop (note, 44100);
        std::printf ("%d %d %d\n", loop.start, loop.end, loop.crossfade);
        Engine::crossfade (note, loop);
        if (argc == 4 && ! writeRaw (juce::File::getCurrentWorkingDirectory().getChildFile (argv[3]), note))
        {
            std::fprintf (stderr, "samplegen-engine: error: cannot write %s\n", argv[3]);
            return 2;
        }
        return 0;
    }
    if (argc != 4)
    {
        std::fprintf (stderr, "usage: samplegen-engine BUNDLE_DIR POINTS.f32 OUT_DIR\n");
        return 2;
    }
    juce::String error;
    auto bundle = Bundle::load (juce::File::getCurrentWorkingDirectory().getChildFile (argv[1]), error);
    if (bundle == nullptr)
    {
        std::fprintf (stderr, "samplegen-engine: error: %s\n", error.toRawUTF8());
        return 2;
    }
    juce::MemoryBlock raw;
    const auto pointsFile = juce::File::getCurrentWorkingDirectory().getChildFile (argv[2]);
    const size_t pointBytes = (size_t) bundle->latentDim * sizeof (float);
    if (! pointsFile.loadFileAsData (raw) || raw.getSize() == 0 || raw.getSize() % pointBytes != 0)
    {
        std::fprintf (stderr, "samplegen-engine: error: %s must hold B x %d float32 values\n", argv[2], bundle->latentDim);
        return 2;
    }
    const int count = (int) (raw.getSize() / pointBytes);
    const auto out = juce::File::getCurrentWorkingDirectory().getChildFile (argv[3]);
    out.createDirectory();
    Engine engine (*bundle);
    std::vector<float> feats, mag, wave, allFeats, allMag, allWave, allNote;
    std::vector<double> phase, allPhase;
    juce::String loops, roots;
    // CPU time of this thread: on a shared machine, closer to what one core needs than the wall clock.
    auto cpuMs = []
    {
        timespec ts {};
        clock_gettime (CLOCK_THREAD_CPUTIME_ID, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec * 1e-6;
    };
    double decodeMs = 0.0, renderMs = 0.0, pghiMs = 0.0, pitchMs = 0.0;
    for (int i = 0; i < count; ++i)
    {
        const float* z = static_cast<const float*> (raw.getData()) + (size_t) i * (size_t) bundle->latentDim;
        const double t0 = cpuMs();
        engine.render (z, wave);  // what one new note costs: decoder, phase retrieval
        const double t1 = cpuMs();
        engine.decode (z, feats);
        const double t2 = cpuMs();
        engine.magnitude (feats, mag);
        const double t3 = cpuMs();
        engine.pghiPhase (mag, phase);
        pghiMs += cpuMs() - t3;
        renderMs += t1 - t0;
        decodeMs += t2 - t1;
        allFeats.insert (allFeats.end(), feats.begin(), feats.end());
        allMag.insert (allMag.end(), mag.begin(), mag.end());
        allPhase.insert (allPhase.end(), phase.begin(), phase.end());
        allWave.insert (allWave.end(), wave.begin(), wave.end());
        Engine::normalise (wave, bundle->peak, bundle->maxGainDb);
        auto loop = Engine::findLoop (wave, bundle->sampleRate);
        Engine::crossfade (wave, loop);
        loops << loop.start << " " << loop.end << "\n";
        const double t4 = cpuMs();
        const double offset = Engine::pitchOffsetSemitones (wave, bundle->sampleRate);
        pitchMs += cpuMs() - t4;
        roots << juce::String (bundle->rootKey + offset, 9) << "\n";
        allNote.insert (allNote.end(), wave.begin(), wave.end());
    }
    const bool ok = writeRaw (out.getChildFile ("features.f32"), allFeats) && writeRaw (out.getChildFile ("magnitude.f32"), allMag)
                    && writeRaw (out.getChildFile ("pghi.f64"), allPhase) && writeRaw (out.getChildFile ("wave.f32"), allWave)
                    && writeRaw (out.getChildFile ("note.f32"), allNote) && out.getChildFile ("loops.txt").replaceWithText (loops)
                    && out.getChildFile ("roots.txt").replaceWithText (roots)
                    && out.getChildFile ("timing.txt").replaceWithText ("decoder_ms " + juce::String (decodeMs / count, 3)
                                                                        + "\npghi_ms " + juce::String (pghiMs / count, 3)
                                                                        + "\nnote_ms " + juce::String (renderMs / count, 3)
                                                                        + "\npitch_ms " + juce::String (pitchMs / count, 3) + "\n");
    if (! ok)
    {
        std::fprintf (stderr, "samplegen-engine: error: cannot write to %s\n", argv[3]);
        return 2;
    }
    return 0;
}
