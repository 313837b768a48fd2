"""A drag on the instrument's blend pad, in a real headless Chromium: is it heard while it lasts?

Serves RUN as `samplegen play` does, opens the page, and drags the pad's handle round a circle with a
mouse move every EVERY milliseconds for SECONDS (issue 19 item 2: moves every 16–50 ms for 4–7 s
rendered nothing until the hand stopped). Reports how many notes the page started (its previews) during
the drag, the gaps between them, and how long after letting go the full note (not a draft) was playing.

    .venv/bin/python benchmarks/instrument_drag.py demo-out/run --seconds 5 --every 16
"""

from __future__ import annotations

import argparse
import math
import shutil
import time

import numpy as np
from playwright.sync_api import sync_playwright

from samplegen.app.instrument import Instrument
from samplegen.app.server import create_app, running
from samplegen.checkpoint import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--every", type=int, default=16, help="milliseconds between mouse moves")
    ap.add_argument("--drags", type=int, default=3)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: run `bash scripts/system-deps.sh`")
    instrument = Instrument(load_run(args.run))
    z = instrument.corpus_point(0)
    for draft in (False, True):  # in-process cost of one render, full and draft, after a warm-up
        instrument.render(z, draft=draft)
    costs = {}
    for draft in (False, True):
        times = []
        for i in range(20):
            t0 = time.perf_counter()
            instrument.render(instrument.corpus_point(i % len(instrument.mu)), draft=draft)
            times.append((time.perf_counter() - t0) * 1000)
        costs["draft" if draft else "full"] = float(np.median(times))
    print(f"one render in-process, median of 20: full {costs['full']:.1f} ms, draft {costs['draft']:.1f} ms")

    with running(create_app(instrument)) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(base + "/")
        page.wait_for_function("window.samplegen && window.samplegen.state.rendered >= 1", timeout=60_000)
        box = page.locator("#pad").bounding_box()

        def at(a: float) -> tuple[float, float]:
            return (box["x"] + box["width"] * (0.5 + 0.35 * math.cos(a)),
                    box["y"] + box["height"] * (0.5 + 0.35 * math.sin(a)))

        gaps: list[float] = []
        heard_counts, settle, intervals = [], [], []
        for _ in range(args.drags):
            page.wait_for_function("window.samplegen.idle()")
            page.evaluate("window.samplegen.state.heardAt = []")
            page.mouse.move(*at(0.0))
            page.mouse.down()
            start = page.evaluate("performance.now()")
            t0 = time.perf_counter()
            moved = 0
            while (elapsed := time.perf_counter() - t0) < args.seconds:  # paced by the clock, not by call overhead
                page.mouse.move(*at(2 * math.pi * elapsed / args.seconds))
                moved += 1
                time.sleep(max(0.0, t0 + moved * args.every / 1000 - time.perf_counter()))
            end = page.evaluate("performance.now()")
            intervals.append((end - start) / moved)
            page.mouse.up()
            page.wait_for_function("window.samplegen.idle() && window.samplegen.state.current.quality === 'full'",
                                   timeout=30_000)
            heard = page.evaluate("window.samplegen.state.heardAt")
            during = [t for t in heard if start <= t <= end]
            gaps += list(np.diff([start, *during, end]))
            heard_counts.append(len(during))
            settle.append(max(heard) - end)
        browser.close()
    g = np.array(gaps)
    print(f"{args.drags} drags of {args.seconds:g} s, a move every {np.mean(intervals):.0f} ms on average (asked "
          f"{args.every}): notes heard during each drag "
          f"{heard_counts}; gap between notes median {np.median(g):.0f} ms, p95 {np.percentile(g, 95):.0f} ms, "
          f"max {g.max():.0f} ms; full note playing {np.median(settle):.0f} ms (median) after letting go")


if __name__ == "__main__":
    main()
