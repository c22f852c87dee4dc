# syntax=docker/dockerfile:1
# codearts-exporter container image.
#
#   docker build -t codearts-exporter .
#   docker run -p 9732:9732 \
#     -v "$PWD/codearts.toml:/etc/codearts-exporter/config.toml:ro" \
#     -v codearts-exporter-state:/var/lib/codearts-exporter \
#     -e CODEARTS_EXPORTER_AUTH__TOKEN=... codearts-exporter
#   docker run -p 9732:9732 codearts-exporter demo --listen 0.0.0.0:9732   # no credentials
# /metrics over HTTPS with basic auth (docs/configuration.md, "Securing /metrics"): mount a web
# configuration and its certificates; the image has no shell, so override the health check in exec
# form (docker compose: config/docker-compose.yml shows it):
#   docker run -p 9732:9732 \
#     -v "$PWD/codearts.toml:/etc/codearts-exporter/config.toml:ro" \
#     -v "$PWD/web:/etc/codearts-exporter-web:ro" \
#     -e CODEARTS_EXPORTER_AUTH__TOKEN=... codearts-exporter \
#     run --config /etc/codearts-exporter/config.toml \
#     --web.config.file /etc/codearts-exporter-web/web-config.yml

# The base images are arguments, so the image builds where these registries cannot be reached
# (scripts/image-test builds it from local stand-ins made of Debian packages).
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- build: the official Rust toolchain image, the same build command as CI ----
# Default features: the image keeps the `demo` subcommand (see the docker run line above).
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config/example.toml ./config/example.toml
COPY config/web-config.example.yml ./config/web-config.example.yml
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/codearts-exporter /out/codearts-exporter \
    && install -d -m 0700 /out/state/codearts-exporter

# ---- run: glibc + libgcc, no shell, uid 65532 ----
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="codearts-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Huawei Cloud CodeArts Pipeline"
COPY --from=build /out/codearts-exporter /usr/local/bin/codearts-exporter
# Every key documented, for reference; mount the real file at /etc/codearts-exporter/config.toml.
COPY --from=build /src/config/example.toml /etc/codearts-exporter/config.example.toml
# The web configuration (TLS, basic auth) documented, for reference.
COPY --from=build /src/config/web-config.example.yml /etc/codearts-exporter/web-config.example.yml
# The state directory (the base image has no shell to make it): owned by the "nonroot" user, and a
# volume, so the state survives the container (docs/operations.md, "Restarts and state"). Docker
# fills a new named volume from it, owner included; Kubernetes gives its volume the pod's fsGroup.
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/
ENV CODEARTS_EXPORTER_STATE__PATH=/var/lib/codearts-exporter/state.db
VOLUME ["/var/lib/codearts-exporter"]
# The base image's "nonroot" user.
USER 65532:65532
EXPOSE 9732
# Secrets come from the environment (CODEARTS_EXPORTER_AUTH__TOKEN, CODEARTS_EXPORTER_AUTH__SK,
# CODEARTS_EXPORTER_AUTH__PASSWORD, ...) or from files named by token_file/sk_file/password_file
# (Docker and Kubernetes secrets), never from the image.
# `healthcheck` GETs http://127.0.0.1:9732/healthz (add --url when server.listen uses another port;
# with TLS on, --url https://127.0.0.1:9732/healthz and --ca-file FILE or --insecure).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/codearts-exporter", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/codearts-exporter"]
CMD ["run", "--config", "/etc/codearts-exporter/config.toml"]
