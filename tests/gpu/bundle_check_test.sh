#!/usr/bin/env bash
# ctest gpu_bundle_check_test: tests/gpu/bundle.sh from this build, then tests/gpu/device_check.sh
# on a machine without a GPU: it must fail at the preflight, naming the missing device, exit
# non-zero, and report no step as passed but the preflight's library check.
set -uo pipefail
BUILD_DIR="$1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "a GPU is present: this test is for machines without one"
  exit 77
fi
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
"${ROOT}/tests/gpu/bundle.sh" --no-build --build-dir "${BUILD_DIR}" --out "${WORK}/bundle" ||
  { echo "bundle.sh failed"; exit 1; }
start=$(date +%s)
"${ROOT}/tests/gpu/device_check.sh" --bundle "${WORK}/bundle" --out "${WORK}/out" \
  >"${WORK}/check.log" 2>&1
rc=$?
cat "${WORK}/check.log"
fail() { echo "gpu_bundle_check_test: $*"; exit 1; }
(( rc != 0 )) || fail "device_check.sh exited 0 without a GPU"
last="$(tail -1 "${WORK}/out/verdict.txt")"
[[ "${last}" == "FAIL: preflight: no CUDA device"* ]] || fail "last line: '${last}'"
grep -q 'missing:' "${WORK}/check.log" && fail "a bundled library did not resolve"
passed="$(grep -cE '^  [a-z_]+ +pass ' "${WORK}/out/verdict.txt")"
(( passed == 0 )) || fail "${passed} step(s) read pass without a GPU"
for f in verdict.txt logs.tar.gz; do
  [[ -s "${WORK}/out/${f}" ]] || fail "no ${f}"
done
(( $(ls "${WORK}/out" | wc -l) <= 8 )) || fail "more than 8 result files"
echo "gpu_bundle_check_test: FAIL as expected, in $(( $(date +%s) - start )) s"
