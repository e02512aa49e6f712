#!/usr/bin/env bash
# Prepared GPU run: the audio cells of the `standard` budget (micro model, 3 methods x 3 seeds,
# fd_aisfx) trained STEPS steps instead of 300, all 9 runs at once on one GPU, then the suite
# report. Asks whether the CPU run's "Self-Flow worse than fm at 300 steps" persists with more
# training. Needs the hydra wheels in .gpuwhl/ and the aiSFX + CREPE-tiny files in .gpuweights/
# (both carried; the GPU machine has no network).
set -uo pipefail
STEPS="${STEPS:-3000}"; EVERY="${EVERY:-750}"; LIMIT="${LIMIT:-420}"
export PYTHONUNBUFFERED=1 SELFFLOW_CACHE=/tmp/sfcache OUT="${OUT:-/tmp/out}" SELFFLOW_WEIGHTS_DIR="$PWD/.gpuweights"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # 9 processes share 16 cores
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpuwhl/*.whl && export PYTHONPATH=/tmp/site
D=/tmp/audio_long
python3 -m experiments --budget standard --modalities audio --out $D --print-commands \
  train.steps=$STEPS train.eval_every=$EVERY train.ckpt_every=$STEPS ${EXTRA:-} | sed 's/^python /python3 /' > /tmp/cmds.txt
python3 - <<'PY'   # generate the data set once, before 9 processes would race to make it
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
import os
with initialize_config_dir(config_dir=os.path.abspath("configs"), version_base="1.3"):
    cfg = compose("config", overrides=["modality=audio", "modality.dataset.clips_per_class=16"])
print("dataset:", len(instantiate(cfg.modality.dataset)), "clips")
PY
echo "== $(wc -l < /tmp/cmds.txt) runs, $STEPS steps each, in parallel (limit ${LIMIT}s)"
t0=$(date +%s)
while read -r cmd; do
  name=$(echo "$cmd" | grep -o 'run_dir=[^ ]*' | sed 's|.*/audio/||; s|/|_|')
  (timeout "$LIMIT" bash -c "$cmd" > "/tmp/log_$name.txt" 2>&1; echo "$name rc=$? $(( $(date +%s) - t0 ))s") &
done < /tmp/cmds.txt
wait
python3 -m experiments --report $D > /dev/null 2>&1 || echo "report failed"
mkdir -p "$OUT/audio_long"
cp $D/report.md $D/aggregate.json $D/*.png "$OUT/audio_long/" 2>/dev/null
tar -czf "$OUT/audio_long/runs.tgz" -C $D --exclude=checkpoints --exclude='*.wav' --exclude='*.mp4' audio 2>/dev/null
for f in /tmp/log_*.txt; do echo "--- $f"; grep -E "Error|error|Traceback" "$f" | tail -3; done
sed -n '/## audio/,/Training cost/p' $D/report.md | head -30
