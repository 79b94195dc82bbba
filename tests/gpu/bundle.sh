#!/usr/bin/env bash
# tests/gpu/bundle.sh — everything tests/gpu/device_check.sh needs on a bare GPU machine (one with
# nvcc, a Python with PyTorch and pybind11, and none of our C++ dependencies), made here from a
# CUDA build, in one folder that travels beside the repository:
#
#   tests/gpu/bundle.sh [--build-dir DIR] [--out DIR] [--no-build]   # defaults: build, build-bundle
#
# The folder holds ternps-gpu-bundle.tar.xz and its MANIFEST. In the archive:
#   bin/     the gpu-labelled test binaries, ternps-server, ternps-worker, ternps-bench (stripped)
#   lib/     libternps_worker(.so), libternps_worker_cuda, the trainer's CUDA module, and every
#            shared library those need except glibc's, libstdc++/libgcc_s and CUDA's own
#   python/  what building the Python extension there takes: the package's .py files, the
#            extension's source, the headers it includes (Abseil's, the codec's, config.h),
#            libternps_codec.a and the link line (python/link.txt)
#   data/    a Fashion-MNIST subset (12000 training images, the 10000 test images)
# It builds the CUDA tree first when DIR has no CUDA targets (TERNPS_CUDA=ON). Prints the size;
# fails above 40 MiB (the repository and the bundle travel together, 64 MiB in all).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ROOT}/build"
OUT_DIR="${ROOT}/build-bundle"
LIMIT_MIB=40
BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$(realpath -m "$2")"; shift 2 ;;
    --out) OUT_DIR="$(realpath -m "$2")"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bundle.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
export PATH="/usr/local/cuda/bin:${PATH}"
GPU_TESTS=(codec_device_test philox_device_test step_on_device_test)
PROGRAMS=(ternps-server ternps-worker ternps-bench)

if [[ "${BUILD}" == 1 ]]; then
  if [[ ! -f "${BUILD_DIR}/lib/libternps_worker_cuda.so" ]]; then
    echo "== bundle: configuring a CUDA build in ${BUILD_DIR}"
    cmake -S "${ROOT}" -B "${BUILD_DIR}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERNPS_CUDA=ON >/dev/null
  fi
  echo "== bundle: build (${BUILD_DIR})"
  cmake --build "${BUILD_DIR}" -j "$(nproc)" --target "${GPU_TESTS[@]}" "${PROGRAMS[@]}" \
    ternps_trainer_cuda ternps_python ternps_codec >/dev/null
fi
for f in "${GPU_TESTS[@]/#/bin/}" "${PROGRAMS[@]/#/bin/}" lib/libternps_worker_cuda.so \
         lib/libternps_trainer_cuda.so worker/python/CMakeFiles/ternps_python.dir/link.txt; do
  [[ -e "${BUILD_DIR}/${f}" ]] || { echo "bundle.sh: ${BUILD_DIR}/${f} missing (a CUDA build with the Python package?)" >&2; exit 1; }
done

STAGE="$(mktemp -d)"
trap 'rm -rf "${STAGE}"' EXIT
mkdir -p "${STAGE}"/{bin,lib,python/include/ternps,python/src,python/ternps,data}

for b in "${GPU_TESTS[@]}" "${PROGRAMS[@]}"; do
  strip --strip-unneeded -o "${STAGE}/bin/${b}" "${BUILD_DIR}/bin/${b}"
done
for l in libternps_worker.so.0 libternps_worker_cuda.so.0 libternps_trainer_cuda.so; do
  strip --strip-unneeded -o "${STAGE}/lib/${l}" "$(readlink -f "${BUILD_DIR}/lib/${l}")"
done
ln -s libternps_worker.so.0 "${STAGE}/lib/libternps_worker.so"
ln -s libternps_worker_cuda.so.0 "${STAGE}/lib/libternps_worker_cuda.so"

