#!/usr/bin/env bash
# Issue 17's GPU checks in one call of a lent GPU (the `device` tool's `run`), each one's output under $OUT.
#
# The GPU image has torch, numpy, scipy, numba and matplotlib but not every package SampleGen imports, and
# reaches no network; so first, here, from the repository root (once; about a minute):
#
#   bash benchmarks/gpu_session.sh --prepare CORPUS     # CORPUS: e.g. demo-out/corpus, or any `corpus build` folder
#
# which downloads the missing wheels into .whl/ and saves 64 of the corpus's notes as .gpu/notes.npy (both
# ignored by git through .git/info/exclude). Then one device call, which takes about 6 minutes on an H200:
#
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".gpu"], timeout_s=590)
#
# What it runs, in order, so a call cut short keeps what finished (JSON and logs in $OUT):
#   1. training rows (benchmarks/scale_gpu.py): the whole step recorded as one CUDA graph against the step
#      launched from Python, fp32 and bf16, batch 32, 20,480 notes, 3 epochs; samples/s and validation loss;
#   2. phase retrieval from six threads against one (benchmarks/gpu_threads.py);
#   3. phase retrieval and generation figures (scale_gpu.py without training rows).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    corpus=${2:?usage: bash benchmarks/gpu_session.sh --prepare CORPUS}
    set -e
    mkdir -p .git/info .whl .gpu
    for path in /.whl/ /.gpu/; do grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude; done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl soundfile cffi pycparser soxr tqdm
    PYTHONPATH=src:benchmarks .venv/bin/python - "$corpus" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from phase_retrieval import load_notes

_, audio = load_notes(Path(sys.argv[1]), 64)
np.save(".gpu/notes.npy", np.asarray(audio, dtype=np.float32))
print(f"{len(audio)} notes -> .gpu/notes.npy")
EOF
    ls .whl
    exit 0
fi

out=${OUT:-/tmp/gpu-session}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
notes=.gpu/notes.npy
[[ -f $notes ]] || { echo "no $notes: run 'bash benchmarks/gpu_session.sh --prepare CORPUS' here first"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

python3 benchmarks/scale_gpu.py --workdir /tmp/sg --out "$out/train.json" --notes-npy "$notes" --training-only \
    --rows after:fp32:32,after:fp32:32:ungraphed,after:bf16:32,after:bf16:32:ungraphed --epochs 3 \
    2>&1 | tee "$out/train.log"
python3 benchmarks/gpu_threads.py --notes-npy "$notes" 2>&1 | tee "$out/gpu_threads.log"
python3 benchmarks/scale_gpu.py --workdir /tmp/sg --out "$out/phase.json" --notes-npy "$notes" --rows none \
    2>&1 | tee "$out/phase.log"
