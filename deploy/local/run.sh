#!/usr/bin/env bash
# deploy/local/run.sh — a local ternps cluster that trains Fashion-MNIST with TernGrad.
#
#   deploy/local/run.sh                       # 2 shards, 4 workers, 5 epochs, terngrad
#   deploy/local/run.sh --codec fp32          # the uncompressed baseline over the same system
#   deploy/local/run.sh --epochs 1 --workers 2 --shards 1
#   deploy/local/run.sh --chaos               # kill -9 a worker and a shard mid-run, restart both
#   deploy/local/run.sh --framework pytorch   # the workers are PyTorch DDP processes (ternps hook)
#   deploy/local/run.sh --tls                 # mutual TLS and a job token, made fresh (openssl)
#
#   deploy/local/run.sh --seed 7              # the same seed gives the same model_checksum
#
# Options: --epochs N, --workers N, --shards N, --codec terngrad|fp32, --batch-size N, --lr X,
#   --seed N (model init, data order, rounding streams; default 1: two runs with the same seed,
#   workers, shards, codec and batch end with the same model bits, model_checksum in the summary),
#   --build-dir DIR, --no-install (skip apt-get), --no-build, --logs DIR (keep logs there),
#   --with-prometheus (also start a local Prometheus scraping every shard and worker),
#   --framework cpp|pytorch (pytorch: each worker is a PyTorch DistributedDataParallel process,
#   worker/python/examples/ddp_fashion_mnist.py, whose gradients go through the shards with the
#   ternps.ddp hook; a 784-256-10 MLP; not with --chaos or --with-prometheus),
#   --chaos (the last worker kills itself with SIGKILL halfway through the first epoch and is
#   started again: it rebuilds its peers' model from the shards; a few seconds later the last
#   shard is killed with SIGKILL and started again on its port with its --state_dir: it restores
#   the job and the workers reconnect and repeat the step. The run checks that every replica ends
#   identical),
#   --tls (a CA, a certificate for 127.0.0.1 and a job token made with openssl in the log
#   directory; shards serve mutual TLS and require the token, workers present both),
#   -- ARGS... (extra ternps-worker flags).
# Installs what is missing (apt-get; sudo when not root), builds, starts the shards and workers on
# 127.0.0.1 (free ports), prints rank 0's progress, and ends with the JSON summary as the last
# line. Stops everything it started, also on Ctrl-C; exits non-zero if any process failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ROOT}/build"
EPOCHS=5
WORKERS=4
SHARDS=2
CODEC=terngrad
BATCH=32
LR=0.05
SEED=1
INSTALL=1
BUILD=1
LOGS=""
PROMETHEUS=0
CHAOS=0
FRAMEWORK=cpp
TLS=0
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --epochs) EPOCHS="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --shards) SHARDS="$2"; shift 2 ;;
    --codec) CODEC="$2"; shift 2 ;;
    --batch-size) BATCH="$2"; shift 2 ;;
    --lr) LR="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --logs) LOGS="$2"; shift 2 ;;
    --with-prometheus) PROMETHEUS=1; shift ;;
    --chaos) CHAOS=1; shift ;;
    --framework) FRAMEWORK="$2"; shift 2 ;;
    --tls) TLS=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for n in EPOCHS WORKERS SHARDS BATCH; do
  if ! [[ "${!n}" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --${n,,} must be a positive integer, got '${!n}'" >&2
    exit 2
  fi
done
if [[ "${FRAMEWORK}" != cpp && "${FRAMEWORK}" != pytorch ]]; then
  echo "run.sh: --framework must be cpp or pytorch, got '${FRAMEWORK}'" >&2
  exit 2
fi
if [[ "${FRAMEWORK}" == pytorch && ( "${CHAOS}" == 1 || "${PROMETHEUS}" == 1 ) ]]; then
  echo "run.sh: --framework pytorch does not support --chaos or --with-prometheus yet" >&2
  exit 2
fi
if [[ "${CODEC}" != terngrad && "${CODEC}" != fp32 ]]; then
  echo "run.sh: --codec must be terngrad or fp32, got '${CODEC}'" >&2
  exit 2
fi

# shellcheck source=deploy/local/packages.sh
source "${ROOT}/deploy/local/packages.sh"
if [[ "${INSTALL}" == 1 ]]; then
  ternps_install_packages "${TERNPS_BUILD_PACKAGES[@]}" "${TERNPS_RUN_PACKAGES[@]}"
  if [[ "${PROMETHEUS}" == 1 ]]; then ternps_install_packages prometheus; fi
  if [[ "${FRAMEWORK}" == pytorch ]]; then ternps_install_packages "${TERNPS_PYTHON_PACKAGES[@]}"; fi
fi
if [[ "${PROMETHEUS}" == 1 ]] && ! command -v prometheus >/dev/null; then
  echo "run.sh: --with-prometheus needs the Debian package 'prometheus' (drop --no-install)" >&2
  exit 1
fi
if [[ "${BUILD}" == 1 ]]; then
  echo "== build (${BUILD_DIR})"
  cmake -S "${ROOT}" -B "${BUILD_DIR}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  targets=(ternps-server ternps-worker)
  if [[ "${FRAMEWORK}" == pytorch ]]; then targets+=(ternps_python); fi
  cmake --build "${BUILD_DIR}" -j "$(nproc)" --target "${targets[@]}"
fi
if [[ "${FRAMEWORK}" == pytorch && ! -d "${BUILD_DIR}/python/ternps" ]]; then
  echo "run.sh: the ternps Python package is not built in ${BUILD_DIR}/python (needs" \
    "python3-dev and python3-pybind11; drop --no-install/--no-build)" >&2
  exit 1
fi
BIN="${BUILD_DIR}/bin"
for b in ternps-server ternps-worker; do
  [[ -x "${BIN}/${b}" ]] || { echo "run.sh: ${BIN}/${b} is missing (drop --no-build)" >&2; exit 1; }
done

WORK="${LOGS:-$(mktemp -d -t ternps-local.XXXXXX)}"
mkdir -p "${WORK}"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "${pid}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "${pid}" 2>/dev/null || true; done
  PIDS=()
}
trap 'cleanup' EXIT
trap 'echo; echo "run.sh: interrupted, stopping everything" >&2; cleanup; exit 130' INT TERM

echo "== ${SHARDS} shards, ${WORKERS} workers, codec ${CODEC}, ${EPOCHS} epochs (logs: ${WORK})"
# With --tls: a CA, one certificate for 127.0.0.1 (shards serve it, workers present it) and a job
# token, all fresh in ${WORK}/tls; SHARD_SECURITY and WORKER_SECURITY hold the flags that use them.
SHARD_SECURITY=()
WORKER_SECURITY=()
if [[ "${TLS}" == 1 ]]; then
  command -v openssl >/dev/null || ternps_install_packages openssl
  TLS_DIR="${WORK}/tls"
  mkdir -p "${TLS_DIR}"
  (
    cd "${TLS_DIR}"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
      -subj "/CN=ternps local CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr \
      -subj "/CN=ternps local node" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > node.ext
    openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile node.ext -out node.pem 2>/dev/null
    (umask 077 && openssl rand -hex 32 > job.token)
  ) || { echo "run.sh: --tls: openssl failed to make the certificates" >&2; exit 1; }
  SHARD_SECURITY=(--tls_cert="${TLS_DIR}/node.pem" --tls_key="${TLS_DIR}/node.key"
                  --tls_client_ca="${TLS_DIR}/ca.pem" --require_job_token)
  WORKER_SECURITY=(--tls_ca="${TLS_DIR}/ca.pem" --tls_cert="${TLS_DIR}/node.pem"
                   --tls_key="${TLS_DIR}/node.key" --token_file="${TLS_DIR}/job.token")
  echo "== tls: mutual TLS with certificates and a job token in ${TLS_DIR}"
fi
# metrics_flags NAME: with --with-prometheus, the flags that make a process serve /metrics on a
# free port and name it in ${WORK}/NAME.metrics.
metrics_flags() {
  if [[ "${PROMETHEUS}" == 1 ]]; then
    echo "--metrics_address=127.0.0.1:0 --metrics_port_file=${WORK}/$1.metrics"
  fi
}
SHARD_PIDS=()
# start_shard INDEX PORT: a shard in the background (PORT 0: any free port, published in
# ${WORK}/shard-INDEX.port). Each keeps its jobs' recovery state in its own --state_dir, so a
# shard that is restarted resumes them; --state_sync=none: on one machine only the shard
# processes can die, and the page cache keeps what they wrote (fdatasync per step would cost
# about 5 ms a step here).
start_shard() {
  rm -f "${WORK}/shard-$1.port"
  "${BIN}/ternps-server" --listen="127.0.0.1:$2" --port_file="${WORK}/shard-$1.port" \
    --shard_index="$1" --shard_count="${SHARDS}" --state_dir="${WORK}/shard-$1.state" \
    --state_sync=none "${SHARD_SECURITY[@]}" \
    $(metrics_flags "shard-$1") >>"${WORK}/shard-$1.log" 2>&1 &
  PIDS+=("$!")
  SHARD_PIDS[$1]="$!"
}
for ((s = 0; s < SHARDS; s++)); do start_shard "${s}" 0; done
ADDRESSES=()
for ((s = 0; s < SHARDS; s++)); do
  # Bounded wait for the shard to publish its port (it exits on a start-up error).
  for ((i = 0; i < 300; i++)); do
    [[ -s "${WORK}/shard-${s}.port" ]] && break
    if ! kill -0 "${SHARD_PIDS[s]}" 2>/dev/null; then
      echo "run.sh: shard ${s} failed to start:" >&2
      cat "${WORK}/shard-${s}.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  [[ -s "${WORK}/shard-${s}.port" ]] || { echo "run.sh: shard ${s} did not start in 30 s" >&2; exit 1; }
  ADDRESSES+=("127.0.0.1:$(cat "${WORK}/shard-${s}.port")")
done
SHARD_LIST="$(IFS=,; echo "${ADDRESSES[*]}")"
echo "== shards: ${SHARD_LIST}"

WORKER_PIDS=()
CHAOS_RANK=$((WORKERS - 1))
CHAOS_STEP=$((60000 / WORKERS / BATCH / 2))
worker_args() {  # worker_args RANK
  echo --shards="${SHARD_LIST}" --rank="$1" --world_size="${WORKERS}" --codec="${CODEC}" \
    --epochs="${EPOCHS}" --batch_size="${BATCH}" --lr="${LR}" --seed="${SEED}" \
    --job_id="local-$$" --summary_file="${WORK}/worker-$1.json"
}
# The PyTorch workers' gloo process group (DDP's own bookkeeping) meets on a free port.
DDP_MASTER_PORT=29500
while (exec 3<>"/dev/tcp/127.0.0.1/${DDP_MASTER_PORT}") 2>/dev/null; do
  DDP_MASTER_PORT=$((DDP_MASTER_PORT + 1))
done
pytorch_worker() {  # pytorch_worker RANK: a DDP process of the example, in the foreground
  PYTHONPATH="${BUILD_DIR}/python${PYTHONPATH:+:${PYTHONPATH}}" /usr/bin/python3 \
    "${ROOT}/worker/python/examples/ddp_fashion_mnist.py" --shards="${SHARD_LIST}" \
    --rank="$1" --world_size="${WORKERS}" --codec="${CODEC}" --epochs="${EPOCHS}" \
    --batch_size="${BATCH}" --lr="${LR}" --seed="${SEED}" --job_id="local-$$" \
    --master="127.0.0.1:${DDP_MASTER_PORT}" --summary_file="${WORK}/worker-$1.json" \
    "${WORKER_SECURITY[@]}" "${EXTRA[@]}"
}
PYTORCH=0
if [[ "${FRAMEWORK}" == pytorch ]]; then PYTORCH=1; fi
for ((r = 0; r < WORKERS && PYTORCH; r++)); do
  if [[ "${r}" == 0 ]]; then
    pytorch_worker 0 > >(tee "${WORK}/worker-0.log" | grep -v '^{') 2>&1 &
  else
    pytorch_worker "${r}" >"${WORK}/worker-${r}.log" 2>&1 &
  fi
  PIDS+=("$!")
  WORKER_PIDS+=("$!")
done
for ((r = 0; r < WORKERS && !PYTORCH; r++)); do
  # shellcheck disable=SC2207
  args=($(worker_args "${r}") $(metrics_flags "worker-${r}") "${WORKER_SECURITY[@]}" "${EXTRA[@]}")
  crash=()  # test-only: the chaos rank kills itself (TERNPS_TEST_CRASH_AT_STEP, not a flag)
  if [[ "${CHAOS}" == 1 && "${r}" == "${CHAOS_RANK}" ]]; then
    crash=(env TERNPS_TEST_CRASH_AT_STEP="${CHAOS_STEP}")
  fi
  if [[ "${r}" == 0 ]]; then
    # Rank 0's progress goes to the terminal and to its log.
    "${crash[@]}" "${BIN}/ternps-worker" "${args[@]}" > >(tee "${WORK}/worker-0.log" | grep -v '^{') 2>&1 &
  else
    "${crash[@]}" "${BIN}/ternps-worker" "${args[@]}" --quiet >"${WORK}/worker-${r}.log" 2>&1 &
  fi
  PIDS+=("$!")
  WORKER_PIDS+=("$!")
done

# wait_for_file FILE PID WHAT: bounded wait (30 s) for a port file written by a live process.
wait_for_file() {
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -s "$1" ]] && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "run.sh: $3 did not publish $1" >&2
  return 1
}

