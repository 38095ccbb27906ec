#!/usr/bin/env bash
# The GPU checks, as one script: run it from the repository root on a machine with CUDA
# (after `make install`; vs_open_clip also needs `pip install -e '.[bench]'`).
#   1. benchmarks 1 and 2 on the GPU (train step vs bare compute, fp32 and bf16; vs open_clip);
#   2. a 1-GPU `wenlan pretrain` in bf16 against fp32: pairs/s and val recall of each.
# Each step prints its JSON line or recall table; everything also lands in $OUT (default gpu-results/).
set -euo pipefail
OUT=${OUT:-gpu-results}
PY=${PY:-.venv/bin/python}
WENLAN=${WENLAN:-.venv/bin/wenlan}
STEPS=${STEPS:-1000}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'benchmarks/gpu.sh needs a CUDA GPU (torch.cuda.is_available() is False).')"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"

for precision in fp32 bf16; do
  "$PY" benchmarks/train_step.py --device cuda --precision "$precision" --batch-size 256 | tee "$OUT/train_step-$precision.json"
done
if "$PY" -c "import open_clip" 2>/dev/null; then
  "$PY" benchmarks/vs_open_clip.py --device cuda --batch-size 256 --workers 8 | tee "$OUT/vs_open_clip.json"
else
  echo "open_clip_torch is not installed: skipping vs_open_clip (pip install -e '.[bench]')" | tee "$OUT/vs_open_clip.skipped"
fi
for precision in fp32 bf16; do
  "$WENLAN" pretrain --device cuda --precision "$precision" --steps "$STEPS" --batch-size 256 --queue-size 4096 \
      --out "$OUT/pretrain-$precision" 2>&1 | tail -n 12 | tee "$OUT/pretrain-$precision.txt"
  "$PY" - "$OUT/pretrain-$precision" <<'PYEOF'
import json, sys, statistics
lines = [json.loads(x) for x in open(f"{sys.argv[1]}/metrics.jsonl") if x.strip()]
rates = [x["pairs_per_s"] for x in lines if "pairs_per_s" in x][5:]
recall = json.load(open(f"{sys.argv[1]}/recall.json"))
print(json.dumps({"run": sys.argv[1], "median_pairs_per_s": statistics.median(rates), "mean_recall": recall["mean_recall"]}))
PYEOF
done
