# ternps-worker: the Fashion-MNIST trainer, a data-parallel worker of a ternps job.
#   docker build -f docker/worker.Dockerfile -t ternps-worker .                 # CPU
#   docker build -f docker/worker.Dockerfile -t ternps-worker-gpu \
#     --build-arg RUNTIME_BASE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 .          # GPU nodes
# The runtime base only needs glibc >= 2.36: every other library is copied from the build
# stage. The build stage (debian:bookworm) has no nvcc, so the image is built with
# TERNPS_CUDA=OFF and trains on the CPU even on the nvidia/cuda base: a --device=cuda image needs
# a CUDA development build base and -DTERNPS_CUDA=ON, which this Dockerfile does not set up yet.
ARG BUILD_BASE=debian:bookworm
ARG RUNTIME_BASE=debian:bookworm

FROM ${BUILD_BASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      build-essential cmake pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev \
      protobuf-compiler libabsl-dev prometheus-cpp-dev libssl-dev zlib1g-dev libjemalloc-dev \
      libopenblas-dev dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DTERNPS_CUDA=OFF -DTERNPS_BUILD_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" --target ternps-worker \
 && docker/collect-libs.sh /opt/ternps /build/bin/ternps-worker \
 && mkdir -p /opt/ternps/share \
 && cp -r /usr/share/datasets/fashion-mnist /opt/ternps/share/fashion-mnist

FROM ${RUNTIME_BASE}
COPY --from=build /opt/ternps /opt/ternps
ENV LD_LIBRARY_PATH=/opt/ternps/lib PATH=/opt/ternps/bin:/usr/local/bin:/usr/bin:/bin
USER 10001:10001
EXPOSE 9092
ENTRYPOINT ["/opt/ternps/bin/ternps-worker", "--data_dir=/opt/ternps/share/fashion-mnist"]
CMD ["--help"]
