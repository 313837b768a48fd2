"""Screenshots of the instrument for the README, taken in headless Chromium on a trained run.

    .venv/bin/python scripts/screenshots.py demo-out/run --out docs/img
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from samplegen.app.instrument import Instrument
from samplegen.app.server import create_app, running
from samplegen.checkpoint import load_run

SIZES = {"laptop": (1366, 768), "tablet": (768, 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: run `bash scripts/system-deps.sh`")
    with running(create_app(Instrument(load_run(args.run)))) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        for name, (w, h) in SIZES.items():
            page = browser.new_page(viewport={"width": w, "height": h})
            page.goto(base + "/")
            page.wait_for_function("window.samplegen && window.samplegen.state.rendered >= 1", timeout=60_000)
            page.locator("#map circle.point").nth(40).dispatch_event("click")
            page.wait_for_function("window.samplegen.state.rendered >= 2")
            page.locator("#favourite").click()
            page.locator("#pad").focus()
            for key in ["ArrowRight"] * 4 + ["ArrowUp"] * 3:
                page.keyboard.press(key)
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_function("window.samplegen.idle() && window.samplegen.state.current.source.startsWith('pad')")
            page.wait_for_timeout(300)
            path = out / f"instrument-{name}.png"
            page.screenshot(path=str(path), full_page=name == "laptop")
            print(f"wrote {path}")
        browser.close()


if __name__ == "__main__":
    main()
