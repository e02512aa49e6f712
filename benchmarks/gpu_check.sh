#!/usr/bin/env bash
# The one prepared GPU run (device tool): wheels for hydra travel in .gpuwhl (the GPU image lacks them).
set -uo pipefail
export PYTHONUNBUFFERED=1 SELFFLOW_CACHE=/tmp/sfcache OUT="${OUT:-/tmp/out}"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpuwhl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "== NCCL path: torchrun, 1 process, bf16, SiT-S/2 on the image data"
timeout 150 python3 -m torch.distributed.run --nproc_per_node=1 run.py model=sit_s2 train.steps=60 train.batch_size=64 \
  train.precision=bf16 train.log_every=20 train.ckpt_every=60 eval=none sample.num_samples=16 run_dir=/tmp/nccl_run 2>&1 | tail -5
python3 - <<'PY'
import json, torch
m = [json.loads(l) for l in open("/tmp/nccl_run/metrics.jsonl")]
print("nccl run:", {k: m[-1][k] for k in ("step", "loss", "samples_per_s", "world_size", "peak_mem_mb") if k in m[-1]})
print("backend check:", torch.distributed.is_nccl_available())
PY
cp /tmp/nccl_run/metrics.jsonl "$OUT/nccl_metrics.jsonl" 2>/dev/null
cp /tmp/nccl_run/samples/final_grid.png "$OUT/nccl_grid.png" 2>/dev/null
echo "== SiT-XL/2 timings"
timeout 400 python3 benchmarks/gpu_check.py --json "$OUT/gpu_check.json"
