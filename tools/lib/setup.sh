# Sourced by tools/demo.sh and tools/test.sh: installs what is missing on a fresh machine, then
# puts the Pulumi CLI on PATH. Safe to run again; each step is skipped when already done.
#   system packages      qemu-img, QEMU, qemu-nbd/nbdcopy, ssh/sshd from Debian, when missing
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

  coffer_system_packages || return 1

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

# The backup data path uses real qemu-img and QEMU; the remote-host tests use a real sshd.
coffer_system_packages() {
  local missing=() tool package
  # setpriv (util-linux, essential in Debian) makes the agent's tools die with it.
  for tool in qemu-img:qemu-utils qemu-nbd:qemu-utils qemu-io:qemu-utils qemu-system-x86_64:qemu-system-x86 \
    nbdcopy:libnbd-bin ssh:openssh-client /usr/sbin/sshd:openssh-server setpriv:util-linux; do
    package=${tool#*:}
    command -v "${tool%%:*}" >/dev/null || [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    coffer_say "missing system packages; install them with: sudo apt-get install ${missing[*]}"
    return 1
  fi
  coffer_say "installing ${missing[*]} (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
