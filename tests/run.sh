#!/usr/bin/env bash
# tests/run.sh — install what is missing, build, and run every test through ctest.
#
#   tests/run.sh                 # default: all tests except the `slow` and `benchmark` labels
#   tests/run.sh --all           # every label, slow and benchmark included
#   tests/run.sh --no-install    # skip the apt-get step
#   tests/run.sh --build-dir DIR # build somewhere other than ./build
#   tests/run.sh --no-sanitize   # skip the clang builds (thread-safety analysis, ASan + UBSan
#                                # runs of the unit and integration tests, short fuzz runs,
#                                # ThreadSanitizer runs of the unit tests)
#
# Exits non-zero on any failure (install, configure, build or test).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${ROOT}/build"
INSTALL=1
LABEL_EXCLUDE="slow|benchmark"
JOBS="$(nproc)"
SANITIZE=1

while [[ $# -gt 0 ]]; do
  case "$1" in
    --all) LABEL_EXCLUDE=""; shift ;;
    --no-install) INSTALL=0; shift ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --no-sanitize|--no-thread-safety) SANITIZE=0; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tests/run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# shellcheck source=deploy/local/packages.sh
source "${ROOT}/deploy/local/packages.sh"
if [[ "${INSTALL}" == 1 ]]; then
  ternps_install_packages "${TERNPS_BUILD_PACKAGES[@]}" "${TERNPS_RUN_PACKAGES[@]}" \
    "${TERNPS_TEST_PACKAGES[@]}" "${TERNPS_PYTHON_PACKAGES[@]}"
fi

# npm packages of the Kubernetes manifest test (the schemas, used offline afterwards).
NPM_DIR="${BUILD_DIR}/npm"
if [[ "${INSTALL}" == 1 && ! -d "${NPM_DIR}/node_modules/kubernetes-models" ]]; then
  command -v npm >/dev/null || ternps_install_packages nodejs npm
  echo "== npm: kubernetes-models (JSON schemas for the manifest test)"
  mkdir -p "${NPM_DIR}"
  npm install --prefix "${NPM_DIR}" --no-audit --no-fund --loglevel=error \
    kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0
fi

echo "== configure (${BUILD_DIR})"
cmake -S "${ROOT}" -B "${BUILD_DIR}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERNPS_WERROR=ON \
  -DTERNPS_CUDA="${TERNPS_CUDA:-AUTO}"
echo "== build (${JOBS} jobs)"
cmake --build "${BUILD_DIR}" -j "${JOBS}"
echo "== format check"
"${ROOT}/tests/check_format.sh"
SAN_DIR="${BUILD_DIR}-sanitize"
TSAN_DIR="${BUILD_DIR}-tsan"
if [[ "${SANITIZE}" == 1 ]]; then
  # One clang build checks three things: every ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED
  # (-Wthread-safety, warnings are errors), the unit and integration tests under AddressSanitizer
  # + UndefinedBehaviorSanitizer (any report fails the test), and the libFuzzer targets of
  # tests/fuzz (label `fuzz`: a fixed number of runs from their seeds). CPU code only (nvcc runs
  # neither the analysis nor the sanitizers); no Python package (its interpreter is not built
  # with ASan).
  echo "== clang build: thread safety, ASan + UBSan, fuzz targets (${SAN_DIR})"
  cmake -S "${ROOT}" -B "${SAN_DIR}" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DTERNPS_CUDA=OFF -DTERNPS_PYTHON=OFF -DTERNPS_THREAD_SAFETY=ON -DTERNPS_SANITIZE=address \
    -DTERNPS_FUZZ=ON -DTERNPS_WERROR=ON >/dev/null
  cmake --build "${SAN_DIR}" -j "${JOBS}"

  # ThreadSanitizer over the unit label: the concurrent parts (engine, jobs, pending calls, the
  # reaper, the thread pool, the host exchange) driven through the manual clock and in-process
  # calls. Debian's Abseil is not instrumented; tests/tsan/absl_sync_tsan.cc tells the sanitizer
  # what its locks order, and tsan_shim_race_test checks that the shim still lets a real race
  # through. Not the integration label: Debian's gRPC is not instrumented either, and its own
  # header code then races with its library in every test (see tests/tsan/README.md).
  echo "== clang build: ThreadSanitizer, unit tests (${TSAN_DIR})"
  cmake -S "${ROOT}" -B "${TSAN_DIR}" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DTERNPS_CUDA=OFF -DTERNPS_PYTHON=OFF -DTERNPS_SANITIZE=thread -DTERNPS_WERROR=ON >/dev/null
  # Only what the unit label runs: the test names that are also build targets.
  mapfile -t tsan_targets < <(comm -12 \
    <(ctest --test-dir "${TSAN_DIR}" -N -L unit | sed -n 's/^ *Test *#[0-9]*: //p' | sort) \
    <(cmake --build "${TSAN_DIR}" --target help | sed -n 's/^\.\.\. \([^ ]*\).*/\1/p' | sort))
  cmake --build "${TSAN_DIR}" -j "${JOBS}" --target "${tsan_targets[@]}"
fi
echo "== test"
ctest_args=(--test-dir "${BUILD_DIR}" --output-on-failure -j "${JOBS}" --timeout 900)
if [[ -n "${LABEL_EXCLUDE}" ]]; then
  ctest_args+=(-LE "${LABEL_EXCLUDE}")
fi
ctest "${ctest_args[@]}"
if [[ "${SANITIZE}" == 1 ]]; then
  # install_test builds a consumer with the default compiler against the installed library (not
  # with ASan); k8s_manifests_test is not C++ and needs the main tree's npm packages;
  # local_run_reproducibility_test checks determinism through deploy/local/run.sh (the same
  # processes the other integration tests run under ASan), about 3 minutes there.
  echo "== test under ASan + UBSan, and short fuzz runs (${SAN_DIR})"
  san_args=(--test-dir "${SAN_DIR}" --output-on-failure -j "${JOBS}" --timeout 900
            -L "unit|integration|fuzz"
            -E "^(install_test|k8s_manifests_test|local_run_reproducibility_test)$")
  if [[ -n "${LABEL_EXCLUDE}" ]]; then
    san_args+=(-LE "${LABEL_EXCLUDE}")
  fi
  ctest "${san_args[@]}"
  echo "== unit tests under ThreadSanitizer (${TSAN_DIR})"
  ctest --test-dir "${TSAN_DIR}" --output-on-failure -j "${JOBS}" --timeout 900 -L unit \
    -E "^k8s_manifests_test$"
fi
