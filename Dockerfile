# tapflow's three binaries in one image, for deploy/k8s (whose kustomization names it `tapflow`).
#   docker build -t tapflow:0.1.0 .
# Build stage: the Rust toolchain and the -dev packages; the runtime stage has only the shared
# libraries the binaries link (libpcap0.8, libzmq5 and what they pull in), checked by
# integration-tests/tests/k8s_image.rs against the binaries' own dynamic dependencies.
FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libpcap-dev libzmq3-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tapflow-collector -p tapflow-processor -p tapflow-aggregator \
    && install -d /out \
    && install -m 0755 target/release/tapflow-collector target/release/tapflow-processor \
        target/release/tapflow-aggregator /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpcap0.8 libzmq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# The manifests choose the user of each container (deploy/k8s); alone, run as nobody.
USER 65534:65534
CMD ["tapflow-aggregator", "--help"]
