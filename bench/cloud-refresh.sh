#!/usr/bin/env bash
# Refresh of a set's Cinder-backed points at scale (see bench/cloud-refresh.js): the check that
# `pulumi refresh` runs over BENCH_POINTS (default 200) points' Cinder backups, its wall time and
# request count, against one GET per backup measured in the same run. Needs the loopback cloud:
# started here (and stopped after) unless `tools/openstack/osloop.sh up` already runs it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
osloop="$repo/tools/openstack/osloop.sh"
cloud_json="${COFFER_OSLOOP_DIR:-$repo/.work/osloop}/cloud.json"
started=
if ! "$osloop" status >/dev/null 2>&1; then
  "$osloop" install
  "$osloop" up
  started=1
fi
stop() { [ -z "$started" ] || "$osloop" down; }
trap stop EXIT
(cd "$repo" && npm run --silent build)
COFFER_OSLOOP_CLOUD="$cloud_json" node "$repo/bench/cloud-refresh.js"
