# syntax=docker/dockerfile:1
# Multi-stage build of the two binaries into a minimal non-root image.
# Not built in this repository's CI: the development machines have no Docker
# engine. See README.md ("Container image").

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits reuse the cached dependency layer.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p berth -p berth-operator \
 && mkdir -p /out \
 && cp target/release/berth target/release/berth-operator /out/

# distroless/cc: glibc and libgcc only, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/berth /usr/local/bin/berth
COPY --from=build /out/berth-operator /usr/local/bin/berth-operator
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["dev", "--addr", "0.0.0.0:8080"]
