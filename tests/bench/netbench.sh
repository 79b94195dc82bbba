#!/usr/bin/env bash
# tests/bench/netbench.sh — ternps against PyTorch's gloo all-reduce on an emulated network.
#
#   tests/bench/netbench.sh [--rate 1gbit|10gbit|off] [--workers "1 2 4"] [--profile resnet50]
#                           [--steps 5] [--systems "gloo terngrad fp32"] [--rounds 1] [--out DIR]
#   tests/bench/netbench.sh --systems "ddp-gloo ddp-terngrad"   # PyTorch DDP: the ternps hook
#                           [--ddp-backward SECONDS]   # and an emulated backward of that length
#                           [--ddp-args "--bucket_view --threads=1 ..."]   # ddp_step.py flags
#                           [--worker-args "--calls_in_flight=4 ..."]   # ternps-bench worker flags
#
# Every shard and every worker runs in its own network namespace, one veth each (MTU 1500) on one
# Linux bridge, with `tc tbf` at --rate on both directions of every link; S = W shards. Per
# (system, W): JSON lines of every process (tests/bench/gloo_allreduce.py, `ternps-bench worker`
# with its per-step timeline), then netbench_report.py's summary rows (step p50 and mean against
# the wire floor, ratio to gloo, bytes each way, CPU seconds per step of every process, CPU per
# payload byte) and a PNG of step time against W. --rounds R runs the systems R times in turn
# (gloo, terngrad, fp32, gloo, ...): a shared machine's speed drifts between runs, so the ratio
# to gloo is then the median of the R ratios measured back to back, with their range. Systems
# ddp-gloo and ddp-terngrad run PyTorch DistributedDataParallel on a model of resnet50's
# parameter shapes (tests/bench/ddp_step.py; --profile is ignored there): its own gloo
# all-reduce, or the ternps.ddp hook through W shards; with --ddp-backward B each rank also
# times steps whose backward takes B seconds (sleeping, as beside an accelerator) with and
# without the exchange, to show how much of the exchange hides behind the backward pass. Needs root (namespaces, tc);
# removes its namespaces on exit and on Ctrl-C. Nothing passes or fails on speed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ROOT}/build"
RATE="1gbit"
WORKERS="1 2 4"
PROFILE="resnet50"
STEPS=5
SYSTEMS="gloo terngrad fp32"
ROUNDS=1
OUT=""
WORKER_ARGS=""
DDP_BACKWARD=0
DDP_ARGS=""
PROC_TIMEOUT=900  # seconds any one process may run (a lost peer must not hang the bench)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rate) RATE="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --profile) PROFILE="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --systems) SYSTEMS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --worker-args) WORKER_ARGS="$2"; shift 2 ;;
    --ddp-backward) DDP_BACKWARD="$2"; shift 2 ;;
    --ddp-args) DDP_ARGS="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "netbench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "${ROUNDS}" =~ ^[1-9][0-9]*$ ]]; then
  echo "netbench.sh: --rounds must be a positive integer" >&2
  exit 2
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "netbench.sh: needs root (network namespaces and tc)" >&2
  exit 2
fi
case "${PROFILE}" in
  resnet50) ELEMENTS=25557032 ;;
  alexnet) ELEMENTS=61100840 ;;
  vgg16) ELEMENTS=138357544 ;;
  *) echo "netbench.sh: --profile must be resnet50, alexnet or vgg16" >&2; exit 2 ;;
esac
case "${RATE}" in
  off) RATE_BPS=0 ;;
  *gbit) RATE_BPS=$(( ${RATE%gbit} * 1000000000 )) ;;
  *mbit) RATE_BPS=$(( ${RATE%mbit} * 1000000 )) ;;
  *) echo "netbench.sh: --rate must be like 1gbit, 100mbit or off" >&2; exit 2 ;;
esac
# Burst: a few GSO super-packets, and at least 2 ms at the rate.
BURST=$(( RATE_BPS / 8 / 500 ))
(( BURST < 262144 )) && BURST=262144

# shellcheck source=deploy/local/packages.sh
source "${ROOT}/deploy/local/packages.sh"
ternps_install_packages iproute2 python3-torch python3-matplotlib
BIN="${BUILD_DIR}/bin"
if [[ ! -x "${BIN}/ternps-bench" || ! -x "${BIN}/ternps-server" ]]; then
  cmake -S "${ROOT}" -B "${BUILD_DIR}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "${BUILD_DIR}" -j "$(nproc)" --target ternps-bench ternps-server >&2
fi
if [[ " ${SYSTEMS} " == *" ddp-terngrad "* && ! -d "${BUILD_DIR}/python/ternps" ]]; then
  ternps_install_packages "${TERNPS_PYTHON_PACKAGES[@]}"
  cmake -S "${ROOT}" -B "${BUILD_DIR}" >/dev/null
  cmake --build "${BUILD_DIR}" -j "$(nproc)" --target ternps_python >&2
