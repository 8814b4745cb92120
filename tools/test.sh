#!/usr/bin/env bash
# Runs every test tier after installing what is missing. In CI (CI=true) the end-to-end tier,
# which needs the Pulumi CLI, must run; elsewhere it is skipped, with a note, when Go is missing.
# The cloud tier's OpenStack and the swift tier's Swift start in the background while the rest is set
# up and checked, and stop when this script exits (see coffer_cloud_start and coffer_swift_start in lib/setup.sh).
# Arguments are passed to jest (e.g. --selectProjects unit).
set -euo pipefail
source "$(dirname "$0")/lib/setup.sh"
[ "${CI:-}" = true ] || export COFFER_CLI_OPTIONAL=1
coffer_system_packages # before the cloud's apt-get starts in the background: one apt-get at a time
coffer_swift_start "$@" # installs in the foreground, so also before the cloud's apt-get
coffer_cloud_start "$@"
coffer_setup

if ! command -v pulumi >/dev/null; then
  coffer_say "skipping tier 5 (end to end): no Pulumi CLI. To enable it, install Go >= 1.25.11 and run tools/test.sh again (it builds the CLI)."
fi

coffer_say "checking formatting (prettier; npm run format fixes it)"
npx prettier --check --log-level warn "**/*.{ts,js}"

coffer_say "type-checking sources and tests"
npx tsc -p tsconfig.json --noEmit

coffer_cloud_ready
coffer_swift_ready

mkdir -p .work
results=.work/jest-results.json
rm -f "$results"
status=0
# A tool left running can hold a pipe that keeps Jest from ever exiting. In CI, end the run
# with a message well before the CI's own limit; timeout signals Jest's whole process group.
watchdog=()
[ "${CI:-}" = true ] && watchdog=(timeout --kill-after=30s "${COFFER_TEST_TIME_LIMIT:-45m}")
# execa is ESM-only: Jest loads it natively only with VM modules on (the flag stays with jest's processes).
# Two test files at a time: most of a file's time is spent waiting on qemu, the Pulumi engine or the
# cloud's services, so a 2-core machine runs two in not much more than one's time.
"${watchdog[@]}" tools/jest.sh --ci --maxWorkers="${COFFER_TEST_WORKERS:-2}" --json --outputFile="$results" "$@" ||
  status=$?
if [ "${#watchdog[@]}" -gt 0 ] && { [ "$status" = 124 ] || [ "$status" = 137 ]; }; then
  coffer_say "the tests did not finish within ${COFFER_TEST_TIME_LIMIT:-45m} (CI=true): a test hung or left a process running; it was stopped"
fi
# One plain closing line, whatever the runner printed above it.
if [ -f "$results" ]; then
  node -e '
    const r = require(process.argv[1]);
    const skipped = r.numPendingTests + r.numTodoTests;
    console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
    if (r.numTotalTests === 0) process.exit(1);
  ' "$PWD/$results" || status=1
fi
exit "$status"
