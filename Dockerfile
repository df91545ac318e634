# embgen: a text-embeddings server in one small binary.
#
#   docker build -t embgen .                       # builds from source (needs the Rust image)
#   docker build --target prebuilt -t embgen .     # packs target/release/embgen built on the host
#
# Stages are ordered so that `--target prebuilt` never touches the Rust image, for
# machines that cannot pull one; the default (last) stage builds from source.

ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-slim-bookworm

# The runtime: a slim Debian, a non-root user, the model cache on a volume.
FROM ${BASE_IMAGE} AS runtime-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* \
    && useradd --system --uid 10001 --create-home --home-dir /home/embgen embgen \
    && mkdir -p /data/huggingface \
    && chown embgen:embgen /data/huggingface
ENV HOST=0.0.0.0 \
    PORT=8000 \
    HF_HOME=/data/huggingface \
    LOG_FORMAT=json \
    LOG_LEVEL=info
VOLUME ["/data/huggingface"]
EXPOSE 8000
USER embgen
WORKDIR /home/embgen
# No curl in the image: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["embgen", "health"]
ENTRYPOINT ["embgen"]
CMD ["serve"]

# The binary built on the host (cargo build --release -p embgen; a stripped copy
# is smaller: --build-arg EMBGEN_BINARY=target/docker/embgen).
FROM runtime-base AS prebuilt
ARG EMBGEN_BINARY=target/release/embgen
COPY --chown=root:root ${EMBGEN_BINARY} /usr/local/bin/embgen

# From source.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p embgen \
    && cp target/release/embgen /usr/local/bin/embgen \
    && strip /usr/local/bin/embgen

FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/embgen /usr/local/bin/embgen
