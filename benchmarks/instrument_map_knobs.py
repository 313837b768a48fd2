"""The instrument's map and knobs on a trained run (issue 19 items 6 and 7).

Map: how often a sound's 7 nearest neighbours on the map are its own preset's (other velocities of the same
instrument), on the first two principal axes (the map before), on the map (scikit-learn's t-SNE) and, for
the choice of method, on scikit-learn's Isomap and spectral embedding, against the latent space itself;
and the share of points outside the shown view (piled on its edges). Knobs: each knob's label and hint, on
the principal axes (before) and aimed at the descriptors (now), and, for each named knob, the measured
change of its descriptor on rendered notes when it is turned from -1 to +1 around 16 corpus sounds.

    .venv/bin/python benchmarks/instrument_map_knobs.py demo-out/run
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from samplegen.app.instrument import DESCRIPTORS, Instrument, neighbour_map, neighbour_recall, principal_axes
from samplegen.checkpoint import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--k", type=int, default=7)
    args = ap.parse_args()
    from sklearn.manifold import Isomap, SpectralEmbedding

    run = load_run(args.run)
    mu = run.latent_mu.double().numpy()
    presets = run.corpus.presets
    mean, axes, sd = principal_axes(run.latent_mu, 2)
    pca = (mu - mean) @ axes.T / sd
    lo, hi = np.percentile(pca, 2, axis=0), np.percentile(pca, 98, axis=0)  # the view the PCA map was shown in
    pca_edges = float(((pca < lo) | (pca > hi)).any(axis=1).mean())
    print(f"{len(mu)} sounds, {len(set(presets))} presets, latent {mu.shape[1]}; share of the {args.k} nearest "
          f"neighbours from the same preset:")
    print(f"  latent space              {neighbour_recall(mu, presets, args.k):6.1%}")
    print(f"  first two principal axes  {neighbour_recall(pca, presets, args.k):6.1%}   points on the view's edges "
          f"{pca_edges:.1%}")
    layouts = {"t-SNE (the map)": lambda: neighbour_map(mu),
               "Isomap, 10 neighbours": lambda: Isomap(n_neighbors=10, n_components=2).fit_transform(mu),
               "spectral embedding": lambda: SpectralEmbedding(2, n_neighbors=10, random_state=0).fit_transform(mu)}
    for name, make in layouts.items():
        t0 = time.perf_counter()
        xy = make()
        print(f"  {name:<25} {neighbour_recall(xy, presets, args.k):6.1%}   ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    instrument = Instrument(run)
    print(f"instrument start-up {time.perf_counter() - t0:.1f} s; map points on the view's edges "
          f"{instrument.edge_fraction():.1%}")
    before = Instrument(run, aim_knobs=False)
    for title, inst in (("knobs on the principal axes (before)", before), ("knobs aimed at descriptors (now)", instrument)):
        unnamed = sum(k.label.startswith("Timbre") for k in inst.knobs)
        print(f"{title}: {len(inst.knobs) - unnamed} named, {unnamed} unnamed")
        for k in inst.knobs:
            print(f"  {k.label:<12} {k.hint:<55} effect {k.effect:+.2f} SD")

    print("named knobs turned -1 → +1 around 16 corpus sounds, measured on the rendered notes:")
    bases = [int(i) for i in np.linspace(0, len(mu) - 1, 16)]
    for knob in instrument.knobs:
        if knob.label.startswith("Timbre"):
            continue
        name = next(d for d, (title, _) in DESCRIPTORS.items() if title == knob.label)
        c = instrument.heard_change(knob, bases)
        print(f"  {knob.label:<12} {name}: mean change {c.mean():+.3f}, up in {np.mean(c > 0):.0%} of sounds "
              f"({'matches' if c.mean() > 0 else 'CONTRADICTS'} '{knob.hint}')")


if __name__ == "__main__":
    main()
