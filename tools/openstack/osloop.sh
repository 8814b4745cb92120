#!/usr/bin/env bash
# A real OpenStack control plane on 127.0.0.1 from Debian 12's packages, as the fixture of the
# cloud test tier: Keystone and Barbican under uwsgi, Glance (file store), Cinder api, scheduler,
# volume (LoopFileDriver: each volume is a sparse file) and backup (posix), MariaDB, RabbitMQ.
# Facts and quirks behind each step: /work/shared/research/openstack-loopback.md.
#
#   osloop.sh install   apt-get install the packages (root; skipped when they are installed)
#   osloop.sh up        start everything, set it up on the first run, wait until it answers,
#                       write <state>/cloud.json for the tests
#   osloop.sh down      stop exactly the processes `up` started (TERM, then KILL after a grace)
#   osloop.sh status    which recorded processes run, and which ports listen
#
# State (configs, MariaDB and RabbitMQ data, volumes, backups, logs, PIDs, generated passwords):
# ${COFFER_OSLOOP_DIR:-<repo>/.work/osloop}. The ports are fixed (3306 5672 5000 9311 9292 8776),
# so one cloud runs per machine.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../.." && pwd)
state=${COFFER_OSLOOP_DIR:-$repo/.work/osloop}
python=/usr/bin/python3 # Debian's OpenStack libraries are only there, not in a pyenv/venv python3
say() { echo "osloop: $*" >&2; }
die() {
  say "$*"
  exit 1
}

packages=(keystone barbican-api glance-api cinder-api cinder-scheduler cinder-volume cinder-backup
  rabbitmq-server mariadb-server python3-pymysql python3-openstackclient python3-barbicanclient
  # os-brick runs dmidecode when /sys/class/dmi/id/product_uuid is absent; a missing binary hangs backups
  dmidecode)

packages_installed() {
  local status
  status=$(dpkg-query -W -f='${Status}\n' "${packages[@]}" 2>/dev/null) || return 1
  [ "$(grep -c '^install ok installed$' <<<"$status")" -eq "${#packages[@]}" ]
}

cmd_install() {
  if packages_installed; then
    say "installed already (${#packages[@]} packages)"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null || die "install needs root and apt-get (Debian 12)"
  local started=$SECONDS made_policy=0
  # Without systemd, each daemon's postinst would start it through its SysV script (keystone on
  # every interface, mariadb, rabbitmq...): policy-rc.d's 101 tells invoke-rc.d not to.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# osloop: no service starts during apt-get\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local debconf question
  for debconf in keystone barbican-common glance-common cinder-common; do
    for question in configure_db configure_rabbit configure_ksat; do
      echo "$debconf $debconf/$question boolean false"
    done
  done | debconf-set-selections
  printf '%s\n' 'keystone keystone/create-admin-tenant boolean false' \
    'keystone keystone/register-endpoint boolean false' | debconf-set-selections
  say "installing ${#packages[@]} packages and their dependencies (apt-get, about 2-3 minutes)"
  local status=0 install_log=$state/log/install.log
  mkdir -p "$state/log"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 \
    "${packages[@]}"; } >"$install_log" 2>&1 || status=$?
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$status" -eq 0 ] || die "apt-get failed (exit $status); its output: $install_log"
  apt-get clean
  say "installed in $((SECONDS - started)) s"
}


# --- up ------------------------------------------------------------------------------------------

ports=(3306 5672 5000 9311 9292 8776)
services=(mariadb rabbitmq keystone barbican glance-api cinder-api cinder-scheduler cinder-volume cinder-backup)
default_volume_type=loopfile
encrypted_volume_type=luks
rabbit_env=(RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672
  ERL_EPMD_ADDRESS=127.0.0.1 HOME=/var/lib/rabbitmq
  "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"
  "RABBITMQ_CTL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"
  RABBITMQ_MNESIA_BASE="$state/data/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$state/log/rabbitmq"
  RABBITMQ_PID_FILE="$state/data/rabbitmq/rabbit.pid")
as_rabbitmq=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env "${rabbit_env[@]}")
mysql_socket=$state/run/mysql/mysqld.sock
up_started=$SECONDS

sql() { mariadb --no-defaults --socket="$mysql_socket" -u root --batch --skip-column-names "$@"; }

