#!/usr/bin/env bash
# A real OpenStack Swift cluster on 127.0.0.1 from Debian 12's packages, the fixture of the swift
# test tier: memcached, a proxy (tempauth, s3api when the package has it, SLO), one account server,
# one container server, and three object servers on a ring of 3 replicas (write quorum 2), each on
# a plain folder. Facts behind each step: /work/shared/research/swift-loopback.md.
#
#   swiftloop.sh install   apt-get install the packages (root; skipped when they are installed)
#   swiftloop.sh up        start whatever of it is not running (so it also restarts an object server
#                          that a test stopped), wait until it answers, write <state>/swift.json
#   swiftloop.sh down      stop exactly the processes `up` started (TERM, then KILL after a grace)
#   swiftloop.sh status    which recorded processes run; exit 0 only when all run and swift.json is there
#
# State (configs, rings, devices, logs, PIDs, the generated key): ${COFFER_SWIFTLOOP_DIR:-<repo>/.work/swiftloop}.
# Ports are fixed (memcached 11311, proxy 6280, account 6202, container 6201, objects 6210 6220 6230),
# so one cluster runs per machine.
#
# Quirks met (details in the research note):
# - The hash path prefix/suffix and the storage policies always come from /etc/swift/swift.conf, whatever
#   swift_dir says; we keep Debian's file (its `changeme` values are fine for a throw-away cluster).
# - Without -v a server logs nowhere (no /dev/log: syslog over UDP); with it, to our log files.
# - tempauth keeps tokens in memcached: without memcached, auth answers 200 with a token that is refused.
# - swift-ring-builder takes ~1.3 s a call (Python start-up): the three rings are built in one Python
#   process, once, and kept while the ring layout is the same.
# - Swift servers setuid to `user` (default "swift"): we set it to whoever runs up.
# - ext4 keeps ~4 KiB of xattrs an inode: object metadata near Swift's 4 KiB limit gets 507 (proxy: 503).
# - The replicator's default rsync needs an rsync daemon: object servers are set to ssync (not run by up).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../.." && pwd)
state=${COFFER_SWIFTLOOP_DIR:-$repo/.work/swiftloop}
service_log_suffix=.log
stop_grace=${SWIFTLOOP_STOP_GRACE:-15}
stop_poll=0.2
python=/usr/bin/python3 # Debian's swift modules are only there, not in a pyenv/venv python3
say() { echo "swiftloop: $*" >&2; }
# shellcheck source=../lib/services.sh
source "$script_dir/../lib/services.sh"
began_us=${EPOCHREALTIME/./}
elapsed() { # seconds since $1 (microseconds, default: the start of this script), to a tenth
  local us=$((${EPOCHREALTIME/./} - ${1:-$began_us}))
  printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}
die() {
  say "$*"
  exit 1
}

packages=(swift swift-proxy swift-account swift-container swift-object memcached curl)


cmd_install() {
  if packages_installed; then
    say "installed already (${#packages[@]} packages)"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null || die "install needs root and apt-get (Debian 12)"
  local made_policy=0
  # Without systemd, the postinsts would start memcached and swift's SysV services: policy-rc.d's 101 says no.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# swiftloop: no service starts during apt-get\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  say "installing ${packages[*]} and their dependencies (apt-get)"
  local status=0 install_log=$state/log/install.log
  mkdir -p "$state/log"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${packages[@]}"; } >"$install_log" 2>&1 || status=$?
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$status" -eq 0 ] || die "apt-get failed (exit $status); its output: $install_log"
  apt-get clean
  say "installed in $(elapsed) s"
}

# --- up ------------------------------------------------------------------------------------------

memcached_port=11311
proxy_port=6280
account_port=6202
container_port=6201
object_ports=(6210 6220 6230)
object_servers=(object1 object2 object3)
services=(memcached account container "${object_servers[@]}" proxy)
account_name=coffer # tempauth: account AUTH_coffer, user coffer:backup
user_name=backup
started=() # the servers this up started: a failed up stops those, and only those

port_of() {
  case "$1" in
    memcached) echo "$memcached_port" ;;
    proxy) echo "$proxy_port" ;;
    account) echo "$account_port" ;;
    container) echo "$container_port" ;;
    object[1-3]) echo "${object_ports[${1#object} - 1]}" ;;
  esac
}


load_key() {
  local file=$state/secrets.env
  if [ ! -f "$file" ]; then
    (
      umask 077
      echo "SWIFTLOOP_KEY=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
    ) >"$file.tmp"
    mv "$file.tmp" "$file"
  fi
  # shellcheck disable=SC1090
  source "$file"
}

