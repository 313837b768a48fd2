#include "PluginProcessor.h"
#include "PluginEditor.h"

#include <cmath>
#include <random>

namespace samplegen
{
namespace
{
juce::String knobId (int i) { return "knob" + juce::String (i + 1); }
const char* const cornerIds[4] = { "cornerA", "cornerB", "cornerC", "cornerD" };
const char* const cornerNames[4] = { "Pad corner top-left", "Pad corner top-right", "Pad corner bottom-left",
                                     "Pad corner bottom-right" };

/** A macro knob whose name is its axis's label in the loaded model ("Knob 1: Brightness"). */
class KnobParameter : public juce::AudioParameterFloat
{
public:
    KnobParameter (int index, std::function<juce::String (int)> labelOf)
        : juce::AudioParameterFloat (juce::ParameterID { knobId (index), 1 }, "Knob " + juce::String (index + 1),
                                     juce::NormalisableRange<float> (-3.0f, 3.0f), 0.0f,
                                     juce::AudioParameterFloatAttributes().withLabel ("SD").withStringFromValueFunction (
                                         [] (float v, int) { return juce::String (v, 2); })),
          i (index), label (std::move (labelOf))
    {
    }

    juce::String getName (int maximumLength) const override
    {
        auto text = "Knob " + juce::String (i + 1);
        auto l = label (i);
        return (l.isEmpty() ? text : text + ": " + l).substring (0, maximumLength);
    }

private:
    int i;
    std::function<juce::String (int)> label;
};

std::atomic<float>* raw (juce::AudioProcessorValueTreeState& p, const juce::String& id)
{
    auto* v = p.getRawParameterValue (id);
    jassert (v != nullptr);
    return v;
}

float gaussian (std::mt19937& rng)
{
    return std::normal_distribution<float> (0.0f, 1.0f) (rng);
}
} // namespace

//==============================================================================
/** The background thread: loads bundles, handles the surprise/vary triggers, decodes new notes. */
class SampleGenProcessor::Worker : public juce::Thread
{
public:
    explicit Worker (SampleGenProcessor& p) : juce::Thread ("SampleGen decoder"), owner (p) {}

