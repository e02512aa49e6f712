#!/usr/bin/env bash
# The prepared MFU run for a lent GPU machine (device tool): fm and selfflow, eager and compiled,
# SiT-XL/2 batch 32 bf16. Wheels for hydra travel in .gpuwhl (the GPU image lacks them), as in gpu_check.sh.
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT="${OUT:-/tmp/out}"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpuwhl/*.whl 2>/dev/null && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 540 python3 benchmarks/gpu_mfu.py --json "$OUT/gpu_mfu.json"