if [[ "${PROMETHEUS}" == 1 ]]; then
  PROM_DIR="${WORK}/prometheus"
  mkdir -p "${PROM_DIR}/targets"
  cp "${ROOT}/deploy/prometheus/prometheus-local.yml" "${ROOT}/deploy/prometheus/alerts.yml" \
    "${PROM_DIR}/"
  targets() {  # targets KIND COUNT PIDS...
    local kind="$1" count="$2" list="" i
    shift 2
    local pids=("$@")
    for ((i = 0; i < count; i++)); do
      wait_for_file "${WORK}/${kind}-${i}.metrics" "${pids[i]}" "${kind} ${i}" || exit 1
      list+="${list:+, }\"127.0.0.1:$(cat "${WORK}/${kind}-${i}.metrics")\""
    done
    echo "[{\"targets\": [${list}]}]"
  }
  targets shard "${SHARDS}" "${SHARD_PIDS[@]}" >"${PROM_DIR}/targets/server.json"
  targets worker "${WORKERS}" "${WORKER_PIDS[@]}" >"${PROM_DIR}/targets/worker.json"
  PROM_PORT=9090
  while (exec 3<>"/dev/tcp/127.0.0.1/${PROM_PORT}") 2>/dev/null; do PROM_PORT=$((PROM_PORT + 1)); done
  prometheus --config.file="${PROM_DIR}/prometheus-local.yml" \
    --storage.tsdb.path="${PROM_DIR}/data" --web.listen-address="127.0.0.1:${PROM_PORT}" \
    >"${PROM_DIR}/prometheus.log" 2>&1 &
  PIDS+=("$!")
  PROM_PID="$!"
  echo "== Prometheus: http://127.0.0.1:${PROM_PORT} (scraping every 5 s). Try:"
  echo "     sum(rate(ternps_server_dense_bytes_total[1m])) / sum(rate(ternps_server_received_bytes_total[1m]))   # uplink compression"
  echo "     histogram_quantile(0.9, sum by (le) (rate(ternps_worker_step_seconds_bucket[1m])))                 # p90 step time"
