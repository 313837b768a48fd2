"""How often interpolating two notes' spectrograms dips in level, with no model involved.

Usage (repository root, after `make install`):

    .venv/bin/python benchmarks/log_interpolation_dips.py --corpus bench-out/corpus --run bench-out/run

For 100 random pairs of corpus notes, 8 steps from one to the other, interpolated in log magnitude (what
a model trained on log magnitudes averages in), in magnitude^c for a few c, and in linear magnitude; and
along the run's latent paths. A path dips when its quietest interior step is more than 6 dB below the
quieter end (docs/design.md), level = energy of the magnitude spectrogram.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import load_run
from samplegen.generation.generate import interpolation_path
from samplegen.spectral.features import audio_to_features


def _dips(levels_db: list[np.ndarray]) -> float:
    return float(np.mean([lv[1:-1].min() < min(lv[0], lv[-1]) - 6.0 for lv in levels_db]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--powers", default="0.3,0.5", help="comma-separated c of the magnitude^c rows")
    ap.add_argument("--list", action="store_true", help="also name the pairs whose latent path dips, with families")
    args = ap.parse_args()
    run = load_run(args.run)
    corpus = load_corpus(args.corpus, duration_s=run.config.data.duration_s)
    mags = torch.exp(audio_to_features(corpus.audio, run.config.stft)).double()
    g = torch.Generator().manual_seed(0)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < args.pairs:
        a, b = torch.randint(len(mags), (2,), generator=g).tolist()
        if a != b:
            pairs.append((a, b))
    t = torch.linspace(0, 1, 8, dtype=torch.float64)[:, None, None]

    def level(m: torch.Tensor) -> np.ndarray:
        return (10 * torch.log10((m**2).sum(dim=(-1, -2)))).numpy()

    rows = [("log magnitude", _dips([level(torch.exp((1 - t) * mags[a].log() + t * mags[b].log())) for a, b in pairs]))]
    for c in [float(v) for v in args.powers.split(",") if v]:
        rows.append((f"magnitude^{c}", _dips([level(((1 - t) * mags[a] ** c + t * mags[b] ** c) ** (1 / c))
                                              for a, b in pairs])))
    rows.append(("linear magnitude", _dips([level((1 - t) * mags[a] + t * mags[b]) for a, b in pairs])))
    with torch.no_grad():
        model = [level(run.stats.denormalise(run.model.decode(
            interpolation_path(run.latent_mu[a], run.latent_mu[b], 8))).double()) for a, b in pairs]
    power = run.stats.magnitude_power
    rows.append((f"the run's latent paths ({args.run}, magnitude^{power})", _dips(model)))
    print(f"| interpolated in | dipping paths ({args.pairs} random pairs) |\n|---|---:|")
    for name, frac in rows:
        print(f"| {name} | {100 * frac:.1f} % |")
    if args.list:
        names, families = [e.name for e in corpus.entries], [e.family for e in corpus.entries]
        print("\nlatent paths that dip (levels in dB re the louder end):")
        for (a, b), lv in zip(pairs, model):
            if lv[1:-1].min() < min(lv[0], lv[-1]) - 6.0:
                print(f"  {names[a]} ({families[a]}) -> {names[b]} ({families[b]}): {np.round(lv - lv.max(), 1).tolist()}")


if __name__ == "__main__":
    main()
