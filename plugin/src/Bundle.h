// A model bundle written by `samplegen export plugin RUN --out DIR` (src/samplegen/app/plugin_bundle.py):
// bundle.json (shapes, layer graph, settings, names) and tensors.safetensors (float32 weights and points).
#pragma once

#include <juce_core/juce_core.h>

#include <memory>
#include <vector>

namespace samplegen
{

/** One dense layer y = W x + b, optionally followed by exact GELU. The weights are kept transposed
    (in x out, row-major) so the forward pass runs along contiguous outputs, which the compiler vectorises. */
struct Dense
{
    int in = 0, out = 0;
    bool gelu = false;
    std::vector<float> weightT, bias;
};

/** Everything the plug-in plays, read once (on a background thread) and then only read. */
struct Bundle
{
    static constexpr int formatVersion = 5;       // what `samplegen export plugin` writes now
    static constexpr int oldestFormatVersion = 2;  // 2: no log head; 3 adds the optional one; 4 its adds_level; 5 its MLP

    juce::File folder;
    juce::String runName;

    // Decoder: h = stack(z) + linear(z) as (nFrames x frameDim); out = frame(h) + frameMlp(h).
    int latentDim = 0, nFrames = 0, frameDim = 0, nBins = 0;
    std::vector<Dense> stack, frameMlp;
    Dense linear, frame;

    // Optional log head (samplegen.model.network.Decoder.parts): out becomes, per note, a log-domain blend of
    // itself (loud bins) and logFrame(h) (bins more than about -gateDb below the note's loudest).
    bool hasLogHead = false;
    bool headAddsLevel = false;  // the head corrects the first branch's level (format 4), or writes it (3)
    Dense logFrame;
    std::vector<Dense> logMlp;  // beside logFrame, per frame (format 5; empty before)
    std::vector<float> headMean, headStd;  // the decoder's own feature map (feat_mean, feat_std, feat_power)
    float headPower = 1.0f, headFloor = 0.0f, gateDb = -50.0f, gateWidthDb = 5.0f;  // headFloor: LOG_FLOOR

    // De-normalisation: v = out * std[bin] + mean[bin]; magnitude = max(v, floor)^(1/p), or exp(v) for p = 0.
    std::vector<float> normMean, normStd;
    float magnitudePower = 0.0f, magnitudeFloor = 0.0f;

    // STFT and phase retrieval (PGHI, then FGLA).
    int sampleRate = 44100, nFft = 2048, hop = 512, lengthSamples = 0;
    int iterations = 10, fadeIn = 132;
    float momentum = 0.99f;
    double pghiTol = 1e-3, pghiGamma = 0.0;
    std::vector<float> phaseStart;  // nBins x nFrames

    // Playback and controls.
    int rootKey = 60;
    float peak = 0.89f, maxGainDb = 30.0f, zLimit = 8.0f, knobRange = 3.0f;
    juce::StringArray soundNames, soundFamilies;
    std::vector<float> soundsZ;            // nSounds x latentDim
    std::vector<float> mapPoints;          // nSounds x 2: the corpus sounds' places on the map
    int placeNeighbours = 7;               // a point is placed among this many nearest sounds
    float mapView[4] {};                   // x0, y0, x1, y1 in map units
    int defaultCorners[4] {};
    juce::StringArray knobLabels, knobHints;
    std::vector<float> knobMove;           // nKnobs x latentDim: the latent step of one knob unit

    int numSounds() const { return soundNames.size(); }
    int numKnobs() const { return knobLabels.size(); }
    /** Where latent point z goes on the map (samplegen.app.instrument.Instrument.place): among its nearest
        corpus sounds, inverse-square-distance weighted, so a sound lands on its own place. */
    void place (const std::vector<float>& z, float xy[2]) const;
    const float* soundPoint (int i) const { return soundsZ.data() + (size_t) i * (size_t) latentDim; }

    /** Reads and checks a bundle folder; nullptr and a one-line reason in `error` when it cannot be used. */
    static std::unique_ptr<Bundle> load (const juce::File& folder, juce::String& error);
};

} // namespace samplegen
