#!/usr/bin/env bash
# The GPU checks of a prebuilt CUDA binary, run on the GPU machine:
#   1. `check`: the fixture checkpoints on cuda:0, f32 greedy ids against the CPU and
#      transformers' goldens; in bf16 every prefill stage (embedding, each layer, the
#      head) from the CPU's input to it against the CPU's output; each CUDA kernel
#      against its reference;
#   2. `bench`: synthetic MedGemma 4B (real shapes, random weights) in bf16 at
#      concurrency 1, 8 and 64, plus the time to first token of a one-image request
#      (decode steps replayed from CUDA graphs, as the server runs);
#   3. the same at concurrency 1 and 64 with `--enforce-eager`, for the graphs' gain;
#   3b. the same at concurrency 1 and 64 with the image request, with the rows
#      attention, the vision bias epilogues and the fused vision attention turned
#      off (`--disable-kernels paged-rows,bias-epilogue,vision-attention`), for what
#      they gain: 64-stream time to first token (rows) and the image's (the others);
#   3c. the same at concurrency 1 and 8 with `--no-decode-lookahead` (each decode
#      step's tokens read before the next step is queued), for what running decode
#      steps ahead gains;
#   3d. concurrency 1 and 64 with tokens drawn as MedGemma's defaults draw them
#      (`--sampled`: temperature 1, top-k 64, top-p 0.95, on the host), with the
#      top-k kernel and without (`--disable-kernels topk`: whole rows to the host);
#   4. the same-run baseline: transformers' `generate` on the same shapes
#      (tools/bench/transformers_baseline.py; skipped where python3 has no
#      transformers);
#   5. synthetic MedGemma 27B at concurrency 1, 8 and 64 with the image request.
# Usage: [OUT_DIR=dir] bash scripts/gpu-check.sh [path/to/medgemma-server]
#   (default binary: target-gpu/release/medgemma-server under the project).
# Writes check.txt, bench-4b.{txt,json}, bench-4b-eager.txt, bench-4b-unfused.txt,
# bench-4b-no-lookahead.txt, bench-4b-sampled.txt, bench-4b-sampled-whole-rows.txt,
# transformers-4b.{txt,json} and bench-27b.{txt,json} to $OUT_DIR (default
# ./gpu-check-out): twelve files. Each command runs under `timeout` (CHECK_TIMEOUT,
# BENCH_TIMEOUT, EAGER_TIMEOUT, UNFUSED_TIMEOUT, LOOKAHEAD_TIMEOUT, SAMPLED_TIMEOUT
# twice, BASELINE_TIMEOUT, BENCH27_TIMEOUT seconds), so the whole script ends within
# 9.5 minutes (about 5 on an H200). Exit status: the check's when it failed (124: timed
# out), else the 4B benchmark's.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/target-gpu/release/medgemma-server}"
OUT_DIR="${OUT_DIR:-./gpu-check-out}"
CHECK_TIMEOUT="${CHECK_TIMEOUT:-90}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-120}"
EAGER_TIMEOUT="${EAGER_TIMEOUT:-45}"
UNFUSED_TIMEOUT="${UNFUSED_TIMEOUT:-55}"
LOOKAHEAD_TIMEOUT="${LOOKAHEAD_TIMEOUT:-40}"
SAMPLED_TIMEOUT="${SAMPLED_TIMEOUT:-40}"
BASELINE_TIMEOUT="${BASELINE_TIMEOUT:-70}"
BENCH27_TIMEOUT="${BENCH27_TIMEOUT:-70}"
# Fused kernels' self-tests and decode graph captures say what is in use.
export MEDGEMMA_LOG="${MEDGEMMA_LOG:-info,medgemma_model::decode_graph=debug}"
RUN="$ROOT/scripts/run-on-device.sh"
mkdir -p "$OUT_DIR"

echo "== check (at most ${CHECK_TIMEOUT}s)"
timeout --kill-after=10 "$CHECK_TIMEOUT" bash "$RUN" "$BIN" \
  check --fixtures "$ROOT/tests/fixtures" --device cuda:0 2>&1 | tee "$OUT_DIR/check.txt"
