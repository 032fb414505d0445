#!/usr/bin/env bash
# The GPU-only paths, run once on one CUDA GPU in at most 9 minutes, their figures written to one folder:
#   1. the family table of docs/benchmarks.md (7 families: training step and whole inference at each dataset's
#      crop in fp32, `auto` (bf16/fp16 + channels_last) and compiled; UNet slide on a DRIVE image)
#   2. torch.compile'd training step (fcn_r18-d8)
#   3. the benchmark table (train step, overhead, syncs, whole + slide inference) of fcn_r18-d8 and pspnet_r50-d8
#   4. a 1-GPU DDP training run with SyncBN (runtime=ddp, the shapes experiment, a few dozen iterations)
#   5. ONNX Runtime on CUDA (the DDP run's checkpoint exported), when onnxruntime has the CUDA provider
#
#   bash scripts/gpu_check.sh [OUT_DIR]        # default logs/gpu_check/<date>; figures in OUT_DIR/figures.md
#
# On a machine without CUDA it prints "no CUDA device: skipped" and exits 0 (tests/tools/test_gpu_check.py). Each step has
# its own time limit and is skipped when the 9-minute budget (GPU_CHECK_BUDGET_S, default 540 s) cannot fit it; a
# failed step is reported in figures.md and the script goes on. GPU_CHECK_DRY_RUN=1 prints the commands only.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
BUDGET="${GPU_CHECK_BUDGET_S:-540}"
DRY="${GPU_CHECK_DRY_RUN:-0}"

if [ "$DRY" != "1" ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no CUDA device: skipped (scripts/gpu_check.sh runs only where torch.cuda.is_available())"
  exit 0
fi

OUT="${1:-logs/gpu_check/$(date -u +%Y-%m-%d_%H-%M-%S)}"
STATUS="$OUT/status.tsv"
if [ "$DRY" != "1" ]; then
  mkdir -p "$OUT"
  : > "$STATUS"
  "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee "$OUT/gpu.txt"
fi
START=$SECONDS

# step NAME LIMIT_S COMMAND...: run it under `timeout` if the budget still holds LIMIT_S, log to OUT/NAME.log
step() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$DRY" = "1" ]; then
    echo "[$name, ${limit}s] $*"
    return 0
  fi
  if [ "$left" -lt "$limit" ]; then
    echo "== $name: skipped ($left s left of the budget, needs $limit s)"
    printf '%s\tskipped\t0\n' "$name" >> "$STATUS"
    return 0
  fi
  echo "== $name ($limit s at most): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$STATUS"
  [ "$rc" -eq 0 ] || { echo "   rc=$rc, last lines of $OUT/$name.log:"; tail -n 5 "$OUT/$name.log"; }
}

BENCH=("$PY" scripts/benchmark.py --device cuda)
CITY=(dataset=cityscapes dataset.batch_size=2 "dataset.crop_size=[512,1024]")

step families 240 "${BENCH[@]}" --families --variants auto compile unfolded --steps 5 --repeats 2 --infer-steps 5 \
  --out "$OUT/families.json"
step compile 120 "${BENCH[@]}" model=fcn_r18-d8 "${CITY[@]}" runtime.precision=bf16-mixed --compile \
  --only overhead --steps 5 --warmup 3 --repeats 1 --out "$OUT/compile_fcn_r18-d8.json"
for model in fcn_r18-d8 pspnet_r50-d8; do
  step "bench_$model" 80 "${BENCH[@]}" model="$model" "${CITY[@]}" \
    --steps 5 --warmup 3 --repeats 3 --infer-size 1024 2048 --infer-steps 3 --out "$OUT/bench_$model.json"
done
RUN_DIR="$OUT/ddp_run"
step ddp_syncbn 90 "$PY" -m src.train experiment=fcn_shapes runtime=ddp runtime.trainer.devices=1 \
  schedule.max_steps=40 schedule.val_interval=20 schedule.ckpt_interval=40 logger=csv \
  "hydra.run.dir=$RUN_DIR"
step onnx_cuda 60 "$PY" -m src.tools.gpu_check onnx "$RUN_DIR" "$OUT/onnx_cuda.json"

if [ "$DRY" != "1" ]; then
  "$PY" -m src.tools.gpu_check summary "$OUT" > "$OUT/figures.md"
  echo "figures: $OUT/figures.md ($((SECONDS - START)) s)"
  cat "$OUT/figures.md"
fi
