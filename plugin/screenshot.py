"""The plug-in's window without a screen: the Standalone app under Xvfb, grabbed to a PNG (the README's picture).

    .venv/bin/python plugin/screenshot.py BUNDLE_DIR --out docs/img/plugin.png

BUNDLE_DIR is a folder written by `samplegen export plugin`. tests/test_plugin.py runs the same function.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageGrab

STANDALONE = Path(__file__).resolve().parent / "build" / "SampleGen_artefacts" / "Release" / "Standalone" / "SampleGen"
#: The window's title colour (plugin/src/PluginEditor.cpp, "accent"): drawn once the window is up.
ACCENT = (0xF0, 0xA0, 0x30)


def _accent_pixels(image: Image.Image) -> int:
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array(ACCENT)).sum(axis=2) < 30).sum())


def standalone_screenshot(bundle: Path, out: Path, app: Path = STANDALONE, timeout_s: float = 30.0,
                          settle_s: float = 2.0) -> Image.Image:
    """Start Xvfb and the Standalone app on ``bundle``; once its window is drawn, save the screen cropped to it.

    Raises RuntimeError when the app exits early or draws nothing within ``timeout_s``. The app's settings
    file goes to a throw-away HOME.
    """
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1000x640x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert xvfb.stdout is not None
        display = ":" + xvfb.stdout.readline().decode().strip()
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "DISPLAY": display, "HOME": home, "SAMPLEGEN_PLUGIN_BUNDLE": str(bundle)}
            proc = subprocess.Popen([str(app)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + timeout_s
                while _accent_pixels(ImageGrab.grab(xdisplay=display)) == 0:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{app} exited with status {proc.returncode} before showing its window")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{app} showed no window within {timeout_s:.0f} s")
                    time.sleep(0.25)
                time.sleep(settle_s)  # the model loads and the first note decodes
                if proc.poll() is not None:
                    raise RuntimeError(f"{app} exited with status {proc.returncode}")
                screen = ImageGrab.grab(xdisplay=display)
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    box = Image.eval(screen.convert("L"), lambda v: 255 if v > 8 else 0).getbbox()
    shot = screen.crop(box) if box else screen
    out.parent.mkdir(parents=True, exist_ok=True)
    shot.save(out)
    return shot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--out", default="docs/img/plugin.png")
    args = ap.parse_args()
    print(f"wrote {args.out} {standalone_screenshot(Path(args.bundle), Path(args.out)).size}")


if __name__ == "__main__":
    main()