# Third-party shared libraries: every one the binaries resolve here, except what the GPU machine
# has of its own (the C and C++ runtimes, the CUDA driver and toolkit libraries).
is_system() {
  case "$(basename "$1")" in
    ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|libutil.so*) return 0 ;;
    libstdc++.so*|libgcc_s.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas*|libnvidia*|libnvrtc*|libcufft*|libcurand*|libcusparse*) return 0 ;;
    linux-vdso*) return 0 ;;
  esac
  return 1
}
declare -A SEEN=()
for f in "${STAGE}"/bin/* "${BUILD_DIR}/lib/libternps_worker.so.0" \
         "${BUILD_DIR}/lib/libternps_worker_cuda.so.0" "${BUILD_DIR}/lib/libternps_trainer_cuda.so"; do
  while read -r name arrow path _; do
    [[ "${arrow}" == "=>" ]] || continue
    if [[ "${path}" == "not" ]]; then
      echo "bundle.sh: ${f}: ${name} not found here" >&2; exit 1
    fi
    [[ "${path}" == "${BUILD_DIR}"/* ]] && continue
    is_system "${path}" && continue
    [[ -n "${SEEN[${name}]:-}" ]] && continue
    SEEN[${name}]=1
    echo "$(readlink -f "${path}") ${name}" >>"${STAGE}/realpaths"
    strip --strip-unneeded -o "${STAGE}/lib/${name}" "$(readlink -f "${path}")" 2>/dev/null ||
      cp -L "${path}" "${STAGE}/lib/${name}"
  done < <(LD_LIBRARY_PATH="${BUILD_DIR}/lib" ldd "${f}")
done
# The OpenBLAS that ternps-worker loads through Debian's alternatives needs its own folder's
# libgfortran etc.; ldd above already followed that chain.

# The Python extension's inputs: sources, headers and the link line from this build's own one
# (absolute library paths rewritten to the bundle's lib/ and python/ folders).
cp "${ROOT}"/worker/python/ternps/*.py "${STAGE}/python/ternps/"
cp "${ROOT}/worker/python/ternps/_ternps.cc" "${STAGE}/python/src/"
cp -r /usr/include/absl "${STAGE}/python/include/"
cp "${BUILD_DIR}/include/ternps/config.h" "${STAGE}/python/include/ternps/"
cp "${BUILD_DIR}/lib/libternps_codec.a" "${STAGE}/python/"
LINK_TXT="${BUILD_DIR}/worker/python/CMakeFiles/ternps_python.dir/link.txt"
python3 - "${LINK_TXT}" "${STAGE}" "${BUILD_DIR}" >"${STAGE}/python/link.txt" <<'PY'
import os, shlex, sys
link, stage, build = sys.argv[1:]
words = shlex.split(open(link).read())
libs = []
if "-o" in words:
    del words[words.index("-o"):words.index("-o") + 2]
for w in words:
    if w.startswith("-l"):
        libs.append(w)
    elif w.endswith(".so") or ".so." in w or w.endswith(".a"):
        base = os.path.basename(w)
        if base == "libternps_codec.a":
            libs.append("@PY@/libternps_codec.a")
        elif base.startswith("libternps_worker"):
            libs.append("-lternps_worker")
        elif w.endswith(".a"):
            sys.exit(f"bundle.sh: the extension links a static library the bundle lacks: {w}")
        else:
            staged = dict(line.split() for line in open(os.path.join(stage, "realpaths")))
            name = staged.get(os.path.realpath(w))
            if name is None:
                sys.exit(f"bundle.sh: the extension links {w}, which no bundled binary needs")
            libs.append("@LIB@/" + name)
print(" ".join(dict.fromkeys(libs)))
PY

# A Fashion-MNIST subset: the first 12000 training images and all 10000 test images.
python3 - /usr/share/datasets/fashion-mnist "${STAGE}/data" <<'PY'
import gzip, struct, sys
src, dst = sys.argv[1:]
def subset(prefix, count):
    images = gzip.open(f"{src}/{prefix}-images-idx3-ubyte.gz").read()
    labels = gzip.open(f"{src}/{prefix}-labels-idx1-ubyte.gz").read()
    n = min(count, struct.unpack(">I", images[4:8])[0])
    rows, cols = struct.unpack(">II", images[8:16])
    with gzip.open(f"{dst}/{prefix}-images-idx3-ubyte.gz", "wb", 9) as f:
        f.write(images[:4] + struct.pack(">III", n, rows, cols) + images[16:16 + n * rows * cols])
    with gzip.open(f"{dst}/{prefix}-labels-idx1-ubyte.gz", "wb", 9) as f:
        f.write(labels[:4] + struct.pack(">I", n) + labels[8:8 + n])
subset("train", 12000)
subset("t10k", 10000)
PY

rm -f "${STAGE}/realpaths"
mkdir -p "${OUT_DIR}"
rm -f "${OUT_DIR}/ternps-gpu-bundle.tar.xz" "${OUT_DIR}/MANIFEST"
tar -C "${STAGE}" -cf - . | xz -T0 -6 >"${OUT_DIR}/ternps-gpu-bundle.tar.xz"
{
  echo "commit $(git -C "${ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "${ROOT}" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "made $(date -u +%FT%TZ) on $(. /etc/os-release; echo "${PRETTY_NAME}"), $(nvcc --version | tail -1)"
  (cd "${STAGE}" && find . -type f -o -type l | sort | grep -v '^./python/include/absl/')
  echo "./python/include/absl/ ($(find "${STAGE}/python/include/absl" -type f | wc -l) headers)"
} >"${OUT_DIR}/MANIFEST"
BYTES=$(stat -c %s "${OUT_DIR}/ternps-gpu-bundle.tar.xz")
MIB=$(awk -v b="${BYTES}" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "== bundle: ${OUT_DIR}/ternps-gpu-bundle.tar.xz, ${MIB} MiB ($(du -sh "${STAGE}" | cut -f1) unpacked)"
if (( BYTES > LIMIT_MIB * 1048576 )); then
  echo "bundle.sh: ${MIB} MiB is over the ${LIMIT_MIB} MiB limit" >&2
  exit 1
fi