# "<pid> <start time in clock ticks>": a recorded PID is only ours while both match.
proc_start_time() { awk '{ print $22 }' "/proc/$1/stat" 2>/dev/null; }
record_pid() { echo "$2 $(proc_start_time "$2")" >"$state/run/$1.pid"; }
recorded_pid() { # prints the PID if the process recorded as $1 still runs
  local pid start
  read -r pid start 2>/dev/null <"$state/run/$1.pid" || return 1
  [ -n "$pid" ] && [ "$(proc_start_time "$pid")" = "$start" ] && echo "$pid"
}

# Each service runs in its own session (setsid), so its PID is also its process group: down
# stops the group, workers included. Output goes to <state>/log/<name>.out.
start_service() {
  local name=$1
  shift
  setsid "$@" >>"$state/log/$name.out" 2>&1 </dev/null &
  record_pid "$name" $!
}

# wait_for <what> <timeout s> <command...>: prints what it waits for, and the elapsed seconds.
wait_for() {
  local what=$1 limit=$2 began=$SECONDS next_note=10
  shift 2
  say "waiting for $what ($((SECONDS - up_started)) s since up started)"
  until "$@" >/dev/null 2>&1; do
    if [ $((SECONDS - began)) -ge "$limit" ]; then
      die "$what: not ready after $limit s (logs: $state/log)"
    fi
    if [ $((SECONDS - began)) -ge "$next_note" ]; then
      say "  still waiting for $what: $((SECONDS - began)) s"
      next_note=$((next_note + 10))
    fi
    sleep 1
  done
  say "  $what ready after $((SECONDS - began)) s"
}

http_answers() { # any HTTP status below 500
  local code
  code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$1") && [ "$code" != 000 ] && [ "$code" -lt 500 ]
}

load_secrets() {
  local file=$state/secrets.env
  if [ ! -f "$file" ]; then
    (
      umask 077
      for name in DB_PASSWORD RABBIT_PASSWORD ADMIN_PASSWORD DEMO_PASSWORD SERVICE_PASSWORD; do
        echo "OSLOOP_$name=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
      done
      echo "OSLOOP_BARBICAN_KEK=$(head -c 32 /dev/urandom | base64)"
    ) >"$file.tmp"
    mv "$file.tmp" "$file"
  fi
  set -a
  # shellcheck disable=SC1090
  source "$file"
  set +a
}

