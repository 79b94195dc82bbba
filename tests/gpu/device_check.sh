#!/usr/bin/env bash
# tests/gpu/device_check.sh — everything that needs a GPU, in one run (on an H200 machine: well
# under 8 minutes with 16 cores, building included):
#   1. configure and build with CUDA (TERNPS_CUDA=ON, sm_90 + PTX);
#   2. the gpu-labelled tests, then the codec test under compute-sanitizer memcheck and
#      racecheck where the tool exists;
#   3. ternps-bench codec --device=cuda (64M and 256M elements, against a device copy);
#   4. a 2-worker GPU training smoke run (1 shard, ternps-worker --device=cuda, 1 short epoch);
#   5. a short table of the results, last.
# Usage: tests/gpu/device_check.sh [--build-dir DIR]; needs nvcc and a CUDA device.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ROOT}/build-gpu"
[[ "${1:-}" == "--build-dir" ]] && BUILD_DIR="$2"
export PATH="/usr/local/cuda/bin:${PATH}"
OUT="${OUT:-${BUILD_DIR}/device-check}"
mkdir -p "${OUT}"
declare -A RESULT
T0=$(date +%s)
step() { echo "== $(date +%T) $*"; }

step "configure + build (CUDA on)"
if cmake -S "${ROOT}" -B "${BUILD_DIR}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERNPS_CUDA=ON \
     >"${OUT}/configure.log" 2>&1 &&
   cmake --build "${BUILD_DIR}" -j "$(nproc)" >"${OUT}/build.log" 2>&1; then
  RESULT[build]="ok ($(( $(date +%s) - T0 )) s)"
else
  RESULT[build]="FAILED (see ${OUT}/build.log)"
  tail -30 "${OUT}/build.log"
fi
BIN="${BUILD_DIR}/bin"

step "gpu tests"
if ctest --test-dir "${BUILD_DIR}" -L gpu --output-on-failure >"${OUT}/gpu-tests.log" 2>&1; then
  RESULT[gpu_tests]="passed ($(grep -c 'Passed' "${OUT}/gpu-tests.log") tests)"
else
  RESULT[gpu_tests]="FAILED (see ${OUT}/gpu-tests.log)"
fi
tail -5 "${OUT}/gpu-tests.log"

if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool ${tool}"
    if compute-sanitizer --tool "${tool}" --error-exitcode 1 "${BIN}/codec_device_test" \
         --gtest_filter='-*StatsWaitForTheStream' >"${OUT}/sanitizer-${tool}.log" 2>&1; then
      RESULT[sanitizer_${tool}]="clean"
    else
      RESULT[sanitizer_${tool}]="ERRORS (see ${OUT}/sanitizer-${tool}.log)"
    fi
  done
else
  RESULT[sanitizer_memcheck]="compute-sanitizer not found"
fi

step "ternps-bench codec --device=cuda"
if "${BIN}/ternps-bench" codec --device=cuda --cuda_elements=67108864,268435456 --repeats=5 \
     >"${OUT}/bench.jsonl" 2>"${OUT}/bench.log"; then
  RESULT[bench]="ok"
else
  RESULT[bench]="FAILED (see ${OUT}/bench.log)"
fi

step "2-worker GPU training smoke run"
rm -f "${OUT}/shard.port"
"${BIN}/ternps-server" --listen=127.0.0.1:0 --port_file="${OUT}/shard.port" --quiet &
SHARD=$!
for ((i = 0; i < 100; i++)); do [[ -s "${OUT}/shard.port" ]] && break; sleep 0.1; done
SMOKE_OK=1
for r in 0 1; do
  "${BIN}/ternps-worker" --device=cuda --shards="127.0.0.1:$(cat "${OUT}/shard.port")" \
    --rank=$r --world_size=2 --epochs=1 --max_steps_per_epoch=200 --job_id=device-check \
    >"${OUT}/worker-$r.log" 2>&1 &
  eval "W$r=\$!"
done
wait "${W0}" || SMOKE_OK=0
wait "${W1}" || SMOKE_OK=0
kill -TERM "${SHARD}"; wait "${SHARD}" || SMOKE_OK=0
SUMS="$(grep -ho '"model_checksum": "[0-9a-f]*"' "${OUT}"/worker-*.log | sort -u | wc -l)"
ACC="$(grep -ho '"test_accuracy": [0-9.]*' "${OUT}/worker-0.log" | cut -d' ' -f2)"
if [[ "${SMOKE_OK}" == 1 && "${SUMS}" == 1 ]]; then
  RESULT[training]="ok: test_accuracy ${ACC} after 200 steps, replicas identical"
else
  RESULT[training]="FAILED (exit codes or ${SUMS} distinct model checksums; see worker-*.log)"
fi

echo
echo "== device check, $(( $(date +%s) - T0 )) s in all ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
printf '%-22s %s\n' "build" "${RESULT[build]}" "gpu tests" "${RESULT[gpu_tests]}" \
  "sanitizer memcheck" "${RESULT[sanitizer_memcheck]:-}" \
  "sanitizer racecheck" "${RESULT[sanitizer_racecheck]:-}" "training smoke" "${RESULT[training]}"
echo "bench (GB/s; ratio to the device-to-device copy):"
python3 - "${OUT}/bench.jsonl" <<'PY' 2>/dev/null || cat "${OUT}/bench.jsonl"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"  {r['bench']:<24} {r['elements']:>11}  {r['gbps']:9.1f}  {r['ratio_to_d2d_copy']:.3f}")
PY
