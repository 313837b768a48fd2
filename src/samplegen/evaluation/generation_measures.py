"""How the field judges generated notes: in tune, diverse, realistic, new, smooth (GANSynth's measures, here).

Every measure compares generated notes with real ones, and the same measure taken on the real held-out
notes is the reference a model should come near:

- **pitch**: cents from C4 of each note (:func:`samplegen.audio.audio_io.estimate_pitches_hz`), summarised by
  :func:`cents_summary`;
- **diversity**, NDB/K (Richardson & Weiss 2018): k-means bins of the training notes' log-mel
  spectrograms; the share of bins whose occupancy by the generated notes differs from the training
  notes' (two-proportion z-test, α = 0.05) (:func:`ndb`);
- **realism**: a small classifier trained here on the corpus's family labels (:class:`FamilyClassifier`);
  the Fréchet distance between its embeddings of generated and of training notes, and the family entropy
  of the generated notes (an inception-style score);
- **novelty**: each note's log-mel distance to its nearest training note, against the typical distance
  between two training notes (a copy sits much nearer its neighbour than real notes do);
- **smooth paths**: along an interpolation path, the largest step between neighbours over the mean step.

Everything runs on log-mel spectrograms of a fixed analysis (:func:`log_mel`), independent of the model's
own STFT, so two runs are judged alike; nothing is downloaded.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import linalg
from scipy.cluster.vq import kmeans2
from scipy.optimize import minimize

from samplegen.audio.audio_io import C4_HZ, SAMPLE_RATE
from samplegen.errors import ParameterError
from samplegen.model.baselines import PCABaseline

MEL_N_FFT = 2048
MEL_HOP = 512
MEL_BANDS = 64
MEL_FMIN_HZ = 30.0
MEL_FMAX_HZ = 16000.0
#: Neighbouring STFT frames averaged into one log-mel frame (46 ms): coarse enough for 1,000 × 1,000
#: note distances in about a second, fine enough for attacks.
MEL_POOL = 4
#: Each note's log-mel is in dB below its own loudest value, floored this far down: level is not judged.
MEL_RANGE_DB = 80.0
#: Notes per STFT in :func:`log_mel` (keeps each spectrogram batch near 25 MB).
MEL_BATCH = 32
NDB_BINS = 50
NDB_ALPHA = 0.05
#: Classifier: the training notes' log-mels reduced to this many principal components, one hidden
#: layer of EMBED_DIM units (the embedding the Fréchet distance is taken in), then the families.
CLASSIFIER_PCA = 128
EMBED_DIM = 64
CLASSIFIER_STEPS = 300
CLASSIFIER_L2 = 1e-3
#: A path whose largest step is more than this many mean steps jumps instead of blending.
PATH_JUMP_RATIO = 2.0


# --- log-mel ---------------------------------------------------------------------------------------------

def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


@functools.lru_cache(maxsize=4)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = MEL_N_FFT, bands: int = MEL_BANDS,
                   fmin: float = MEL_FMIN_HZ, fmax: float = MEL_FMAX_HZ) -> torch.Tensor:
    """Triangular filters evenly spaced on the HTK mel scale, peak 1: Tensor[bands x (n_fft/2 + 1)] (float64).

    The same matrix as ``librosa.filters.mel(htk=True, norm=None)`` (a test holds it to that): written
    here because librosa is only a test dependency, and eight lines do not earn it a place at run time.
    """
    fft_hz = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), bands + 2)
    edges = 700.0 * (10 ** (mel_pts / 2595.0) - 1.0)
    lower = (fft_hz[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - fft_hz[None]) / (edges[2:] - edges[1:-1])[:, None]
    return torch.from_numpy(np.maximum(0.0, np.minimum(lower, upper)))


def log_mel(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel spectrograms of notes (B, n): float32 (B, MEL_BANDS, frames), dB below each note's own peak.

    Power through :func:`mel_filterbank` (Hann STFT 2048/512), :data:`MEL_POOL` frames averaged, in dB
    relative to the note's loudest band-frame and floored :data:`MEL_RANGE_DB` below it.
    """
    x = torch.as_tensor(np.atleast_2d(np.asarray(audio, dtype=np.float32)))
    if x.shape[-1] < MEL_N_FFT // 2 + 1 or not torch.isfinite(x).all():
        raise ParameterError(f"log_mel needs finite notes of at least {MEL_N_FFT // 2 + 1} samples, got {tuple(x.shape)}")
    bank = mel_filterbank(sr).float()
    window = torch.hann_window(MEL_N_FFT)
    out = []
    for start in range(0, len(x), MEL_BATCH):
        spec = torch.stft(x[start : start + MEL_BATCH], MEL_N_FFT, MEL_HOP, window=window, center=True,
                          return_complex=True)
        power = bank @ torch.view_as_real(spec).pow(2).sum(-1)  # B x M x T
        pool = MEL_POOL if power.shape[-1] >= MEL_POOL else 1
        frames = power.shape[-1] // pool * pool
        power = power[..., :frames].reshape(*power.shape[:2], -1, pool).mean(dim=-1)
        db = 10 * torch.log10(power.clamp_min(1e-30))
        out.append((db - db.amax(dim=(1, 2), keepdim=True)).clamp_min(-MEL_RANGE_DB))
    return torch.cat(out).numpy()


