#!/usr/bin/env bash
# tests/bench/dead_worker.sh — what a dead worker costs its peers. Two ternps-server shards and
# four ternps-worker processes (Fashion-MNIST MLP) on loopback; rank 3 is killed with SIGKILL
# mid-run, and the survivors' slowest step (their summary's max_step_ms) is what its death cost
# them. Run once with the shards' defaults (--disconnect_grace=2s: the death is noticed when its
# Watch calls close) and once with --disconnect_grace=0 (only the step timeout, 60 s by default).
# One JSON line per run on stdout; nothing passes or fails on speed. Not in CI (a minute or two).
#
#   tests/bench/dead_worker.sh [--build-dir DIR] [--step_timeout 60s] [--only-grace]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ROOT}/build"
STEP_TIMEOUT=60s
ONLY_GRACE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --step_timeout) STEP_TIMEOUT="$2"; shift 2 ;;
    --only-grace) ONLY_GRACE=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dead_worker.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
BIN="${BUILD_DIR}/bin"
for b in ternps-server ternps-worker; do
  [[ -x "${BIN}/${b}" ]] || { echo "dead_worker.sh: ${BIN}/${b} missing: build first" >&2; exit 2; }
done
WORK="$(mktemp -d /tmp/ternps-dead-worker.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "${WORK}"
}
trap cleanup EXIT

# run GRACE: one job; prints its JSON line.
run() {
  local grace="$1" dir="${WORK}/grace-$1"
  mkdir -p "${dir}"
  local shards=()
  for s in 0 1; do
    "${BIN}/ternps-server" --listen=127.0.0.1:0 --port_file="${dir}/port${s}" --shard_index=$s \
      --shard_count=2 --step_timeout="${STEP_TIMEOUT}" --disconnect_grace="${grace}" \
      2>"${dir}/server${s}.log" &
    PIDS+=($!)
  done
  for s in 0 1; do
    for _ in $(seq 100); do [[ -s "${dir}/port${s}" ]] && break; sleep 0.1; done
    shards+=("127.0.0.1:$(cat "${dir}/port${s}")")
  done
  local list
  list="$(IFS=,; echo "${shards[*]}")"
  local workers=()
  for r in 0 1 2 3; do
    "${BIN}/ternps-worker" --shards="${list}" --rank=$r --world_size=4 --job_id=dead-worker \
      --epochs=1 --max_steps_per_epoch=1500 --quiet --summary_file="${dir}/summary${r}.json" \
      >"${dir}/worker${r}.out" 2>"${dir}/worker${r}.log" &
    workers+=($!)
    PIDS+=($!)
  done
  sleep 4  # into the run (a fault's timing, not a synchronization)
  local killed_at
  killed_at="$(date +%s.%N)"
  kill -9 "${workers[3]}"
  wait "${workers[3]}" 2>/dev/null || true
  for r in 0 1 2; do wait "${workers[$r]}" || { echo "rank $r failed:" >&2; cat "${dir}/worker${r}.log" >&2; exit 1; }; done
  local done_at
  done_at="$(date +%s.%N)"
  python3 - "${dir}" "${grace}" "${STEP_TIMEOUT}" "${killed_at}" "${done_at}" <<'PY'
import json, sys
d, grace, timeout, killed, done = sys.argv[1:6]
s = [json.load(open(f"{d}/summary{r}.json")) for r in range(3)]
print(json.dumps({"bench": "dead_worker", "disconnect_grace": grace, "step_timeout": timeout,
                  "survivors_max_step_ms": [x["max_step_ms"] for x in s],
                  "survivors_mean_step_ms": [x["mean_step_ms"] for x in s],
                  "checksums_equal": len({x["model_checksum"] for x in s}) == 1,
                  "seconds_from_kill_to_end": round(float(done) - float(killed), 1)}))
PY
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  PIDS=()
}

run 2s
[[ "${ONLY_GRACE}" == 1 ]] || run 0
