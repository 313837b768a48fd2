#include "Engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <queue>

namespace samplegen
{
namespace
{
constexpr double pi = 3.14159265358979323846;

// The decoder's dense layers are most of a note's time (a few hundred million multiply-adds a note): on x86-64
// with GCC or Clang on Linux the layer is also compiled for AVX2+FMA and AVX-512 and the CPU's best runs (the
// build itself targets the baseline, so the plug-in still loads on any x86-64 CPU).
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
 #define SAMPLEGEN_CPU_CLONES __attribute__ ((target_clones ("avx512f", "avx2,fma", "default")))
#else
 #define SAMPLEGEN_CPU_CLONES
#endif

/** `rows` rows of `x` (each d.in wide, one after another) through the layer into `y` (each d.out wide). */
SAMPLEGEN_CPU_CLONES void applyDense (const Dense& d, const float* __restrict x, int rows, float* __restrict y)
{
    const size_t in = (size_t) d.in, out = (size_t) d.out;
    for (size_t r = 0; r < (size_t) rows; ++r)
    {
        float* __restrict yr = y + r * out;
        std::copy (d.bias.begin(), d.bias.end(), yr);
        for (size_t i = 0; i < in; ++i)
        {
            const float xi = x[r * in + i];
            const float* __restrict w = d.weightT.data() + i * out;
            for (size_t o = 0; o < out; ++o)
                yr[o] += w[o] * xi;
        }
    }
    if (d.gelu)
        for (size_t o = 0, n = (size_t) rows * (size_t) d.out; o < n; ++o)
            y[o] = 0.5f * y[o] * (1.0f + std::erf (y[o] * 0.70710678118654752f));
}

/** |c| without hypot's overflow guard: magnitudes here are far from float's limits. */
inline float magnitudeOf (std::complex<float> c)
{
    return std::sqrt (c.real() * c.real() + c.imag() * c.imag());
}

/** Runs `rows` rows through the layers in turn; returns the last layer's output (in `a` or `b`, both scratch). */
const std::vector<float>& applyLayers (const std::vector<Dense>& layers, const float* x, int rows,
                                       std::vector<float>& a, std::vector<float>& b)
{
    const float* in = x;
    std::vector<float>* out = &a;
    for (auto& l : layers)
    {
        out->resize ((size_t) rows * (size_t) l.out);
        applyDense (l, in, rows, out->data());
        in = out->data();
        out = (out == &a) ? &b : &a;
    }
    return (out == &a) ? b : a;
}

/** FFTW's planner is not thread-safe; each plug-in instance has its own decoder thread. */
std::mutex& plannerLock()
{
    static std::mutex m;
    return m;
}
} // namespace

Engine::Engine (const Bundle& bundle) : b (bundle)
{
    const int n = b.nFft;
    window.resize ((size_t) n);
    for (int i = 0; i < n; ++i)  // periodic Hann, as torch.hann_window
        window[(size_t) i] = (float) (0.5 - 0.5 * std::cos (2.0 * pi * i / n));
    // Overlap-added squared window over all frames: what least-squares ISTFT divides by.
    envelope.assign ((size_t) ((b.nFrames - 1) * b.hop + n), 0.0f);
    for (int t = 0; t < b.nFrames; ++t)
        for (int i = 0; i < n; ++i)
            envelope[(size_t) (t * b.hop + i)] += window[(size_t) i] * window[(size_t) i];
    const int nf = std::min (b.fadeIn, b.lengthSamples);
    fadeRamp.resize ((size_t) nf);
    for (int i = 0; i < nf; ++i)
        fadeRamp[(size_t) i] = (float) (0.5 - 0.5 * std::cos (pi * i / nf));
    padded.resize ((size_t) (b.lengthSamples + n));
    frames.resize ((size_t) b.nFrames * (size_t) n);
    binsScratch.resize ((size_t) b.nFrames * (size_t) b.nBins);
    const std::lock_guard<std::mutex> lock (plannerLock());
    auto* bins = reinterpret_cast<fftwf_complex*> (binsScratch.data());
    // Executed on other buffers than these (fftwf_execute_dft_*): all come from fftwf_malloc, equally aligned.
    forward = fftwf_plan_many_dft_r2c (1, &n, b.nFrames, frames.data(), nullptr, 1, n, bins, nullptr, 1, b.nBins,
                                       FFTW_ESTIMATE);
    inverse = fftwf_plan_many_dft_c2r (1, &n, b.nFrames, bins, nullptr, 1, b.nBins, frames.data(), nullptr, 1, n,
                                       FFTW_ESTIMATE);
}

Engine::~Engine()
{
    const std::lock_guard<std::mutex> lock (plannerLock());
    fftwf_destroy_plan (forward);
    fftwf_destroy_plan (inverse);
}

void Engine::decode (const float* z, std::vector<float>& features) const
{
    std::vector<float> s1, s2, lin ((size_t) b.linear.out), m1, m2;
    const auto& stackOut = applyLayers (b.stack, z, 1, s1, s2);
    applyDense (b.linear, z, 1, lin.data());
    std::vector<float> h (lin.size());  // nFrames rows of frameDim
    for (size_t i = 0; i < h.size(); ++i)
        h[i] = stackOut[i] + lin[i];
    features.assign ((size_t) b.nFrames * (size_t) b.nBins, 0.0f);
    applyDense (b.frame, h.data(), b.nFrames, features.data());
    if (! b.frameMlp.empty())
    {
        const auto& extra = applyLayers (b.frameMlp, h.data(), b.nFrames, m1, m2);
        for (size_t i = 0; i < features.size(); ++i)
            features[i] += extra[i];
    }
    if (b.hasLogHead)
        applyLogHead (h, features);
}

void Engine::applyLogHead (const std::vector<float>& h, std::vector<float>& features) const
{
    // As samplegen.model.network.Decoder.parts: the first branch's log magnitude for the loud bins, the log
    // frame layer's plus its MLP's (added to the first branch's when adds_level; softly capped below the note's peak) for the
    // quiet ones, blended by a sigmoid of the level.
    const int F = b.nBins, T = b.nFrames;
    const double p = b.headPower, nepersPerDb = std::log (10.0) / 20.0;
    const float floorP = std::pow (b.headFloor, b.headPower);  // in float, as PyTorch's LOG_FLOOR ** p
    std::vector<double> loud ((size_t) T * (size_t) F);
    double peak = -std::numeric_limits<double>::infinity();
    for (int t = 0; t < T; ++t)
        for (int k = 0; k < F; ++k)
        {
            const size_t i = (size_t) t * (size_t) F + (size_t) k;
            const float v = std::max (b.headMean[(size_t) k] + b.headStd[(size_t) k] * features[i], floorP);
            loud[i] = std::log ((double) v) / p;
            peak = std::max (peak, loud[i]);
        }
    const double cap = peak + b.gateDb * nepersPerDb + 1.0;
    std::vector<float> quiet ((size_t) T * (size_t) F), m1, m2;
    applyDense (b.logFrame, h.data(), T, quiet.data());
    if (! b.logMlp.empty())
    {
        const auto& extra = applyLayers (b.logMlp, h.data(), T, m1, m2);
        for (size_t i = 0; i < quiet.size(); ++i)
            quiet[i] += extra[i];
    }
    for (int t = 0; t < T; ++t)
    {
        for (int k = 0; k < F; ++k)
        {
            const size_t i = (size_t) t * (size_t) F + (size_t) k;
            const double w = 1.0 / (1.0 + std::exp (-((loud[i] - peak) / nepersPerDb - b.gateDb) / b.gateWidthDb));
            const double x = cap - ((double) quiet[i] + (b.headAddsLevel ? loud[i] : 0.0));
            const double softplus = x > 20.0 ? x : std::log1p (std::exp (x));  // PyTorch's threshold
            const double logM = w * loud[i] + (1.0 - w) * (cap - softplus);
            features[i] = (float) ((std::exp (p * logM) - b.headMean[(size_t) k]) / b.headStd[(size_t) k]);
        }
    }
}

void Engine::magnitude (const std::vector<float>& features, std::vector<float>& mag) const
{
    const int F = b.nBins, T = b.nFrames;
    mag.resize ((size_t) F * (size_t) T);
    const float p = b.magnitudePower;
    for (int t = 0; t < T; ++t)
        for (int k = 0; k < F; ++k)
        {
            const float v = features[(size_t) t * (size_t) F + (size_t) k] * b.normStd[(size_t) k] + b.normMean[(size_t) k];
            // As samplegen.spectral.features: log(max(v, floor)) / p, then exp (p = 0: v is the log itself).
            const float logMag = p > 0.0f ? std::log (std::max (v, b.magnitudeFloor)) / p : v;
            mag[(size_t) k * (size_t) T + (size_t) t] = std::exp (logMag);
        }
}

void Engine::pghiPhase (const std::vector<float>& magF, std::vector<double>& phase) const
{
    const int F = b.nBins, T = b.nFrames;
    const size_t N = (size_t) F * (size_t) T;
    std::vector<double> mag (magF.begin(), magF.end());
    phase.assign (b.phaseStart.begin(), b.phaseStart.end());
    const double peak = *std::max_element (mag.begin(), mag.end());
    if (peak > 0.0)
    {
        // Phase gradients from the log magnitude (Prusa et al. 2017), as samplegen.spectral.stft.pghi_gradients.
        const double a = b.hop, m = b.nFft, g = b.pghiGamma;
        const double logFloor = std::max (peak, 1e-30) * b.pghiTol * 0.1;
        std::vector<double> logm (N), perFrame (N), perBin (N);
        for (size_t i = 0; i < N; ++i)
            logm[i] = std::log (std::max (mag[i], logFloor));
        auto at = [T] (int k, int t) { return (size_t) k * (size_t) T + (size_t) t; };
        for (int k = 0; k < F; ++k)
            for (int t = 0; t < T; ++t)
            {
                const double dBin = (k > 0 && k < F - 1 && F > 2) ? 0.5 * (logm[at (k + 1, t)] - logm[at (k - 1, t)]) : 0.0;
                const double dFrame = (t > 0 && t < T - 1 && T > 2) ? 0.5 * (logm[at (k, t + 1)] - logm[at (k, t - 1)]) : 0.0;
                perFrame[at (k, t)] = (a * m / g) * dBin + 2.0 * pi * a * k / m;
                perBin[at (k, t)] = -(g / (a * m)) * dFrame - pi;
            }
        // Heap walk: loudest first, ties by lower index (Python's heapq of (-mag, index)).
        struct Entry { double mag; size_t idx; };
        auto lower = [] (const Entry& x, const Entry& y) { return x.mag < y.mag || (x.mag == y.mag && x.idx > y.idx); };
        std::priority_queue<Entry, std::vector<Entry>, decltype (lower)> heap (lower);
        std::vector<char> done (N, 0);
        const double floor = peak * b.pghiTol;
        size_t start = (size_t) (std::max_element (mag.begin(), mag.end()) - mag.begin());
        size_t scan = 0;
        for (;;)
        {
            done[start] = 1;
            phase[start] = 0.0;
            heap.push ({ mag[start], start });
            while (! heap.empty())
            {
                const size_t idx = heap.top().idx;
                heap.pop();
                const int k = (int) (idx / (size_t) T), t = (int) (idx % (size_t) T);
                const double here = phase[idx];
                auto visit = [&] (size_t next, double step)
                {
                    done[next] = 1;
                    phase[next] = here + step;
                    heap.push ({ mag[next], next });
                };
                if (t + 1 < T && ! done[idx + 1] && mag[idx + 1] >= floor)
                    visit (idx + 1, 0.5 * (perFrame[idx] + perFrame[idx + 1]));
                if (t > 0 && ! done[idx - 1] && mag[idx - 1] >= floor)
                    visit (idx - 1, -0.5 * (perFrame[idx] + perFrame[idx - 1]));
                if (k + 1 < F && ! done[idx + (size_t) T] && mag[idx + (size_t) T] >= floor)
                    visit (idx + (size_t) T, 0.5 * (perBin[idx] + perBin[idx + (size_t) T]));
                if (k > 0 && ! done[idx - (size_t) T] && mag[idx - (size_t) T] >= floor)
                    visit (idx - (size_t) T, -0.5 * (perBin[idx] + perBin[idx - (size_t) T]));
            }
            while (scan < N && ! (mag[scan] >= floor && ! done[scan]))
                ++scan;
            if (scan >= N)
                break;
            start = scan;
        }
    }
    // Frame 0 of a centred STFT is real times (-1)^k: snap to the nearer of the two allowed phases.
    for (int k = 0; k < F; ++k)
    {
        const double turn = pi * k;
        double& p0 = phase[(size_t) k * (size_t) T];
        p0 = (std::cos (p0 - turn) >= 0.0 ? 0.0 : pi) + turn;
    }
}

void Engine::fade (std::vector<float>& wave) const
{
    for (size_t i = 0; i < fadeRamp.size() && i < wave.size(); ++i)
        wave[i] *= fadeRamp[i];
}

void Engine::stft (const std::vector<float>& wave, Spectrogram& out)
{
    const int n = b.nFft, half = n / 2, len = b.lengthSamples, T = b.nFrames;
    // Reflect padding of n/2 on both sides (torch.stft, center=True).
    padded.resize ((size_t) (len + n));
    for (int i = 0; i < len + n; ++i)
    {
        int j = i - half;
        if (j < 0)
            j = -j;
        if (j >= len)
            j = 2 * (len - 1) - j;
        padded[(size_t) i] = wave[(size_t) j];
    }
    for (int t = 0; t < T; ++t)
    {
        const float* src = padded.data() + (size_t) t * (size_t) b.hop;
        float* dst = frames.data() + (size_t) t * (size_t) n;
        for (int i = 0; i < n; ++i)
            dst[i] = src[i] * window[(size_t) i];
    }
    out.resize ((size_t) T * (size_t) b.nBins);
    fftwf_execute_dft_r2c (forward, frames.data(), reinterpret_cast<fftwf_complex*> (out.data()));
}

void Engine::istft (const Spectrogram& in, std::vector<float>& wave)
{
    const int n = b.nFft, half = n / 2, len = b.lengthSamples, T = b.nFrames;
    binsScratch = in;  // a complex-to-real transform overwrites its input
    // (irfft ignores the imaginary parts at 0 and Nyquist, as FFTW's c2r does)
    fftwf_execute_dft_c2r (inverse, reinterpret_cast<fftwf_complex*> (binsScratch.data()), frames.data());
    std::vector<float>& ola = padded;
    ola.assign (envelope.size(), 0.0f);
    const float scale = 1.0f / (float) n;  // FFTW's inverse is unnormalised
    for (int t = 0; t < T; ++t)
    {
        const float* src = frames.data() + (size_t) t * (size_t) n;
        float* dst = ola.data() + (size_t) t * (size_t) b.hop;
        for (int i = 0; i < n; ++i)
            dst[i] += src[i] * scale * window[(size_t) i];
    }
    wave.resize ((size_t) len);
    for (int i = 0; i < len; ++i)
    {
        const size_t j = (size_t) (i + half);
        wave[(size_t) i] = j < ola.size() && envelope[j] > 1e-11f ? ola[j] / envelope[j] : 0.0f;
    }
}

void Engine::retrievePhase (const std::vector<float>& mag, std::vector<float>& wave)
{
    // The iterations run frame-major (frame t's bins contiguous), as the FFTs read and write them.
    const size_t N = mag.size(), F = (size_t) b.nBins, T = (size_t) b.nFrames;
    pghiPhase (mag, startPhase);
    spec.resize (N);
    prev.assign (N, Complex {});
    magFrames.resize (N);
    for (size_t k = 0; k < F; ++k)
        for (size_t t = 0; t < T; ++t)
        {
            magFrames[t * F + k] = mag[k * T + t];
            spec[t * F + k] = std::polar (mag[k * T + t], (float) startPhase[k * T + t]);
        }
    const float alpha = b.momentum;
    for (int it = 0; it < b.iterations; ++it)
    {
        // Consistent spectrogram of a faded-in signal, momentum, then the given magnitude (samplegen.spectral.stft).
        istft (spec, wave);
        fade (wave);
        stft (wave, rebuilt);
        for (size_t i = 0; i < N; ++i)
        {
            const Complex accel = rebuilt[i] * (1.0f + alpha) - prev[i] * alpha;
            const float r = magnitudeOf (accel);
            spec[i] = r > 0.0f ? accel * (magFrames[i] / r) : Complex {};
        }
        std::swap (prev, rebuilt);
    }
    istft (spec, wave);
    fade (wave);
}

void Engine::render (const float* z, std::vector<float>& wave)
{
    decode (z, noteFeatures);
    magnitude (noteFeatures, noteMagnitude);
    retrievePhase (noteMagnitude, wave);
}

void Engine::normalise (std::vector<float>& wave, float peak, float maxGainDb)
{
    float top = 0.0f;
    for (auto v : wave)
        top = std::max (top, std::abs (v));
    const float gain = top > 0.0f ? std::min (peak / top, std::pow (10.0f, maxGainDb / 20.0f)) : 1.0f;
    for (auto& v : wave)
        v = juce::jlimit (-1.0f, 1.0f, v * gain);
}

namespace
{
// samplegen.audio.sustain_loop's constants (see its docstring for why each is what it is).
constexpr double frameS = 0.01, levelS = 0.25, matchS = 0.02, matchEnvelopeS = 0.2, envelopeSlackDb = 0.5,
                 minLoopS = 0.2, maxLoopS = 1.5, steadyDb = 8.0, maxSlopeDbPerS = 3.0, sustainBelowPeakDb = 15.0,
                 sustainShare = 0.4, releaseDropDb = 1.0, afterS = 0.15, afterDropDb = 1.5, crossfadeS = 0.08,
                 tailS = 0.1;

/** Python's round() for the frame counts here (none is a tie). */
int frameCount (double seconds) { return (int) std::lround (seconds / frameS); }

double db (double power) { return 10.0 * std::log10 (std::max (power, 1e-20)); }

/** Mean power of y[from, to) (samplegen.audio.sustain_loop's frames, then np.mean over them). */
double meanPower (const std::vector<double>& power, int from, int to)
{
    double s = 0.0;
    for (int i = from; i < to; ++i)
        s += power[(size_t) i];
    return s / (to - from);
}

/** _power_frames: mean square of each whole frame of y[from, to). */
std::vector<double> powerFrames (const std::vector<double>& y, int from, int to, int frame)
{
    std::vector<double> p ((size_t) ((to - from) / frame));
    for (size_t f = 0; f < p.size(); ++f)
    {
        double s = 0.0;
        for (int i = 0; i < frame; ++i)
        {
            const double v = y[(size_t) from + f * (size_t) frame + (size_t) i];
            s += v * v;
        }
        p[f] = s / frame;
    }
    return p;
}

/** samplegen.audio.sustain_loop._sustain: the loop's stretch [lo, hi) in samples, or false when the note does not sustain. */
bool sustain (const std::vector<double>& y, int sr, int& lo, int& hi)
{
    const int frame = (int) (frameS * sr);
    const auto power = powerFrames (y, 0, (int) y.size(), frame);
    const int P = (int) power.size(), width = std::max (1, frameCount (levelS));
    if (P < 2 * width)
        return false;
    // level[i]: mean power of frames i .. i + width - 1, in dB
    const int L = P - width + 1;
    std::vector<double> level ((size_t) L);
    for (int i = 0; i < L; ++i)
    {
        double s = 0.0;
        for (int j = 0; j < width; ++j)
            s += power[(size_t) (i + j)] * (1.0 / width);
        level[(size_t) i] = db (s);
    }
    const double floor = *std::max_element (level.begin(), level.end()) - sustainBelowPeakDb;
    const int last = P - frameCount (tailS), tail = frameCount (0.05), afterFrames = frameCount (afterS);
    // Running sums for the least-squares slope of level[a..top] (dB per second).
    std::vector<double> cx ((size_t) L + 1), cy ((size_t) L + 1), cxx ((size_t) L + 1), cxy ((size_t) L + 1);
    for (int i = 0; i < L; ++i)
    {
        const double x = i * frameS, v = level[(size_t) i];
        cx[(size_t) i + 1] = cx[(size_t) i] + x;
        cy[(size_t) i + 1] = cy[(size_t) i] + v;
        cxx[(size_t) i + 1] = cxx[(size_t) i] + x * x;
        cxy[(size_t) i + 1] = cxy[(size_t) i] + x * v;
    }
    int bestStart = 0, bestEnd = 0;
    for (int end = last; end >= width; --end)
    {
        if (end <= bestEnd - bestStart)
            break;  // no stretch ending here can be longer
        const int top = end - width;  // the last averaged window lying wholly inside the stretch [a, end)
        int first = -1;
        double hiLevel = -1e300, loLevel = 1e300;
        for (int a = top; a >= 0; --a)  // the smallest a that passes is the longest stretch ending here
        {
            hiLevel = std::max (hiLevel, level[(size_t) a]);
            loLevel = std::min (loLevel, level[(size_t) a]);
            const double n = top + 1 - a;
            const double sx = cx[(size_t) top + 1] - cx[(size_t) a], sy = cy[(size_t) top + 1] - cy[(size_t) a];
            const double sxx = cxx[(size_t) top + 1] - cxx[(size_t) a], sxy = cxy[(size_t) top + 1] - cxy[(size_t) a];
            const double denom = n * sxx - sx * sx;
            const double slope = denom > 0 ? (n * sxy - sx * sy) / denom : 0.0;
            if (hiLevel - loLevel <= steadyDb && loLevel >= floor && std::abs (slope) <= maxSlopeDbPerS)
                first = a;
        }
        if (first < 0)
            continue;
        const double mean = db (meanPower (power, first, end));
        const int afterEnd = std::min (P, end + afterFrames);
        const bool released = db (meanPower (power, end - tail, end)) < mean - releaseDropDb
                              || (afterEnd > end && db (meanPower (power, end, afterEnd)) < mean - afterDropDb);
        if (! released && end - first > bestEnd - bestStart)
        {
            bestStart = first;
            bestEnd = end;
        }
    }
    if ((double) (bestEnd - bestStart) * frame < sustainShare * (double) y.size())
        return false;
    lo = std::max (bestStart, bestEnd - frameCount (maxLoopS)) * frame;
    hi = bestEnd * frame;
    return true;
}
} // namespace

Loop Engine::findLoop (const std::vector<float>& yf, int sr)
{
    const std::vector<double> y (yf.begin(), yf.end());
    for (double v : y)
        if (! std::isfinite (v))
            return {};
    int lo = 0, hi = 0;
    if (! sustain (y, sr, lo, hi))
        return {};
    std::vector<int> crossings;
    for (int i = lo; i + 1 < hi; ++i)
        if (y[(size_t) i] < 0.0 && y[(size_t) i + 1] >= 0.0)
            crossings.push_back (i + 1);
    if (crossings.size() < 2)
        return {};
    const int m = (int) (matchS * sr), end = crossings.back();
    // Starts in the first third of the sustain keep the loop long; each must leave a crossfade's room before it.
    std::vector<int> candidates;
    for (int c : crossings)
        if (c >= std::max (lo, m) && c <= lo + (hi - lo) / 3 && c <= end - (int) (minLoopS * sr))
            candidates.push_back (c);
    if (candidates.empty())
        return {};
    double tt = 0.0;
    for (int i = end - m; i < end; ++i)
        tt += y[(size_t) i] * y[(size_t) i];
    if (tt == 0.0)
        return {};
    // Waveform match: normalised cross-correlation of the MATCH_S before each start with that before the end.
    std::vector<double> scores;
    for (int c : candidates)
    {
        double dot = 0.0, energy = 0.0;
        for (int i = 0; i < m; ++i)
        {
            const double v = y[(size_t) (c - m + i)];
            dot += v * y[(size_t) (end - m + i)];
            energy += v * v;
        }
        scores.push_back (dot / std::sqrt (std::max (energy, 1e-20) * tt));
    }
    // Envelope match: only starts whose preceding MATCH_ENVELOPE_S envelope is within ENVELOPE_SLACK_DB of the best.
    if (candidates.front() >= (int) (matchEnvelopeS * sr))
    {
        const int frame = (int) (frameS * sr), k = frameCount (matchEnvelopeS);
        auto envelope = [&] (int at)
        {
            auto p = powerFrames (y, at - k * frame, at, frame);
            for (auto& v : p)
                v = db (v);
            return p;
        };
        const auto ref = envelope (end);
        std::vector<double> mismatch;
        for (int c : candidates)
        {
            const auto e = envelope (c);
            double s = 0.0;
            for (size_t i = 0; i < e.size(); ++i)
                s += std::abs (e[i] - ref[i]);
            mismatch.push_back (s / (double) e.size());
        }
        const double least = *std::min_element (mismatch.begin(), mismatch.end());
        for (size_t i = 0; i < scores.size(); ++i)
            if (! (mismatch[i] <= least + envelopeSlackDb))
                scores[i] = -HUGE_VAL;
    }
    const size_t best = (size_t) (std::max_element (scores.begin(), scores.end()) - scores.begin());
    const int start = candidates[best];
    const int fade = std::min ({ (int) (crossfadeS * sr), (end - start) / 3, start });
    return { start, end, (float) scores[best], fade };
}

void Engine::crossfade (std::vector<float>& y, const Loop& loop)
{
    const int n = loop.crossfade;
    if (! loop.valid() || n <= 0 || loop.end > (int) y.size() || loop.start < n)
        return;
    const float* tail = y.data() + (loop.end - n);
    const float* head = y.data() + (loop.start - n);
    double tt = 0.0, hh = 0.0, th = 0.0;
    for (int i = 0; i < n; ++i)
    {
        tt += (double) tail[i] * tail[i];
        hh += (double) head[i] * head[i];
        th += (double) tail[i] * head[i];
    }
    const double norm = std::sqrt (tt * hh);
    const double rho = norm > 0.0 ? std::clamp (th / norm, -0.5, 1.0) : 0.0;
    float* out = y.data() + (loop.end - n);  // head lies before the loop's start, tail inside it: no overlap
    for (int i = 0; i < n; ++i)
    {
        const double t = (i + 0.5) / n, a = 1.0 - t, b = t;
        const double gain = 1.0 / std::sqrt (a * a + b * b + 2.0 * rho * a * b);
        out[i] = (float) (gain * (a * (double) tail[i] + b * (double) head[i]));
    }
}

namespace
{
/** samplegen.audio.audio_io.frame_rms_db of y[begin, end): RMS of each whole frame in dBFS, floored at -200 dB. */
std::vector<double> frameRmsDb (const std::vector<double>& y, size_t begin, size_t end, size_t frame)
{
    const size_t len = end - begin;
    auto db = [] (double meanSquare) { return 20.0 * std::log10 (std::max (std::sqrt (meanSquare), 1e-10)); };
    if (len < frame)
    {
        double sum = 0.0;
        for (size_t i = begin; i < end; ++i)
            sum += y[i] * y[i];
        return { db (len > 0 ? sum / (double) len : 0.0) };
    }
    std::vector<double> env (len / frame);
    for (size_t k = 0; k < env.size(); ++k)
    {
        double sum = 0.0;
        for (size_t j = 0; j < frame; ++j)
            sum += y[begin + k * frame + j] * y[begin + k * frame + j];
        env[k] = db (sum / (double) frame);
    }
    return env;
}

/** samplegen.audio.audio_io.noise_lead_in: samples of steady background before the note starts (0: none). */
size_t noiseLeadIn (const std::vector<double>& y, int sr)
{
    const size_t frame = (size_t) std::max (1, (int) (sr * 0.01));
    const auto env = frameRmsDb (y, 0, y.size(), frame);
    const size_t first = (size_t) std::max (1L, std::lround (0.05 / 0.01));  // NOISE_LEAD_S
    if (env.size() <= first)
        return 0;
    std::vector<double> lead (env.begin(), env.begin() + (long) first);
    std::sort (lead.begin(), lead.end());
    const double floor = first % 2 ? lead[first / 2] : 0.5 * (lead[first / 2 - 1] + lead[first / 2]);
    if (floor > *std::max_element (env.begin(), env.end()) - 20.0)  // NOISE_BELOW_PEAK_DB
        return 0;
    size_t end = 0;
    while (end < env.size() && ! (env[end] > floor + 6.0))  // NOISE_RISE_DB
        ++end;
    if (end == env.size())
        end = 0;
    if (end < first)
        return 0;
    const size_t fine = (size_t) std::max (1, (int) (sr * 0.001));
    const auto sub = frameRmsDb (y, end * frame, std::min ((end + 1) * frame, y.size()), fine);
    size_t rise = 0;
    while (rise < sub.size() && ! (sub[rise] > floor + 6.0))
        ++rise;
    return end * frame + (rise == sub.size() ? 0 : rise) * fine;
}

/** samplegen.audio.audio_io.onset_sample: the first 2.9 ms frame within 40 dB of the loudest, or the end of a noise lead-in. */
size_t onsetSample (const std::vector<double>& y, int sr)
{
    const size_t frame = (size_t) std::max (1, (int) (sr * 0.0029));
    const auto env = frameRmsDb (y, 0, y.size(), frame);
    const double threshold = *std::max_element (env.begin(), env.end()) - 40.0;
    size_t k = 0;
    while (k < env.size() && env[k] < threshold)
        ++k;
    return std::max (k * frame, noiseLeadIn (y, sr));
}
} // namespace

double Engine::pitchHz (const std::vector<float>& yf, int sr)
{
    constexpr double fmin = 50.0, fmax = 2000.0;
    const std::vector<double> y (yf.begin(), yf.end());
    double peak = 0.0;
    for (double v : y)
    {
        if (! std::isfinite (v))
            return 0.0;
        peak = std::max (peak, std::abs (v));
    }
    const size_t maxLag = (size_t) (sr / fmin), minLag = std::max ((size_t) 2, (size_t) (sr / fmax));
    if (y.size() < maxLag * 3 || peak < 1e-6)
        return 0.0;
    const size_t tail = y.size() > (size_t) (0.2 * sr) ? y.size() - (size_t) (0.2 * sr) : 0;
    const size_t start = std::min (onsetSample (y, sr) + (size_t) (0.05 * sr), tail);
    const size_t length = std::min ((size_t) (0.5 * sr), y.size() - start);
    if (length < 2 * maxLag)
        return 0.0;
    const double* x = y.data() + start;
    const size_t w = length - maxLag;
    std::vector<double> energy (length + 1, 0.0);
    for (size_t i = 0; i < length; ++i)
        energy[i + 1] = energy[i] + x[i] * x[i];
    // corr(tau) = sum_{j<w} x_j x_{j+tau} through one FFT size (as Python's numpy.fft): 40 times faster than the sums.
    int size = 1;
    while ((size_t) size < length + w)
        size *= 2;
    std::vector<float, FftwAllocator<float>> whole ((size_t) size, 0.0f), head ((size_t) size, 0.0f);
    std::vector<std::complex<float>, FftwAllocator<std::complex<float>>> wholeBins ((size_t) size / 2 + 1),
        headBins ((size_t) size / 2 + 1);
    for (size_t i = 0; i < length; ++i)
        whole[i] = (float) x[i];
    std::copy (whole.begin(), whole.begin() + (long) w, head.begin());
    fftwf_plan plans[3];
    {
        const std::lock_guard<std::mutex> lock (plannerLock());
        plans[0] = fftwf_plan_dft_r2c_1d (size, whole.data(), reinterpret_cast<fftwf_complex*> (wholeBins.data()), FFTW_ESTIMATE);
        plans[1] = fftwf_plan_dft_r2c_1d (size, head.data(), reinterpret_cast<fftwf_complex*> (headBins.data()), FFTW_ESTIMATE);
        plans[2] = fftwf_plan_dft_c2r_1d (size, reinterpret_cast<fftwf_complex*> (wholeBins.data()), whole.data(), FFTW_ESTIMATE);
    }
    fftwf_execute (plans[0]);
    fftwf_execute (plans[1]);
    for (size_t k = 0; k < wholeBins.size(); ++k)
        wholeBins[k] *= std::conj (headBins[k]);
    fftwf_execute (plans[2]);
    {
        const std::lock_guard<std::mutex> lock (plannerLock());
        for (auto* plan : plans)
            fftwf_destroy_plan (plan);
    }
    // YIN's cumulative-mean-normalised difference of d(tau) = sum_{j<w} (x_j - x_{j+tau})^2.
    std::vector<double> cmnd (maxLag + 1, 1.0);
    double cumulative = 0.0;
    for (size_t tau = 1; tau <= maxLag; ++tau)
    {
        const double corr = (double) whole[tau] / size;
        const double d = energy[w] + (energy[tau + w] - energy[tau]) - 2.0 * corr;
        cumulative += d;
        cmnd[tau] = d * (double) tau / std::max (cumulative, 1e-12);
    }
    size_t tau = minLag;
    while (tau <= maxLag && ! (cmnd[tau] < 0.15))
        ++tau;
    if (tau > maxLag)
        return 0.0;
    while (tau + 1 <= maxLag && cmnd[tau + 1] < cmnd[tau])
        ++tau;
    double shift = 0.0;
    if (tau >= 1 && tau < maxLag)
    {
        const double a = cmnd[tau - 1], b = cmnd[tau], c = cmnd[tau + 1], denom = a - 2.0 * b + c;
        shift = std::abs (denom) > 1e-12 ? 0.5 * (a - c) / denom : 0.0;
    }
    return (double) sr / ((double) tau + shift);
}

double Engine::pitchOffsetSemitones (const std::vector<float>& y, int sampleRate)
{
    constexpr double c4Hz = 261.6255653005986;  // samplegen.audio.audio_io.C4_HZ
    const double hz = pitchHz (y, sampleRate);
    if (hz <= 0.0)
        return 0.0;
    const double folded = std::fmod (1200.0 * std::log2 (hz / c4Hz) + 600.0, 1200.0);  // corpus.cents_from_c
    return ((folded < 0.0 ? folded + 1200.0 : folded) - 600.0) / 100.0;
}

} // namespace samplegen