def mel_distances_db(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Log-spectral distance (dB) between every log-mel of ``a`` (A, M, T) and of ``b`` (B, M, T): (A, B).

    Per frame the RMS over bands of the dB difference, then the mean over frames (LSD on the mel scale).
    One matrix product per frame, so 1,000 × 1,000 notes take about a second.
    """
    ta, tb = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    if ta.shape[1:] != tb.shape[1:]:
        raise ParameterError(f"log-mels of different shapes: {tuple(ta.shape[1:])} and {tuple(tb.shape[1:])}")
    total = torch.zeros(ta.shape[0], tb.shape[0], dtype=torch.float64)
    bands, frames = ta.shape[1], ta.shape[2]
    for t in range(frames):
        fa, fb = ta[:, :, t].double(), tb[:, :, t].double()
        sq = fa.pow(2).sum(1)[:, None] + fb.pow(2).sum(1)[None] - 2 * fa @ fb.T
        total += (sq.clamp_min(0) / bands).sqrt()
    return (total / frames).numpy()


# --- pitch -----------------------------------------------------------------------------------------------

def cents_summary(hz: np.ndarray) -> dict[str, float | int | None]:
    """Cents from C4 of notes' f0 (NaN = unpitched): median, 90th percentile of |cents|, shares within ±10 / ±25.

    Shares count unpitched notes as out of tune; ``within_25_folded`` forgives whole octaves (a note an
    octave off C4 is in tune on a keyboard, and the tracker measures periodicity).
    """
    hz = np.asarray(hz, dtype=np.float64)
    pitched = np.isfinite(hz) & (hz > 0)
    cents = np.full(len(hz), np.nan)
    cents[pitched] = 1200 * np.log2(hz[pitched] / C4_HZ)
    a = np.abs(cents)
    folded = np.abs((cents + 600.0) % 1200.0 - 600.0)
    have = bool(pitched.any())
    return {
        "n": int(len(hz)),
        "unpitched_fraction": float(np.mean(~pitched)) if len(hz) else 0.0,
        "median_cents": float(np.median(cents[pitched])) if have else None,
        "p90_abs_cents": float(np.percentile(a[pitched], 90)) if have else None,
        "within_10": float(np.mean(a <= 10)) if len(hz) else 0.0,
        "within_25": float(np.mean(a <= 25)) if len(hz) else 0.0,
        "within_25_folded": float(np.mean(folded <= 25)) if len(hz) else 0.0,
    }


# --- diversity: NDB/K ------------------------------------------------------------------------------------

@dataclass
class NdbBins:
    """k-means bins of the training notes: centroids (K, D) and the training notes' share in each bin."""

    centroids: np.ndarray
    train_counts: np.ndarray

    @classmethod
    def fit(cls, train: np.ndarray, k: int = NDB_BINS, seed: int = 0) -> "NdbBins":
        """k-means (k-means++ start) on flattened training log-mels (N, ...); k is at most N // 2."""
        x = train.reshape(len(train), -1).astype(np.float64)
        k = max(2, min(k, len(x) // 2))
        if len(x) < 4:
            raise ParameterError(f"NDB needs at least 4 training notes, got {len(x)}")
        centroids, labels = kmeans2(x, k, minit="++", seed=np.random.default_rng(seed))
        return cls(centroids, np.bincount(labels, minlength=k))

    def assign(self, notes: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(notes.reshape(len(notes), -1), dtype=torch.float64)
        return torch.cdist(x, torch.as_tensor(self.centroids)).argmin(dim=1).numpy()

    def counts(self, notes: np.ndarray) -> np.ndarray:
        return np.bincount(self.assign(notes), minlength=len(self.centroids))


def ndb(bins: NdbBins, notes: np.ndarray, alpha: float = NDB_ALPHA) -> dict[str, float | int]:
    """Number of statistically different bins between ``notes`` (log-mels) and the training notes.

    Per bin, a two-proportion z-test of the share of ``notes`` in it against the training notes' share;
    ``ndb_k`` is the share of the K bins where they differ at ``alpha`` (two-sided). A set drawn like the
    training notes scores near ``alpha`` (chance), one that misses or over-fills regions scores higher.
    """
    from scipy.stats import norm

    counts = bins.counts(notes)
    n1, n2 = int(bins.train_counts.sum()), int(counts.sum())
    p1, p2 = bins.train_counts / n1, counts / n2
    pooled = (bins.train_counts + counts) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = np.where(se > 0, (p2 - p1) / np.where(se > 0, se, 1), 0.0)
    different = np.abs(z) > norm.ppf(1 - alpha / 2)
    return {"ndb": int(different.sum()), "k": len(counts), "ndb_k": float(different.mean()), "n": n2,
            "empty_bins": int((counts == 0).sum())}


# --- realism: a family classifier ------------------------------------------------------------------------

class FamilyClassifier:
    """A small network trained here on the training notes' family labels, from their log-mels.

    The log-mels are standardised and projected on their first :data:`CLASSIFIER_PCA` principal
    components, then one hidden layer of :data:`EMBED_DIM` GELU units (the embedding) and a linear layer
    to the families; full-batch L-BFGS on cross-entropy with a small L2 penalty, seeded, so the same notes give the same
    classifier.
    """

    def __init__(self, train: np.ndarray, families: Sequence[str], seed: int = 0) -> None:
        self.families = sorted(set(families))
        if len(self.families) < 2:
            raise ParameterError(f"the classifier needs at least two families, the corpus has {self.families}")
        x = torch.as_tensor(train.reshape(len(train), -1), dtype=torch.float64)
        self.mean = x.mean(dim=0)
        self.std = x.std(dim=0).clamp_min(1e-3)
        self.pca = PCABaseline.fit((x - self.mean) / self.std, min(CLASSIFIER_PCA, len(x) - 1, x.shape[1]))
        feats = self.pca.encode(((x - self.mean) / self.std).float())
        self.scale = feats.std(dim=0).clamp_min(1e-6)
        dims = feats.shape[1]
        labels = torch.tensor([self.families.index(f) for f in families])
        g = torch.Generator().manual_seed(seed)
        hidden = torch.nn.Linear(dims, EMBED_DIM)
        out = torch.nn.Linear(EMBED_DIM, len(self.families))
        for layer in (hidden, out):
            torch.nn.init.normal_(layer.weight, std=1 / math.sqrt(layer.in_features), generator=g)
            torch.nn.init.zeros_(layer.bias)
        self.net = torch.nn.Sequential(hidden, torch.nn.GELU(), out)
        inputs = feats / self.scale
        params = list(self.net.parameters())
        vector = torch.nn.utils.parameters_to_vector(params).detach().double().numpy()

        def loss_and_grad(v: np.ndarray) -> tuple[float, np.ndarray]:
            torch.nn.utils.vector_to_parameters(torch.as_tensor(v, dtype=torch.float32), params)
            for p in params:
                p.grad = None
            loss = torch.nn.functional.cross_entropy(self.net(inputs), labels) + CLASSIFIER_L2 * sum(
                p.pow(2).sum() for p in (hidden.weight, out.weight))
            loss.backward()
            grad = torch.nn.utils.parameters_to_vector([p.grad for p in params])  # type: ignore[misc]
            return float(loss.detach()), grad.double().numpy()

        # Full-batch L-BFGS (scipy): deterministic, and no torch.optim, whose first step imports
        # torch._dynamo (seconds of an evaluation for nothing).
        fit = minimize(loss_and_grad, vector, jac=True, method="L-BFGS-B",
                       options={"maxiter": CLASSIFIER_STEPS})
        torch.nn.utils.vector_to_parameters(torch.as_tensor(fit.x, dtype=torch.float32), params)
        self.net.eval()

    def _inputs(self, notes: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(notes.reshape(len(notes), -1), dtype=torch.float64)
        return self.pca.encode(((x - self.mean) / self.std).float()) / self.scale

    def embed(self, notes: np.ndarray) -> np.ndarray:
        """The hidden layer's activations (N, EMBED_DIM), float64: the space the Fréchet distance uses."""
        with torch.no_grad():
            return self.net[1](self.net[0](self._inputs(notes))).double().numpy()

    def probabilities(self, notes: np.ndarray) -> np.ndarray:
        """Family probabilities (N, families), columns in the order of ``self.families``."""
        with torch.no_grad():
            return torch.softmax(self.net(self._inputs(notes)), dim=1).double().numpy()

    def accuracy(self, notes: np.ndarray, families: Sequence[str]) -> float:
        """Share of ``notes`` whose most probable family is their label (labels unseen in training count as wrong)."""
        pred = self.probabilities(notes).argmax(axis=1)
        return float(np.mean([self.families[p] == f for p, f in zip(pred, families)]))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to embeddings ``a`` (N, D) and ``b`` (M, D)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # a singular product: nudge both covariances, as FID implementations do
        eps = 1e-6 * np.eye(len(cov_a))
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(root)))


def family_scores(probs: np.ndarray, families: Sequence[str]) -> dict:
    """Inception-style figures of classifier probabilities (N, F).

    ``family_entropy_bits``: entropy of the mean distribution (how evenly notes spread over families;
    log2 F at most); ``mean_note_entropy_bits``: mean entropy of each note's distribution (low = each
    note is clearly of one family); ``inception_score``: exp of the mean KL from each note's
    distribution to the mean one (between 1 and F; high = clear and varied).
    """
    p = np.clip(probs, 1e-12, 1.0)
    marginal = p.mean(axis=0)
    per_note = -(p * np.log(p)).sum(axis=1)
    kl = (p * (np.log(p) - np.log(marginal)[None])).sum(axis=1)
    share = np.bincount(probs.argmax(axis=1), minlength=len(families)) / len(probs)
    return {"family_entropy_bits": float(-(marginal * np.log2(marginal)).sum()),
            "mean_note_entropy_bits": float(per_note.mean() / math.log(2)),
            "inception_score": float(math.exp(kl.mean())),
            "family_shares": {f: round(float(s), 4) for f, s in zip(families, share)}}


# --- the reference real notes give, and judging a set against it ------------------------------------------

@dataclass
class RealNotes:
    """What the training notes give every judged set: their log-mels, NDB bins and family classifier.

    ``classifier`` is None for a corpus of one family (nothing to learn).
    """

    train: np.ndarray
    bins: NdbBins
    classifier: FamilyClassifier | None
    train_embedding: np.ndarray | None
    typical_pair_db: float

    @classmethod
    def fit(cls, train: np.ndarray, families: Sequence[str], seed: int = 0) -> "RealNotes":
        """``train``: log-mels (N, M, T) of the training notes; ``families``: their labels."""
        classifier = FamilyClassifier(train, families, seed) if len(set(families)) >= 2 else None
        pair = mel_distances_db(train, train)
        typical = float(np.median(pair[np.triu_indices(len(train), k=1)])) if len(train) > 1 else float("nan")
        return cls(train, NdbBins.fit(train, seed=seed), classifier,
                   classifier.embed(train) if classifier is not None else None, typical)


def judge(real: RealNotes, notes: np.ndarray, hz: np.ndarray, families: Sequence[str] | None = None) -> dict:
    """Every measure of one set of notes (log-mels (N, M, T) and f0 (N,)) against the training notes.

    ``families``: the notes' true labels when they are real (held-out notes), for the classifier's accuracy.
    """
    nearest = mel_distances_db(notes, real.train).min(axis=1)
    out: dict = {
        "pitch": cents_summary(hz),
        "diversity": ndb(real.bins, notes),
        "novelty": {"nearest_train_db_median": float(np.median(nearest)),
                    "nearest_train_db_p10": float(np.percentile(nearest, 10)),
                    "typical_train_pair_db": real.typical_pair_db,
                    "nearest_over_typical": float(np.median(nearest) / real.typical_pair_db)},
        "realism": None,
    }
    if real.classifier is not None and real.train_embedding is not None:
        c = real.classifier
        realism = {"frechet": frechet_distance(c.embed(notes), real.train_embedding),
                   **family_scores(c.probabilities(notes), c.families)}
        if families is not None:
            realism["classifier_accuracy"] = c.accuracy(notes, families)
        out["realism"] = realism
    return out


def path_smoothness(path_mels: np.ndarray) -> dict[str, float | int]:
    """Interpolation paths (P, steps, M, T) of log-mels: largest step between neighbours over the mean step.

    1 is an even blend; a path whose ratio exceeds :data:`PATH_JUMP_RATIO` switches from one sound to the
    other in one step rather than blending. Steps are the mel LSD between neighbouring steps.
    """
    ratios = []
    for path in path_mels:
        steps = np.array([mel_distances_db(path[i : i + 1], path[i + 1 : i + 2])[0, 0] for i in range(len(path) - 1)])
        ratios.append(float(steps.max() / steps.mean()) if steps.mean() > 0 else 1.0)
    r = np.array(ratios)
    return {"n_paths": len(r), "max_over_mean_step_median": float(np.median(r)),
            "max_over_mean_step_p90": float(np.percentile(r, 90)), "max_over_mean_step_max": float(r.max()),
            "jumping_path_fraction": float(np.mean(r > PATH_JUMP_RATIO)), "jump_ratio": PATH_JUMP_RATIO}
