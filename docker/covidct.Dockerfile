# The covidct image: `covidct serve` (and every other covidct command) on Debian 12 slim, as a
# non-root user. Build context: the repository root (see .dockerignore), e.g.
#   docker build -f docker/covidct.Dockerfile -t covidct:dev .
# Works with the classic builder and with BuildKit. Dependencies are compiled in their own layer,
# keyed on the Cargo manifests and Cargo.lock only, so a source change recompiles the workspace
# crates and not the ~400 dependencies (burn among them).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
# 1. Manifests only (one line per workspace crate: scripts/validate-delivery.sh checks that
#    every crates/*/Cargo.toml is listed), with empty sources, then the dependencies.
COPY Cargo.toml Cargo.lock weights.lock ./
COPY crates/cli/Cargo.toml crates/cli/
COPY crates/common/Cargo.toml crates/common/
COPY crates/data/Cargo.toml crates/data/
COPY crates/evaluation/Cargo.toml crates/evaluation/
COPY crates/fetch/Cargo.toml crates/fetch/
COPY crates/imaging/Cargo.toml crates/imaging/
COPY crates/lint/Cargo.toml crates/lint/
COPY crates/model/Cargo.toml crates/model/
COPY crates/serve/Cargo.toml crates/serve/
COPY crates/study/Cargo.toml crates/study/
COPY crates/testkit/Cargo.toml crates/testkit/
COPY crates/tracking/Cargo.toml crates/tracking/
COPY crates/training/Cargo.toml crates/training/
COPY crates/weights/Cargo.toml crates/weights/
RUN set -eu; for manifest in crates/*/Cargo.toml; do \
        dir=${manifest%/Cargo.toml}; mkdir -p "$dir/src"; \
        if grep -q '^\[\[bin\]\]' "$manifest"; then echo 'fn main() {}' > "$dir/src/main.rs"; \
        else : > "$dir/src/lib.rs"; fi; \
    done; \
    cargo build --release --locked -p covidct; \
    rm -rf crates target/release/covidct target/release/deps/covidct-* target/release/.fingerprint/covidct*
# 2. The sources; their mtimes are refreshed so that cargo never takes a stub's build for them.
COPY crates crates
RUN find crates -type f -exec touch {} + \
    && cargo build --release --locked -p covidct \
    && objcopy --compress-debug-sections target/release/covidct /covidct \
    && /covidct --version

FROM debian:bookworm-slim
# ca-certificates: TLS to an https MLflow server (reqwest with rustls and the system roots).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/covidct --create-home \
        --shell /usr/sbin/nologin covidct \
    && install -d -o covidct -g covidct /var/cache/covidct
COPY --from=build /covidct /usr/local/bin/covidct
COPY docker/covidct-healthcheck /usr/local/bin/covidct-healthcheck
# Settings are COVIDCT_* variables (see `covidct serve --help`); keys come from files, e.g.
# Docker secrets: COVIDCT_API_KEYS_FILE=/run/secrets/covidct_api_keys.
ENV COVIDCT_BIND=0.0.0.0:8080 \
    COVIDCT_LOG_FORMAT=json \
    COVIDCT_MODEL_CACHE=/var/cache/covidct/models \
    COVIDCT_SPOOL_DIR=/var/cache/covidct/spool \
    COVIDCT_PREDICTION_LOG=/var/lib/covidct/predictions.sqlite
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="covidct" \
      org.opencontainers.image.description="CT-scan SARS-CoV-2 classifier: covidct serve" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="$VCS_REF"
USER covidct
WORKDIR /var/lib/covidct
EXPOSE 8080
# Ready = model loaded and warmed up. start-period covers a registry pull and the warm-up.
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 CMD ["covidct-healthcheck"]
ENTRYPOINT ["covidct"]
CMD ["serve"]
