"""Instrument latency through the HTTP API: from a gesture (knob, pad, ...) to a playable note.

Serves RUN with uvicorn on a loopback port, as `samplegen play` does, and times each gesture as the
page does it: the POST that renders the note plus the GET of its WAV. Then a burst: a client fires
BURST gestures 10 ms apart (a fast drag) and we time how long after the last one its note is
ready; latest-only scheduling should keep that near one render, not BURST renders.

    .venv/bin/python benchmarks/instrument_latency.py demo-out/run --n 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request

import numpy as np

from samplegen.app.instrument import Instrument
from samplegen.app.server import create_app, running
from samplegen.checkpoint import load_run


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def gesture(base: str, path: str, body: dict) -> float:
    """Seconds from sending the gesture to holding the note's WAV bytes."""
    t0 = time.perf_counter()
    code, note = post(base + path, body)
    if code != 200:
        raise RuntimeError(f"{path} answered {code}")
    with urllib.request.urlopen(base + note["wav"]) as res:
        res.read()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=40, help="gestures of each kind")
    ap.add_argument("--burst", type=int, default=20)
    args = ap.parse_args()
    run = load_run(args.run)
    t0 = time.perf_counter()
    instrument = Instrument(run)
    startup = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    n_sounds = len(run.corpus.names)
    with running(create_app(instrument)) as base:
        z = post(base + "/api/sounds/0", {})[1]["z"]  # warm-up (numba compile, allocator)
        kinds = {
            "map click": lambda i: ("/api/sounds/" + str(int(rng.integers(n_sounds))), {}),
            "pad move": lambda i: ("/api/blend", {"corners": instrument.default_corners(), "x": float(rng.random()),
                                                  "y": float(rng.random())}),
            "pad move, draft (dragging)": lambda i: ("/api/blend", {"corners": instrument.default_corners(),
                                                                   "x": float(rng.random()), "y": float(rng.random()),
                                                                   "quality": "draft"}),
            "knob turn": lambda i: ("/api/knobs", {"z": z, "positions": [float(v) for v in rng.uniform(-2, 2, len(instrument.knobs))]}),
            "surprise me": lambda i: ("/api/surprise", {"temperature": 1.0, "seed": i}),
            "vary": lambda i: ("/api/vary", {"z": z, "amount": 0.5, "seed": i}),
        }
        rows = []
        for name, make in kinds.items():
            times = [gesture(base, *make(i)) * 1000 for i in range(args.n)]
            rows.append((name, statistics.median(times), float(np.percentile(times, 95)), max(times)))

        # A fast drag: gestures 10 ms apart from one client; when is the last one playable?
        done: dict[int, float] = {}
        codes: list[int] = []

        def fire(seq: int) -> None:
            code, note = post(base + "/api/blend", {"corners": instrument.default_corners(), "x": seq / args.burst,
                                                     "y": 0.5, "client": "bench", "seq": seq})
            codes.append(code)
            if code == 200:
                with urllib.request.urlopen(base + note["wav"]) as res:
                    res.read()
                done[seq] = time.perf_counter()

        threads = []
        for seq in range(1, args.burst + 1):
            threads.append(threading.Thread(target=fire, args=(seq,)))
            threads[-1].start()
            last_sent = time.perf_counter()
            time.sleep(0.01)
        for t in threads:
            t.join()
    print(f"run {args.run}: {run.config.data.duration_s:g} s notes, latent {instrument.latent_dim}, "
          f"{n_sounds} sounds; instrument start-up {startup:.2f} s\n")
    print("| gesture | median ms | p95 ms | max ms |\n|---|---|---|---|")
    for name, med, p95, mx in rows:
        print(f"| {name} | {med:.0f} | {p95:.0f} | {mx:.0f} |")
    print(f"\nburst of {args.burst} pad moves 10 ms apart: {codes.count(200)} rendered, {codes.count(409)} superseded; "
          f"last note playable {1000 * (done[args.burst] - last_sent):.0f} ms after the last move")


if __name__ == "__main__":
    main()
