"""The model bundle the JUCE plug-in (plugin/) loads: everything it plays, in files C++ reads without Python.

A bundle is a folder of two files::

    bundle.json          format and version, shapes, the decoder's layer graph, de-normalisation, STFT and
                         phase-retrieval settings, the corpus sounds' names and families, the knobs' labels
    tensors.safetensors  float32 tensors the JSON names: decoder weights, normalisation, corpus latent points,
                         map and knob axes, and PGHI's random start for quiet coefficients

safetensors is a documented, trivially parsed layout (an 8-byte header length, a JSON header, raw
little-endian data), so the plug-in reads it with a JSON parser alone. ``bundle.json`` is removed first and
written last with the size and SHA-256 of the tensors, so a bundle killed half-way is refused, not half-read.

The decoder is written out as its layers rather than as an opaque graph: the plug-in runs the same dense
forward pass (plugin/src/Engine.cpp), and tests/test_plugin.py checks that it gives what PyTorch
gives for the same points, so a change to :class:`samplegen.model.network.Decoder` that this file does not follow
fails there. Its version (:data:`samplegen.formats.PLUGIN_BUNDLE`, with Bundle.h's ``formatVersion``) goes up
with any change the plug-in must know about.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samplegen.app.export import decoder_recipe
from samplegen.app.instrument import KNOB_RANGE, MAX_GAIN_DB, PEAK, PLACE_NEIGHBOURS, Instrument
from samplegen.checkpoint import Run
from samplegen.errors import ParameterError
from samplegen.files import one_unit, remove_temp_files, save_tensors, sha256_file, write_json
from samplegen.formats import PLUGIN_BUNDLE
from samplegen.model.network import QUIET_GATE_DB, QUIET_GATE_WIDTH_DB
from samplegen.spectral import stft as spectral
from samplegen.spectral.features import LOG_FLOOR

BUNDLE_FORMAT = "samplegen-plugin-bundle"
MANIFEST_NAME = "bundle.json"
TENSORS_NAME = "tensors.safetensors"


#: What the decoder's ``log_head`` does after the frame layers (:meth:`samplegen.model.network.Decoder.parts`).
LOG_HEAD_FORMULA = (
    "per note, with p = power, v = max(mean[bin] + std[bin] * out, floor ** p), loud = log(v) / p, "
    "peak = max of loud over all frames and bins, w = sigmoid(((loud - peak) * 20 / ln 10 - gate_db) / gate_width_db), "
    "cap = peak + gate_db / 20 * ln 10 + 1, q = layer(h) + mlp(h) (mlp empty: layer(h)) (+ loud when adds_level), "
    "quiet = cap - softplus(cap - q) (softplus(x) = log(1 + exp(x)), "
    "x above 20: x), out = (exp(p * (w * loud + (1 - w) * quiet)) - mean[bin]) / std[bin]")


def _dense(layer: nn.Module, name: str, activation: str) -> dict[str, Any]:
    if not isinstance(layer, nn.Linear):
        raise ParameterError(f"the decoder's {name} is a {type(layer).__name__}, which this bundle format does not "
                             "describe; update samplegen.app.plugin_bundle and plugin/src/Engine.cpp together")
    return {"weight": f"{name}.weight", "bias": f"{name}.bias", "in": layer.in_features,
            "out": layer.out_features, "activation": activation}


def _mlp(seq: nn.Sequential, prefix: str) -> list[dict[str, Any]]:
    """Linear layers of ``seq``, each followed by GELU unless it is the last (the decoder's own layout)."""
    layers: list[dict[str, Any]] = []
    modules = list(seq.named_children())
    for i, (idx, module) in enumerate(modules):
        if isinstance(module, nn.GELU):
            if not layers or module.approximate != "none":
                raise ParameterError(f"{prefix}.{idx}: only exact GELU after a linear layer is supported")
            layers[-1]["activation"] = "gelu"
        else:
            layers.append(_dense(module, f"{prefix}.{idx}", "none"))
    return layers


def decoder_graph(run: Run) -> dict[str, Any]:
    """The decoder's layers by name (weights in the tensors file), in the order the forward pass runs them."""
    dec = run.model.decoder
    cfg = run.config.model
    graph = {
        "formula": "h = stack(z) + linear(z), viewed as (n_frames, frame_dim); out = frame(h) + frame_mlp(h) "
                   "(frame_mlp empty: out = frame(h)); weight (out, in) row-major, y = W x + b; "
                   "gelu(x) = 0.5 x (1 + erf(x / sqrt 2)); with log_head, out then becomes its blend: "
                   + LOG_HEAD_FORMULA,
        "latent_dim": cfg.latent_dim, "n_frames": cfg.n_frames, "frame_dim": cfg.frame_dim, "n_bins": cfg.n_bins,
        "stack": _mlp(dec.stack, "decoder.stack"),
        "linear": _dense(dec.linear, "decoder.linear", "none"),
        "frame": _dense(dec.frame, "decoder.frame", "none"),
        "frame_mlp": _mlp(dec.frame_mlp, "decoder.frame_mlp") if dec.frame_mlp is not None else [],
    }
    if cfg.log_head:
        graph["log_head"] = {
            "layer": _dense(dec.log_frame, "decoder.log_frame", "none"),
            "mlp": _mlp(dec.log_mlp, "decoder.log_mlp") if dec.log_mlp is not None else [],
            "gate_db": QUIET_GATE_DB, "gate_width_db": QUIET_GATE_WIDTH_DB,
            "mean": "decoder.feat_mean", "std": "decoder.feat_std", "power": "decoder.feat_power",
            "floor": LOG_FLOOR, "adds_level": cfg.log_head_residual,
        }
    return graph


def phase_start(run: Run) -> torch.Tensor:
    """The random phases Python's PGHI leaves on quiet coefficients (seed 0), Tensor[F x T]: shipped so the
    plug-in starts Griffin–Lim where :func:`samplegen.spectral.stft.retrieve_phase` does."""
    gen = torch.Generator().manual_seed(0)
    shape = (run.config.stft.n_bins, run.config.stft.n_frames(run.config.data.n_samples))
    return torch.rand(shape, generator=gen) * (2 * math.pi)


def export_plugin_bundle(run: Run, out_dir: str | Path) -> dict[str, Path]:
    """Write ``bundle.json`` and ``tensors.safetensors`` for the plug-in; returns their paths. The manifest is
    written last; when anything fails, the files this call wrote are removed (no half a bundle)."""
    if run.config.phase.mode != "none":
        raise ParameterError(f"the plug-in plays magnitude-only runs; {run.path} also learned phase "
                             f"(phase.mode={run.config.phase.mode!r}): export SFZ or SF2 instead")
    inst = Instrument(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out, [f".{MANIFEST_NAME}.*.tmp", f".{TENSORS_NAME}.*.tmp"])
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    tensors = {f"decoder.{k}": v.float() for k, v in run.model.decoder.state_dict().items()}
    tensors.update({
        "norm.mean": run.stats.mean.float(), "norm.std": run.stats.std.float(),
        "sounds.z": run.latent_mu.float(),
        "map.points": torch.from_numpy(inst.map_points).float(),
        "knobs.move": torch.from_numpy(inst.knob_move).float(),
        "phase.start": phase_start(run),
    })
    with one_unit({}) as written:
        written["tensors"] = save_tensors(out / TENSORS_NAME, tensors)
        written["manifest"] = write_json(out / MANIFEST_NAME, _manifest(run, inst, written["tensors"]))
    return written


def _manifest(run: Run, inst: Instrument, tensor_path: Path) -> dict[str, Any]:
    """bundle.json's content (docs/plugin.md), naming the tensors file by its size and SHA-256."""
    cfg = run.config
    recipe = decoder_recipe(run)
    denorm = {k: v for k, v in recipe["denormalise"].items() if k not in ("mean", "std")}
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": PLUGIN_BUNDLE.current,
        "run": run.path.name,
        "decoder": decoder_graph(run),
        "denormalise": {**denorm, "mean": "norm.mean", "std": "norm.std"},
        "stft": recipe["stft"],
        "phase_retrieval": {**recipe["phase_retrieval"], "pghi_tol": spectral.PGHI_TOL,
                            "pghi_gamma": spectral.HANN_GAMMA * cfg.stft.n_fft ** 2,
                            "start": "phase.start (F x T): the phase of coefficients PGHI does not reach"},
        "playback": {"root_key": 60, "peak": PEAK, "max_gain_db": MAX_GAIN_DB, "z_limit": inst.z_limit,
                     "knob_range": KNOB_RANGE},
        "sounds": [{"name": n, "family": f} for n, f in zip(run.corpus.names, run.corpus.families)],
        "map": {"view": list(inst.map_view()), "default_corners": inst.default_corners(),
                "place_neighbours": PLACE_NEIGHBOURS},
        "knobs": [{"label": k.label, "hint": k.hint} for k in inst.knobs],
        "tensors": {"name": TENSORS_NAME, "bytes": tensor_path.stat().st_size, "sha256": sha256_file(tensor_path)},
    }
    return manifest
