#!/usr/bin/env bash
# Fails when a tracked C++/CUDA/proto source differs from what clang-format makes of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v clang-format >/dev/null; then
  echo "check_format: clang-format not installed" >&2
  exit 1
fi
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.h' '*.cc' '*.cu' '*.cuh' '*.proto')
bad=0
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue
  if ! diff -q <(clang-format --style=file "$f") "$f" >/dev/null; then
    echo "check_format: $f is not clang-formatted (run: clang-format -i $f)" >&2
    bad=1
  fi
done
exit "${bad}"
