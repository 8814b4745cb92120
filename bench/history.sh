#!/usr/bin/env bash
# A set's history at scale (see bench/history.js): `pulumi preview` and `pulumi refresh` of a set
# of BENCH_POINTS (default 1000) points against one of 10 in the same run, as ratios; the state
# file's size per point; and an `up` that prunes 90% of the points. Needs the Pulumi CLI
# (tools/test.sh builds it into .work/bin). BENCH_RUNS (default 3) runs per case; medians.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$repo/.work/bin:$PATH"
command -v pulumi >/dev/null || { echo "bench: no pulumi CLI: run tools/test.sh once to build it" >&2; exit 2; }
(cd "$repo" && npm run --silent build)
exec node "$repo/bench/history.js"
