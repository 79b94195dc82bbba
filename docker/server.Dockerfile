# ternps-server: one parameter-server shard.
#   docker build -f docker/server.Dockerfile -t ternps-server .
#   docker run --rm -p 7070:7070 -p 9091:9091 ternps-server --shard_index=0 --shard_count=1
ARG BUILD_BASE=debian:bookworm
ARG RUNTIME_BASE=debian:bookworm

FROM ${BUILD_BASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      build-essential cmake pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev \
      protobuf-compiler libabsl-dev prometheus-cpp-dev libssl-dev zlib1g-dev libjemalloc-dev \
      libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DTERNPS_CUDA=OFF -DTERNPS_BUILD_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" --target ternps-server ternps-healthcheck \
 && docker/collect-libs.sh /opt/ternps /build/bin/ternps-server /build/bin/ternps-healthcheck

FROM ${RUNTIME_BASE}
COPY --from=build /opt/ternps /opt/ternps
ENV LD_LIBRARY_PATH=/opt/ternps/lib PATH=/opt/ternps/bin:/usr/local/bin:/usr/bin:/bin
# Non-root; the root filesystem can be read-only: the server writes only its optional
# --port_file and, with --state_dir, its durable state (a volume in deploy/k8s).
USER 10001:10001
EXPOSE 7070 9091
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/opt/ternps/bin/ternps-healthcheck", "--address=127.0.0.1:7070"]
ENTRYPOINT ["/opt/ternps/bin/ternps-server"]
CMD ["--listen=0.0.0.0:7070", "--metrics_address=0.0.0.0:9091"]