    void run() override
    {
        while (! threadShouldExit())
        {
            owner.workerPoll();
            wait (2);
        }
    }

private:
    SampleGenProcessor& owner;
};

//==============================================================================
static juce::AudioProcessorValueTreeState::ParameterLayout createLayout (SampleGenProcessor& p)
{
    using namespace juce;
    AudioProcessorValueTreeState::ParameterLayout layout;
    // The sound and the corners are corpus indices (0 to n - 1; a corner's 0 is the model's own choice): numbers,
    // not names, so hosts and scripts can set them; the window shows the names.
    layout.add (std::make_unique<AudioParameterChoice> (ParameterID { "source", 1 }, "Source",
                                                        StringArray { "Sound", "Pad", "Point" }, 0));
    layout.add (std::make_unique<AudioParameterInt> (ParameterID { "sound", 1 }, "Sound", 0, SampleGenProcessor::maxSounds - 1, 0));
    layout.add (std::make_unique<AudioParameterFloat> (ParameterID { "padX", 1 }, "Pad X", 0.0f, 1.0f, 0.5f));
    layout.add (std::make_unique<AudioParameterFloat> (ParameterID { "padY", 1 }, "Pad Y", 0.0f, 1.0f, 0.5f));
    for (int c = 0; c < 4; ++c)
        layout.add (std::make_unique<AudioParameterInt> (ParameterID { cornerIds[c], 1 }, cornerNames[c], 0,
                                                         SampleGenProcessor::maxSounds, 0));
    auto knobLabel = [&p] (int i) -> String
    {
        auto b = p.currentBundle();
        return b != nullptr && i < b->numKnobs() ? b->knobLabels[i] : String();
    };
    for (int i = 0; i < SampleGenProcessor::maxKnobs; ++i)
        layout.add (std::make_unique<KnobParameter> (i, knobLabel));
    auto seconds = [] (float lo, float hi, float def)
    {
        NormalisableRange<float> r (lo, hi);
        r.setSkewForCentre (std::sqrt (lo * hi));
        return std::make_pair (r, def);
    };
    auto [ar, ad] = seconds (0.001f, 2.0f, 0.003f);
    auto decimals = [] (int places) { return [places] (float v, int) { return String (v, places); }; };
    layout.add (std::make_unique<AudioParameterFloat> (ParameterID { "attack", 1 }, "Attack", ar, ad,
                                                       AudioParameterFloatAttributes().withLabel ("s")
                                                           .withStringFromValueFunction (decimals (3))));
    auto [rr, rd] = seconds (0.01f, 5.0f, 0.3f);
    layout.add (std::make_unique<AudioParameterFloat> (ParameterID { "release", 1 }, "Release", rr, rd,
                                                       AudioParameterFloatAttributes().withLabel ("s")
                                                           .withStringFromValueFunction (decimals (2))));
    layout.add (std::make_unique<AudioParameterFloat> (ParameterID { "gain", 1 }, "Gain",
                                                       NormalisableRange<float> (-48.0f, 12.0f), 0.0f,
                                                       AudioParameterFloatAttributes().withLabel ("dB")
                                                           .withStringFromValueFunction (decimals (1))));
    layout.add (std::make_unique<AudioParameterBool> (ParameterID { "surprise", 1 }, "Surprise", false));
    layout.add (std::make_unique<AudioParameterFloat> (ParameterID { "temperature", 1 }, "Surprise temperature",
                                                       0.1f, 3.0f, 1.0f));
    layout.add (std::make_unique<AudioParameterBool> (ParameterID { "vary", 1 }, "Vary", false));
    layout.add (std::make_unique<AudioParameterFloat> (ParameterID { "varyAmount", 1 }, "Vary amount",
                                                       NormalisableRange<float> (0.0f, 3.0f), 0.5f,
                                                       AudioParameterFloatAttributes().withLabel ("SD")));
    return layout;
}

SampleGenProcessor::SampleGenProcessor()
    : juce::AudioProcessor (BusesProperties().withOutput ("Output", juce::AudioChannelSet::stereo(), true)),
      params (*this, nullptr, "SampleGen", createLayout (*this))
{
    sound = raw (params, "sound");
    source = raw (params, "source");
    padX = raw (params, "padX");
    padY = raw (params, "padY");
    for (int c = 0; c < 4; ++c)
        corners[(size_t) c] = raw (params, cornerIds[c]);
    for (int i = 0; i < maxKnobs; ++i)
        knobs[(size_t) i] = raw (params, knobId (i));
    attack = raw (params, "attack");
    release = raw (params, "release");
    gain = raw (params, "gain");
    surprise = raw (params, "surprise");
    temperature = raw (params, "temperature");
    vary = raw (params, "vary");
    varyAmount = raw (params, "varyAmount");
    forceRealtime = juce::SystemStats::getEnvironmentVariable ("SAMPLEGEN_PLUGIN_REALTIME", {}).isNotEmpty();
    requestBundle (defaultBundleFolder());
    loadRequestedBundle();  // before the host reads parameter names: the knobs are named after the model's axes
    worker = std::make_unique<Worker> (*this);
    worker->startThread();
}

SampleGenProcessor::~SampleGenProcessor()
{
    worker->stopThread (5000);
}

juce::File SampleGenProcessor::defaultBundleFolder()
{
    auto env = juce::SystemStats::getEnvironmentVariable ("SAMPLEGEN_PLUGIN_BUNDLE", {});
    if (env.isNotEmpty())
        return juce::File (env);
    // A bundle built into the plug-in (Resources/samplegen-bundle: `make plugin` puts the demo run's there),
    // looked for from the binary up to the .vst3 / .lv2 folder; then the per-user folder.
    auto self = juce::File::getSpecialLocation (juce::File::currentExecutableFile);  // the plug-in's own binary
    auto dir = self.getParentDirectory();
    for (int level = 0; level < 3 && dir.getParentDirectory() != dir; ++level, dir = dir.getParentDirectory())
    {
        auto inside = dir.getChildFile ("Resources").getChildFile ("samplegen-bundle");
        if (inside.getChildFile ("bundle.json").existsAsFile())
            return inside;
        if (dir.getFileExtension() == ".vst3" || dir.getFileExtension() == ".lv2")
            break;
    }
    return juce::File::getSpecialLocation (juce::File::userApplicationDataDirectory)
        .getChildFile ("SampleGen").getChildFile ("bundle");
}

std::shared_ptr<const Bundle> SampleGenProcessor::currentBundle() const
{
    std::lock_guard<std::mutex> lock (shared);
    return bundle;
}

juce::String SampleGenProcessor::status() const
{
    std::lock_guard<std::mutex> lock (shared);
    return statusText;
}

void SampleGenProcessor::requestBundle (const juce::File& folder)
{
    {
        std::lock_guard<std::mutex> lock (shared);
        requestedFolder = folder;
    }
    ++bundleRequests;
}

void SampleGenProcessor::setPoint (const std::vector<float>& z)
{
    {
        std::lock_guard<std::mutex> lock (shared);
        customPoint = z;
    }
    ++customGeneration;
    if (auto* p = params.getParameter ("source"))
        p->setValueNotifyingHost (p->convertTo0to1 ((float) fromPoint));
}

//==============================================================================
juce::uint64 SampleGenProcessor::controlStamp() const
{
    // Every control's raw value, the custom point's generation and the bundle requests, hashed (FNV-1a).
    juce::uint64 h = 1469598103934665603ull;
    auto mix = [&h] (juce::uint32 v) { h = (h ^ v) * 1099511628211ull; };
    auto mixFloat = [&mix] (const std::atomic<float>* a)
    {
        const float v = a->load();
        juce::uint32 bits;
        std::memcpy (&bits, &v, 4);
        mix (bits);
    };
    for (auto* a : { sound, source, padX, padY, surprise, temperature, vary, varyAmount })
        mixFloat (a);
    for (auto* a : corners)
        mixFloat (a);
    for (auto* a : knobs)
        mixFloat (a);
    mix ((juce::uint32) customGeneration.load());
    mix ((juce::uint32) bundleRequests.load());
    return h | 1;  // never 0, the "nothing handled yet" stamp
}

bool SampleGenProcessor::basePoint (const Bundle& b, std::vector<float>& z) const
{
    const int L = b.latentDim, n = b.numSounds();
    z.assign ((size_t) L, 0.0f);
    const int src = juce::roundToInt (source->load());
    if (src == fromPoint)
    {
        std::lock_guard<std::mutex> lock (shared);
        if ((int) customPoint.size() != L)
            return false;
        z = customPoint;
    }
    else if (src == fromPad)
    {
        // samplegen.app.instrument.Instrument.blend: bilinear between the four corner sounds.
        const float x = padX->load(), y = padY->load();
        const float w[4] = { (1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y };
        for (int c = 0; c < 4; ++c)
        {
            const int v = juce::roundToInt (corners[(size_t) c]->load());
            const float* p = b.soundPoint (v > 0 ? (v - 1) % n : b.defaultCorners[c]);
            for (int i = 0; i < L; ++i)
                z[(size_t) i] += w[c] * p[i];
        }
    }
    else
    {
        const float* p = b.soundPoint (juce::roundToInt (sound->load()) % n);
        z.assign (p, p + L);
    }
    return true;
}

bool SampleGenProcessor::pointFromControls (const Bundle& b, std::vector<float>& z) const
{
    if (! basePoint (b, z))
        return false;
    // Knobs: offsets in corpus standard deviations along each knob's (rotated, named) direction,
    // samplegen.app.instrument.Instrument.knob_move.
    const int L = b.latentDim;
    for (int k = 0; k < std::min (b.numKnobs(), maxKnobs); ++k)
    {
        const float offset = knobs[(size_t) k]->load();
        for (int i = 0; i < L; ++i)
            z[(size_t) i] += offset * b.knobMove[(size_t) (k * L + i)];
    }
    for (auto& v : z)
        v = juce::jlimit (-b.zLimit, b.zLimit, v);
    return true;
}

void SampleGenProcessor::drawPoint (const Bundle& b, bool fromPrior)
{
    // samplegen.app.instrument.Instrument.surprise (N(0, T^2 I)) and .vary (the base plus N(0, amount^2 I)).
    std::mt19937 rng ((unsigned) (++draws));
    std::vector<float> z ((size_t) b.latentDim, 0.0f);
    if (! fromPrior && ! basePoint (b, z))
        return;
    const float scale = fromPrior ? temperature->load() : varyAmount->load();
    for (auto& x : z)
        x = juce::jlimit (-b.zLimit, b.zLimit, x + scale * gaussian (rng));
    {
        std::lock_guard<std::mutex> lock (shared);
        customPoint = z;
    }
    ++customGeneration;
}

void SampleGenProcessor::surpriseNow()
{
    if (auto b = currentBundle())
    {
        drawPoint (*b, true);
        if (auto* p = params.getParameter ("source"))
            p->setValueNotifyingHost (p->convertTo0to1 ((float) fromPoint));
    }
}

void SampleGenProcessor::varyNow()
{
    if (auto b = currentBundle())
    {
        drawPoint (*b, false);
        if (auto* p = params.getParameter ("source"))
            p->setValueNotifyingHost (p->convertTo0to1 ((float) fromPoint));
    }
}

std::vector<float> SampleGenProcessor::currentPoint() const
{
    std::vector<float> z;
    auto b = currentBundle();
    if (b == nullptr || ! pointFromControls (*b, z))
        z.clear();
    return z;
}

void SampleGenProcessor::handleTriggers (const Bundle& b)
{
    // The parameters' rising edges; they move the custom point, so they act while source is "Point" (the
    // window's buttons switch the source themselves, which a background thread must not do to a host).
    const bool s = surprise->load() > 0.5f, v = vary->load() > 0.5f;
    const bool onPoint = juce::roundToInt (source->load()) == fromPoint;
    if (s && ! lastSurprise && onPoint)
        drawPoint (b, true);
    if (v && ! lastVary && onPoint)
        drawPoint (b, false);
    lastSurprise = s;
    lastVary = v;
}

void SampleGenProcessor::loadRequestedBundle()
{
    const int requests = bundleRequests.load();
    if (requests == seenRequests)
        return;
    seenRequests = requests;
    juce::File folder;
    {
        std::lock_guard<std::mutex> lock (shared);
        folder = requestedFolder;
    }
    juce::String error;
    std::shared_ptr<const Bundle> loaded (Bundle::load (folder, error).release());
    std::lock_guard<std::mutex> lock (shared);
    if (loaded != nullptr)
    {
        engine = std::make_unique<Engine> (*loaded);
        bundle = loaded;
        lastDecoded.clear();
        statusText = "model: " + loaded->runName + " (" + juce::String (loaded->numSounds()) + " sounds) from "
                     + folder.getFullPathName();
        ++bundleGeneration;
    }
    else if (bundle == nullptr)
        statusText = "no model loaded: " + error;
    else
        statusText = "kept " + bundle->runName + ": " + error;
}

void SampleGenProcessor::workerPoll()
{
    const auto stamp = controlStamp();
    if (stamp == handledStamp.load())
        return;
    loadRequestedBundle();
    std::shared_ptr<const Bundle> b = currentBundle();
    // The engine belongs to the bundle it was built for; this thread alone swaps both.
    if (b == nullptr || engine == nullptr)
    {
        handledStamp = stamp;
        return;
    }
    handleTriggers (*b);
    const auto after = controlStamp();  // triggers may have moved the controls
    std::vector<float> z;
    if (! pointFromControls (*b, z))
    {
        handledStamp = after;
        return;
    }
    if (z == lastDecoded)
    {
        handledStamp = after;
        return;
    }
    // A slot to write: the one waiting to be played (now stale), else a free one; none: try again soon.
    Slot* target = nullptr;
    for (auto& s : slots)
    {
        int expected = Slot::Ready;
        if (s.state.compare_exchange_strong (expected, Slot::Writing))
        {
            target = &s;
            break;
        }
    }
    for (auto& s : slots)
    {
        int expected = Slot::Free;
        if (target == nullptr && s.state.compare_exchange_strong (expected, Slot::Writing))
            target = &s;
    }
    if (target == nullptr)
        return;
    engine->render (z.data(), target->audio);
    Engine::normalise (target->audio, b->peak, b->maxGainDb);
    target->loop = Engine::findLoop (target->audio, b->sampleRate);
    Engine::crossfade (target->audio, target->loop);
    // The key at which the note sounds at its own measured pitch, as the browser instrument plays it.
    target->root = b->rootKey + Engine::pitchOffsetSemitones (target->audio, b->sampleRate);
    target->sampleRate = b->sampleRate;
    target->state = Slot::Ready;
    lastDecoded = z;
    ++pointGeneration;
    handledStamp = after;
}

void SampleGenProcessor::waitForWorker (int timeoutMs)
{
    const auto until = juce::Time::getMillisecondCounter() + (juce::uint32) timeoutMs;
    while (handledStamp.load() != controlStamp() && juce::Time::getMillisecondCounter() < until)
        juce::Thread::sleep (1);
}

//==============================================================================
bool SampleGenProcessor::isBusesLayoutSupported (const BusesLayout& layouts) const
{
    const auto out = layouts.getMainOutputChannelSet();
    return layouts.getMainInputChannelSet().isDisabled()
           && (out == juce::AudioChannelSet::mono() || out == juce::AudioChannelSet::stereo());
}

void SampleGenProcessor::prepareToPlay (double sampleRate, int samplesPerBlock)
{
    hostRate = sampleRate;
    mono.assign ((size_t) juce::jmax (samplesPerBlock, 1), 0.0f);
    gainSmoothed.reset (sampleRate, 0.02);
    gainSmoothed.setCurrentAndTargetValue (juce::Decibels::decibelsToGain (gain->load()));
    crossfadeStep = 1.0f / (float) juce::jmax (1.0, crossfadeSeconds * sampleRate);
    for (auto& v : voices)
        v.active = false;
    waitForWorker (10000);  // not the audio thread: the first note is ready before the first block
}

void SampleGenProcessor::takeNewSound()
{
    if (previous >= 0 && crossfade >= 1.0f)
    {
        slots[(size_t) previous].state = Slot::Free;
        previous = -1;
    }
    if (previous >= 0)
        return;
    for (int i = 0; i < (int) slots.size(); ++i)
    {
        int expected = Slot::Ready;
        if (slots[(size_t) i].state.compare_exchange_strong (expected, Slot::Playing))
        {
            previous = current;
            current = i;
            crossfade = previous >= 0 ? 0.0f : 1.0f;
            return;
        }
    }
}

float SampleGenProcessor::readSlot (const Slot& slot, double pos)
{
    const auto& a = slot.audio;
    const int len = (int) a.size();
    const bool looped = slot.loop.valid() && slot.loop.end <= len;
    if (looped && pos >= slot.loop.end)
        pos = slot.loop.start + std::fmod (pos - slot.loop.start, (double) (slot.loop.end - slot.loop.start));
    const int i = (int) pos;
    if (i >= len)
        return 0.0f;
    const float frac = (float) (pos - i);
    int j = i + 1;
    if (looped && j >= slot.loop.end)
        j = slot.loop.start;
    const float x1 = j < len ? a[(size_t) j] : 0.0f;
    return a[(size_t) i] + frac * (x1 - a[(size_t) i]);
}

void SampleGenProcessor::startNote (int note, float velocity)
{
    if (current < 0)
        return;
    Voice* v = nullptr;
    for (auto& cand : voices)
        if (! cand.active)
        {
            v = &cand;
            break;
        }
    if (v == nullptr)  // steal the oldest
    {
        v = &voices[0];
        for (auto& cand : voices)
            if (cand.age < v->age)
                v = &cand;
    }
    const auto& s = slots[(size_t) current];
    *v = {};
    v->active = true;
    v->note = note;
    v->velocity = velocity;
    v->step = std::pow (2.0, (note - s.root) / 12.0) * s.sampleRate / hostRate;
    v->attackStep = 1.0f / (float) juce::jmax (1.0, attack->load() * hostRate);
    v->age = ++noteCounter;
}

void SampleGenProcessor::stopNote (int note)
{
    for (auto& v : voices)
        if (v.active && ! v.released && v.note == note)
        {
            if (sustainPedal)
            {
                v.sustained = true;
                continue;
            }
            v.released = true;
            v.releaseStep = juce::jmax (v.level, 1e-6f) / (float) juce::jmax (1.0, release->load() * hostRate);
        }
}

void SampleGenProcessor::renderVoices (float* out, int numSamples)
{
    if (current < 0)
        return;
    const Slot& cur = slots[(size_t) current];
    const Slot* prev = previous >= 0 ? &slots[(size_t) previous] : nullptr;
    const float xf0 = crossfade;
    for (auto& v : voices)
    {
        if (! v.active)
            continue;
        float xf = xf0;
        for (int i = 0; i < numSamples; ++i)
        {
            if (v.released)
            {
                v.level -= v.releaseStep;
                if (v.level <= 0.0f)
                {
                    v.active = false;
                    break;
                }
            }
            else if (v.level < 1.0f)
                v.level = juce::jmin (1.0f, v.level + v.attackStep);
            float x = readSlot (cur, v.pos);
            if (prev != nullptr && xf < 1.0f)
            {
                x = xf * x + (1.0f - xf) * readSlot (*prev, v.pos);
                xf += crossfadeStep;
            }
            out[i] += x * v.level * v.velocity;
            v.pos += v.step;
        }
        const bool pastEnd = v.pos >= (double) cur.audio.size() && ! cur.loop.valid()
                             && (prev == nullptr || xf >= 1.0f || (v.pos >= (double) prev->audio.size() && ! prev->loop.valid()));
        if (pastEnd)
            v.active = false;
    }
    if (prev != nullptr)
        crossfade = juce::jmin (1.0f, xf0 + crossfadeStep * (float) numSamples);
}

void SampleGenProcessor::processBlock (juce::AudioBuffer<float>& buffer, juce::MidiBuffer& midi)
{
    juce::ScopedNoDenormals noDenormals;
    if (isNonRealtime() && ! forceRealtime.load())
        waitForWorker (10000);  // offline rendering: every control change is heard from this block on
    takeNewSound();
    buffer.clear();
    if (mono.empty())  // a host that plays before prepareToPlay: silence rather than allocate here
        return;
    const int total = buffer.getNumSamples();
    gainSmoothed.setTargetValue (juce::Decibels::decibelsToGain (gain->load(), -48.0f));
    int done = 0;
    auto renderUpTo = [&] (int end)
    {
        while (done < end)
        {
            const int n = juce::jmin (end - done, (int) mono.size());
            std::fill (mono.begin(), mono.begin() + n, 0.0f);
            renderVoices (mono.data(), n);
            for (int i = 0; i < n; ++i)
            {
                const float g = gainSmoothed.getNextValue();
                for (int ch = 0; ch < buffer.getNumChannels(); ++ch)
                    buffer.getWritePointer (ch)[done + i] = mono[(size_t) i] * g;
            }
            done += n;
        }
    };
    for (const auto meta : midi)
    {
        renderUpTo (juce::jlimit (0, total, meta.samplePosition));
        const auto msg = meta.getMessage();
        if (msg.isNoteOn())
            startNote (msg.getNoteNumber(), msg.getFloatVelocity());
        else if (msg.isNoteOff())
            stopNote (msg.getNoteNumber());
        else if (msg.isSustainPedalOn())
            sustainPedal = true;
        else if (msg.isSustainPedalOff())
        {
            sustainPedal = false;
            for (auto& v : voices)
                if (v.active && v.sustained && ! v.released)
                {
                    v.sustained = false;
                    v.released = true;
                    v.releaseStep = juce::jmax (v.level, 1e-6f) / (float) juce::jmax (1.0, release->load() * hostRate);
                }
        }
        else if (msg.isAllNotesOff() || msg.isAllSoundOff())
            for (auto& v : voices)
                v.active = false;
    }
    renderUpTo (total);
    midi.clear();
}

//==============================================================================
void SampleGenProcessor::getStateInformation (juce::MemoryBlock& destData)
{
    auto state = params.copyState();
    {
        std::lock_guard<std::mutex> lock (shared);
        state.setProperty ("bundle", requestedFolder.getFullPathName(), nullptr);
        // The played point of source "Point", as the .latent.json a preset file holds.
        if (! customPoint.empty())
            state.setProperty ("latent", latentJson (customPoint, "SampleGen plug-in", bundle != nullptr ? bundle->runName : ""), nullptr);
    }
    if (auto xml = state.createXml())
        copyXmlToBinary (*xml, destData);
}

void SampleGenProcessor::setStateInformation (const void* data, int sizeInBytes)
{
    auto xml = getXmlFromBinary (data, sizeInBytes);
    if (xml == nullptr || ! xml->hasTagName (params.state.getType()))
        return;
    auto state = juce::ValueTree::fromXml (*xml);
    const juce::File folder (state.getProperty ("bundle").toString());
    if (folder != juce::File() && folder != requestedFolder)
    {
        requestBundle (folder);
        waitForWorker (10000);  // the point below is checked against the model it was saved with
    }
    std::vector<float> point;
    if (state.hasProperty ("latent"))
    {
        juce::String error;
        point = pointFromJson (juce::JSON::parse (state.getProperty ("latent").toString()), "the saved point", error);
        if (error.isNotEmpty())
        {
            std::lock_guard<std::mutex> lock (shared);
            statusText = error;
        }
    }
    params.replaceState (state);
    {
        std::lock_guard<std::mutex> lock (shared);
        customPoint = point;
    }
    ++customGeneration;
    waitForWorker (10000);  // the restored sound is ready when the host plays on
}

juce::String SampleGenProcessor::latentJson (const std::vector<float>& z, const juce::String& sourceText,
                                             const juce::String& run)
{
    juce::Array<juce::var> values;
    for (auto v : z)
        values.add (std::round ((double) v * 1e6) / 1e6);
    auto* obj = new juce::DynamicObject();
    obj->setProperty ("z", values);
    obj->setProperty ("source", sourceText);
    obj->setProperty ("run", run);
    return juce::JSON::toString (juce::var (obj));
}

juce::String SampleGenProcessor::presetJson() const
{
    auto b = currentBundle();
    return latentJson (currentPoint(), "SampleGen plug-in", b != nullptr ? b->runName : juce::String());
}

std::vector<float> SampleGenProcessor::pointFromJson (const juce::var& json, const juce::String& what, juce::String& error) const
{
    auto b = currentBundle();
    if (b == nullptr)
    {
        error = "load a model before " + what;
        return {};
    }
    auto* values = json["z"].getArray();
    if (values == nullptr)
    {
        error = what + " is not a latent point file (no \"z\" list)";
        return {};
    }
    if (values->size() != b->latentDim)
    {
        error = what + " holds a point of size " + juce::String (values->size()) + "; this model needs "
                + juce::String (b->latentDim) + " numbers";
        return {};
    }
    std::vector<float> z;
    for (auto& v : *values)
    {
        const double x = (double) v;
        if (! (v.isDouble() || v.isInt() || v.isInt64()) || ! std::isfinite (x) || std::abs (x) > b->zLimit)
        {
            error = what + " holds a value that is not a finite number within this model's range";
            return {};
        }
        z.push_back ((float) x);
    }
    return z;
}

juce::String SampleGenProcessor::loadPreset (const juce::File& file)
{
    if (file.getSize() > 1024 * 1024)
        return file.getFileName() + " is too large to be a .latent.json";
    juce::String error;
    auto z = pointFromJson (juce::JSON::parse (file), file.getFileName(), error);
    if (error.isNotEmpty())
        return error;
    for (int k = 0; k < maxKnobs; ++k)
        if (auto* p = params.getParameter (knobId (k)))
            p->setValueNotifyingHost (p->convertTo0to1 (0.0f));
    setPoint (z);
    return {};
}

juce::AudioProcessorEditor* SampleGenProcessor::createEditor()
{
    return new SampleGenEditor (*this);
}

} // namespace samplegen

juce::AudioProcessor* JUCE_CALLTYPE createPluginFilter()
{
    return new samplegen::SampleGenProcessor();
}
