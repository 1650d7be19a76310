# dramaq: the four binaries (dramaq, dramaq-worker, dramaq-sandbox, dramaq-studio) with ffmpeg and
# a CJK-capable font for episode assembly, running as an unprivileged user. Build from the repository root:
#
#   docker build -t dramaq:latest .
#
# Stage 1 compiles in the official Rust image; stage 2 is Debian slim with only the runtime
# libraries, ffmpeg (no recommends) and one font family with CJK glyphs (burnt-in subtitles). See deploy/README.md.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Manifests first, so the dependency layer is cached while only sources change.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
RUN cargo build --release --locked --bins -p dramaq-producer -p dramaq-worker -p dramaq-sandbox \
      -p dramaq-studio \
 && mkdir -p /out \
 && cp target/release/dramaq target/release/dramaq-worker target/release/dramaq-sandbox \
      target/release/dramaq-studio /out/ \
 && strip /out/*

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates ffmpeg fonts-wqy-zenhei fontconfig tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dramaq \
 && useradd --system --uid 10001 --gid dramaq --home-dir /var/lib/dramaq --create-home dramaq \
 && mkdir -p /etc/dramaq /var/lib/dramaq/out \
 && chown -R dramaq:dramaq /var/lib/dramaq
COPY --from=build /out/ /usr/local/bin/
COPY examples/dramaq.toml /etc/dramaq/dramaq.toml
ENV DRAMAQ_CONFIG=/etc/dramaq/dramaq.toml \
    DRAMAQ_OUT_DIR=/var/lib/dramaq/out
USER 10001:10001
WORKDIR /var/lib/dramaq
# Metrics, /healthz and /readyz of a worker (9464) and of the reaper (9465); the sandbox's API.
EXPOSE 9464 9465 8787
# tini forwards SIGTERM to the worker, which then finishes within worker.shutdown_grace_ms.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dramaq-worker", "run", "--metrics-addr", "0.0.0.0:9464"]
