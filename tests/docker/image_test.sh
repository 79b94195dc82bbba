#!/usr/bin/env bash
# tests/docker/image_test.sh — builds the server and worker images without a Docker engine and
# runs them (ctest label `slow`; not part of the default run).
#
#   1. debootstrap a Debian bookworm base and import it as debian:bookworm (podman, vfs storage);
#   2. build docker/server.Dockerfile and docker/worker.Dockerfile unchanged with buildah
#      (storage driver vfs, isolation chroot; the worker with its default CPU base);
#   3. run the server image's --help, then a 1-shard x 1-worker training smoke run with podman
#      (runtime runc, host network): the worker must print its JSON summary, the shard must
#      report SERVING to ternps-healthcheck and exit 0 on SIGTERM.
# Needs root and network access to the Debian archive. Prints the time each stage took.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${TERNPS_IMAGE_WORK:-/var/tmp/ternps-image-test}"
MIRROR="${TERNPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
S=(--storage-driver vfs)
# shellcheck source=deploy/local/packages.sh
source "${ROOT}/deploy/local/packages.sh"
ternps_install_packages debootstrap buildah podman runc

stamp() { echo "== $(date +%T) $*"; }
T0=$(date +%s)
mkdir -p "${WORK}"
if ! podman "${S[@]}" image exists docker.io/library/debian:bookworm; then
  stamp "debootstrap bookworm (${MIRROR})"
  rm -rf "${WORK}/rootfs"
  debootstrap --variant=minbase bookworm "${WORK}/rootfs" "${MIRROR}" >"${WORK}/debootstrap.log"
  tar -C "${WORK}/rootfs" -c . | podman "${S[@]}" import - docker.io/library/debian:bookworm
  rm -rf "${WORK}/rootfs"
fi
T1=$(date +%s)
for image in server worker; do
  stamp "buildah bud docker/${image}.Dockerfile"
  buildah "${S[@]}" bud --isolation chroot --pull-never --layers \
    -f "${ROOT}/docker/${image}.Dockerfile" -t "localhost/ternps-${image}:test" "${ROOT}"
done
T2=$(date +%s)

# podman (as root) would raise the open-file and process limits to its defaults, which a
# sandbox without CAP_SYS_RESOURCE refuses: keep the current open-file limit, a modest nproc.
RUN=(podman "${S[@]}" run --runtime runc --network host
     --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
stamp "ternps-server --help"
"${RUN[@]}" --rm localhost/ternps-server:test --help | head -3

stamp "smoke run: 1 shard x 1 worker"
SHARED="${WORK}/run"
rm -rf "${SHARED}" && mkdir -p "${SHARED}" && chmod 777 "${SHARED}"
podman "${S[@]}" rm -f ternps-smoke-shard >/dev/null 2>&1 || true
"${RUN[@]}" -d --name ternps-smoke-shard -v "${SHARED}:/shared" localhost/ternps-server:test \
  --listen=127.0.0.1:0 --port_file=/shared/port --metrics_address=127.0.0.1:0 >/dev/null
cleanup() { podman "${S[@]}" rm -f ternps-smoke-shard >/dev/null 2>&1 || true; }
trap cleanup EXIT
for ((i = 0; i < 300; i++)); do [[ -s "${SHARED}/port" ]] && break; sleep 0.1; done
PORT="$(cat "${SHARED}/port")"
podman "${S[@]}" exec ternps-smoke-shard /opt/ternps/bin/ternps-healthcheck \
  --address="127.0.0.1:${PORT}"
"${RUN[@]}" --rm localhost/ternps-worker:test --shards="127.0.0.1:${PORT}" --rank=0 \
  --world_size=1 --epochs=1 --max_steps_per_epoch=100 | tee "${WORK}/worker.out"
grep -q '^{"summary": "ternps-worker"' "${WORK}/worker.out"
podman "${S[@]}" stop -t 20 ternps-smoke-shard >/dev/null
CODE="$(podman "${S[@]}" inspect ternps-smoke-shard --format '{{.State.ExitCode}}')"
[[ "${CODE}" == 0 ]] || { echo "shard exited with ${CODE}"; exit 1; }
T3=$(date +%s)
echo "== image test passed: base $((T1 - T0)) s, image builds $((T2 - T1)) s," \
  "runs $((T3 - T2)) s, total $((T3 - T0)) s"
