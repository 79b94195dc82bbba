#!/usr/bin/env bash
# tests/deploy/reproducibility.sh — the same seed gives the same model bits.
#
#   tests/deploy/reproducibility.sh [--repeat 5] [--epochs 2] [--codecs "terngrad fp32"]
#       [--frameworks "cpp pytorch"] [--build-dir build] [--out FILE]
#
# Runs deploy/local/run.sh --seed 3 REPEAT times per (framework, codec), and once with --seed 4,
# and checks that every run with seed 3 ends with the same model_checksum and that seed 4's
# differs (the checksum does depend on the seed). Prints one JSON line per run (and appends them
# to --out); exits 1 if a check fails. ctest runs it small (label integration); the issue-sized
# run (5 x 2 epochs) is for reading: tests/bench/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REPEAT=5
EPOCHS=2
CODECS="terngrad fp32"
FRAMEWORKS="cpp"
BUILD_DIR="${ROOT}/build"
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --repeat) REPEAT="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --codecs) CODECS="$2"; shift 2 ;;
    --frameworks) FRAMEWORKS="$2"; shift 2 ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "reproducibility.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
failed=0
run() {  # run FRAMEWORK CODEC SEED: prints the checksum
  local line
  line="$("${ROOT}/deploy/local/run.sh" --no-install --no-build --build-dir "${BUILD_DIR}" \
    --framework "$1" --codec "$2" --seed "$3" --epochs "${EPOCHS}" 2>/dev/null | tail -n 1)"
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])["model_checksum"])' "${line}"
}
for framework in ${FRAMEWORKS}; do
  for codec in ${CODECS}; do
    first=""
    for (( i = 1; i <= REPEAT + 1; ++i )); do
      seed=3
      (( i == REPEAT + 1 )) && seed=4
      checksum="$(run "${framework}" "${codec}" "${seed}")" || { echo "reproducibility: a run failed" >&2; exit 1; }
      row="{\"bench\": \"reproducibility\", \"framework\": \"${framework}\", \"codec\": \"${codec}\", \"epochs\": ${EPOCHS}, \"seed\": ${seed}, \"run\": ${i}, \"model_checksum\": \"${checksum}\"}"
      echo "${row}"
      [[ -n "${OUT}" ]] && echo "${row}" >> "${OUT}"
      if (( seed == 3 )); then
        [[ -z "${first}" ]] && first="${checksum}"
        if [[ "${checksum}" != "${first}" ]]; then
          echo "reproducibility: ${framework} ${codec} run ${i}: ${checksum}, run 1: ${first}" >&2
          failed=1
        fi
      elif [[ "${checksum}" == "${first}" ]]; then
        echo "reproducibility: ${framework} ${codec}: seed 4 gave seed 3's checksum" >&2
        failed=1
      fi
    done
  done
done
exit "${failed}"
