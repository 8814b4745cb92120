#!/usr/bin/env bash
# Incremental points of a running VM's qcow2 disk (see bench/incremental.js): a full point, links
# after 1% of the disk was rewritten each, restores of the chain's end and of the full point; times
# as ratios to cp of the disk in the same run. BENCH_DISK_MIB (2048), BENCH_LINKS (10),
# BENCH_CHANGE_PERCENT (1), BENCH_RUNS (1), BENCH_DIR (.work/bench-incremental; removed at the end).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
(cd "$repo" && npm run --silent build >/dev/null)
exec node "$repo/bench/incremental.js"
