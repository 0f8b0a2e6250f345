# syntax=docker/dockerfile:1
# The operator image: a static (musl) binary on distroless/static, running as non-root.
#   docker build -t mailsec-operator:0.1.0 .
# (These development machines have no container engine; the image is built by CI elsewhere.
# tests/image.rs replays the build stage on the context .dockerignore lets through.)
#
# It runs as UID/GID 65532 (distroless "nonroot") and writes nothing to its filesystem, so it
# runs with a read-only root filesystem (the chart sets readOnlyRootFilesystem: true,
# runAsNonRoot, runAsUser 65532, no capabilities):
#   docker run --read-only --user 65532:65532 --cap-drop ALL mailsec-operator:0.1.0 --help

FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# Dependencies first, so that they are cached while only the sources change. Cargo.toml declares
# the benches, so their files must exist for Cargo to read it: empty ones here, the real ones below.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && touch benches/engine.rs benches/decode.rs benches/load.rs benches/offline.rs benches/scrape.rs \
 && cargo build --release --locked --bin mailsec-operator \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin mailsec-operator \
 && strip target/release/mailsec-operator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="mailsec-operator" \
      org.opencontainers.image.description="Kubernetes operator for the licensing lifecycle of a multi-tenant email-security service" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/mailsec-operator /usr/local/bin/mailsec-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/mailsec-operator"]
CMD ["run"]