# The [DEFAULT] of a storage server, and its pipeline.
storage_conf() { # name port kind
  local name=$1 port=$2 kind=$3
  cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
devices = $state/srv/$name
mount_check = false
swift_dir = $state/etc
user = $run_user
workers = 0
log_name = $name
recon_cache_path = $state/cache

[pipeline:main]
pipeline = healthcheck recon $kind-server

[app:$kind-server]
use = egg:swift#$kind

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:recon]
use = egg:swift#recon

[$kind-replicator]
sync_method = ssync
EOF
}

proxy_conf() {
  local s3api= filter pipeline
  # s3api must come before the auth filter (it checks at start-up); slo after it.
  [ -d /usr/lib/python3/dist-packages/swift/common/middleware/s3api ] && s3api=s3api
  pipeline="catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl $s3api tempauth"
  pipeline+=" copy slo dlo versioned_writes symlink proxy-logging proxy-server"
  cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $proxy_port
swift_dir = $state/etc
user = $run_user
workers = 0
log_name = proxy

[pipeline:main]
pipeline = $pipeline

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_${account_name}_${user_name} = $SWIFTLOOP_KEY .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcached_port

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_object_versioning = true
EOF
  for filter in catch_errors gatekeeper healthcheck proxy-logging listing_formats bulk tempurl copy slo dlo symlink; do
    printf '\n[filter:%s]\nuse = egg:swift#%s\n' "$filter" "${filter//-/_}"
  done
}

write_confs() {
  mkdir -p "$state"/{etc,run,log,cache} "$state"/srv/{account,container,object1,object2,object3}/d
  chmod 700 "$state/etc"
  local name i
  (
    umask 077
    storage_conf account "$account_port" account >"$state/etc/account-server.conf"
    storage_conf container "$container_port" container >"$state/etc/container-server.conf"
    for i in 1 2 3; do
      storage_conf "object$i" "${object_ports[i - 1]}" object >"$state/etc/object-server-$i.conf"
    done
    proxy_conf >"$state/etc/proxy-server.conf.tmp"
    mv "$state/etc/proxy-server.conf.tmp" "$state/etc/proxy-server.conf"
  )
  for name in account container; do
    [ -s "$state/etc/$name-server.conf" ] || die "could not write $state/etc/$name-server.conf"
  done
}

# account and container: one replica; object: three, one per object server, each in its own zone.
ring_layout="part_power=8 account=$account_port container=$container_port object=${object_ports[*]}"

build_rings() {
  if [ -f "$state/etc/rings.layout" ] && [ "$(<"$state/etc/rings.layout")" = "$ring_layout" ] &&
    [ -f "$state/etc/object.ring.gz" ]; then
    return 0
  fi
  local began=${EPOCHREALTIME/./}
  (cd "$state/etc" && SWIFTLOOP_PORTS="$account_port $container_port ${object_ports[*]}" $python - <<'PY') ||
import os
from swift.common.ring import RingBuilder

account, container, *objects = [int(p) for p in os.environ["SWIFTLOOP_PORTS"].split()]
for name, ports in (("account", [account]), ("container", [container]), ("object", objects)):
    builder = RingBuilder(8, len(ports), 1)
    for number, port in enumerate(ports):
        builder.add_dev({"id": number, "region": 1, "zone": number + 1, "ip": "127.0.0.1", "port": port,
                         "replication_ip": "127.0.0.1", "replication_port": port, "device": "d", "weight": 100,
                         "meta": ""})
    builder.rebalance()
    builder.save(name + ".builder")
    builder.get_ring().save(name + ".ring.gz")
PY
    die "building the rings failed"
  echo "$ring_layout" >"$state/etc/rings.layout"
  say "built the rings in $(elapsed "$began") s"
}

server_command() { # name: sets `command` to what runs it
  case "$1" in
    memcached)
      command=(memcached -l 127.0.0.1 -p "$memcached_port" -U 0 -m 64)
      [ "$(id -u)" -ne 0 ] || command+=(-u memcache)
      ;;
    proxy) command=(swift-proxy-server "$state/etc/proxy-server.conf" -v) ;;
    account | container) command=("swift-$1-server" "$state/etc/$1-server.conf" -v) ;;
    object[1-3]) command=(swift-object-server "$state/etc/object-server-${1#object}.conf" -v) ;;
  esac
}

