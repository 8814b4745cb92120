# Sourced by tools/demo.sh and tools/test.sh: installs what is missing on a fresh machine, then
# puts the Pulumi CLI on PATH. Safe to run again; each step is skipped when already done.
#   system packages      qemu-img, QEMU, qemu-nbd, ssh/sshd from Debian, when missing
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
  # setpriv (util-linux, essential in Debian) makes the agent's tools die with it. cryptsetup: the tests
  # check that it opens the LUKS headers Coffer writes (restores need only qemu-img).
  for tool in qemu-img:qemu-utils qemu-nbd:qemu-utils qemu-io:qemu-utils qemu-system-x86_64:qemu-system-x86 \
    ssh:openssh-client /usr/sbin/sshd:openssh-server setpriv:util-linux \
    /usr/sbin/cryptsetup:cryptsetup-bin; do
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

# The cloud tier (test/cloud) runs against a real OpenStack control plane on 127.0.0.1 that
# tools/openstack/osloop.sh installs (apt-get, root) and starts. It runs with CI=true, and locally
# with COFFER_CLOUD=1 (it installs ~600 MB of Debian packages and takes ~1.4 GiB of RAM, so not
# unasked), or when a cloud that `osloop.sh up` started is up already (that one stays up).
# coffer_cloud_start runs install + up in the background, coffer_cloud_ready waits for it and exports
# COFFER_OSLOOP_CLOUD, and an EXIT trap runs `osloop.sh down` for a cloud it started.
coffer_osloop=$coffer_repo/tools/openstack/osloop.sh
coffer_osloop_state=${COFFER_OSLOOP_DIR:-$coffer_repo/.work/osloop}
coffer_cloud_job=

# Whether jest's arguments select the project $1 (cloud, swift): no --selectProjects and no test paths,
# a --selectProjects list with it, or a test path that names it (test/cloud/..., test/swift/...).
coffer_project_selected() {
  local project=$1 arg in_projects=0 projects=0 paths=0
  shift
  for arg in "$@"; do
    case "$arg" in
      --selectProjects=*) projects=1 && [ "${arg#*=}" = "$project" ] && return 0 ;;
      --selectProjects) in_projects=1 projects=1 ;;
      -*) in_projects=0 ;;
      *)
        if [ "$in_projects" = 1 ]; then
          [ "$arg" = "$project" ] && return 0
        else
          [[ "$arg" == *"$project"* ]] && return 0
          paths=1
        fi
        ;;
    esac
  done
  [ "$projects" = 0 ] && [ "$paths" = 0 ]
}

# The EXIT trap runs each stop function registered here (the cloud's, Swift's), whichever started.
coffer_exit_stops=()
coffer_stop_at_exit() {
  coffer_exit_stops+=("$1")
  trap coffer_run_exit_stops EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
}
coffer_run_exit_stops() {
  local stop
  for stop in "${coffer_exit_stops[@]}"; do "$stop" || true; done
}

coffer_cloud_start() {
  coffer_project_selected cloud "$@" || return 0
  if "$coffer_osloop" status >/dev/null 2>&1; then
    coffer_say "the loopback cloud is up already: the cloud tier uses it and leaves it running"
    return 0
  fi
  if [ "${CI:-}" != true ] && [ "${COFFER_CLOUD:-0}" != 1 ]; then
    coffer_say "skipping the cloud tier: the loopback OpenStack cloud is not up. To enable it (root, Debian 12:" \
      "installs OpenStack's packages once, ~1.4 GiB of RAM while it runs): COFFER_CLOUD=1 tools/test.sh"
    return 0
  fi
  # In CI the cloud runs Nova too (its tests must run there); locally OSLOOP_NOVA=1 asks for it.
  [ "${CI:-}" = true ] && export OSLOOP_NOVA=1
  mkdir -p "$coffer_osloop_state/log"
  coffer_say "starting the loopback OpenStack cloud in the background (log: $coffer_osloop_state/log/up.log)"
  coffer_stop_at_exit coffer_cloud_stop
  ("$coffer_osloop" install && "$coffer_osloop" up) >"$coffer_osloop_state/log/up.log" 2>&1 &
  coffer_cloud_job=$!
}

