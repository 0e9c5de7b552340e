# syntax=docker/dockerfile:1
#
# envlink container image: a static (musl) binary on distroless/static, as a numeric
# non-root user.
#
#   docker build -t envlink:0.1.0 .
#
# Ports (documentation only; the chart and deploy/ set them explicitly):
#   8443/tcp  HTTPS: admission endpoints POST /mutate, POST /validate, GET /healthz, GET /readyz
#   9090/tcp  plain HTTP: GET /metrics (Prometheus)

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

# ---- build ---------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
ARG TARGET=x86_64-unknown-linux-musl
# musl-tools: a C compiler for the musl target (aws-lc-rs and mimalloc compile C and assembly).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
WORKDIR /src

# Dependency layer: build every dependency against stub sources, so it is cached until
# Cargo.toml or Cargo.lock change (source edits then only rebuild envlink itself).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/admission.rs \
 && cargo build --locked --release --target "${TARGET}" \
 && rm -rf src benches

# The real build. `touch` makes cargo see the sources as newer than the stub build.
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --locked --release --target "${TARGET}" \
 && cp "target/${TARGET}/release/envlink" /envlink \
 && /envlink --version

# ---- runtime -------------------------------------------------------------------------------
# distroless/static: no shell, no package manager, CA certificates and /etc/passwd only.
FROM ${RUNTIME_IMAGE}
COPY --from=build /envlink /envlink
# Numeric, so Kubernetes can enforce runAsNonRoot without reading /etc/passwd.
# 65532 is distroless' "nonroot".
USER 65532:65532
# The allocator (mimalloc) returns freed memory at once and commits its arenas as they are
# used: with 100,000 Services the first list then peaks at ~59 MB and settles at ~54, the
# same every run, instead of keeping up to 40 MB of freed pages for as long as envlink is
# idle (BENCHMARKS.md, "Issue 16: the catalog as recipes"). mimalloc reads these only from
# the environment at start.
ENV MIMALLOC_PURGE_DELAY=0 MIMALLOC_ARENA_EAGER_COMMIT=0
EXPOSE 8443 9090
ENTRYPOINT ["/envlink"]
CMD ["serve"]
