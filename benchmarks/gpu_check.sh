#!/usr/bin/env bash
# GPU check, for a CUDA machine; about 5 minutes. From the repository root:
#
#     make setup && bash benchmarks/gpu_check.sh
#
# 1. the test suite's `gpu` marker: CUDA training of a small ladder in bf16, fused AdamW,
#    bf16 autocast, attention dropout through the flash kernel (tests/test_gpu.py);
# 2. `scalelib bench` for S, M and L at V=512 in bf16, with MFU against the measured bf16
#    matmul peak;
# 3. the projected wall time of the reference study's full rich-regime sweep (six sizes x three
#    seeds, `paper` preset) from measured training and evaluation throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

"$PY" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (a CPU build of torch, or no GPU); "
             "run it on a GPU machine after `make setup`")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
PY

echo "== 1. gpu tests"
"$PY" -m pytest -q -m gpu tests/test_gpu.py

echo "== 2. throughput, bf16, V=512, batch 64"
for size in S M L; do
    "$PY" -m scalelib bench --size "$size" --genes 512 --batch 64 --steps 20 \
        --dtype bf16 --device cuda
done

echo "== 3. projected rich-regime sweep (XXS, TINY, XS, S, M, L x 3 seeds)"
"$PY" benchmarks/project_sweep.py --device cuda --dtype bf16 --steps 20
