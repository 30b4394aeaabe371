# syntax=docker/dockerfile:1
# medgemma-server images (build with BuildKit, so that only the stages a target
# needs are built).
#
# GPU (the default target):
#   docker build -t medgemma-server:cuda .
#   docker run --gpus all -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface \
#     -e HF_TOKEN medgemma-server:cuda --model google/medgemma-4b-it
# Arguments after the image name go to `medgemma-server serve --host 0.0.0.0 --port 8000`.
# The server uses CUDA device 0 (MEDGEMMA_DEVICE=cuda, so a missing GPU is an error
# rather than a silent fall-back to the CPU; -e MEDGEMMA_DEVICE=cuda:1 picks another) in bf16 on compute capability 8.0 and newer, f16 on older GPUs.
#
# CUDA_COMPUTE_CAP (default 80) is the GPU generation candle's kernels are compiled
# for, as PTX that the driver compiles for the actual GPU on first use:
#   75 Turing (T4; no bf16: runs f16)   80 Ampere (A100, A30)   86 Ampere (A10, A40, RTX 30xx)
#   89 Ada (L4, L40S, RTX 40xx)         90 Hopper (H100, H200)
# PTX for the lowest capability runs on every later GPU through that JIT, so the
# default 80 serves A100, A10, L4, L40S and H100 alike. 90 is compiled as sm_90a,
# which runs on Hopper only: use it for an H100/H200-only image.
#   docker build --build-arg CUDA_COMPUTE_CAP=89 -t medgemma-server:cuda-ada .
# The host needs the NVIDIA Container Toolkit and a driver for CUDA 12.4 or newer
# (R550+); CUDA_VERSION picks another 12.x toolkit.
#
# CPU (the same start, without --gpus):
#   docker build --target cpu -t medgemma-server:cpu .
#   docker run -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface \
#     -e HF_TOKEN medgemma-server:cpu --model google/medgemma-4b-it
# Other subcommands through the entrypoint, in either image:
#   docker run --entrypoint medgemma-server medgemma-server:cpu bench --synthetic medgemma-4b --device cpu

ARG CUDA_VERSION=12.4.1

# ---- CPU ----
FROM rust:1-bookworm AS build-cpu
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin medgemma-server

FROM debian:bookworm-slim AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /src/target/release/medgemma-server /usr/local/bin/medgemma-server
ENV MEDGEMMA_DEVICE=cpu
EXPOSE 8000
ENTRYPOINT ["medgemma-server", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---- GPU ----
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04 AS build-cuda
ARG RUST_VERSION=1.95.0
ARG CUDA_COMPUTE_CAP=80
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates curl pkg-config \
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --no-modify-path --profile minimal --default-toolchain ${RUST_VERSION}
WORKDIR /src
COPY . .
# nvcc comes from the devel image; libcuda is linked against its stub and supplied
# at run time by the NVIDIA Container Toolkit.
RUN CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} cargo build --release --locked --features cuda --bin medgemma-server

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu22.04 AS cuda
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build-cuda /src/target/release/medgemma-server /usr/local/bin/medgemma-server
ENV MEDGEMMA_DEVICE=cuda
EXPOSE 8000
ENTRYPOINT ["medgemma-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