fi
[[ -n "${OUT}" ]] || OUT="$(mktemp -d /tmp/ternps-netbench.XXXXXX)"
mkdir -p "${OUT}"
RAW="${OUT}/raw.jsonl"
: > "${RAW}"

PREFIX="tps$$"
SW="${PREFIX}-sw"
HOSTS=()
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "${pid}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  local h
  for h in "${HOSTS[@]}"; do ip netns del "${h}" 2>/dev/null || true; done
  ip netns del "${SW}" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "${SW}"
ip -n "${SW}" link add br0 type bridge
ip -n "${SW}" link set br0 up
ip -n "${SW}" link set lo up
# add_host NAME IP: a namespace with eth0 (MTU 1500) on the bridge, shaped both ways.
add_host() {
  local name="$1" ip="$2" port="p${#HOSTS[@]}"
  ip netns add "${name}"
  HOSTS+=("${name}")
  ip -n "${SW}" link add "${port}" mtu 1500 type veth peer name eth0 mtu 1500 netns "${name}"
  ip -n "${SW}" link set "${port}" master br0 up
  ip -n "${name}" addr add "${ip}/24" dev eth0
  ip -n "${name}" link set eth0 up
  ip -n "${name}" link set lo up
  if [[ "${RATE_BPS}" != 0 ]]; then
    ip netns exec "${name}" tc qdisc add dev eth0 root tbf rate "${RATE}" burst "${BURST}" \
      latency 100ms                                                   # host -> switch
    ip netns exec "${SW}" tc qdisc add dev "${port}" root tbf rate "${RATE}" burst "${BURST}" \
      latency 100ms                                                   # switch -> host
  fi
}
MAXW=0
for w in ${WORKERS}; do (( w > MAXW )) && MAXW=$w; done
for (( i = 0; i < MAXW; ++i )); do
  add_host "${PREFIX}-s${i}" "10.77.0.$(( 10 + i ))"
  add_host "${PREFIX}-w${i}" "10.77.0.$(( 100 + i ))"
done
echo "netbench: ${MAXW} shard and ${MAXW} worker namespaces on a bridge, MTU 1500, rate ${RATE}," \
  "profile ${PROFILE} (${ELEMENTS} floats), ${STEPS} steps; output in ${OUT}" >&2

