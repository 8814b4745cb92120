# Sourced by tools/demo.sh and tools/test.sh: installs what is missing on a fresh machine, then
# puts the Pulumi CLI on PATH. Safe to run again; each step is skipped when already done.
#   npm dependencies     npm ci, when node_modules is missing or older than package-lock.json
#   the TypeScript build npm run build (dist/)
#   the Pulumi CLI       tools/pulumi-cli/build.sh (built from Go modules once, then cached)
# COFFER_CLI_OPTIONAL=1 lets a missing Go toolchain through (the caller skips what needs the CLI).

coffer_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
coffer_say() { echo "coffer: $*" >&2; }

coffer_setup() {
  cd "$coffer_repo"
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt 20 ]; then
    coffer_say "Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none))"
    return 1
  fi

  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    coffer_say "installing npm dependencies (npm ci)"
    # npm 11 has been seen to hang on one run and pass the next: bound it and try once more.
    timeout 900 npm ci --no-audit --no-fund --loglevel=error || {
      coffer_say "npm ci failed or timed out; trying once more"
      timeout 900 npm ci --no-audit --no-fund --loglevel=error
    }
  fi

  coffer_say "building (tsc)"
  npm run --silent build

  local bin status=0
  bin=$(tools/pulumi-cli/build.sh) || status=$?
  if [ "$status" -eq 0 ]; then
    export PATH="$bin:$PATH"
  elif [ "$status" -eq 3 ] && [ "${COFFER_CLI_OPTIONAL:-0}" = 1 ]; then
    :  # build.sh said why; the caller skips what needs the CLI
  else
    return 1
  fi
  export PULUMI_SKIP_UPDATE_CHECK=1
}
