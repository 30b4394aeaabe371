# CPU image. Build: docker build -t medgemma-server .
# Run:   docker run -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface \
#          -e HF_TOKEN medgemma-server generate --model google/medgemma-4b-it --prompt "..."
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin medgemma-server

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/medgemma-server /usr/local/bin/medgemma-server
ENTRYPOINT ["medgemma-server"]
