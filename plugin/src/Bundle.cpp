#include "Bundle.h"

#include <juce_cryptography/juce_cryptography.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>

namespace samplegen
{
namespace
{
using Fail = std::runtime_error;

[[noreturn]] void fail (const juce::String& why) { throw Fail (why.toStdString()); }

/** Float32 tensors of a safetensors file by name, with their shapes. */
struct Tensors
{
    std::map<juce::String, std::vector<int64_t>> shapes;
    std::map<juce::String, std::vector<float>> data;

    const std::vector<float>& get (const juce::String& name, std::initializer_list<int64_t> shape) const
    {
        auto it = data.find (name);
        if (it == data.end())
            fail ("the tensors file lacks '" + name + "'");
        const auto& found = shapes.at (name);
        if (! std::equal (found.begin(), found.end(), shape.begin(), shape.end()))
            fail ("tensor '" + name + "' has an unexpected shape");
        return it->second;
    }
};

Tensors readSafetensors (const juce::File& file)
{
    juce::MemoryBlock raw;
    if (! file.loadFileAsData (raw) || raw.getSize() < 8)
        fail ("cannot read " + file.getFullPathName());
    auto* bytes = static_cast<const uint8_t*> (raw.getData());
    uint64_t headerLen = 0;
    for (int i = 7; i >= 0; --i)
        headerLen = (headerLen << 8) | bytes[i];
    if (headerLen > raw.getSize() - 8)
        fail (file.getFileName() + " has a damaged header");
    auto header = juce::JSON::parse (juce::String::fromUTF8 (reinterpret_cast<const char*> (bytes + 8), (int) headerLen));
    auto* obj = header.getDynamicObject();
    if (obj == nullptr)
        fail (file.getFileName() + " has a damaged header");
    const uint8_t* base = bytes + 8 + headerLen;
    const size_t dataSize = raw.getSize() - 8 - (size_t) headerLen;
    Tensors out;
    for (auto& prop : obj->getProperties())
    {
        auto name = prop.name.toString();
        if (name == "__metadata__")
            continue;
        const auto& info = prop.value;
        if (info["dtype"].toString() != "F32")
            fail ("tensor '" + name + "' is not float32");
        std::vector<int64_t> shape;
        int64_t count = 1;
        if (auto* dims = info["shape"].getArray())
            for (auto& d : *dims)
            {
                shape.push_back ((int64_t) (juce::int64) d);
                count *= (int64_t) (juce::int64) d;
            }
        auto* offsets = info["data_offsets"].getArray();
        if (offsets == nullptr || offsets->size() != 2)
            fail ("tensor '" + name + "' has no data offsets");
        const auto begin = (uint64_t) (juce::int64) (*offsets)[0], end = (uint64_t) (juce::int64) (*offsets)[1];
        if (end > dataSize || begin > end || end - begin != (uint64_t) count * 4)
            fail ("tensor '" + name + "' lies outside the file");
        std::vector<float> values ((size_t) count);
        std::memcpy (values.data(), base + begin, (size_t) count * 4);  // little-endian, as on every host JUCE builds for
        for (auto v : values)
            if (! std::isfinite (v))
                fail ("tensor '" + name + "' holds NaN or Inf");
        out.shapes[name] = shape;
        out.data[name] = std::move (values);
    }
    return out;
}

int positive (const juce::var& v, const char* what)
{
    if (! (v.isInt() || v.isInt64() || v.isDouble()) || (int) v < 1)
        fail (juce::String ("bundle.json: '") + what + "' must be a positive integer");
    return (int) v;
}

Dense dense (const juce::var& spec, const Tensors& t)
{
    Dense d;
    d.in = positive (spec["in"], "in");
    d.out = positive (spec["out"], "out");
    auto act = spec["activation"].toString();
    if (act != "gelu" && act != "none")
        fail ("bundle.json: unknown activation '" + act + "'");
    d.gelu = act == "gelu";
    const auto& w = t.get (spec["weight"].toString(), { d.out, d.in });  // PyTorch's (out, in)
    d.weightT.resize (w.size());
    for (int o = 0; o < d.out; ++o)
        for (int i = 0; i < d.in; ++i)
            d.weightT[(size_t) i * (size_t) d.out + (size_t) o] = w[(size_t) o * (size_t) d.in + (size_t) i];
    d.bias = t.get (spec["bias"].toString(), { d.out });
    return d;
}

std::vector<Dense> layers (const juce::var& list, const Tensors& t)
{
    std::vector<Dense> out;
    if (auto* arr = list.getArray())
        for (auto& spec : *arr)
            out.push_back (dense (spec, t));
    return out;
}

void chain (const std::vector<Dense>& ls, int in, int out, const char* what)
{
    for (auto& l : ls)
    {
        if (l.in != in)
            fail (juce::String ("bundle.json: the ") + what + " layers do not chain");
        in = l.out;
    }
    if (in != out)
        fail (juce::String ("bundle.json: the ") + what + " ends with the wrong width");
}
} // namespace

std::unique_ptr<Bundle> Bundle::load (const juce::File& folder, juce::String& error)
{
    const juce::String redo = "; export it again with `samplegen export plugin RUN --out " + folder.getFullPathName() + "`";
    try
    {
        auto manifestFile = folder.getChildFile ("bundle.json");
        if (! manifestFile.existsAsFile())
            fail (folder.getFullPathName() + " holds no bundle.json");
        auto m = juce::JSON::parse (manifestFile);
        if (m["format"].toString() != "samplegen-plugin-bundle")
            fail ("bundle.json is not a SampleGen plug-in bundle");
        const auto version = m["format_version"];
        if (! (version.isInt() || version.isInt64()) || (int) version < oldestFormatVersion || (int) version > formatVersion)
            fail ("bundle format " + version.toString() + " is not one this plug-in reads ("
                  + juce::String (oldestFormatVersion) + " to " + juce::String (formatVersion)
                  + "); update the plug-in or the bundle");
        auto tensorFile = folder.getChildFile (m["tensors"]["name"].toString());
        if (tensorFile.getParentDirectory() != folder || ! tensorFile.existsAsFile()
            || tensorFile.getSize() != (juce::int64) m["tensors"]["bytes"]
            || juce::SHA256 (tensorFile).toHexString() != m["tensors"]["sha256"].toString())
            fail ("the tensors file is not the one bundle.json was written for");
        auto t = readSafetensors (tensorFile);

        auto b = std::make_unique<Bundle>();
        b->folder = folder;
        b->runName = m["run"].toString();
        const auto& d = m["decoder"];
        b->latentDim = positive (d["latent_dim"], "latent_dim");
        b->nFrames = positive (d["n_frames"], "n_frames");
        b->frameDim = positive (d["frame_dim"], "frame_dim");
        b->nBins = positive (d["n_bins"], "n_bins");
        b->stack = layers (d["stack"], t);
        b->linear = dense (d["linear"], t);
        b->frame = dense (d["frame"], t);
        b->frameMlp = layers (d["frame_mlp"], t);
        const int frameValues = b->nFrames * b->frameDim;
        chain (b->stack, b->latentDim, frameValues, "stack");
        chain ({ b->linear }, b->latentDim, frameValues, "linear");
        chain ({ b->frame }, b->frameDim, b->nBins, "frame");
        if (! b->frameMlp.empty())
            chain (b->frameMlp, b->frameDim, b->nBins, "frame_mlp");
        const auto& head = d["log_head"];
        b->hasLogHead = head.isObject();
        if (b->hasLogHead)
        {
            b->logFrame = dense (head["layer"], t);
            chain ({ b->logFrame }, b->frameDim, b->nBins, "log_head");
            b->logMlp = layers (head["mlp"], t);  // absent before format 5
            if (! b->logMlp.empty())
                chain (b->logMlp, b->frameDim, b->nBins, "log_head mlp");
            b->headMean = t.get (head["mean"].toString(), { b->nBins });
            b->headStd = t.get (head["std"].toString(), { b->nBins });
            b->headPower = t.get (head["power"].toString(), {})[0];
            b->headFloor = (float) (double) head["floor"];
            b->gateDb = (float) (double) head["gate_db"];
            b->gateWidthDb = (float) (double) head["gate_width_db"];
            const auto& addsLevel = head["adds_level"];  // absent in format 3
            if (! (addsLevel.isVoid() || addsLevel.isBool()))
                fail ("bundle.json: decoder.log_head.adds_level is not true or false");
            b->headAddsLevel = (bool) addsLevel;
            if (! (b->headPower > 0.0f && b->headFloor > 0.0f && b->gateWidthDb > 0.0f))
                fail ("bundle.json: the log head needs a positive power, floor and gate width");
        }
        else if (! head.isVoid())
            fail ("bundle.json: decoder.log_head is not an object");

        const auto& dn = m["denormalise"];
        b->magnitudePower = (float) (double) dn["magnitude_power"];
        b->magnitudeFloor = b->magnitudePower > 0.0f ? (float) (double) dn["floor"] : 0.0f;
        b->normMean = t.get (dn["mean"].toString(), { b->nBins });
        b->normStd = t.get (dn["std"].toString(), { b->nBins });

        const auto& st = m["stft"];
        b->sampleRate = positive (st["sample_rate"], "sample_rate");
        b->nFft = positive (st["n_fft"], "n_fft");
        b->hop = positive (st["hop_length"], "hop_length");
        b->lengthSamples = positive (st["length_samples"], "length_samples");
        if (! juce::isPowerOfTwo (b->nFft) || b->nFft % b->hop != 0 || b->nFft / 2 + 1 != b->nBins
            || 1 + b->lengthSamples / b->hop != b->nFrames)
            fail ("bundle.json: the STFT settings do not match the decoder's shape (n_fft must be a power of two "
                  "that the hop divides)");

        const auto& pr = m["phase_retrieval"];
        if (pr["method"].toString() != "pghi")
            fail ("bundle.json: phase retrieval '" + pr["method"].toString() + "' is not one this plug-in runs (pghi)");
        b->iterations = (int) pr["iterations"];
        b->momentum = (float) (double) pr["momentum"];
        b->fadeIn = (int) pr["fade_in_samples"];
        b->pghiTol = (double) pr["pghi_tol"];
        b->pghiGamma = (double) pr["pghi_gamma"];
        if (b->iterations < 0 || b->fadeIn < 0 || ! (b->pghiTol > 0.0 && b->pghiTol < 1.0) || ! (b->pghiGamma > 0.0))
            fail ("bundle.json: phase retrieval settings out of range");
        b->phaseStart = t.get ("phase.start", { b->nBins, b->nFrames });

        const auto& pb = m["playback"];
        b->rootKey = (int) pb["root_key"];
        b->peak = (float) (double) pb["peak"];
        b->maxGainDb = (float) (double) pb["max_gain_db"];
        b->zLimit = (float) (double) pb["z_limit"];
        b->knobRange = (float) (double) pb["knob_range"];

        if (auto* sounds = m["sounds"].getArray())
            for (auto& s : *sounds)
            {
                b->soundNames.add (s["name"].toString());
                b->soundFamilies.add (s["family"].toString());
            }
        const int n = b->numSounds();
        if (n < 2)
            fail ("bundle.json lists fewer than 2 sounds");
        const int L = b->latentDim;
        b->soundsZ = t.get ("sounds.z", { n, L });
        b->mapPoints = t.get ("map.points", { n, 2 });
        auto* view = m["map"]["view"].getArray();
        auto* corners = m["map"]["default_corners"].getArray();
        if (view == nullptr || view->size() != 4 || corners == nullptr || corners->size() != 4)
            fail ("bundle.json: map view and default corners must hold 4 numbers each");
        for (int i = 0; i < 4; ++i)
        {
            b->mapView[i] = (float) (double) (*view)[i];
            b->defaultCorners[i] = juce::jlimit (0, n - 1, (int) (*corners)[i]);
        }
        b->placeNeighbours = juce::jlimit (1, n, (int) m["map"].getProperty ("place_neighbours", 7));
        if (auto* knobs = m["knobs"].getArray())
            for (auto& k : *knobs)
            {
                b->knobLabels.add (k["label"].toString());
                b->knobHints.add (k["hint"].toString());
            }
        const int k = b->numKnobs();
        b->knobMove = t.get ("knobs.move", { k, L });
        return b;
    }
    catch (const std::exception& e)
    {
        error = juce::String (e.what()) + redo;
    }
    return nullptr;
}

void Bundle::place (const std::vector<float>& z, float xy[2]) const
{
    const int n = numSounds(), L = latentDim;
    std::vector<std::pair<double, int>> dist ((size_t) n);
    for (int s = 0; s < n; ++s)
    {
        double d = 0.0;
        for (int i = 0; i < L; ++i)
        {
            const double e = (double) z[(size_t) i] - (double) soundsZ[(size_t) (s * L + i)];
            d += e * e;
        }
        dist[(size_t) s] = { std::sqrt (d), s };
    }
    const int k = std::min (placeNeighbours, n);
    std::partial_sort (dist.begin(), dist.begin() + k, dist.end());
    if (dist[0].first < 1e-9)
    {
        xy[0] = mapPoints[(size_t) (2 * dist[0].second)];
        xy[1] = mapPoints[(size_t) (2 * dist[0].second + 1)];
        return;
    }
    double wx = 0.0, wy = 0.0, wsum = 0.0;
    for (int j = 0; j < k; ++j)
    {
        const double w = 1.0 / (dist[(size_t) j].first * dist[(size_t) j].first);
        wx += w * mapPoints[(size_t) (2 * dist[(size_t) j].second)];
        wy += w * mapPoints[(size_t) (2 * dist[(size_t) j].second + 1)];
        wsum += w;
    }
    xy[0] = (float) (wx / wsum);
    xy[1] = (float) (wy / wsum);
}

} // namespace samplegen