healthy() { # name
  local port
  port=$(port_of "$1")
  if [ "$1" = memcached ]; then
    ss -Hltn "sport = :$port" | grep -q .
  else
    [ "$(curl -s -m 2 "http://127.0.0.1:$port/healthcheck")" = OK ]
  fi
}

# Done waiting: the server answers, or it exited.
healthy_or_gone() { healthy "$1" || ! recorded_pid "$1"; }

# tempauth hands out a token, and the account answers with it: auth, memcached and the ring all work.
auth_works() {
  local headers=$state/run/auth-headers response token url
  (
    umask 077
    printf 'X-Auth-User: %s:%s\nX-Auth-Key: %s\n' "$account_name" "$user_name" "$SWIFTLOOP_KEY" >"$headers"
  )
  response=$(curl -s -m 5 -o /dev/null -D - -H @"$headers" "http://127.0.0.1:$proxy_port/auth/v1.0") || return 1
  token=$(tr -d '\r' <<<"$response" | awk -F': ' 'tolower($1) == "x-auth-token" { print $2 }')
  url=$(tr -d '\r' <<<"$response" | awk -F': ' 'tolower($1) == "x-storage-url" { print $2 }')
  [ -n "$token" ] && [ -n "$url" ] || return 1
  printf 'X-Auth-Token: %s\n' "$token" >"$headers"
  local code
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -I -H @"$headers" "$url")
  rm -f "$headers"
  [ "$code" = 204 ] || [ "$code" = 200 ]
}

# wait_for <what> <timeout s> <command...>
wait_for() {
  local what=$1 limit=$2 began=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $((SECONDS - began)) -lt "$limit" ] || die "$what: not ready after $limit s (logs: $state/log)"
    sleep 0.2
  done
}

write_swift_json() {
  local i name pid devices proxy_pid objects=()
  proxy_pid=$(recorded_pid proxy)
  for i in 1 2 3; do
    name=object$i
    pid=$(recorded_pid "$name")
    devices=$state/srv/$name
    objects+=("{\"name\": \"$name\", \"port\": ${object_ports[i - 1]}, \"pid\": $pid, \"devices\": \"$devices\"}")
  done
  (
    umask 077
    local IFS=,
    cat >"$state/swift.json.tmp" <<EOF
{
  "authUrl": "http://127.0.0.1:$proxy_port/auth/v1.0",
  "user": "$account_name:$user_name",
  "key": "$SWIFTLOOP_KEY",
  "proxy": {"port": $proxy_port, "pid": $proxy_pid},
  "objectServers": [${objects[*]}],
  "replicas": 3,
  "state": "$state",
  "script": "$script_dir/swiftloop.sh"
}
EOF
  )
  mv "$state/swift.json.tmp" "$state/swift.json"
}

cmd_up() {
  packages_installed || die "Swift's packages are not installed: run $0 install (as root)"
  run_user=$(id -un)
  mkdir -p "$state"
  trap up_failed EXIT
  load_key
  write_confs
  build_rings
  local name port command=()
  for name in "${services[@]}"; do
    recorded_pid "$name" >/dev/null && continue
    port=$(port_of "$name")
    ss -Hltn "sport = :$port" | grep -q . && die "port $port ($name) is in use, not by this cluster (ss -ltnp)"
    server_command "$name"
    start_service "$name" "${command[@]}"
    started+=("$name")
  done
  if [ "${#started[@]}" -eq 0 ]; then
    say "everything runs already; checking it answers"
  else
    say "started ${started[*]} in $state"
  fi
  for name in "${services[@]}"; do
    wait_for "$name (127.0.0.1:$(port_of "$name"))" 60 healthy_or_gone "$name"
    recorded_pid "$name" >/dev/null ||
      die "$name exited; the end of $state/log/$name.log: $(tail -n 5 "$state/log/$name.log")"
  done
  wait_for "tempauth and the account (proxy 127.0.0.1:$proxy_port)" 30 auth_works
  write_swift_json
  trap - EXIT
  say "up after $(elapsed) s: $state/swift.json; logs in $state/log; $0 down stops it"
}

up_failed() {
  say "up failed; logs: $state/log. Stopping what it started: ${started[*]:-nothing}"
  local name
  for name in "${started[@]}"; do stop_group "$name"; done
  rm -f "$state/swift.json"
}

# --- down, status --------------------------------------------------------------------------------


cmd_down() {
  [ -d "$state/run" ] || return 0
  local name stoppers=()
  rm -f "$state/swift.json"
  for name in "${services[@]}"; do
    stop_group "$name" &
    stoppers+=($!)
  done
  # Only those jobs: after a failed up the servers are this shell's children too.
  wait "${stoppers[@]}"
  rm -f "$state"/run/*.pid
  say "stopped in $(elapsed) s"
}

cmd_status() {
  local name pid running=0
  for name in "${services[@]}"; do
    if pid=$(recorded_pid "$name"); then
      echo "$name: running (pid $pid, port $(port_of "$name"))"
      running=$((running + 1))
    else
      echo "$name: stopped"
    fi
  done
  [ "$running" -eq "${#services[@]}" ] && [ -f "$state/swift.json" ] && echo "swift.json: $state/swift.json"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 install|up|down|status" ;;
esac