fi

FAILED=0
if [[ "${CHAOS}" == 1 ]]; then
  # The chaos worker first: its peers wait for it at the step it died in, so restart it at once.
  rc=0
  wait "${WORKER_PIDS[CHAOS_RANK]}" || rc=$?
  if [[ "${rc}" == 137 ]]; then
    echo "== chaos: worker ${CHAOS_RANK} killed itself (SIGKILL) before step ${CHAOS_STEP}; starting it again"
    # shellcheck disable=SC2207
    args=($(worker_args "${CHAOS_RANK}") "${WORKER_SECURITY[@]}" "${EXTRA[@]}")
    "${BIN}/ternps-worker" "${args[@]}" --quiet >>"${WORK}/worker-${CHAOS_RANK}.log" 2>&1 &
    WORKER_PIDS[CHAOS_RANK]="$!"
    PIDS+=("$!")
  else
    echo "run.sh: --chaos: worker ${CHAOS_RANK} exited with ${rc} instead of being killed" >&2
    FAILED=1
  fi
  # Then a shard, while the workers are in the middle of steps (a demo: the delay is a choice,
  # not synchronization); it comes back on its port with its state directory.
  CHAOS_SHARD=$((SHARDS - 1))
  sleep 3
  if kill -KILL "${SHARD_PIDS[CHAOS_SHARD]}" 2>/dev/null; then
    wait "${SHARD_PIDS[CHAOS_SHARD]}" 2>/dev/null || true
    echo "== chaos: shard ${CHAOS_SHARD} killed (SIGKILL); starting it again from ${WORK}/shard-${CHAOS_SHARD}.state"
    start_shard "${CHAOS_SHARD}" "${ADDRESSES[CHAOS_SHARD]##*:}"
    wait_for_file "${WORK}/shard-${CHAOS_SHARD}.port" "${SHARD_PIDS[CHAOS_SHARD]}" \
      "shard ${CHAOS_SHARD}" || FAILED=1
  fi
