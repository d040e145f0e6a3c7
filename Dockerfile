# Dockerfile — one image holding every stormstack binary: the five services and storm-loadgen.
# docker-compose.yml runs each service from it with a different command.
#
# Stages: chef (the Rust toolchain + cargo-chef) → planner (the dependency recipe) → cacher (builds
# only the dependencies, cached until Cargo.toml/Cargo.lock change) → builder (our code) → runtime.
# The one thing not to break: the cacher and the builder must select the same packages
# (STORM_PACKAGES) with the same profile, or the feature sets differ and every dependency is rebuilt.
#
# Heap profiling (/debug/pprof/heap) works in the runtime image because:
#   - the binaries export `malloc_conf` (services/common/src/pprof.rs), so jemalloc profiles from the
#     first allocation without any environment (MALLOC_CONF may still override it at run time);
#   - jemalloc_pprof writes each dump to a temporary file: TMPDIR=/tmp, writable by the service user
#     (mount a tmpfs there if you run the container read-only);
#   - symbolization is in-process (jemalloc_pprof's `symbolize`, pprof-rs for CPU): the binaries keep
#     their line tables (release profile: debug = "limited") and are not stripped; their debug
#     sections are zlib-compressed (SHF_COMPRESSED, which the backtrace crate reads), which halves
#     them. No jeprof, perl or binutils are needed at run time.
# Migrations are not copied: sqlx::migrate!("../../migrations") embeds them at compile time.

ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=debian:12.11-slim

# --- chef: the toolchain the workspace builds with (edition 2024; rustc 1.95) ---------------------
FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src
# Every package with a binary the image ships (their [[bin]]s are storm-gateway, storm-messages,
# storm-chat, storm-writer, storm-interceptors, storm-loadgen); storm-testkit is test-only.
ENV STORM_PACKAGES="-p storm-gateway -p storm-messages -p storm-chat -p storm-writer -p storm-interceptors -p storm-loadgen"

# --- planner: reduce the workspace to its dependency graph ----------------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- cacher: build the dependencies only (the slow part: fat LTO, one codegen unit) ---------------
FROM chef AS cacher
COPY --from=planner /src/recipe.json recipe.json
# ${STORM_PACKAGES} is left unquoted on purpose: it is a list of flags.
RUN cargo chef cook --release --locked --recipe-path recipe.json ${STORM_PACKAGES}

# --- builder: our crates, on top of the cached dependencies ---------------------------------------
FROM chef AS builder
COPY . .
COPY --from=cacher /src/target target
COPY --from=cacher /usr/local/cargo/registry /usr/local/cargo/registry
RUN cargo build --release --locked ${STORM_PACKAGES} --bins \
 && mkdir -p /out \
 && for bin in storm-gateway storm-messages storm-chat storm-writer storm-interceptors storm-loadgen; do \
      objcopy --compress-debug-sections=zlib-gabi "target/release/$bin" "/out/$bin" || exit 1; \
    done \
 && /out/storm-loadgen --version

# --- runtime: Debian slim (glibc as the builder's bookworm), a fixed non-root user ----------------
FROM ${RUNTIME_IMAGE} AS runtime
# curl: the compose health checks (curl -f http://127.0.0.1:PORT/ready) and a way to pull a heap
# profile from inside the container; ca-certificates: OTLP over https, rediss/amqps URLs; openssl
# (a dependency of ca-certificates anyway, named so nobody drops it): compose's k6-token service
# mints the k6 profile's token at start with scripts/gen-jwt.sh, which needs only bash and openssl.
# /tokens: where that token is written, owned by the service user so a fresh named volume mounted
# there takes that owner.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl openssl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 storm \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/storm \
      --shell /usr/sbin/nologin storm \
 && install -d -m 0755 -o 10001 -g 10001 /tokens
COPY --from=builder /out/ /usr/local/bin/
# storm-loadgen records the commit in its reports (no git in the image): pass --build-arg STORM_COMMIT.
ARG STORM_COMMIT=unknown
ENV TMPDIR=/tmp \
    STORM_COMMIT=${STORM_COMMIT}
USER 10001:10001
WORKDIR /home/storm
# API: gateway 8080, messages 8081, chat 8082, writer 8083, interceptors 8185 (calls on 8180–8184);
# pprof: 6060–6064. The API listeners bind all interfaces by default (":8080" style); pprof defaults
# to 127.0.0.1, so docker-compose.yml and the Kubernetes ConfigMaps set PPROF_ADDR=0.0.0.0:606x
# explicitly (compose publishes it on the host's 127.0.0.1 only).
EXPOSE 8080 8081 8082 8083 8180 8181 8182 8183 8184 8185 6060 6061 6062 6063 6064
# No HEALTHCHECK here: the port depends on which binary runs; docker-compose.yml probes /ready.
CMD ["storm-gateway"]
