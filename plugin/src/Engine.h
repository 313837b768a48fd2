// Latent point -> playable note, as `samplegen sample` and the instrument make it: the decoder's dense
// forward pass, de-normalisation, PGHI + fast Griffin-Lim (src/samplegen/spectral/stft.py), peak
// normalisation and a crossfaded sustain loop (src/samplegen/audio/sustain_loop.py). Runs on a background thread, never on the
// audio thread: it allocates freely. One Engine per thread (it owns its FFTW plans and scratch buffers).
#pragma once

#include "Bundle.h"

#include <fftw3.h>

#include <complex>
#include <new>
#include <vector>

namespace samplegen
{

/** A forward sustain loop, samples [start, end); end == 0: none (the note plays one-shot). The `crossfade`
    samples before end are faded into those before start (Engine::crossfade), as samplegen.audio.sustain_loop.Loop. */
struct Loop
{
    int start = 0, end = 0;
    float correlation = 0.0f;
    int crossfade = 0;
    bool valid() const { return end > start; }
};

/** std::vector storage from fftwf_malloc: aligned for FFTW's SIMD code, so one plan serves every buffer. */
template <typename T>
struct FftwAllocator
{
    using value_type = T;
    FftwAllocator() = default;
    template <typename U>
    FftwAllocator (const FftwAllocator<U>&) noexcept {}
    T* allocate (size_t n)
    {
        if (auto* p = static_cast<T*> (fftwf_malloc (n * sizeof (T))))
            return p;
        throw std::bad_alloc();
    }
    void deallocate (T* p, size_t) noexcept { fftwf_free (p); }
    template <typename U>
    bool operator== (const FftwAllocator<U>&) const noexcept { return true; }
    template <typename U>
    bool operator!= (const FftwAllocator<U>&) const noexcept { return false; }
};

class Engine
{
public:
    explicit Engine (const Bundle& bundle);
    ~Engine();
    Engine (const Engine&) = delete;
    Engine& operator= (const Engine&) = delete;

    /** The decoder's output for latent point z (latentDim values): normalised features, nFrames x nBins. */
    void decode (const float* z, std::vector<float>& features) const;

    /** Features -> linear magnitude, bin-major (nBins x nFrames), as samplegen.generation.generate.magnitude_from_features. */
    void magnitude (const std::vector<float>& features, std::vector<float>& mag) const;

    /** Magnitude (nBins x nFrames) -> waveform of lengthSamples: PGHI, then the bundle's FGLA iterations. */
    void retrievePhase (const std::vector<float>& mag, std::vector<float>& wave);

    /** The PGHI start alone (nBins x nFrames radians), as samplegen.spectral.stft.pghi_phase with the bundle's fill. */
    void pghiPhase (const std::vector<float>& mag, std::vector<double>& phase) const;

    /** z -> the raw-level waveform of `samplegen sample` (decoder + phase retrieval). */
    void render (const float* z, std::vector<float>& wave);

    /** Scales a raw waveform to the instrument's peak (at most maxGainDb of gain), as samplegen.app.instrument. */
    static void normalise (std::vector<float>& wave, float peak, float maxGainDb);

    /** samplegen.audio.sustain_loop.find_loop: a sustain loop where the note holds its level, ending before the release,
        or none (the note decays: it plays one-shot). Play it with crossfade()'s audio. */
    static Loop findLoop (const std::vector<float>& y, int sampleRate);

    /** samplegen.audio.sustain_loop.crossfaded, in place: writes the loop's crossfade into the note (what the SFZ/SF2 exports
        and the browser instrument play), so the jump from the loop's end to its start continues the waveform. */
    static void crossfade (std::vector<float>& y, const Loop& loop);

    /** samplegen.audio.audio_io.estimate_pitch_hz: the note's fundamental in Hz (YIN over up to 0.5 s after the
        attack, parabolic refinement), or 0 when it is unpitched. */
    static double pitchHz (const std::vector<float>& y, int sampleRate);

    /** How many semitones (fractional) the note lies above the nearest C, octaves folded into [-6, 6): the browser
        instrument's `root` less 60 (samplegen.app.instrument). 0 for an unpitched note. A voice plays key k at rate
        2^((k - rootKey - offset) / 12), so every key sounds in tune whatever the decoded note's own pitch. */
    static double pitchOffsetSemitones (const std::vector<float>& y, int sampleRate);

private:
    using Complex = std::complex<float>;
    using Spectrogram = std::vector<Complex, FftwAllocator<Complex>>;
    // torch.stft / torch.istft (center=True, periodic Hann); spectrograms frame-major (nFrames x nBins).
    void stft (const std::vector<float>& wave, Spectrogram& out);
    void istft (const Spectrogram& in, std::vector<float>& wave);
    void fade (std::vector<float>& wave) const;
    /** The bundle's log head (when it has one), on a whole note: h (nFrames x frameDim) and the frame layers'
        output, which it replaces; the note's loudest bin sets the gate. */
    void applyLogHead (const std::vector<float>& h, std::vector<float>& features) const;

    const Bundle& b;
    // FFTW plans for all frames of a note at once (torch.stft's frames: nFrames x nFft real, nFrames x nBins
    // complex), made with FFTW_ESTIMATE so every instance computes the same numbers.
    fftwf_plan forward = nullptr, inverse = nullptr;
    std::vector<float> window, envelope, fadeRamp, padded, noteFeatures, noteMagnitude, magFrames;
    std::vector<float, FftwAllocator<float>> frames;
    Spectrogram binsScratch;
    std::vector<double> startPhase;
    Spectrogram spec, rebuilt, prev;  // scratch of retrievePhase, kept between notes
};

} // namespace samplegen
