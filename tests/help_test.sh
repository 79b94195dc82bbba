#!/usr/bin/env bash
# tests/help_test.sh BIN_DIR SOURCE_DIR — every shipping binary answers --help with exit 0 and a
# usage line, names no path of the build machine (flags are listed as "server/main.cc", not
# SOURCE_DIR/server/main.cc), and offers no test-only flag (crash_at_step lives in the
# TERNPS_TEST_CRASH_AT_STEP environment variable).
set -uo pipefail
BIN="$1"
SOURCE="$2"
failed=0
for b in ternps-server ternps-worker ternps-bench ternps-healthcheck; do
  out="$("${BIN}/${b}" --help 2>&1)"
  rc=$?
  if [[ "${rc}" != 0 ]]; then echo "${b} --help: exit ${rc}"; failed=1; fi
  if ! grep -qi "usage" <<<"${out}"; then echo "${b} --help: no usage line"; failed=1; fi
  if grep -qF "${SOURCE}" <<<"${out}"; then
    echo "${b} --help names the build machine's ${SOURCE}:"; grep -F "${SOURCE}" <<<"${out}" | head -3
    failed=1
  fi
  if grep -q "crash_at_step" <<<"${out}"; then echo "${b} --help offers a test-only flag"; failed=1; fi
done
exit "${failed}"
