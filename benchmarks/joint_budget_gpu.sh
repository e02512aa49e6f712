#!/usr/bin/env bash
# The `joint` benchmark budget (Table 6's shape) run longer on one lent GPU (device tool); see
# docs/joint_training.md. Not yet run: time one seed first (SEEDS=0) and size the next call from
# its cells' suite_cell.json (wall_s).
#   SCALE=4 SEEDS=0,1,2,3,4,5 WORKERS=5 LIMIT_S=560 benchmarks/joint_budget_gpu.sh
#   benchmarks/joint_budget_gpu.sh --print-commands        # on any machine: the cells, nothing run
# Extra arguments go to benchmarks/joint_budget_gpu.py (hydra overrides for every cell, e.g.
# train.precision=bf16). Wheels for hydra travel in .gpuwhl (the GPU image lacks them), as in
# gpu_check.sh. The suite lives in $SUITE; its light files (reports, eval.json, metrics, records,
# final sample grids; no checkpoints) are copied to $OUT.
set -uo pipefail
PY="${PYTHON:-python3}"
ARGS=(--scale "${SCALE:-1}" --workers "${WORKERS:-5}" --out "${SUITE:-/tmp/joint_gpu}")
[ -n "${SEEDS:-}" ] && ARGS+=(--seeds "$SEEDS")
for a in "$@"; do
  if [ "$a" = "--print-commands" ]; then exec "$PY" benchmarks/joint_budget_gpu.py "${ARGS[@]}" "$@"; fi
done
export PYTHONUNBUFFERED=1 SELFFLOW_CACHE="${SELFFLOW_CACHE:-/tmp/sfcache}" OUT="${OUT:-/tmp/out}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"   # several workers share the 16 cores
if ls .gpuwhl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .gpuwhl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
# The trainer saves and stops on SIGTERM: a run cut by the limit resumes when rerun with the same $SUITE.
timeout --kill-after=60 "${LIMIT_S:-560}" "$PY" benchmarks/joint_budget_gpu.py "${ARGS[@]}" "$@"
echo "exit status: $?"
SUITE_DIR="${SUITE:-/tmp/joint_gpu}"
"$PY" -m experiments --report "$SUITE_DIR" --target joint-selfflow >/dev/null   # also after a cut run
mkdir -p "$OUT/suite"
(cd "$SUITE_DIR" && find . -type f \( -name '*.md' -o -name '*.json' -o -name '*.jsonl' -o -name '*.yaml' \
   -o -name '*.png' \) -not -path '*/checkpoints/*' -size -4M -exec cp --parents {} "$OUT/suite/" \;)
tail -n +1 "$SUITE_DIR/report.md" | head -80
