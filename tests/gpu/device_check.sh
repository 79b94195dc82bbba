#!/usr/bin/env bash
# tests/gpu/device_check.sh — the GPU check, in one call on a bare GPU machine (no C++ build
# there: it runs what tests/gpu/bundle.sh made here). About five minutes at most:
#
#   tests/gpu/device_check.sh --bundle build-bundle [--out DIR] [--budget SECONDS] [--only S,S]
#
# Steps, each under its own timeout and all under --budget (default 290 s):
#   preflight        GPU name, driver, compute mode; every bundled binary's shared libraries
#                    resolve (a missing one fails at once, and nothing else runs)
#   test_*           the gpu-labelled GoogleTest binaries (codec, Philox, Step vs StepOnDevice)
#   bench            ternps-bench codec --device=cuda at 2^26 and 2^28 elements, its results
#                    checked against the CPU codec at each size
#   training         ternps-worker --device=cuda and --device=cpu side by side (2 workers each,
#                    2 epochs of the bundled subset): replicas identical within each run, test
#                    accuracy within 1 point
#   python           the Python extension built here against the bundle's library and headers,
#                    imported, and one exchange between two Python workers
#   ddp_cuda         the DDP hook on CUDA buckets (float32, float16), staged through host memory
#   sanitizer_*      codec_device_test under compute-sanitizer memcheck and racecheck (beside the
#                    training and python steps); "not available" where the tool refuses the device
# Verdicts come from tests/gpu/verdict.py, which reads the step logs: a skipped test, no tests
# run, a sanitizer error summary, a timeout or a non-zero exit is a failure.
# --only runs just the named steps (to rerun one; the verdict still lists every step).
# Writes to --out (default $OUT, else ./device-check): verdict.txt, bench.jsonl, logs.tar.gz.
# Prints the table and a last line PASS or FAIL; exits 0 on PASS, 1 on FAIL, 2 on bad usage.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUNDLE=""
RESULTS="${OUT:-${PWD}/device-check}"
BUDGET=290
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bundle) BUNDLE="$(realpath -m "$2")"; shift 2 ;;
    --out) RESULTS="$(realpath -m "$2")"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --only) ONLY=",$2,"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "${BUNDLE}" || ! -f "${BUNDLE}/ternps-gpu-bundle.tar.xz" ]]; then
  echo "device_check.sh: --bundle DIR must hold ternps-gpu-bundle.tar.xz (tests/gpu/bundle.sh)" >&2
  exit 2