check_rc=${PIPESTATUS[0]}

echo "== bench (at most ${BENCH_TIMEOUT}s)"
timeout --kill-after=10 "$BENCH_TIMEOUT" bash "$RUN" "$BIN" \
  bench --synthetic medgemma-4b --device cuda:0 --dtype bf16 --concurrency 1,8,64 \
  --images 1 --json "$OUT_DIR/bench-4b.json" 2>&1 | tee "$OUT_DIR/bench-4b.txt"
bench_rc=${PIPESTATUS[0]}

echo "== bench, eager (at most ${EAGER_TIMEOUT}s)"
timeout --kill-after=10 "$EAGER_TIMEOUT" bash "$RUN" "$BIN" \
  bench --synthetic medgemma-4b --device cuda:0 --dtype bf16 --concurrency 1,64 \
  --enforce-eager 2>&1 | tee "$OUT_DIR/bench-4b-eager.txt"

echo "== bench, rows attention and vision kernels off (at most ${UNFUSED_TIMEOUT}s)"
timeout --kill-after=10 "$UNFUSED_TIMEOUT" bash "$RUN" "$BIN" \
  bench --synthetic medgemma-4b --device cuda:0 --dtype bf16 --concurrency 1,64 \
  --images 1 --disable-kernels paged-rows,bias-epilogue,vision-attention 2>&1 | tee "$OUT_DIR/bench-4b-unfused.txt"

echo "== bench, decode steps not run ahead (at most ${LOOKAHEAD_TIMEOUT}s)"
timeout --kill-after=10 "$LOOKAHEAD_TIMEOUT" bash "$RUN" "$BIN" \
  bench --synthetic medgemma-4b --device cuda:0 --dtype bf16 --concurrency 1,8 \
  --no-decode-lookahead 2>&1 | tee "$OUT_DIR/bench-4b-no-lookahead.txt"

echo "== bench, sampled as the defaults sample (at most ${SAMPLED_TIMEOUT}s, twice)"
timeout --kill-after=10 "$SAMPLED_TIMEOUT" bash "$RUN" "$BIN" \
  bench --synthetic medgemma-4b --device cuda:0 --dtype bf16 --concurrency 1,64 \
  --sampled 2>&1 | tee "$OUT_DIR/bench-4b-sampled.txt"
timeout --kill-after=10 "$SAMPLED_TIMEOUT" bash "$RUN" "$BIN" \
  bench --synthetic medgemma-4b --device cuda:0 --dtype bf16 --concurrency 1,64 \
  --sampled --disable-kernels topk 2>&1 | tee "$OUT_DIR/bench-4b-sampled-whole-rows.txt"

echo "== transformers baseline (at most ${BASELINE_TIMEOUT}s)"
if python3 -c "import torch, transformers" 2>/dev/null; then
  PYTHONUNBUFFERED=1 timeout --kill-after=10 "$BASELINE_TIMEOUT" python3 \
    "$ROOT/tools/bench/transformers_baseline.py" "$ROOT/crates/model/presets/medgemma-4b.json" \
    --device cuda --dtype bf16 --concurrency 1,64 --json "$OUT_DIR/transformers-4b.json" \
    2>&1 | tee "$OUT_DIR/transformers-4b.txt"
else
  echo "skipped: python3 has no torch and transformers" | tee "$OUT_DIR/transformers-4b.txt"
fi

echo "== bench 27B (at most ${BENCH27_TIMEOUT}s)"
timeout --kill-after=10 "$BENCH27_TIMEOUT" bash "$RUN" "$BIN" \
  bench --synthetic medgemma-27b --device cuda:0 --dtype bf16 --concurrency 1,8,64 \
  --images 1 --json "$OUT_DIR/bench-27b.json" 2>&1 | tee "$OUT_DIR/bench-27b.txt"

echo "== check exit $check_rc, bench exit $bench_rc; results in $OUT_DIR"
if [ "$check_rc" -ne 0 ]; then
  exit "$check_rc"
fi
exit "$bench_rc"
