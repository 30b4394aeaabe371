#!/usr/bin/env bash
# Per-kernel GPU times of a small synthetic MedGemma 4B run, with Nsight Compute,
# on the GPU machine. The model is MedGemma 4B's shapes cut to 2 decoder and 2
# vision layers (tools/bench/medgemma-4b-2-layers.json; SYNTHETIC overrides it):
# Nsight Compute costs milliseconds per launch, and every layer launches the same
# kernels. One request of 8 prompt tokens and 4 new tokens, eagerly
# (Nsight Compute times kernels one by one; a graph replay would be one launch),
# and the one-image time-to-first-token comparison. Each kernel is timed alone
# (`gpu__time_duration`), clocks and caches left as they are.
# `python3 tools/bench/ncu_summary.py kernels.csv --layers 2` then splits the launches into
# decode steps, prefills and vision forwards and totals them by kernel.
# Usage: [OUT_DIR=dir] [NCU=path] bash scripts/gpu-profile.sh [path/to/medgemma-server]
# Writes kernels.csv (one row per launch) and profile.txt to $OUT_DIR.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/target-gpu/release/medgemma-server}"
OUT_DIR="${OUT_DIR:-./gpu-check-out}"
PROFILE_TIMEOUT="${PROFILE_TIMEOUT:-150}"
SYNTHETIC="${SYNTHETIC:-$ROOT/tools/bench/medgemma-4b-2-layers.json}"
NCU="${NCU:-$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)}"
mkdir -p "$OUT_DIR"
[ -n "$NCU" ] && [ -x "$NCU" ] || { echo "gpu-profile: no ncu found" >&2; exit 3; }
echo "== profile with $NCU (at most ${PROFILE_TIMEOUT}s)"
timeout --kill-after=10 "$PROFILE_TIMEOUT" "$NCU" --clock-control none --cache-control none \
  --metrics gpu__time_duration.sum --csv --page raw --print-units base \
  --log-file "$OUT_DIR/kernels.csv" \
  bash "$ROOT/scripts/run-on-device.sh" "$BIN" \
  bench --synthetic "$SYNTHETIC" --device cuda:0 --dtype bf16 --concurrency 1 \
  --prompt-tokens 8 --max-tokens 4 --images 1 --enforce-eager 2>&1 | tee "$OUT_DIR/profile.txt"
rc=${PIPESTATUS[0]}
echo "== profile exit $rc; $(wc -l <"$OUT_DIR/kernels.csv" 2>/dev/null || echo 0) lines in kernels.csv"
exit "$rc"