fi
for ((r = 0; r < WORKERS; r++)); do
  if ! wait "${WORKER_PIDS[r]}"; then
    echo "run.sh: worker ${r} failed; the end of its log:" >&2
    tail -n 20 "${WORK}/worker-${r}.log" >&2
    FAILED=1
  fi
done
for ((s = 0; s < SHARDS; s++)); do
  kill -TERM "${SHARD_PIDS[s]}" 2>/dev/null || true
  if ! wait "${SHARD_PIDS[s]}"; then
    echo "run.sh: shard ${s} did not exit cleanly; the end of its log:" >&2
    tail -n 20 "${WORK}/shard-${s}.log" >&2
    FAILED=1
  fi
done
PIDS=()
if [[ "${PROMETHEUS}" == 1 ]]; then PIDS=("${PROM_PID}"); fi
if [[ "${FAILED}" != 0 ]]; then exit 1; fi

# Every replica must end with the same model.
CHECKSUMS="$(grep -ho '"model_checksum": "[0-9a-f]*"' "${WORK}"/worker-*.json | sort -u | wc -l)"
if [[ "${CHECKSUMS}" != 1 ]]; then
  echo "run.sh: the workers' models differ (${CHECKSUMS} distinct checksums)" >&2
  exit 1
fi
SUMMARY="$(cat "${WORK}/worker-0.json")"
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" <<<"${SUMMARY}"; }
echo "== done: test accuracy $(field test_accuracy), uplink $(field uplink_ratio)x and downlink" \
  "$(field downlink_ratio)x fewer bytes than float32 ($(field compression_ratio)x both ways);" \
  "all ${WORKERS} replicas identical; logs in ${WORK}"
if [[ "${CHAOS}" == 1 ]]; then
  echo "== chaos: $(grep -h 'recovered the model' "${WORK}/worker-${CHAOS_RANK}.log" | head -1)"
  echo "== chaos: $(grep -h 'restored' "${WORK}/shard-${CHAOS_SHARD}.log" | tail -1)"
  echo "== chaos: $(grep -h 'reconnected' "${WORK}/worker-0.log" | head -1)"
fi
echo "${SUMMARY}"
if [[ "${PROMETHEUS}" == 1 ]]; then
  if [[ -t 0 ]]; then
    # Keep Prometheus up to browse the run; the summary above stays the last line of stdout.
    echo "== Prometheus keeps the run's data at http://127.0.0.1:${PROM_PORT}; Ctrl-C stops it" >&2
    trap 'cleanup; exit 0' INT TERM
    wait "${PROM_PID}" || true
  fi
  cleanup
fi
