#!/usr/bin/env bash
# tests/bench/run.sh — the benchmarks, outside the default test run. JSON lines on stdout.
#
#   tests/bench/run.sh                # codec bench + cluster bench (resnet50, W=4, S=2)
#   tests/bench/run.sh --all          # also alexnet and vgg16 profiles, a 1x1 pair run, and the
#                                     # emulated-network runs (root: tests/bench/netbench.sh at
#                                     # 1 Gbit/s and 10 Gbit/s, W = 1, 2, 4, against gloo)
#   tests/bench/run.sh --build-dir DIR
#
# Builds first (Release-like RelWithDebInfo in ./build). Figures are compared as ratios within
# one run (see the README); nothing here passes or fails on speed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ROOT}/build"
ALL=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --all) ALL=1; shift ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tests/bench/run.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
cmake -S "${ROOT}" -B "${BUILD_DIR}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "${BUILD_DIR}" -j "$(nproc)" --target ternps-bench ternps-server >&2
BENCH="${BUILD_DIR}/bin/ternps-bench"
"${BENCH}" codec --isa=all --repeats=7
"${BENCH}" cluster --profile=resnet50 --workers=4 --shards=2 --steps=5
if [[ "${ALL}" == 1 ]]; then
  "${BENCH}" cluster --profile=resnet50 --workers=1 --shards=1 --steps=5
  "${BENCH}" cluster --profile=alexnet --workers=4 --shards=2 --steps=3
  "${BENCH}" cluster --profile=vgg16 --workers=4 --shards=2 --steps=3
  "${ROOT}/tests/bench/netbench.sh" --build-dir "${BUILD_DIR}" --rate 1gbit
  "${ROOT}/tests/bench/netbench.sh" --build-dir "${BUILD_DIR}" --rate 10gbit
fi