coffer_cloud_ready() {
  if [ -n "$coffer_cloud_job" ]; then
    coffer_say "waiting for the loopback cloud to be up"
    local status=0
    wait "$coffer_cloud_job" || status=$?
    coffer_cloud_job=
    if [ "$status" -ne 0 ]; then
      coffer_say "the loopback cloud did not start (exit $status); the end of $coffer_osloop_state/log/up.log:"
      tail -n 15 "$coffer_osloop_state/log/up.log" >&2
      return 1
    fi
    grep -h '^osloop: up after' "$coffer_osloop_state/log/up.log" >&2 || true
  fi
  [ -f "$coffer_osloop_state/cloud.json" ] && export COFFER_OSLOOP_CLOUD=$coffer_osloop_state/cloud.json
  return 0
}

coffer_cloud_stop() {
  if [ -n "$coffer_cloud_job" ]; then
    coffer_say "waiting for the loopback cloud's start to finish, to stop it"
    wait "$coffer_cloud_job" || true
  fi
  coffer_say "stopping the loopback cloud"
  "$coffer_osloop" down >>"$coffer_osloop_state/log/up.log" 2>&1 ||
    coffer_say "osloop.sh down failed: $coffer_osloop_state/log/up.log"
}

# The swift tier (test/swift) runs against a real Swift cluster on 127.0.0.1 (a proxy, an account and
# a container server, three object servers) that tools/swift/swiftloop.sh installs (apt-get, root) and
# starts. Like the cloud, it runs with CI=true, locally with COFFER_SWIFT=1, or when a cluster that
# `swiftloop.sh up` started is up already (that one stays up). It takes ~300 MiB of RAM while it runs.
# coffer_swift_start installs (in the foreground: call it before coffer_cloud_start, whose apt-get runs
# in the background) and runs up in the background; coffer_swift_ready waits for it and exports
# COFFER_SWIFTLOOP; an EXIT trap runs `swiftloop.sh down` for a cluster it started.
coffer_swiftloop=$coffer_repo/tools/swift/swiftloop.sh
coffer_swiftloop_state=${COFFER_SWIFTLOOP_DIR:-$coffer_repo/.work/swiftloop}
coffer_swift_job=

coffer_swift_start() {
  coffer_project_selected swift "$@" || return 0
  if "$coffer_swiftloop" status >/dev/null 2>&1; then
    coffer_say "the loopback Swift cluster is up already: the swift tier uses it and leaves it running"
    return 0
  fi
  if [ "${CI:-}" != true ] && [ "${COFFER_SWIFT:-0}" != 1 ]; then
    coffer_say "skipping the swift tier: the loopback Swift cluster is not up. To enable it (root, Debian 12:" \
      "installs Swift's packages once, ~300 MiB of RAM while it runs): COFFER_SWIFT=1 tools/test.sh"
    return 0
  fi
  local log=$coffer_swiftloop_state/log/up.log
  mkdir -p "$coffer_swiftloop_state/log"
  "$coffer_swiftloop" install >"$log" 2>&1 || {
    coffer_say "installing Swift's packages failed; the end of $log:"
    tail -n 15 "$log" >&2
    return 1
  }
  coffer_say "starting the loopback Swift cluster in the background (log: $log)"
  coffer_stop_at_exit coffer_swift_stop
  "$coffer_swiftloop" up >>"$log" 2>&1 &
  coffer_swift_job=$!
}

coffer_swift_ready() {
  local log=$coffer_swiftloop_state/log/up.log
  if [ -n "$coffer_swift_job" ]; then
    local status=0
    wait "$coffer_swift_job" || status=$?
    coffer_swift_job=
    if [ "$status" -ne 0 ]; then
      coffer_say "the loopback Swift cluster did not start (exit $status); the end of $log:"
      tail -n 15 "$log" >&2
      return 1
    fi
    grep -h '^swiftloop: \(installed in\|up after\)' "$log" >&2 || true
  fi
  [ -f "$coffer_swiftloop_state/swift.json" ] && export COFFER_SWIFTLOOP=$coffer_swiftloop_state/swift.json
  return 0
}

coffer_swift_stop() {
  [ -z "$coffer_swift_job" ] || wait "$coffer_swift_job" || true
  coffer_say "stopping the loopback Swift cluster"
  "$coffer_swiftloop" down >>"$coffer_swiftloop_state/log/up.log" 2>&1 ||
    coffer_say "swiftloop.sh down failed: $coffer_swiftloop_state/log/up.log"
}
