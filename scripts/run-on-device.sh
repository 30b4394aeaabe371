#!/usr/bin/env bash
# Runs a CUDA build of medgemma-server (`cargo build --release --features cuda`,
# possibly made on a GPU-less machine against CUDA 13.0) on a GPU machine that has
# no Rust toolchain: finds the CUDA 13 libraries there (the PyTorch wheels'
# nvidia/cu13 folder, /usr/local/cuda), sets LD_LIBRARY_PATH, checks that every
# library the binary needs resolves, then replaces itself with the binary.
# Usage (on the GPU machine): bash scripts/run-on-device.sh path/to/medgemma-server [args...]
# Exit codes: 2 no arguments, 3 no executable at the path, 127 a library does not resolve,
# otherwise the binary's own.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 path/to/medgemma-server [args...]" >&2; exit 2; }
BIN="$1"; shift
[ -x "$BIN" ] || { echo "run-on-device: no executable at $BIN (was it carried?)" >&2; exit 3; }
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
NEEDED="libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13"
LIBDIRS=""
for so in $NEEDED; do
  f=$(find -L /opt/torch/.venv/lib/python3*/site-packages/nvidia /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 \
        -name "$so*" \( -type f -o -type l \) 2>/dev/null | sort | head -1)
  [ -n "$f" ] || { echo "run-on-device: $so not found" >&2; continue; }
  d=$(dirname "$f"); case ":$LIBDIRS:" in *":$d:"*) ;; *) LIBDIRS="${LIBDIRS:+$LIBDIRS:}$d";; esac
done
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -d "$d" ] && LIBDIRS="$LIBDIRS:$d"; done
export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$BIN" | grep "not found"; then echo "run-on-device: unresolved libraries" >&2; exit 127; fi
exec "$BIN" "$@"