cpu_ticks() {  # utime + stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
TICKS="$(getconf CLK_TCK)"

run_gloo() {
  local W="$1" r
  (( W >= 2 )) || return 0  # one rank has nothing to all-reduce
  local pids=()
  for (( r = 0; r < W; ++r )); do
    timeout "${PROC_TIMEOUT}" ip netns exec "${PREFIX}-w${r}" env GLOO_SOCKET_IFNAME=eth0 \
      /usr/bin/python3 \
      "${ROOT}/tests/bench/gloo_allreduce.py" --rank "${r}" \
      --world_size "${W}" --master 10.77.0.100:29500 --elements "${ELEMENTS}" --steps "${STEPS}" \
      > "${OUT}/gloo-W${W}-r${r}.jsonl" 2> "${OUT}/gloo-W${W}-r${r}.log" &
    pids+=($!)
    PIDS+=($!)
  done
  local failed=0
  for r in "${pids[@]}"; do wait "${r}" || failed=1; done
  (( failed == 0 )) || { echo "netbench: a gloo rank failed (logs in ${OUT})" >&2; return 1; }
  cat "${OUT}"/gloo-W"${W}"-r*.jsonl \
    | sed "s/^{/{\"system\": \"gloo\", \"W\": ${W}, \"round\": ${ROUND}, /" >> "${RAW}"
}

# start_shards TAG W: W shards in their namespaces; sets SHARD_PIDS and SHARD_LIST.
start_shards() {
  local tag="$1" W="$2" s
  SHARD_PIDS=()
  local addresses=()
  for (( s = 0; s < W; ++s )); do
    local port_file="${OUT}/shard-${tag}-W${W}-${s}.port"
    rm -f "${port_file}"
    ip netns exec "${PREFIX}-s${s}" "${BIN}/ternps-server" --listen="10.77.0.$(( 10 + s )):7070" \
      --shard_index="${s}" --shard_count="${W}" --port_file="${port_file}" --quiet \
      2> "${OUT}/shard-${tag}-W${W}-${s}.log" &
    SHARD_PIDS+=($!)
    PIDS+=($!)
    addresses+=("10.77.0.$(( 10 + s )):7070")
  done
  for (( s = 0; s < W; ++s )); do
    local port_file="${OUT}/shard-${tag}-W${W}-${s}.port" waited=0
    until [[ -s "${port_file}" ]]; do
      sleep 0.1
      (( ++waited < 300 )) || { echo "netbench: shard ${s} did not start" >&2; return 1; }
    done
  done
  SHARD_LIST="$(IFS=,; echo "${addresses[*]}")"
}

run_ddp() {  # run_ddp ddp-gloo|ddp-terngrad W
  local system="$1" W="$2" r
  (( W >= 2 )) || return 0  # DDP of one rank exchanges nothing
  local shard_args=()
  if [[ "${system}" == ddp-terngrad ]]; then
    start_shards "${system}" "${W}" || return 1
    shard_args=(--shards "${SHARD_LIST}")
  fi
  local pids=()
  for (( r = 0; r < W; ++r )); do
    timeout "${PROC_TIMEOUT}" ip netns exec "${PREFIX}-w${r}" env GLOO_SOCKET_IFNAME=eth0 \
      PYTHONPATH="${BUILD_DIR}/python" /usr/bin/python3 "${ROOT}/tests/bench/ddp_step.py" \
      --rank "${r}" --world_size "${W}" --master 10.77.0.100:29500 \
      --backward_seconds "${DDP_BACKWARD}" ${DDP_ARGS} \
      --steps "${STEPS}" --job_id "net-${system}-${W}" "${shard_args[@]}" \
      > "${OUT}/${system}-W${W}-r${r}.jsonl" 2> "${OUT}/${system}-W${W}-r${r}.log" &
    pids+=($!)
    PIDS+=($!)
  done
  local failed=0
  for r in "${pids[@]}"; do wait "${r}" || failed=1; done
  if [[ "${system}" == ddp-terngrad ]]; then
    for r in "${SHARD_PIDS[@]}"; do kill "${r}" 2>/dev/null || true; wait "${r}" 2>/dev/null || true; done
  fi
  (( failed == 0 )) || { echo "netbench: a ${system} rank failed (logs in ${OUT})" >&2; return 1; }
  cat "${OUT}/${system}-W${W}"-r*.jsonl \
    | sed "s/^{/{\"system\": \"${system}\", \"W\": ${W}, \"round\": ${ROUND}, /" >> "${RAW}"
}

run_ternps() {
  local codec="$1" W="$2" s r
  start_shards "${codec}" "${W}" || return 1
  local shards=("${SHARD_PIDS[@]}")
  local list="${SHARD_LIST}"
  local start_ticks=()
  for s in "${shards[@]}"; do start_ticks+=("$(cpu_ticks "${s}")"); done
  local workers=()
  for (( r = 0; r < W; ++r )); do
    timeout "${PROC_TIMEOUT}" ip netns exec "${PREFIX}-w${r}" "${BIN}/ternps-bench" worker --shard_addresses="${list}" \
      --rank="${r}" --world_size="${W}" --codec="${codec}" --profile="${PROFILE}" \
      --steps="${STEPS}" --job_id="net-${codec}-${W}" ${WORKER_ARGS} \
      > "${OUT}/${codec}-W${W}-r${r}.jsonl" 2> "${OUT}/${codec}-W${W}-r${r}.log" &
    workers+=($!)
    PIDS+=($!)
  done
  local failed=0
  for r in "${workers[@]}"; do wait "${r}" || failed=1; done
  for (( s = 0; s < W; ++s )); do
    local used=$(( $(cpu_ticks "${shards[$s]}") - ${start_ticks[$s]} ))
    # The shard's CPU over the warm-up step and the measured steps.
    echo "{\"system\": \"${codec}\", \"W\": ${W}, \"round\": ${ROUND}, \"bench\": \"shard\"," \
      "\"shard\": ${s}," \
      "\"cpu_seconds_per_step\": $(awk -v u="${used}" -v t="${TICKS}" -v n="$(( STEPS + 1 ))" \
      'BEGIN {printf "%.6f", u / t / n}')}" >> "${RAW}"
    kill "${shards[$s]}" 2>/dev/null || true
    wait "${shards[$s]}" 2>/dev/null || true
  done
  (( failed == 0 )) || { echo "netbench: a ${codec} worker failed (logs in ${OUT})" >&2; return 1; }
  cat "${OUT}/${codec}-W${W}"-r*.jsonl \
    | sed "s/^{/{\"system\": \"${codec}\", \"W\": ${W}, \"round\": ${ROUND}, /" >> "${RAW}"
}

ROUND=1
for W in ${WORKERS}; do
  for (( ROUND = 1; ROUND <= ROUNDS; ++ROUND )); do
    for system in ${SYSTEMS}; do
      echo "netbench: ${system}, W = S = ${W} (round ${ROUND} of ${ROUNDS})..." >&2
      case "${system}" in
        gloo) run_gloo "${W}" ;;
        terngrad|fp32) run_ternps "${system}" "${W}" ;;
        ddp-gloo|ddp-terngrad) run_ddp "${system}" "${W}" ;;
        *) echo "netbench: unknown system '${system}'" >&2; exit 2 ;;
      esac
    done
  done
done
/usr/bin/python3 "${ROOT}/tests/bench/netbench_report.py" --raw "${RAW}" --rate_bps "${RATE_BPS}" \
  --rate "${RATE}" --profile "${PROFILE}" --png "${OUT}/scaling-${PROFILE}-${RATE}.png"
echo "netbench: raw rows in ${RAW}, plot in ${OUT}/scaling-${PROFILE}-${RATE}.png" >&2