fi
export PATH="/usr/local/cuda/bin:${PATH}"
T0=$(date +%s)
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "${WORK}"' EXIT
B="${WORK}/bundle"
LOGS="${WORK}/logs"
mkdir -p "${B}" "${LOGS}" "${RESULTS}"
log() { echo "== $(date +%T) $*"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# run_step NAME SECONDS COMMAND...: COMMAND's output in LOGS/NAME.log, then its exit status and
# time as the last lines (124: timed out). Not started when the budget is spent.
run_step() {
  local name="$1" limit="$2"; shift 2
  [[ -z "${ONLY}" || "${ONLY}" == *",${name},"* ]] || return 0
  local remaining; remaining=$(left)
  (( limit > remaining )) && limit=${remaining}
  if (( limit < 5 )); then
    echo "ternps-check-not-run: the ${BUDGET} s budget was spent" >"${LOGS}/${name}.log"
    return
  fi
  log "${name} (at most ${limit} s)"
  local start; start=$(date +%s)
  if declare -F "$1" >/dev/null; then  # a function of this script: in a bash of its own
    timeout -k 5 "${limit}" bash -c "$*" >"${LOGS}/${name}.log" 2>&1
  else
    timeout -k 5 "${limit}" "$@" >"${LOGS}/${name}.log" 2>&1
  fi
  local rc=$?
  { echo "ternps-check-exit: ${rc}"; echo "ternps-check-seconds: $(( $(date +%s) - start ))";
    echo "ternps-check-limit: ${limit}"; } >>"${LOGS}/${name}.log"
}

log "unpacking the bundle"
if ! (xz -dc "${BUNDLE}/ternps-gpu-bundle.tar.xz" 2>/dev/null ||
      python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' \
        "${BUNDLE}/ternps-gpu-bundle.tar.xz") | tar -C "${B}" -xf -; then
  echo "device_check.sh: cannot unpack ${BUNDLE}/ternps-gpu-bundle.tar.xz" >&2
  echo "FAIL"
  exit 1
fi
cp "${BUNDLE}/MANIFEST" "${LOGS}/MANIFEST" 2>/dev/null
# The bundle's libraries, then the CUDA toolkit's (cuBLAS for the trainer's CUDA model).
export LD_LIBRARY_PATH="${B}/lib:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"

preflight() {
  echo "host: $(uname -srm), $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}")"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,compute_mode,memory.total --format=csv,noheader |
      sed 's/^/gpu: /'
  else
    echo "nvidia-smi: not found"
  fi
  local f
  for f in "${B}"/bin/* "${B}"/lib/libternps*; do
    ldd "${f}" | grep 'not found' | sed "s|^[[:space:]]*|missing: $(basename "${f}"): |"
  done
  return 0
}
# A shard's port file, polled for up to 30 s.
wait_for_file() {
  local i
  for ((i = 0; i < 300; ++i)); do
    [[ -s "$1" ]] && return 0
    sleep 0.1
  done
  return 1
}
export -f preflight wait_for_file
export B LOGS WORK ROOT
export BIN="${B}/bin"
run_step preflight 30 preflight
[[ -f "${LOGS}/preflight.log" ]] && cat "${LOGS}/preflight.log"

if [[ -n "${ONLY}" ]] || python3 "${ROOT}/tests/gpu/verdict.py" --step preflight "${LOGS}" >/dev/null; then
  for t in codec_device philox_device step_on_device; do
    run_step "test_${t}" 90 "${BIN}/${t}_test"
  done
  run_step bench 90 bash -c "'${BIN}/ternps-bench' codec --device=cuda \
    --cuda_elements=67108864,268435456 --repeats=5 2>&1 | tee '${LOGS}/bench.jsonl'"

  # The sanitizers beside the training and python steps (their own processes on the same GPU).
  sanitizers() {
    local tool
    [[ -z "${ONLY}" || "${ONLY}" == *,sanitizer_* ]] || return 0
    if ! command -v compute-sanitizer >/dev/null; then
      for tool in memcheck racecheck; do
        echo "ternps-check-not-available: compute-sanitizer not found" >"${LOGS}/sanitizer_${tool}.log"
      done
      return
    fi
    for tool in memcheck racecheck; do
      run_step "sanitizer_${tool}" 120 compute-sanitizer --tool "${tool}" \
        "${BIN}/codec_device_test" --gtest_filter='-*StatsWaitForTheStream'
    done
  }
  sanitizers &
  SANITIZERS=$!

  training() {
    local data="${B}/data" dir="${WORK}/training" port pids=() r device
    mkdir -p "${dir}"
    "${BIN}/ternps-server" --listen=127.0.0.1:0 --port_file="${dir}/shard.port" --quiet &
    local shard=$!
    wait_for_file "${dir}/shard.port" || { echo "the shard wrote no port file"; return 1; }
    port="$(cat "${dir}/shard.port")"
    for device in cuda cpu; do
      for r in 0 1; do
        "${BIN}/ternps-worker" --device="${device}" --shards="127.0.0.1:${port}" --rank=$r \
          --world_size=2 --epochs=2 --job_id="check-${device}" --data_dir="${data}" --quiet \
          --summary_file="${dir}/${device}-${r}.json" >"${dir}/${device}-${r}.log" 2>&1 &
        pids+=("${device} ${r} $!")
      done
    done
    local p
    for p in "${pids[@]}"; do
      set -- ${p}
      wait "$3"
      echo "worker ${1} ${2} exit $?"
    done
    kill -TERM "${shard}"; wait "${shard}"
    for p in "${pids[@]}"; do
      set -- ${p}
      echo "summary ${1} ${2} $(tr -d '\n' <"${dir}/${1}-${2}.json" 2>/dev/null)"
      sed "s/^/log ${1} ${2}: /" "${dir}/${1}-${2}.log" | tail -20
    done
  }
  export -f training
  run_step training 150 training

  python_check() {
    local dir="${WORK}/python" py="${B}/python" suffix
    mkdir -p "${dir}/ternps"
    cp "${py}"/ternps/*.py "${dir}/ternps/"
    suffix="$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    local libs; libs="$(sed -e "s|@PY@|${py}|g" -e "s|@LIB@|${B}/lib|g" "${py}/link.txt")"
    echo "python: $(python3 --version 2>&1), torch $(python3 -c 'import torch; print(torch.__version__, torch.cuda.is_available())' 2>&1 | tail -1)"
    # shellcheck disable=SC2086
    g++ -O2 -shared -fPIC -std=c++20 -fvisibility=hidden $(python3 -m pybind11 --includes) \
      -I"${ROOT}" -I"${ROOT}/worker/include" -I"${ROOT}/common/include" -I"${py}/include" \
      "${py}/src/_ternps.cc" -o "${dir}/ternps/_ternps${suffix}" \
      -L"${B}/lib" ${libs} -Wl,-rpath,"${B}/lib" || return 1
    echo "python: extension built"
    "${BIN}/ternps-server" --listen=127.0.0.1:0 --port_file="${dir}/shard.port" --quiet &
    local shard=$!
    wait_for_file "${dir}/shard.port" || { echo "the shard wrote no port file"; return 1; }
    PYTHONPATH="${dir}" python3 - "127.0.0.1:$(cat "${dir}/shard.port")" <<'PY'
import sys, threading
import numpy as np
import ternps
shard = sys.argv[1]
n = 1 << 16
inputs = [np.random.default_rng(r).standard_normal(n).astype(np.float32) for r in range(2)]
out = [x.copy() for x in inputs]
def run(rank):
    w = ternps.Worker(job_id="python-check", rank=rank, world_size=2, shards=[shard],
                      tensors=[("w", n)], codec="fp32")
    w.step([out[rank]])
    w.leave()
threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
for t in threads: t.start()
for t in threads: t.join()
expected = (inputs[0] + inputs[1]) / np.float32(2)
assert np.array_equal(out[0], out[1]), "the two workers got different averages"
assert np.array_equal(out[0], expected), "the average is not (a + b) / 2"
print("python: two workers exchanged", n, "elements; averages exact")
PY
    local rc=$?
    kill -TERM "${shard}"; wait "${shard}"
    return ${rc}
  }
  export -f python_check
  run_step python 120 python_check

  # The DDP hook on CUDA buckets (float32 and float16), 2 ranks in threads with the extension the
  # python step built: the hook stages them through host memory (the streaming step is
  # host-only; StepOnDevice, the device codec, is not used by the hook). fp32 codec, so the
  # average of 2 ranks is exactly (a + b) / 2, computed here on the GPU.
  ddp_cuda_check() {
    local dir="${WORK}/python"
    ls "${dir}"/ternps/_ternps*.so >/dev/null 2>&1 || { echo "the python step built no extension"; return 1; }
    "${BIN}/ternps-server" --listen=127.0.0.1:0 --port_file="${dir}/ddp.port" --quiet &
    local shard=$!
    wait_for_file "${dir}/ddp.port" || { echo "the shard wrote no port file"; return 1; }
    PYTHONPATH="${dir}" python3 - "127.0.0.1:$(cat "${dir}/ddp.port")" <<'PY'
import sys, threading
import torch
import ternps.ddp
shard = sys.argv[1]
assert torch.cuda.is_available(), "torch sees no CUDA device"

class Bucket:  # torch.distributed.GradBucket's methods the hook uses
    def __init__(self, p, buf):
        self.p, self.buf = p, buf
    def buffer(self): return self.buf
    def parameters(self): return [self.p]
    def gradients(self): return [self.buf.view_as(self.p)]

for dtype in (torch.float32, torch.float16):
    n = 1 << 16
    inputs = [(torch.randn(n, generator=torch.Generator().manual_seed(r)) * 0.01).to("cuda", dtype)
              for r in range(2)]
    out, errors = [None, None], []
    def run(rank):
        try:
            p = torch.nn.Parameter(torch.zeros(n, device="cuda"))
            hook = ternps.ddp.TernGradHook(torch.nn.ParameterList([p]), job_id=f"ddp-cuda-{dtype}",
                                           rank=rank, world_size=2, shards=[shard], codec="fp32")
            buf = inputs[rank].clone()
            out[rank] = hook.on_bucket(Bucket(p, buf)).wait()
            torch.cuda.synchronize()
            hook.close()
        except Exception as e:
            errors.append(repr(e))
    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors
    expected = ((inputs[0].float() + inputs[1].float()) / 2).to(dtype)
    for r in range(2):
        assert out[r].is_cuda and out[r].dtype == dtype, (out[r].device, out[r].dtype)
        assert torch.equal(out[r], expected), f"rank {r}: not the average ({dtype})"
    print(f"ddp_cuda: {dtype} CUDA buckets of {n} elements through the hook; averages exact")
PY
    local rc=$?
    kill -TERM "${shard}"; wait "${shard}"
    return ${rc}
  }
  export -f ddp_cuda_check
  run_step ddp_cuda 120 ddp_cuda_check
  wait "${SANITIZERS}"
fi

VERDICT_RC=0
python3 "${ROOT}/tests/gpu/verdict.py" "${LOGS}" --seconds $(( $(date +%s) - T0 )) \
  >"${RESULTS}/verdict.txt" || VERDICT_RC=$?
[[ -f "${LOGS}/bench.jsonl" ]] && grep '^{' "${LOGS}/bench.jsonl" >"${RESULTS}/bench.jsonl"
tar -C "${WORK}" -czf "${RESULTS}/logs.tar.gz" logs
echo
cat "${RESULTS}/verdict.txt"
exit $(( VERDICT_RC == 0 ? 0 : 1 ))
