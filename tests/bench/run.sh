#!/usr/bin/env bash
# tests/bench/run.sh — the benchmarks, outside the default test run. JSON lines on stdout.
#
#   tests/bench/run.sh                # codec bench + cluster bench (resnet50, W=4, S=2)
#   tests/bench/run.sh --all          # also alexnet and vgg16 profiles, a 1x1 pair run, and the
#                                     # emulated-network runs (root: tests/bench/netbench.sh at
#                                     # 1 Gbit/s and 10 Gbit/s, W = 1, 2, 4, against gloo)
#   tests/bench/run.sh --fuzz         # only the libFuzzer targets, 1M executions each (clang build
#                                     # with ASan + UBSan in ./build-sanitize, as tests/run.sh makes)
#   tests/bench/run.sh --build-dir DIR
#
# Builds first (Release-like RelWithDebInfo in ./build). Figures are compared as ratios within
# one run (see the README); nothing here passes or fails on speed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ROOT}/build"
ALL=0
FUZZ=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --all) ALL=1; shift ;;
    --fuzz) FUZZ=1; shift ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tests/bench/run.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
if [[ "${FUZZ}" == 1 ]]; then
  # Each target for 1M executions from its seeds (plus what earlier runs found); a crash stops
  # the run with the input saved as crash-* in the current directory. One JSON line per target.
  SAN_DIR="${BUILD_DIR}-sanitize"
  cmake -S "${ROOT}" -B "${SAN_DIR}" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DTERNPS_CUDA=OFF -DTERNPS_PYTHON=OFF -DTERNPS_THREAD_SAFETY=ON -DTERNPS_SANITIZE=address \
    -DTERNPS_FUZZ=ON >/dev/null
  cmake --build "${SAN_DIR}" -j "$(nproc)" --target fuzz_seeds codec_fuzz wire_fuzz engine_fuzz state_fuzz >&2
  FUZZ_DIR="${SAN_DIR}/tests/fuzz"
  "${SAN_DIR}/bin/fuzz_seeds" "${FUZZ_DIR}/corpus" "${ROOT}/tests/data/codec_golden.txt" >&2
  for t in codec wire engine state; do
    max_len=65536
    [[ "${t}" == codec ]] && max_len=8192
    mkdir -p "${FUZZ_DIR}/${t}-found"
    start=$(date +%s.%N)
    "${SAN_DIR}/bin/${t}_fuzz" -runs=1000000 -seed=1 -max_len="${max_len}" -rss_limit_mb=3072 -keep_seed=1 \
      -print_final_stats=1 "${FUZZ_DIR}/${t}-found" "${FUZZ_DIR}/corpus/${t}" \
      2> "${FUZZ_DIR}/${t}.log" || { tail -40 "${FUZZ_DIR}/${t}.log" >&2; exit 1; }
    seconds=$(awk -v a="${start}" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "${FUZZ_DIR}/${t}.log")
    cov=$(grep -o 'cov: [0-9]*' "${FUZZ_DIR}/${t}.log" | tail -1 | awk '{print $2}')
    echo "{\"bench\": \"fuzz\", \"target\": \"${t}_fuzz\", \"executions\": ${execs}," \
      "\"crashes\": 0, \"coverage_edges\": ${cov:-0}, \"seconds\": ${seconds}}"
  done
  exit 0
fi
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
