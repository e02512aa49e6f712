#!/usr/bin/env bash
# Second prepared GPU run (device tool; gpu_check.sh was the first):
#  1. FSDP2 vs DDP through torchrun + NCCL, 1 process, bf16, Self-Flow on SiT-S/2, same seed:
#     the logged losses should agree to bf16 noise; then an FSDP2 resume 40 -> 60 steps;
#  2. REPA with a DINOv2-B/14-sized encoder (random weights, official layout) through run.py on CUDA;
#  3. benchmarks/repa_encoder_cost.py: repa(DINOv2-B)/fm step-time ratio at SiT-XL width, bf16.
set -uo pipefail
export PYTHONUNBUFFERED=1 SELFFLOW_CACHE=/tmp/sfcache OUT="${OUT:-/tmp/out}"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpuwhl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
TR="python3 -m torch.distributed.run --nproc_per_node=1"
C="model=sit_s2 method=selfflow train.batch_size=64 train.precision=bf16 train.log_every=10 train.ckpt_every=20
   eval=none sample.num_samples=16 train.progress=false seed=0"
echo "== 1. DDP vs FSDP2 (40 steps), then FSDP2 resume to 60"
timeout 150 $TR run.py $C train.steps=40 run_dir=/tmp/ddp 2>&1 | grep -E "Error|error|run directory" | tail -3
timeout 150 $TR run.py $C train.steps=40 train.fsdp=true run_dir=/tmp/fsdp 2>&1 | grep -E "Error|error|run directory" | tail -3
timeout 150 $TR run.py $C train.steps=60 train.fsdp=true train.resume=/tmp/fsdp run_dir=/tmp/fsdp 2>&1 \
  | grep -E "Error|error|resumed|run directory" | tail -3
python3 - <<'PY'
import json
def rows(p):
    return {r["step"]: r for r in map(json.loads, open(p)) if "loss" in r}
d, f = rows("/tmp/ddp/metrics.jsonl"), rows("/tmp/fsdp/metrics.jsonl")
for s in sorted(set(d) | set(f)):
    a, b = d.get(s, {}), f.get(s, {})
    print(f"step {s:3d}  ddp loss {a.get('loss', float('nan')):.5f}  fsdp loss {b.get('loss', float('nan')):.5f}"
          f"  ddp {a.get('samples_per_s', 0):7.1f} /s  fsdp {b.get('samples_per_s', 0):7.1f} /s"
          f"  mem ddp {a.get('peak_mem_mb', 0):.0f} fsdp {b.get('peak_mem_mb', 0):.0f} MB")
PY
cp /tmp/ddp/metrics.jsonl "$OUT/ddp_metrics.jsonl"; cp /tmp/fsdp/metrics.jsonl "$OUT/fsdp_metrics.jsonl"
echo "== 2. REPA + DINOv2-B-sized encoder through run.py on CUDA (image data, 224 px)"
python3 -c "import torch; from evals.dinov2 import DINOv2; torch.manual_seed(0); torch.save(DINOv2(768, 12).state_dict(), '/tmp/dinov2_b.pth')"
timeout 150 $TR run.py model=sit_s2 method=repa_offline method.encoder.backbone=dinov2 method.encoder.weights_path=/tmp/dinov2_b.pth \
  train.steps=30 train.batch_size=64 train.precision=bf16 train.log_every=10 train.ckpt_every=30 eval=none \
  sample.num_samples=16 train.progress=false run_dir=/tmp/repa_dino 2>&1 | grep -E "Error|error|run directory" | tail -3
tail -1 /tmp/repa_dino/metrics.jsonl; cat /tmp/repa_dino/encoder.json
cp /tmp/repa_dino/metrics.jsonl "$OUT/repa_dino_metrics.jsonl"
echo "== 3. REPA (DINOv2-B) / fm step time, SiT-XL width, bf16"
timeout 200 python3 benchmarks/repa_encoder_cost.py --steps 10 --json "$OUT/repa_encoder_cost.json"
