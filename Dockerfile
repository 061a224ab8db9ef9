# konsumer's image: built with the committed Cargo.lock, run as a non-root user on
# a distroless base that holds nothing but the C runtime; the runtime stage gets
# the stripped binary only (the `dist` profile of Cargo.toml).
# tests/it/image.rs holds this file to those properties; docs/operations.md says
# how it was checked without a container engine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# `--build-arg FEATURES=otlp` for OTLP trace export (`--otlp-endpoint`).
ARG FEATURES=""
RUN cargo build --profile dist --locked --bin konsumer ${FEATURES:+--features "$FEATURES"}

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/konsumer /usr/local/bin/konsumer
# distroless's nonroot user, by number so that runAsNonRoot can check it.
USER 65532:65532
EXPOSE 8443 9443 8080
ENTRYPOINT ["/usr/local/bin/konsumer"]
CMD ["serve"]
