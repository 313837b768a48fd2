"""`samplegen roundtrip`: hear what magnitude-only costs on your own sounds, with no model involved.

Each file goes STFT → magnitude (phase discarded) → phase retrieval → WAV,
so the only difference from the original is what the seed called the
"noticeable artefacts, even if replaying the original data".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from samplegen.audio import audio_io
from samplegen.errors import AudioError, ParameterError
from samplegen.evaluation import metrics
from samplegen.files import unique_stems
from samplegen.spectral import stft as spectral


@dataclass
class RoundTrip:
    source: str
    original: Path
    rebuilt: Path
    sc_db: float
    lsd_db: float


def roundtrip(files: Sequence[str | Path], out_dir: str | Path, method: str | None = None, n_iter: int | None = None,
              stft: spectral.StftConfig | None = None) -> list[RoundTrip]:
    """Write ``NAME_original.wav`` and ``NAME_roundtrip.wav`` for each file, with their distance.

    The whole file is used (44.1 kHz mono, no trimming or normalisation).
    """
    if not files:
        raise ParameterError("give at least one audio file")
    if n_iter is not None and (not isinstance(n_iter, int) or isinstance(n_iter, bool)
                               or not 0 <= n_iter <= spectral.MAX_ITERATIONS):
        raise ParameterError(f"--iters {n_iter!r} must be an integer from 0 to {spectral.MAX_ITERATIONS}")
    cfg = stft or spectral.StftConfig()
    out = Path(out_dir)
    notes = [_read(f, cfg) for f in files]  # every file checked before anything is written
    results = []
    for f, stem, y in zip(files, unique_stems(Path(f).stem for f in files), notes):
        x = torch.from_numpy(y)
        rebuilt = spectral.retrieve_phase(spectral.magnitude(x, cfg), cfg, len(y), method=method, n_iter=n_iter).numpy()
        results.append(RoundTrip(
            str(f),
            audio_io.write_wav(out / f"{stem}_original.wav", y),
            audio_io.write_wav(out / f"{stem}_roundtrip.wav", rebuilt),
            float(metrics.spectral_convergence_db(y, rebuilt)),
            float(metrics.log_spectral_distance_db(y, rebuilt)),
        ))
    return results


def _read(file: str | Path, cfg: spectral.StftConfig) -> np.ndarray:
    """The whole file, refused (naming it) when unreadable, shorter than a frame or silent: a silent file's
    distance would read as a perfect score."""
    try:
        y = audio_io.read_audio(file)
    except AudioError as exc:
        raise AudioError(f"{file}: {exc}") from None
    if len(y) < cfg.n_fft:
        raise ParameterError(f"{file} is shorter than one STFT frame ({cfg.n_fft} samples)")
    if not np.any(y):
        raise AudioError(f"{file} is silent: there is nothing for phase retrieval to get wrong")
    return y
