"""How well tuned SF2 exports of a run's sounds play across the keyboard in FluidSynth.

Usage (repository root, after `make install`; FluidSynth from scripts/system-deps.sh):

    .venv/bin/python benchmarks/export_tuning.py --run runs/vae --out bench-out/export-tuning

Exports 24 corpus notes (velocity 64, chosen at random with seed 0) of the run as one SoundFont, as
`samplegen export sf2` does (root key and pitch correction from each decoded note's measured f0), has
FluidSynth play each at C2, C3, C4, C5 and C6 (0.45 s, reverb and chorus off), and measures every key's
cents from its equal-tempered pitch (octaves folded: a tracker may read a note's periodicity an octave
off) over the first 0.44 s. Prints one row per sound and a summary.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

from samplegen.app.export import sampler_sounds, sf2_sound
from samplegen.audio import audio_io
from samplegen.audio.soundfont import sf2_bytes
from samplegen.checkpoint import load_run

KEYS = (36, 48, 60, 72, 84)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True, help="scratch folder for the SoundFont, MIDI and renders")
    ap.add_argument("--sounds", type=int, default=24)
    args = ap.parse_args()
    fluidsynth = shutil.which("fluidsynth")
    if not fluidsynth:
        raise SystemExit("fluidsynth is missing: run scripts/system-deps.sh")
    run = load_run(args.run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in run.corpus.names if n.endswith("_v064")]
    pick = [str(n) for n in np.random.default_rng(0).choice(names, min(args.sounds, len(names)), replace=False)]
    sounds = sampler_sounds(run, pick)
    (out / "tuned.sf2").write_bytes(sf2_bytes([sf2_sound(s) for s in sounds]))
    at_c4, elsewhere = [], []
    for program, s in enumerate(sounds):
        own = audio_io.estimate_pitch_hz(s.audio)
        pm = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=program)
        inst.notes += [pretty_midi.Note(velocity=100, pitch=k, start=float(i), end=i + 0.45) for i, k in enumerate(KEYS)]
        pm.instruments.append(inst)
        pm.write(str(out / "keys.mid"))
        subprocess.run([fluidsynth, "-ni", "-q", "-R", "0", "-C", "0", "-g", "1.0", "-r", "44100", "-F",
                        str(out / "keys.wav"), str(out / "tuned.sf2"), str(out / "keys.mid")], check=True,
                       capture_output=True)
        y, _ = sf.read(out / "keys.wav")
        y = y.mean(axis=1) if y.ndim > 1 else y
        offsets: list[float | None] = []
        for i, key in enumerate(KEYS):
            f = audio_io.estimate_pitch_hz(y[int((i + 0.01) * 44100) : int((i + 0.45) * 44100)].astype(np.float32))
            cents = None if f is None else 1200 * np.log2(f / (440 * 2 ** ((key - 69) / 12)))
            offsets.append(None if cents is None else round(float((cents + 600) % 1200 - 600), 2))
        print(s.name, "own", None if own is None else round(audio_io.cents_between(own), 1), "root", s.root_key,
              "tune", s.tune_cents, "C2..C6", offsets, flush=True)
        if own is not None:
            at_c4 += [o for k, o in zip(KEYS, offsets) if k == 60 and o is not None]
            elsewhere += [o for k, o in zip(KEYS, offsets) if k != 60 and o is not None]
    keys = np.abs(np.array(at_c4 + elsewhere))
    print(f"pitched sounds: C4 max |cents| {np.max(np.abs(at_c4)):.2f}; all five keys: {np.mean(keys <= 5):.1%} "
          f"within 5 cents of {len(keys)}, median {np.median(keys):.2f}, max {np.max(keys):.2f}")


if __name__ == "__main__":
    main()
