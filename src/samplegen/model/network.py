"""The VAE and the plain auto-encoder baseline, and their config.

Both follow the seed's design — four fully-connected layers in the encoder,
the decoder its mirror — with one change that keeps the model small: a dense
layer shared across frames first maps each spectrum frame (F bins) to a few
``frame_dim`` features, so the first layer of the stack sees T·frame_dim
values instead of T·F (hundreds of millions of weights for a 2-second
44.1 kHz spectrogram).  The decoder ends with the mirror of that layer.

Beside each dense stack runs a linear path (frame features → μ in the
encoder, z → frame features in the decoder).  :func:`init_from_pca` starts
the frame layers at the principal axes of the training frames and the linear
paths at the notes' principal components, with the stacks' last layers at
zero: training starts from the PCA baseline and only has to learn what PCA
misses.  Measured on the default corpus this reaches in tens of epochs what
a randomly started model does not reach in hundreds (BENCHMARKS.md).

Features are frame-major, Tensor[B x T x F] (the transpose of the STFT's
B x F x T), so the shared frame layer is one contiguous matmul; on this CPU
the transposes otherwise cost 40 % of a training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
from torch import nn

from samplegen.errors import ParameterError
from samplegen.model.baselines import PCABaseline
from samplegen.spectral.features import LOG_FLOOR, FeatureStats

Tensor = torch.Tensor
#: The log_l1 loss's floor below each note's peak: LSD's 80 dB (samplegen.evaluation.metrics.LSD_FLOOR), in nepers.
LSD_FLOOR_NEPERS = 80.0 / 20.0 * math.log(10.0)

MODEL_KINDS = ("vae", "ae")
#: With ``log_head``: bins more than this far below the note's loudest come from the log-domain head.
QUIET_GATE_DB = -50.0
QUIET_GATE_WIDTH_DB = 5.0


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model; saved as JSON beside its weights and enough to rebuild it.

    Attributes
    ----------
    kind : "vae" (mean and log-variance heads, KL to N(0, I)) or "ae" (one head, no KL)
    n_bins, n_frames : spectrogram size the model reads and writes (F x T)
    frame_dim : features per frame after the shared frame layer
    hidden : widths of the dense stack, input side first (the decoder mirrors them)
    latent_dim : size of the latent vector, one per note
    frame_hidden : width of the nonlinear frame decoder beside the linear frame layer (0: none, as in
        runs before format 3); lifts the output above the rank of ``frame_dim`` basis spectra
    log_head : quiet bins (more than 50 dB below the note's loudest) come from a second, log-domain frame
        layer trained by the log-magnitude loss alone (runs before format 4: none); see :class:`Decoder`
    log_head_residual : with ``log_head``, that layer corrects the compressed branch's own log level instead
        of writing the level itself, so the model starts exactly at its PCA start (runs before format 5: false)
    logvar_ceiling : the encoder's log σ² is −softplus(−raw), below 0 (a posterior no wider than the prior)
        rather than the raw output clamped at 20 (runs before format 6): one Adam step could throw the raw
        output to the clamp, and σ² = 5·10⁸ turned that batch's latents to noise (a training spike)
    log_head_hidden : with ``log_head``, the width of a per-frame MLP beside the head's linear frame layer (0: the
        head is linear, as in runs before format 8; always 0 without ``log_head``); the quiet bins, where most of
        the error lies, then no longer come from a mix of ``frame_dim`` basis spectra in the log domain
    """

    kind: str = "vae"
    n_bins: int = 1025
    n_frames: int = 173
    frame_dim: int = 64  # 32 until the fourteenth session: BENCHMARKS.md, "Twice the frame code"
    # (384, 211, 116, 64), found by `samplegen tune`, until the sixteenth session: BENCHMARKS.md, "Mixtures smooth the blends"
    hidden: tuple[int, ...] = (384, 384, 384, 384)
    latent_dim: int = 16
    frame_hidden: int = 256  # 128 until the tenth session: BENCHMARKS.md, "A wider frame network in the same time"
    log_head: bool = True  # the default since the sixth session: BENCHMARKS.md, "The log head as the default"
    log_head_residual: bool = True
    logvar_ceiling: bool = True
    log_head_hidden: int = 512  # 0 until the eleventh session, 256 in it: BENCHMARKS.md, "A wider log head"

    @property
    def head_writes_level(self) -> bool:
        """A log head as run format 4 made it: it writes the quiet bins' level and starts at each bin's mean."""
        return self.log_head and not self.log_head_residual

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ParameterError(f"kind={self.kind!r} must be one of {MODEL_KINDS}")
        for name in ("n_bins", "n_frames", "frame_dim", "latent_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name}={value!r} must be a positive integer")
        for name in ("frame_hidden", "log_head_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ParameterError(f"{name}={value!r} must be a non-negative integer (0: a linear frame layer)")
        if not self.log_head:  # no head, no head's MLP
            object.__setattr__(self, "log_head_hidden", 0)
        if len(self.hidden) < 1 or any((not isinstance(h, int)) or h < 1 for h in self.hidden):
            raise ParameterError(f"hidden={self.hidden!r} must be a non-empty list of positive integers")


def _frame_mlp(frame_dim: int, hidden: int, n_bins: int) -> nn.Sequential | None:
    """A per-frame MLP frame_dim → hidden → n_bins (None for hidden 0), added beside a linear frame layer."""
    if not hidden:
        return None
    return nn.Sequential(nn.Linear(frame_dim, hidden), nn.GELU(), nn.Linear(hidden, n_bins))


def _dense_stack(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.GELU()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Tensor[B x T x F] normalised features (compressed magnitude, see samplegen.spectral.features) → (μ, log σ²), each Tensor[B x L]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.frame = nn.Linear(cfg.n_bins, cfg.frame_dim)
        self.stack = _dense_stack([cfg.n_frames * cfg.frame_dim, *cfg.hidden])
        self.mu = nn.Linear(cfg.hidden[-1], cfg.latent_dim)
        self.linear = nn.Linear(cfg.n_frames * cfg.frame_dim, cfg.latent_dim)
        self.logvar = nn.Linear(cfg.hidden[-1], cfg.latent_dim) if cfg.kind == "vae" else None
        self.logvar_ceiling = cfg.logvar_ceiling

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.frame(x).flatten(1)  # B x (T·P)
        g = self.stack(h)
        if self.logvar is None:
            return self.mu(g) + self.linear(h), None
        raw = self.logvar(g)
        logvar = -nn.functional.softplus(-raw) if self.logvar_ceiling else raw
        return self.mu(g) + self.linear(h), logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """Tensor[B x L] latent → Tensor[B x T x F] normalised features.

    With ``log_head``, each output bin is a blend, in the log domain, of the compressed-magnitude branch
    (loud bins, trained by the squared error as before) and a log-domain frame layer (quiet bins, trained by
    the log-magnitude loss alone): the blend's weight is a sigmoid of the first branch's level re the note's
    loudest bin, centred at ``QUIET_GATE_DB``. Compressed magnitudes weigh the quiet bins, where LSD finds most
    of its error, almost nothing; the log domain weighs them as LSD does, while the loud bins, which decide a
    blend's loudness, keep their compressed-magnitude behaviour (no dipping paths). The decoder carries the
    feature map (mean, std, power) to leave and re-enter the normalised features.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.latent_dim, *reversed(cfg.hidden), cfg.n_frames * cfg.frame_dim]
        # No activation after the last layer: it adds to the linear path.
        self.stack = nn.Sequential(*list(_dense_stack(widths))[:-1])
        self.linear = nn.Linear(cfg.latent_dim, cfg.n_frames * cfg.frame_dim)
        self.frame = nn.Linear(cfg.frame_dim, cfg.n_bins)
        # Beside the linear frame layer: a per-frame MLP, so each frame is no longer a mix of frame_dim spectra.
        self.frame_mlp = _frame_mlp(cfg.frame_dim, cfg.frame_hidden, cfg.n_bins)
        if cfg.log_head:  # quiet bins in the log domain, where a frame basis fits them far better
            self.log_frame = nn.Linear(cfg.frame_dim, cfg.n_bins)
            self.log_mlp = _frame_mlp(cfg.frame_dim, cfg.log_head_hidden, cfg.n_bins)
            self.feat_mean: torch.Tensor
            self.feat_std: torch.Tensor
            self.feat_power: torch.Tensor
            self.register_buffer("feat_mean", torch.zeros(cfg.n_bins))
            self.register_buffer("feat_std", torch.ones(cfg.n_bins))
            self.register_buffer("feat_power", torch.ones(()))

    @torch.no_grad()
    def set_feature_map(self, mean: torch.Tensor, std: torch.Tensor, power: float) -> None:
        """The run's feature statistics, which a ``log_head`` decoder needs (saved with its weights)."""
        if self.cfg.log_head:
            if power <= 0:
                raise ParameterError("model.log_head needs compressed features: set features.magnitude_power > 0 "
                                     "or model.log_head false")
            self.feat_mean.copy_(mean)
            self.feat_std.copy_(std)
            self.feat_power.fill_(power)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.parts(z)[1]

    def branches(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the compressed-magnitude branch, the log head's raw output in nepers or None without ``log_head``).

        A residual head's output is a correction to the first branch's level, which the blend adds (it has that
        level at hand: computing it here too cost four passes over the batch on every step)."""
        h = (self.stack(z) + self.linear(z)).view(z.shape[0], self.cfg.n_frames, self.cfg.frame_dim)
        out = self.frame(h)
        out = out if self.frame_mlp is None else out + self.frame_mlp(h)
        if not self.cfg.log_head:
            return out, None
        quiet = self.log_frame(h)
        return out, quiet if self.log_mlp is None else quiet + self.log_mlp(h)

    def parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the compressed-magnitude branch alone, the output): they differ only with ``log_head``."""
        out, quiet = self.branches(z)
        if quiet is None:
            return out, out
        return out, quiet_blend(out, quiet, self.feat_mean, self.feat_std, self.feat_power, self.cfg.log_head_residual)


_DB_PER_NEPER = 20.0 / math.log(10.0)


def quiet_blend(out: Tensor, quiet: Tensor, mean: Tensor, std: Tensor, p: Tensor, adds_level: bool) -> Tensor:
    """The log head's blend (see :class:`Decoder`): normalised features of the compressed branch ``out`` and the
    log head's raw output ``quiet`` (nepers), both Tensor[B x T x F] → normalised features.

    adds_level : the head's output corrects the first branch's (detached) log level, as a residual head's does;
        else it is the level itself (run format 4's head)
    """
    v = (mean + std * out).clamp_min(LOG_FLOOR**p)  # m^p
    log_loud = v.log() / p
    if adds_level:
        quiet = quiet + log_loud.detach()
    peak = log_loud.detach().amax(dim=(1, 2), keepdim=True)
    w = torch.sigmoid(((log_loud - peak) * _DB_PER_NEPER - QUIET_GATE_DB) / QUIET_GATE_WIDTH_DB)
    cap = peak + QUIET_GATE_DB / _DB_PER_NEPER + 1.0  # quiet bins stay quiet: a soft cap, never a dead gradient
    log_quiet = cap - nn.functional.softplus(cap - quiet)
    # The loud bins learn from the squared error alone (as without the head); log_l1 reaches the quiet ones.
    log_m = w * log_loud.detach() + (1.0 - w) * log_quiet
    return (torch.exp(p * log_m) - mean) / std


def _quiet_blend_log_l1(out: Tensor, quiet: Tensor, log_target: Tensor, mean: Tensor, std: Tensor, p: Tensor,
                        adds_level: bool, with_grad: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``log_l1`` of the log head's blend and, ``with_grad``, its gradients (d/d out, d/d quiet) for a unit loss:
    the body of :class:`_QuietBlendLogL1`, which validation calls without them (they were a third of its time)."""
    with torch.no_grad():
        dtype = torch.promote_types(out.dtype, torch.float32)  # bf16 under autocast: the loss in float32
        pf = torch.as_tensor(p, dtype=dtype)  # a tensor, not float(p): no graph break under torch.compile
        raw = torch.addcmul(mean, out.to(dtype), std)
        floor = torch.pow(LOG_FLOOR, pf)
        active = raw > floor
        v = raw.clamp_min_(floor)
        log_loud = v.log().div_(pf)
        peak = log_loud.amax(dim=(1, 2), keepdim=True)
        w = (log_loud - peak).mul_(_DB_PER_NEPER / QUIET_GATE_WIDTH_DB).sub_(QUIET_GATE_DB / QUIET_GATE_WIDTH_DB)
        w.sigmoid_()
        cap = peak + (QUIET_GATE_DB / _DB_PER_NEPER + 1.0)
        r = cap - quiet.to(dtype)  # softplus(r)' = sigmoid(r)
        if adds_level:  # a residual head corrects the first branch's level (detached: no gradient through it)
            r.sub_(log_loud)
        log_m = cap - nn.functional.softplus(r)  # the head's capped level, then the blend
        diff = log_loud.sub_(log_m)  # log_loud − log_quiet; log_m = log_quiet + w · diff
        log_m.addcmul_(w, diff)
        target = log_target.to(dtype)
        f = (target.amax(dim=(1, 2), keepdim=True) - LSD_FLOOR_NEPERS).clamp_min(math.log(LOG_FLOOR))
        counts = log_m > f
        d = torch.maximum(log_m, f, out=log_m).sub_(torch.maximum(target, f))
        n = d.numel()
        loss = torch.linalg.vector_norm(d, 1) / n
        if not with_grad:
            return loss, None, None
        g_log_m = d.sign_().masked_fill_(~counts, 0.0).div_(n)
        head = 1.0 - w  # the head's share of the blend
        g_quiet = g_log_m * head * r.sigmoid_()
        # through the gate: d w / d log_loud = w (1 − w) · (dB per neper / width); log_loud = log(v) / p
        g_out = g_log_m.mul_(diff).mul_(w).mul_(head)
        g_out.mul_(_DB_PER_NEPER / QUIET_GATE_WIDTH_DB / pf).div_(v).mul_(std).masked_fill_(~active, 0.0)
    return loss, g_out, g_quiet


class _QuietBlendLogL1(torch.autograd.Function):
    """``log_l1`` (see :class:`_LogMagnitudeL1`) of the log head's blend (see :func:`quiet_blend`), straight from
    the blend's log magnitude: training never needs the blended features themselves, and the gradients are
    written out (about half the passes over the batch of the blend and the loss taken apart)."""

    @staticmethod
    def forward(ctx, out: Tensor, quiet: Tensor, log_target: Tensor,  # type: ignore[override]
                mean: Tensor, std: Tensor, p: Tensor, adds_level: bool) -> Tensor:
        loss, g_out, g_quiet = _quiet_blend_log_l1(out, quiet, log_target, mean, std, p, adds_level, with_grad=True)
        ctx.save_for_backward(g_out, g_quiet)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        g_out, g_quiet = ctx.saved_tensors
        return g_out * grad_loss, g_quiet * grad_loss, None, None, None, None, None


class StepTerms(NamedTuple):
    """A training step's loss terms (:meth:`SampleModel.forward`), unweighted but for ``seeds``.

    seeds : (tensor, gradient) pairs that ``torch.autograd.backward`` adds to the loss's own gradient: the log
        head's ``log_l1``, weighted, whose value alone ``log_l1`` then holds (empty: ``log_l1`` is differentiable)
    """

    recon: Tensor
    kl: Tensor
    log_l1: Tensor
    seeds: list[tuple[Tensor, Tensor]]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(μ, σ²) ‖ N(0, I)) per latent dimension, Tensor[B x L] (nats).

    KL = ½ (μ² + σ² − log σ² − 1).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


class _LogMagnitudeL1(torch.autograd.Function):
    """mean |max(log m̂, f) − max(log m, f)| with m̂ from normalised features, f = the note's peak − 80 dB.

    Written by hand because it runs on every training batch: autograd's version makes ~25 passes over
    the batch, this one about ten.
    Gradients are zero where the output is at or below the floor (as for ``torch.maximum``).
    """

    @staticmethod
    def forward(ctx, out: Tensor, log_target: Tensor, mean: Tensor, std: Tensor, p: float) -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            values = torch.addcmul(mean, out.float(), std)  # compressed magnitude m^p, or the log itself for p = 0
            scale = p if p > 0 else 1.0
            target = log_target.float()
            floor = (target.amax(dim=(1, 2), keepdim=True) - LSD_FLOOR_NEPERS) * scale
            if p > 0:  # compare p·log m = log(m^p); the feature floor LOG_FLOOR^p is a floor too
                floor = floor.clamp_min(p * math.log(LOG_FLOOR))
                pred = values.clamp_min(LOG_FLOOR**p).log_()
                active = values > floor.exp()
            else:
                pred = values.clone()
                active = values > floor
            torch.maximum(pred, floor, out=pred)
            diff = pred.sub_(torch.maximum(target * scale, floor))
            loss = diff.abs().sum() / (diff.numel() * scale)
            grad = diff.sign_()
            if p > 0:
                grad.div_(values)  # d log(values) / d values
            grad.masked_fill_(~active, 0.0).mul_(std / (diff.numel() * scale))
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, None, None, None, None


class SampleModel(nn.Module):
    """A VAE (``kind="vae"``) or a plain auto-encoder (``kind="ae"``) of the same shape."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.feature_stats: FeatureStats | None = None

    @property
    def is_variational(self) -> bool:
        return self.cfg.kind == "vae"

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior mean and log-variance (None for the AE) of Tensor[B x T x F] features."""
        self._check_input(x)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent Tensor[B x L] → normalised features Tensor[B x T x F] (see samplegen.spectral.features)."""
        if z.ndim != 2 or z.shape[1] != self.cfg.latent_dim:
            raise ParameterError(f"z must have shape (B, {self.cfg.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, raw: Tensor, eps: Tensor | None, log_scale: Tensor | None) -> StepTerms:
        """One training step's terms from the notes' log magnitudes ``raw`` (Tensor[B x T x C·F]): the call
        DistributedDataParallel wraps and the step compiles, so the features are normalised here, inside the
        compiled step (eagerly, outside it, that took a tenth of an epoch).

        As :meth:`losses`, with ``log_l1`` against ``raw`` when ``log_scale`` (a 0-d tensor: the term's weight in
        the loss) is given, except that a log head's ``log_l1`` comes back as a value alone and its gradient, for
        that weight, as :attr:`StepTerms.seeds` for ``torch.autograd.backward``: computed with the value in one
        pass, where through autograd the compiled step computed the blend again in the backward pass.
        """
        assert self.feature_stats is not None, "attach_feature_stats first"
        x = self.feature_stats.normalise(raw)
        z, kl = self._sample(x, None, eps)
        recon, log_l1, seeds = self._reconstruction_terms(z, x, None if log_scale is None else raw, log_scale)
        return StepTerms(recon, kl, log_l1, seeds)

    def losses(self, x: torch.Tensor, generator: torch.Generator | None = None,
               eps: torch.Tensor | None = None, log_target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Named, unweighted losses for one batch (weights come from the training config).

        recon  : mean squared error per spectrogram element (normalised features)
        kl     : KL to N(0, I), summed over latent dimensions, mean over the batch (0 for the AE)
        log_l1 : mean |log-magnitude error| against ``log_target`` (see :meth:`log_magnitude_l1`;
                 0 unless feature stats are attached and ``log_target`` is given)

        eps : Tensor[B x L] reparameterisation noise; drawn from ``generator`` when None
        log_target : Tensor[B x T x F], the notes' floored natural log magnitude (what ``x`` was made from)
        """
        z, kl = self._sample(x, generator, eps)
        recon, log_l1 = self.reconstruction_losses(z, x, log_target)
        return {"recon": recon, "kl": kl, "log_l1": log_l1}

    def _sample(self, x: Tensor, generator: torch.Generator | None, eps: Tensor | None) -> tuple[Tensor, Tensor]:
        """(z drawn from the posterior of features ``x``, the batch's KL); for the AE, (μ, 0)."""
        mu, logvar = self.encode(x)
        # Under bf16 autocast the heads come out in bf16; the KL and the sampling want float32.
        mu = mu.float()
        if logvar is None:
            return mu, torch.zeros((), device=x.device)
        logvar = logvar.float()
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        eps = eps.to(device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)  # reparameterisation trick
        return z, kl_divergence(mu, logvar).sum(dim=1).mean()

    def reconstruction_losses(self, z: Tensor, x: Tensor, log_target: Tensor | None) -> tuple[Tensor, Tensor]:
        """(recon, log_l1) of :meth:`losses` for latents ``z`` of notes ``x``; validation measures the same.

        With a log head the squared error trains the compressed branch alone; the head learns from log_l1.
        """
        recon, log_l1, _ = self._reconstruction_terms(z, x, log_target)
        return recon, log_l1

    def _reconstruction_terms(self, z: Tensor, x: Tensor, log_target: Tensor | None, seed_scale: Tensor | None = None
                              ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """:meth:`reconstruction_losses`, and with ``seed_scale`` and a log head, log_l1's value alone and its
        gradient for that weight as (tensor, gradient) pairs (see :meth:`forward`)."""
        loud, quiet = self.decoder.branches(z)
        recon = nn.functional.mse_loss(loud, x)
        if self.feature_stats is None or log_target is None:
            return recon, torch.zeros((), device=x.device), []
        if quiet is None:
            return recon, self.log_magnitude_l1(loud, log_target), []
        dec = self.decoder
        n = dec.feat_mean.shape[0]
        args = (loud, quiet, log_target[..., :n], dec.feat_mean, dec.feat_std, dec.feat_power, self.cfg.log_head_residual)
        if not torch.is_grad_enabled():  # validation: the loss alone
            return recon, _quiet_blend_log_l1(*args, with_grad=False)[0], []
        if seed_scale is None:
            return recon, _QuietBlendLogL1.apply(*args), []
        with torch.no_grad():
            log_l1, g_loud, g_quiet = _quiet_blend_log_l1(*args, with_grad=True)
            assert g_loud is not None and g_quiet is not None
            seeds = [(loud, (g_loud * seed_scale).to(loud.dtype)), (quiet, (g_quiet * seed_scale).to(quiet.dtype))]
        return recon, log_l1, seeds

    def attach_feature_stats(self, stats: FeatureStats) -> None:
        """The map between log magnitudes and features, on the model's device (kept beside the model, not in its
        weights): :meth:`forward` normalises with it, and the ``log_l1`` term de-normalises the magnitude with it."""
        self.feature_stats = stats

    def log_magnitude_l1(self, out: Tensor, log_target: Tensor) -> Tensor:
        """Mean |log magnitude error| (nepers) of normalised outputs against the notes' log magnitudes, both
        floored 80 dB below the note's peak: the measure LSD judges, which the feature MSE barely weighs in
        quiet bins (see :class:`_LogMagnitudeL1`)."""
        assert self.feature_stats is not None
        n = self.feature_stats.magnitude_bins  # a run that learns IF has it after the magnitude: the loss sees that
        mean, std = self.feature_stats.mean[:n].to(out.device), self.feature_stats.std[:n].to(out.device)
        return _LogMagnitudeL1.apply(out[..., :n], log_target[..., :n], mean, std, self.feature_stats.magnitude_power)

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.cfg.n_frames, self.cfg.n_bins)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ParameterError(f"features must have shape (B, T={expected[0]}, F={expected[1]}), got {tuple(x.shape)}")


@torch.no_grad()
def init_from_pca(model: SampleModel, feats: torch.Tensor, frame_stride: int = 3) -> None:
    """Start the model at the PCA baseline of the training features (see the module docstring).

    Parameters
    ----------
    model : a freshly built model
    feats : Tensor[N x T x F], normalised training features
    frame_stride : use every n-th frame for the frame PCA (they are highly redundant)

    Deterministic: exact eigendecompositions, no random projections.
    :func:`samplegen.training.data_stats.init_model_from_pca` does the same streaming
    over batches, for corpora that do not fit in memory.
    """
    frames = feats.reshape(-1, model.cfg.n_bins)[::frame_stride].double()
    mean = frames.mean(dim=0)
    centred = frames - mean
    init_frame_layers(model, mean, centred.T @ centred / len(frames))
    if model.cfg.head_writes_level:
        init_log_head(model, log_levels(model.decoder, feats.reshape(-1, model.cfg.n_bins)[::frame_stride]).mean(dim=0))
    init_linear_paths(model, model.encoder.frame(feats).flatten(1))


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Rows flipped so each one's largest entry is positive: eigenvectors' signs are arbitrary, and
    a sign that flips with the last bit of a sum would make one process and several start apart."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(torch.gather(vectors, 1, idx))
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


@torch.no_grad()
def init_frame_layers(model: SampleModel, mean: torch.Tensor, cov: torch.Tensor) -> None:
    """Frame layers at the principal axes of the training frames (mean Tensor[F], covariance Tensor[F x F])."""
    cfg = model.cfg
    enc, dec = model.encoder, model.decoder
    evals, evecs = torch.linalg.eigh(cov.double())
    k = min(cfg.frame_dim, cfg.n_bins)
    axes = _fix_signs(evecs[:, torch.argsort(evals, descending=True)[:k]].T).T.float()  # F x P
    enc.frame.weight.zero_()
    enc.frame.weight[:k].copy_(axes.T)
    enc.frame.bias.zero_()
    enc.frame.bias[:k].copy_(-(mean.float() @ axes))
    dec.frame.weight.zero_()
    dec.frame.weight[:, :k].copy_(axes)
    dec.frame.bias.copy_(mean.float())
    # What the PCA start lacks adds nothing at first: the MLPs' output layers and a residual log head (a level-writing
    # head then starts at each bin's mean level, init_log_head).
    at_zero = [] if dec.frame_mlp is None else [dec.frame_mlp[-1]]
    if cfg.log_head:
        at_zero += [dec.log_frame] if dec.log_mlp is None else [dec.log_frame, dec.log_mlp[-1]]
    for layer in at_zero:
        cast(nn.Linear, layer).weight.zero_()
        cast(nn.Linear, layer).bias.zero_()


def log_levels(dec: Decoder, feats: Tensor) -> Tensor:
    """Normalised features → natural log magnitude (nepers), through a ``log_head`` decoder's feature map."""
    return (dec.feat_mean + dec.feat_std * feats).clamp_min(LOG_FLOOR**dec.feat_power).log() / dec.feat_power


@torch.no_grad()
def init_log_head(model: SampleModel, log_mean: torch.Tensor) -> None:
    """Start a level-writing ``log_head`` decoder's quiet bins at each bin's mean log magnitude (Tensor[F], nepers)."""
    if model.cfg.head_writes_level:
        model.decoder.log_frame.bias.copy_(log_mean)


@torch.no_grad()
def init_linear_paths(model: SampleModel, coeffs: torch.Tensor) -> None:
    """Linear paths at the notes' principal components; stacks' last layers at zero.

    coeffs : Tensor[N x (T·P)], the notes through the (already initialised) encoder frame layer
    """

    cfg = model.cfg
    enc, dec = model.encoder, model.decoder
    n_comp = min(cfg.latent_dim, coeffs.shape[0] - 1) if coeffs.shape[0] > 1 else 0
    enc.linear.weight.zero_()
    enc.linear.bias.zero_()
    dec.linear.weight.zero_()
    dec.linear.bias.copy_(coeffs.mean(dim=0))
    if n_comp >= 1:
        pca = PCABaseline.fit(coeffs, n_comp)
        pca.components = _fix_signs(pca.components)
        scale = pca.encode(coeffs).std(dim=0).clamp_min(1e-6)  # unit-variance latents, like the prior
        enc.linear.weight[:n_comp].copy_(pca.components / scale[:, None])
        enc.linear.bias[:n_comp].copy_(-(pca.components @ pca.mean) / scale)
        dec.linear.weight[:, :n_comp].copy_((pca.components * scale[:, None]).T)
        dec.linear.bias.copy_(pca.mean)
    enc.mu.weight.zero_()
    enc.mu.bias.zero_()
    last = cast(nn.Linear, dec.stack[-1])
    last.weight.zero_()
    last.bias.zero_()
    if enc.logvar is not None:
        enc.logvar.bias.fill_(-4.0)  # start with a narrow posterior: the PCA point itself


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_megabytes(model: nn.Module) -> float:
    """Size of the float32 weights in MB (10^6 bytes), as written to model.safetensors."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
