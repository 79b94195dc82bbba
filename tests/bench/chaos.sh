#!/usr/bin/env bash
# tests/bench/chaos.sh — the chaos soak: 2 durable shards, 4 ternps-worker processes, 10 faults of
# each kind (kill -9 of a worker, kill -9 of a shard, connection resets, a black hole longer than
# the step timeout), against a run of the same job without faults. Not in CI (18.5 minutes
# here). JSON lines on stdout: one per fault, then the summary; exit 1 if a replica differs, a
# worker fails, the accuracy drifts more than 0.5 point or a process's memory grows over 10%.
#
#   tests/bench/chaos.sh [--build-dir DIR] [--faults-per-kind 10] [--epochs 60] [--seed 7]
#                        [--step-timeout 5] [--skip-reference] [--keep]
# Builds nothing: run tests/run.sh (or build ./build) first.
set -euo pipefail
exec python3 "$(dirname "${BASH_SOURCE[0]}")/chaos.py" "$@"
