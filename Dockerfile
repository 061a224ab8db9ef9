# konsumer: one static-ish binary on a distroless base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin konsumer

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/konsumer /usr/local/bin/konsumer
USER nonroot
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/konsumer"]
CMD ["serve"]
