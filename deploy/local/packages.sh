# deploy/local/packages.sh — the Debian packages ternps needs, and a helper that installs the
# missing ones. Sourced by tests/run.sh and deploy/local/run.sh; not meant to be run directly.

TERNPS_BUILD_PACKAGES=(
  build-essential cmake pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libssl-dev zlib1g-dev libjemalloc-dev libopenblas-dev
)
TERNPS_RUN_PACKAGES=(
  dataset-fashion-mnist
)
TERNPS_TEST_PACKAGES=(
  libgtest-dev libgmock-dev libbenchmark-dev clang-format prometheus clang
)
# The Python package (worker/python: pybind11 bindings) and its tests (label `python`).
TERNPS_PYTHON_PACKAGES=(
  python3-dev python3-pybind11 python3-numpy python3-torch python3-grpcio python3-protobuf
  python3-pip python3-venv python3-setuptools python3-wheel
)

# ternps_install_packages PKG... — apt-get installs those not yet installed (sudo when not root).
ternps_install_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("${pkg}")
    fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "== packages: all ${#} present"
    return 0
  fi
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    if ! command -v sudo >/dev/null; then
      echo "error: missing packages (${missing[*]}) and not root, and sudo is not installed" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  echo "== packages: installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
}
