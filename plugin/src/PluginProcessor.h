// The SampleGen instrument: every control an automatable parameter; a background thread turns the controls
// into a latent point and the point into a note (Engine); the audio thread plays that note polyphonically,
// pitched from C4, crossfading to each new one. The audio thread never allocates, locks or waits on the
// decoder: notes travel through three slots whose ownership changes by atomic compare-and-swap.
#pragma once

#include "Bundle.h"
#include "Engine.h"

#include <juce_audio_processors/juce_audio_processors.h>

#include <array>
#include <atomic>
#include <mutex>

namespace samplegen
{

class SampleGenProcessor : public juce::AudioProcessor
{
public:
    static constexpr int maxSounds = 8192;   // range of the sound and corner parameters (a corpus index)
    static constexpr int maxKnobs = 8;
    static constexpr int maxVoices = 32;
    static constexpr float crossfadeSeconds = 0.02f;
    enum Source { fromSound = 0, fromPad = 1, fromPoint = 2 };

    SampleGenProcessor();
    ~SampleGenProcessor() override;

    // juce::AudioProcessor
    void prepareToPlay (double sampleRate, int samplesPerBlock) override;
    void releaseResources() override {}
    bool isBusesLayoutSupported (const BusesLayout& layouts) const override;
    void processBlock (juce::AudioBuffer<float>&, juce::MidiBuffer&) override;
    using juce::AudioProcessor::processBlock;  // the double-precision one stays JUCE's (unused)
    juce::AudioProcessorEditor* createEditor() override;
    bool hasEditor() const override { return true; }
    const juce::String getName() const override { return "SampleGen"; }
    bool acceptsMidi() const override { return true; }
    bool producesMidi() const override { return false; }
    double getTailLengthSeconds() const override { return 5.0; }
    int getNumPrograms() override { return 1; }
    int getCurrentProgram() override { return 0; }
    void setCurrentProgram (int) override {}
    const juce::String getProgramName (int) override { return {}; }
    void changeProgramName (int, const juce::String&) override {}
    void getStateInformation (juce::MemoryBlock& destData) override;
    void setStateInformation (const void* data, int sizeInBytes) override;

    // For the editor (message thread).
    juce::AudioProcessorValueTreeState params;
    std::shared_ptr<const Bundle> currentBundle() const;
    juce::String status() const;
    /** Asks the background thread to load a bundle folder (Load model...). */
    void requestBundle (const juce::File& folder);
    /** Plays this point (a preset): source becomes "Point" (message thread: it sets a parameter). */
    void setPoint (const std::vector<float>& z);
    /** The window's Surprise and Vary: a new point from the prior, or the played sound's base nudged; then
        source "Point". The host's surprise/vary parameters do the same to the point while source is "Point". */
    void surpriseNow();
    void varyNow();
    /** The point the controls stand for now (what is playing once decoded); empty without a model. */
    std::vector<float> currentPoint() const;
    /** .latent.json, as `samplegen sample` writes it: {"z": [...], "source": ..., "run": ...}. */
    juce::String presetJson() const;
    /** Reads a .latent.json into the played point; an empty string, or the one-line reason it was refused. */
    juce::String loadPreset (const juce::File& file);
    /** The bundle folder used when no state names one: $SAMPLEGEN_PLUGIN_BUNDLE, else the per-user folder. */
    static juce::File defaultBundleFolder();
    /** Changes of the bundle or of the played point, for the editor to redraw. */
    std::atomic<int> bundleGeneration { 0 }, pointGeneration { 0 };

private:
    struct Slot
    {
        enum State { Free, Writing, Ready, Playing };
        std::atomic<int> state { Free };
        std::vector<float> audio;  // written only while Writing (by the worker), read only while Playing
        Loop loop;
        double root = 60.0;  // the MIDI key (fractional) at which the note sounds at its measured pitch
        double sampleRate = 44100.0;
    };

    struct Voice
    {
        bool active = false, released = false, sustained = false;
        int note = 0;
        double pos = 0.0, step = 1.0;  // position in the note's samples, and its advance per output sample
        float velocity = 1.0f, level = 0.0f, attackStep = 1.0f, releaseStep = 0.0f;
        juce::uint64 age = 0;
    };

    class Worker;
    friend class Worker;

    juce::uint64 controlStamp() const;
    bool pointFromControls (const Bundle& bundle, std::vector<float>& z) const;
    /** The point the source names, before the knobs' offsets. */
    bool basePoint (const Bundle& bundle, std::vector<float>& z) const;
    /** Replaces the custom point by a draw from the prior or by the current base nudged (seeded, counted). */
    void drawPoint (const Bundle& bundle, bool fromPrior);
    void workerPoll();
    void loadRequestedBundle();
    /** A .latent.json's point for the loaded model, or the one-line reason it does not fit in `error`. */
    std::vector<float> pointFromJson (const juce::var& json, const juce::String& what, juce::String& error) const;
    static juce::String latentJson (const std::vector<float>& z, const juce::String& sourceText, const juce::String& run);
    void takeNewSound();
    void startNote (int note, float velocity);
    void stopNote (int note);
    void renderVoices (float* out, int numSamples);
    static float readSlot (const Slot& slot, double pos);
    void handleTriggers (const Bundle& bundle);
    void waitForWorker (int timeoutMs);

    std::array<Slot, 3> slots;
    std::array<Voice, maxVoices> voices;
    int current = -1, previous = -1;       // slots the audio thread plays (audio thread only)
    float crossfade = 1.0f, crossfadeStep = 1.0f;
    double hostRate = 44100.0;
    juce::uint64 noteCounter = 0;
    bool sustainPedal = false;
    std::vector<float> mono;               // sized in prepareToPlay
    juce::SmoothedValue<float> gainSmoothed;

    std::atomic<juce::uint64> handledStamp { 0 };  // the controls' stamp the worker has caught up with
    std::atomic<int> bundleRequests { 0 }, customGeneration { 0 };
    std::atomic<bool> forceRealtime { false };

    mutable std::mutex shared;              // bundle pointer, requested folder, custom point, status (never the audio thread)
    std::shared_ptr<const Bundle> bundle;
    juce::File requestedFolder;
    std::vector<float> customPoint;
    juce::String statusText;
    std::vector<float> lastDecoded;          // worker only
    std::unique_ptr<Engine> engine;          // worker only (built with the bundle it belongs to)
    std::atomic<int> draws { 0 };             // seeds of surprise / vary
    int seenRequests = 0;                    // worker only
    bool lastSurprise = false, lastVary = false;

    std::unique_ptr<Worker> worker;

    std::atomic<float>* sound = nullptr;
    std::atomic<float>* source = nullptr;
    std::atomic<float>* padX = nullptr;
    std::atomic<float>* padY = nullptr;
    std::array<std::atomic<float>*, 4> corners {};
    std::array<std::atomic<float>*, maxKnobs> knobs {};
    std::atomic<float>* attack = nullptr;
    std::atomic<float>* release = nullptr;
    std::atomic<float>* gain = nullptr;
    std::atomic<float>* surprise = nullptr;
    std::atomic<float>* temperature = nullptr;
    std::atomic<float>* vary = nullptr;
    std::atomic<float>* varyAmount = nullptr;

    JUCE_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR (SampleGenProcessor)
};

} // namespace samplegen