# Replaces @NAME@ with OSLOOP_NAME (or STATE, DEFAULT_VOLUME_TYPE) in bash, so no secret is on argv.
render_config() {
  local text name value
  text=$(<"$script_dir/config/$1")
  text=${text//@STATE@/$state}
  text=${text//@DEFAULT_VOLUME_TYPE@/$default_volume_type}
  for name in DB_PASSWORD RABBIT_PASSWORD SERVICE_PASSWORD BARBICAN_KEK; do
    value=OSLOOP_$name
    text=${text//@$name@/${!value}}
  done
  (
    umask 077
    printf '%s\n' "$text" >"$2"
  )
}

prepare_state() {
  mkdir -p "$state"/{etc,run,log,barbican-home/.barbican} "$state"/data/{keystone,glance,cinder/volumes,cinder/backups}
  chmod 700 "$state/etc" "$state/barbican-home"
  install -d -o mysql -g mysql "$state/data/mysql" "$state/run/mysql"
  install -d -o rabbitmq -g rabbitmq "$state/data/rabbitmq" "$state/log/rabbitmq"
  render_config keystone.conf "$state/etc/keystone.conf"
  render_config barbican.conf "$state/barbican-home/.barbican/barbican.conf"
  render_config glance-api.conf "$state/etc/glance-api.conf"
  render_config cinder.conf "$state/etc/cinder.conf"
}

start_mariadb() {
  if [ ! -d "$state/data/mysql/mysql" ]; then
    say "initialising MariaDB's datadir"
    mariadb-install-db --no-defaults --user=mysql --datadir="$state/data/mysql" --skip-test-db \
      --auth-root-authentication-method=socket >"$state/log/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed: $state/log/mariadb-install.log"
  fi
  start_service mariadb mariadbd --no-defaults --user=mysql --datadir="$state/data/mysql" --socket="$mysql_socket" \
    --pid-file="$state/run/mysql/mysqld.pid" --bind-address=127.0.0.1 --port=3306 --skip-name-resolve \
    --innodb-buffer-pool-size=64M --performance-schema=OFF
}

create_databases() {
  local db
  {
    for db in keystone barbican glance cinder; do echo "CREATE DATABASE IF NOT EXISTS $db;"; done
    echo "CREATE USER IF NOT EXISTS 'osloop'@'127.0.0.1' IDENTIFIED BY '$OSLOOP_DB_PASSWORD';"
    echo "ALTER USER 'osloop'@'127.0.0.1' IDENTIFIED BY '$OSLOOP_DB_PASSWORD';"
    for db in keystone barbican glance cinder; do echo "GRANT ALL PRIVILEGES ON $db.* TO 'osloop'@'127.0.0.1';"; done
  } | sql
}

start_rabbitmq() {
  pgrep -x epmd >/dev/null && epmd_was_running=1 || epmd_was_running=0
  start_service rabbitmq "${as_rabbitmq[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
}

rabbitmq_ready() { "${as_rabbitmq[@]}" rabbitmqctl --timeout 5 await_startup; }

# RabbitMQ starts epmd as a daemon outside its process group: down stops it if up started it.
record_epmd() {
  local pid
  if [ "${epmd_was_running:-1}" = 0 ] && pid=$(pgrep -x epmd); then record_pid epmd "$pid"; fi
}

rabbitmq_user() {
  record_epmd
  # The password goes on stdin, not argv; re-set each up, so secrets.env stays the truth.
  local users
  users=$("${as_rabbitmq[@]}" rabbitmqctl --quiet list_users)
  grep -q '^osloop\s' <<<"$users" ||
    printf '%s\n' "$OSLOOP_RABBIT_PASSWORD" | "${as_rabbitmq[@]}" rabbitmqctl --quiet add_user osloop >/dev/null
  printf '%s\n' "$OSLOOP_RABBIT_PASSWORD" | "${as_rabbitmq[@]}" rabbitmqctl --quiet change_password osloop >/dev/null
  "${as_rabbitmq[@]}" rabbitmqctl --quiet set_permissions osloop '.*' '.*' '.*' >/dev/null
}

uwsgi_app() { # name port wsgi-file [env...]
  local name=$1 port=$2 app=$3
  shift 3
  local args=(uwsgi --plugins python3 --http-socket "127.0.0.1:$port" --wsgi-file "$app" --master --processes 1
    --threads 4 --enable-threads --die-on-term --buffer-size 65535 --logto "$state/log/$name.uwsgi.log"
    # keystoneauth reuses connections that uwsgi's http-socket closed: random "Connection reset by peer"
    --add-header Connection:close)
  start_service "$name" env "$@" "${args[@]}"
}

keystone_cold_setup() {
  local manage=(keystone-manage --config-file "$state/etc/keystone.conf")
  "${manage[@]}" db_sync
  "${manage[@]}" fernet_setup --keystone-user root --keystone-group root
  "${manage[@]}" credential_setup --keystone-user root --keystone-group root
  OS_BOOTSTRAP_PASSWORD=$OSLOOP_ADMIN_PASSWORD "${manage[@]}" bootstrap --bootstrap-username admin \
    --bootstrap-project-name admin --bootstrap-role-name admin --bootstrap-region-id RegionOne \
    --bootstrap-admin-url http://127.0.0.1:5000/v3/ --bootstrap-internal-url http://127.0.0.1:5000/v3/ \
    --bootstrap-public-url http://127.0.0.1:5000/v3/
}

sync_service_databases() { # in parallel; each writes its own log
  local pids=() pid failed=0
  (HOME=$state/barbican-home barbican-manage db upgrade) >"$state/log/db-sync-barbican.log" 2>&1 &
  pids+=($!)
  glance-manage --config-file "$state/etc/glance-api.conf" db_sync >"$state/log/db-sync-glance.log" 2>&1 &
  pids+=($!)
  cinder-manage --config-file "$state/etc/cinder.conf" db sync >"$state/log/db-sync-cinder.log" 2>&1 &
  pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "a database sync failed: $state/log/db-sync-*.log"
}

# cinder's service rows can look "up" from before a restart: wait for heartbeats after this start.
cinder_services_heartbeat() {
  local fresh
  fresh=$(sql cinder -e "SELECT COUNT(DISTINCT \`binary\`) FROM services WHERE deleted = 0
    AND \`binary\` IN ('cinder-scheduler', 'cinder-volume', 'cinder-backup') AND updated_at > '$1'")
  [ "$fresh" = 3 ]
}

write_cloud_json() {
  (
    umask 077
    OSLOOP_STATE=$state OSLOOP_DEFAULT_VOLUME_TYPE=$default_volume_type \
      OSLOOP_ENCRYPTED_VOLUME_TYPE=$encrypted_volume_type $python - >"$state/cloud.json.tmp" <<'PY'
import json, os
env = os.environ
def user(name, project, password):
    return {"username": name, "password": env[password], "projectName": project,
            "userDomainName": "Default", "projectDomainName": "Default"}
print(json.dumps({
    "authUrl": "http://127.0.0.1:5000/v3",
    "region": "RegionOne",
    "demo": user("demo", "demo", "OSLOOP_DEMO_PASSWORD"),
    "admin": user("admin", "admin", "OSLOOP_ADMIN_PASSWORD"),
    "volumesDir": env["OSLOOP_STATE"] + "/data/cinder/volumes",
    "backupsDir": env["OSLOOP_STATE"] + "/data/cinder/backups",
    "volumeTypes": {"default": env["OSLOOP_DEFAULT_VOLUME_TYPE"], "encrypted": env["OSLOOP_ENCRYPTED_VOLUME_TYPE"]},
}, indent=2))
PY
  )
  mv "$state/cloud.json.tmp" "$state/cloud.json"
}

cmd_up() {
  packages_installed || die "the OpenStack packages are not installed: run $0 install (as root)"
  [ "$(id -u)" -eq 0 ] || die "up needs root (services run as root, mysql and rabbitmq)"
  local name port
  for name in "${services[@]}"; do
    recorded_pid "$name" >/dev/null && die "already running ($name); $0 down stops it"
  done
  for port in "${ports[@]}"; do
    ss -Hltn "sport = :$port" | grep -q . && die "port $port is in use already (ss -ltnp shows by what)"
  done
  rm -f "$state/cloud.json" "$state"/run/*.pid
  trap 'up_failed' EXIT
  mkdir -p "$state"
  [ -f "$state/secrets.env" ] || [ ! -d "$state/data" ] ||
    die "$state/secrets.env is missing but data/ is there: remove $state to start from scratch"
  load_secrets
  prepare_state
  # secrets.env and data/ belong together: the databases hold the passwords of the first up.
  local cold=0
  [ -f "$state/data/set-up" ] || cold=1
  say "starting the loopback cloud in $state ($([ "$cold" = 1 ] && echo cold: first start || echo warm))"

  start_mariadb
  start_rabbitmq
  wait_for "MariaDB (127.0.0.1:3306)" 60 sql -e 'SELECT 1'
  local syncs=
  if [ "$cold" = 1 ]; then
    create_databases
    say "creating the schemas (keystone, barbican, glance, cinder)"
    sync_service_databases &
    syncs=$!
    keystone_cold_setup >"$state/log/keystone-setup.log" 2>&1 ||
      die "keystone db_sync/bootstrap failed: $state/log/keystone-setup.log"
  fi
  uwsgi_app keystone 5000 /usr/bin/keystone-wsgi-public OS_KEYSTONE_CONFIG_FILES="$state/etc/keystone.conf"
  wait_for "Keystone (127.0.0.1:5000)" 120 http_answers http://127.0.0.1:5000/v3
  if [ "$cold" = 1 ]; then
    say "setting up projects, users, roles and the catalog"
    $python "$script_dir/cloud_setup.py" identity >"$state/log/cloud-setup.log" 2>&1 ||
      die "identity set-up failed: $state/log/cloud-setup.log"
    wait "$syncs" || die "a database sync failed: $state/log/db-sync-*.log"
  fi
  wait_for "RabbitMQ (127.0.0.1:5672)" 120 rabbitmq_ready
  rabbitmq_user

  local cinder_started
  cinder_started=$(sql -e 'SELECT UTC_TIMESTAMP()')
  uwsgi_app barbican 9311 /usr/bin/barbican-wsgi-api HOME="$state/barbican-home"
  start_service glance-api glance-api --config-file "$state/etc/glance-api.conf"
  start_service cinder-api cinder-api --config-file "$state/etc/cinder.conf"
  start_service cinder-scheduler cinder-scheduler --config-file "$state/etc/cinder.conf"
  start_service cinder-volume env PYTHONPATH="$script_dir" cinder-volume --config-file "$state/etc/cinder.conf"
  start_service cinder-backup cinder-backup --config-file "$state/etc/cinder.conf"
  wait_for "Barbican (127.0.0.1:9311)" 120 http_answers http://127.0.0.1:9311/
  wait_for "Glance (127.0.0.1:9292)" 120 http_answers http://127.0.0.1:9292/
  wait_for "cinder-api (127.0.0.1:8776)" 180 http_answers http://127.0.0.1:8776/
  wait_for "heartbeats of cinder-scheduler, -volume and -backup" 180 cinder_services_heartbeat "$cinder_started"
  if [ "$cold" = 1 ]; then
    say "creating the volume types $default_volume_type and $encrypted_volume_type (LUKS)"
    OSLOOP_DEFAULT_VOLUME_TYPE=$default_volume_type OSLOOP_ENCRYPTED_VOLUME_TYPE=$encrypted_volume_type \
      $python "$script_dir/cloud_setup.py" volume-types >>"$state/log/cloud-setup.log" 2>&1 ||
      die "volume type set-up failed: $state/log/cloud-setup.log"
    touch "$state/data/set-up"
  fi
  $python "$script_dir/cloud_setup.py" quotas >>"$state/log/cloud-setup.log" 2>&1 ||
    die "quota set-up failed: $state/log/cloud-setup.log"
  write_cloud_json
  trap - EXIT
  say "up after $((SECONDS - up_started)) s: $state/cloud.json; logs in $state/log; $0 down stops it"
}

up_failed() {
  say "up failed; logs: $state/log. Stopping what it started."
  record_epmd
  cmd_down || true
}

# --- down, status --------------------------------------------------------------------------------

stop_group() { # TERM the service's process group, KILL it after the grace period
  local name=$1 pid grace=${OSLOOP_STOP_GRACE:-30} waited=0
  pid=$(recorded_pid "$name") || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null || pgrep -g "$pid" >/dev/null; do
    if [ "$waited" -ge "$grace" ]; then
      say "$name ($pid) did not stop within $grace s: KILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

cmd_down() {
  [ -d "$state/run" ] || return 0
  local began=$SECONDS name pid
  # cinder-backup's os-brick calls run in a privsep-helper (under sudo) outside its process group.
  local privsep=()
  mapfile -t privsep < <(pgrep -f "privsep-helper.*--config-file $state/etc/cinder.conf" || true)
  # Clients first, then the servers they use; each group stops in parallel.
  for name in keystone barbican glance-api cinder-api cinder-scheduler cinder-volume cinder-backup; do
    stop_group "$name" &
  done
  wait
  for pid in "${privsep[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  stop_group rabbitmq &
  stop_group mariadb &
  wait
  if pid=$(recorded_pid epmd); then
    epmd -kill >/dev/null 2>&1 || true
    sleep 1
    kill -TERM "$pid" 2>/dev/null || true
  fi
  rm -f "$state/cloud.json" "$state"/run/*.pid
  say "stopped in $((SECONDS - began)) s"
}

cmd_status() {
  local name pid running=0
  for name in "${services[@]}" epmd; do
    if pid=$(recorded_pid "$name"); then
      echo "$name: running (pid $pid)"
      running=$((running + 1))
    else
      [ "$name" = epmd ] || echo "$name: stopped"
    fi
  done
  ss -ltnp | grep -E ":($(
    IFS='|'
    echo "${ports[*]}"
  ))\b" || true
  [ "$running" -ge "${#services[@]}" ] && [ -f "$state/cloud.json" ] && echo "cloud.json: $state/cloud.json"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 install|up|down|status" ;;
esac
