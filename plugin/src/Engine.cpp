#include "Engine.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <queue>

namespace samplegen
{
namespace
{
constexpr double pi = 3.14159265358979323846;

void applyDense (const Dense& d, const float* x, float* y)
{
    std::copy (d.bias.begin(), d.bias.end(), y);
    for (int i = 0; i < d.in; ++i)
    {
        const float xi = x[i];
        const float* w = d.weightT.data() + (size_t) i * (size_t) d.out;
        for (int o = 0; o < d.out; ++o)
            y[o] += w[o] * xi;
    }
    if (d.gelu)
        for (int o = 0; o < d.out; ++o)
            y[o] = 0.5f * y[o] * (1.0f + std::erf (y[o] * 0.70710678118654752f));
}

/** |c| without hypot's overflow guard: magnitudes here are far from float's limits. */
inline float magnitudeOf (std::complex<float> c)
{
    return std::sqrt (c.real() * c.real() + c.imag() * c.imag());
}

/** Runs layers in turn; returns the last layer's output (in `a` or `b`, both scratch). */
const std::vector<float>& applyLayers (const std::vector<Dense>& layers, const float* x, std::vector<float>& a,
                                       std::vector<float>& b)
{
    const float* in = x;
    std::vector<float>* out = &a;
    for (auto& l : layers)
    {
        out->resize ((size_t) l.out);
        applyDense (l, in, out->data());
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
    std::vector<float> s1, s2, lin ((size_t) b.linear.out), m1, m2, row ((size_t) b.nBins);
    const auto& stackOut = applyLayers (b.stack, z, s1, s2);
    applyDense (b.linear, z, lin.data());
    std::vector<float> h (lin.size());
    for (size_t i = 0; i < h.size(); ++i)
        h[i] = stackOut[i] + lin[i];
    features.assign ((size_t) b.nFrames * (size_t) b.nBins, 0.0f);
    for (int t = 0; t < b.nFrames; ++t)
    {
        const float* ht = h.data() + (size_t) t * (size_t) b.frameDim;
        float* out = features.data() + (size_t) t * (size_t) b.nBins;
        applyDense (b.frame, ht, out);
        if (! b.frameMlp.empty())
        {
            const auto& extra = applyLayers (b.frameMlp, ht, m1, m2);
            for (int k = 0; k < b.nBins; ++k)
                out[k] += extra[(size_t) k];
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
            // As samplegen.features: log(max(v, floor)) / p, then exp (p = 0: v is the log itself).
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
        // Phase gradients from the log magnitude (Prusa et al. 2017), as samplegen.spectral.pghi_gradients.
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
        // Consistent spectrogram of a faded-in signal, momentum, then the given magnitude (samplegen.spectral).
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

Loop Engine::findLoop (const std::vector<float>& yf, int sr)
{
    // samplegen.loop: FRAME_S 0.01, MATCH_S 0.02, MIN_LOOP_S 0.1, -30 dB floor, -6 dB/s, correlation 0.9, tail 0.1 s.
    const std::vector<double> y (yf.begin(), yf.end());
    const int len = (int) y.size();
    const int frame = (int) (0.01 * sr);
    if (len < frame)
        return {};
    const int nEnv = len / frame;
    std::vector<double> env ((size_t) nEnv);
    for (int f = 0; f < nEnv; ++f)
    {
        double s = 0.0;
        for (int i = 0; i < frame; ++i)
            s += y[(size_t) (f * frame + i)] * y[(size_t) (f * frame + i)];
        env[(size_t) f] = 20.0 * std::log10 (std::max (std::sqrt (s / frame), 1e-10));
    }
    const int peak = (int) (std::max_element (env.begin(), env.end()) - env.begin());
    const int first = peak + 10, last = nEnv - 10, shortest = 25, longest = 100;
    int lo = -1, hi = -1;
    for (int end = last; end >= first + shortest; --end)
    {
        const int start = std::max (first, end - longest);
        const int n = end - start;
        double sx = 0, sy = 0, sxx = 0, sxy = 0, minW = 1e300;
        for (int i = 0; i < n; ++i)
        {
            const double x = i * 0.01, w = env[(size_t) (start + i)];
            sx += x; sy += w; sxx += x * x; sxy += x * w;
            minW = std::min (minW, w);
        }
        const double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        if (minW >= env[(size_t) peak] - 30.0 && slope >= -6.0)
        {
            lo = start * frame;
            hi = end * frame;
            break;
        }
    }
    if (lo < 0)
        return {};
    std::vector<int> crossings;
    for (int i = lo; i + 1 < hi; ++i)
        if (y[(size_t) i] < 0.0 && y[(size_t) i + 1] >= 0.0)
            crossings.push_back (i + 1);
    if (crossings.size() < 2)
        return {};
    const int m = (int) (0.02 * sr), minLoop = (int) (0.1 * sr);
    const int end = crossings.back();
    const int offset = lo >= m ? lo - m : 0;
    double tt = 0.0;
    for (int i = end - m; i < end; ++i)
        tt += y[(size_t) i] * y[(size_t) i];
    if ((end - minLoop) - offset < m || tt == 0.0)
        return {};
    Loop best;
    double bestScore = -1e300;
    for (int c : crossings)
    {
        if (c < offset + m || c > end - minLoop)
            continue;
        double dot = 0.0, energy = 0.0;
        for (int i = 0; i < m; ++i)
        {
            const double v = y[(size_t) (c - m + i)];
            dot += v * y[(size_t) (end - m + i)];
            energy += v * v;
        }
        const double score = dot / std::sqrt (std::max (energy, 1e-20) * tt);
        if (score > bestScore)
        {
            bestScore = score;
            best = { c, end, (float) score };
        }
    }
    return bestScore >= 0.9 ? best : Loop {};
}

} // namespace samplegen
