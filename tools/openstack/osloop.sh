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
# OSLOOP_NOVA=1 (install and up) adds Nova (api, conductor, scheduler, compute with libvirt and
# QEMU under TCG), Placement, and a Neutron API server (ML2, no agents), with libvirtd and virtlogd:
# servers boot, and createImage uploads real disk bytes. /work/shared/research/nova-loopback.md.
#
# State (configs, MariaDB and RabbitMQ data, volumes, backups, logs, PIDs, generated passwords):
# ${COFFER_OSLOOP_DIR:-<repo>/.work/osloop}. The ports are fixed (3306 5672 5000 9311 9292 8776,
# with Nova also 8774 8778 9696), so one cloud runs per machine.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../.." && pwd)
state=${COFFER_OSLOOP_DIR:-$repo/.work/osloop}
service_log_suffix=.out
stop_grace=${OSLOOP_STOP_GRACE:-30}
python=/usr/bin/python3 # Debian's OpenStack libraries are only there, not in a pyenv/venv python3
with_nova=${OSLOOP_NOVA:-0}
[ "$with_nova" = 0 ] || [ "$with_nova" = 1 ] || {
  echo "osloop: OSLOOP_NOVA is 1 (with Nova) or 0, not \"$with_nova\"" >&2
  exit 1
}
say() { echo "osloop: $*" >&2; }
# shellcheck source=../lib/services.sh
source "$script_dir/../lib/services.sh"
die() {
  say "$*"
  exit 1
}

packages=(keystone barbican-api glance-api cinder-api cinder-scheduler cinder-volume cinder-backup
  rabbitmq-server mariadb-server python3-pymysql python3-openstackclient python3-barbicanclient
  # os-brick runs dmidecode when /sys/class/dmi/id/product_uuid is absent; a missing binary hangs backups
  dmidecode)
# nova-compute-kvm brings libvirt-daemon-system, python3-libvirt and QEMU (run with TCG here).
# mount has losetup: the volume driver hands Nova loop devices over its volume files.
nova_packages=(nova-api nova-conductor nova-scheduler nova-compute nova-compute-kvm placement-api neutron-server
  qemu-utils sudo mount)
[ "$with_nova" = 0 ] || packages+=("${nova_packages[@]}")


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
  for debconf in keystone barbican-common glance-common cinder-common nova-common placement-common \
    neutron-common; do
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
nova_ports=(8774 8778 9696)
# In start order; down stops them in reverse order of need (nova first, libvirtd and virtlogd last).
nova_services=(virtlogd libvirtd placement neutron-server nova-api nova-conductor nova-scheduler nova-compute)
[ "$with_nova" = 0 ] || ports+=("${nova_ports[@]}")
nova_flavor=coffer-tiny # made by cloud_setup.py nova
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
  if [ "$with_nova" = 1 ]; then
    mkdir -p "$state/etc/placement" "$state"/data/{nova/instances,nova/lock,neutron/lock}
    render_config nova.conf "$state/etc/nova.conf"
    render_config placement.conf "$state/etc/placement/placement.conf"
    render_config neutron.conf "$state/etc/neutron.conf"
    render_config ml2_conf.ini "$state/etc/ml2_conf.ini"
    # QEMU runs as libvirt-qemu: it must reach the instance files below the state folder.
    chmod o+x "$state" "$state/data" "$state/data/nova"
  fi
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

create_databases() { # the names of the databases
  local db
  {
    for db in "$@"; do echo "CREATE DATABASE IF NOT EXISTS $db;"; done
    echo "CREATE USER IF NOT EXISTS 'osloop'@'127.0.0.1' IDENTIFIED BY '$OSLOOP_DB_PASSWORD';"
    echo "ALTER USER 'osloop'@'127.0.0.1' IDENTIFIED BY '$OSLOOP_DB_PASSWORD';"
    for db in "$@"; do echo "GRANT ALL PRIVILEGES ON $db.* TO 'osloop'@'127.0.0.1';"; done
  } | sql
}

start_rabbitmq() {
  # Not counting zombies: this machine's PID 1 reaps them late, and a stopped epmd lingers as one.
  pgrep -x -r D,R,S epmd >/dev/null && epmd_was_running=1 || epmd_was_running=0
  start_service rabbitmq "${as_rabbitmq[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
}

rabbitmq_ready() { "${as_rabbitmq[@]}" rabbitmqctl --timeout 5 await_startup; }

# RabbitMQ starts epmd as a daemon outside its process group: down stops it if up started it.
record_epmd() {
  local pid
  if [ "${epmd_was_running:-1}" = 0 ] && pid=$(pgrep -x -r D,R,S epmd); then record_pid epmd "$pid"; fi
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

# --- Nova (OSLOOP_NOVA=1) ------------------------------------------------------------------------

nova_databases=(placement neutron nova_api nova nova_cell0)
nova_manage() { nova-manage --config-file "$state/etc/nova.conf" "$@"; }

# The schemas of Placement, Neutron and Nova (its cells: cell0 derived from [database], and cell1).
nova_cold_setup() {
  local pids=() pid failed=0
  placement-manage --config-file "$state/etc/placement/placement.conf" db sync \
    >"$state/log/db-sync-placement.log" 2>&1 &
  pids+=($!)
  neutron-db-manage --config-file "$state/etc/neutron.conf" --config-file "$state/etc/ml2_conf.ini" upgrade heads \
    >"$state/log/db-sync-neutron.log" 2>&1 &
  pids+=($!)
  {
    nova_manage api_db sync &&
      nova_manage cell_v2 map_cell0 &&
      # grep without -q reads it all: nova-manage dies of a broken pipe (and pipefail fails the sync) otherwise.
      { nova_manage cell_v2 list_cells | grep ' cell1 ' >/dev/null || nova_manage cell_v2 create_cell --name cell1; } &&
      nova_manage db sync
  } >"$state/log/db-sync-nova.log" 2>&1 &
  pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "a Nova, Placement or Neutron database sync failed: $state/log/db-sync-*.log"
}

libvirt_ready() { virsh -c qemu:///system version; }

# libvirtd and virtlogd in the foreground, each in its own session like every other service.
start_libvirt() {
  mkdir -p /run/libvirt
  start_service virtlogd virtlogd
  start_service libvirtd libvirtd
}

start_placement_and_neutron() {
  uwsgi_app placement 8778 /usr/bin/placement-api OS_PLACEMENT_CONFIG_DIR="$state/etc/placement"
  start_service neutron-server neutron-server --config-file "$state/etc/neutron.conf" \
    --config-file "$state/etc/ml2_conf.ini"
}

start_nova() {
  local name
  for name in nova-api nova-conductor nova-scheduler nova-compute; do
    start_service "$name" "$name" --config-file "$state/etc/nova.conf"
  done
}

# Like Cinder's: rows can look "up" from before a restart, so only heartbeats after this start count.
nova_services_heartbeat() {
  local fresh
  fresh=$(sql nova -e "SELECT COUNT(DISTINCT \`binary\`) FROM services WHERE deleted = 0
    AND \`binary\` IN ('nova-conductor', 'nova-scheduler', 'nova-compute') AND updated_at > '$1'")
  [ "$fresh" = 3 ]
}

# The scheduler only places servers on a compute node that is mapped to cell1 and has a resource
# provider in Placement; the first start takes ~40 s for that.
nova_compute_schedulable() {
  [ "$(sql nova -e 'SELECT COUNT(*) FROM compute_nodes WHERE deleted = 0')" -ge 1 ] || return 1
  [ "$(sql placement -e 'SELECT COUNT(*) FROM resource_providers')" -ge 1 ] || return 1
  [ "$(sql nova_api -e 'SELECT COUNT(*) FROM host_mappings')" -ge 1 ] || nova_manage cell_v2 discover_hosts >&2
  [ "$(sql nova_api -e 'SELECT COUNT(*) FROM host_mappings')" -ge 1 ]
}

# The QEMU processes of this cloud's servers: their disks are below our instances folder.
our_guests() { pgrep -f "^/usr/bin/qemu-system-[^ ]* .*$state/data/nova/instances/" || true; }

# Loop devices the volume driver made for Nova's attachments and a stopped cloud can no longer release.
release_loop_devices() {
  local device
  for device in $(losetup --noheadings --output NAME,BACK-FILE 2>/dev/null |
    awk -v dir="$state/data/cinder/volumes/" 'index($2, dir) == 1 { print $1 }'); do
    losetup --detach "$device" 2>/dev/null || true
  done
}

# Servers left running at down: libvirt destroys and forgets their domains, so no QEMU outlives the cloud.
stop_guests() {
  local guests domain
  guests=$(our_guests)
  [ -n "$guests" ] || return 0
  say "servers still run at down (delete them first): destroying their libvirt domains"
  if recorded_pid libvirtd >/dev/null; then
    for domain in $(virsh -c qemu:///system list --all --name 2>/dev/null); do
      virsh -c qemu:///system dumpxml "$domain" 2>/dev/null | grep -q "$state/data/nova/instances/" || continue
      virsh -c qemu:///system destroy "$domain" >/dev/null 2>&1 || true
      virsh -c qemu:///system undefine "$domain" >/dev/null 2>&1 || true
    done
  fi
  sleep 1
  guests=$(our_guests)
  # shellcheck disable=SC2086 # one PID a word
  [ -z "$guests" ] || kill -KILL $guests 2>/dev/null || true
  sleep 1
  [ -z "$(our_guests)" ] || die "QEMU processes of this cloud are still running: $(our_guests | tr '\n' ' ')"
}

write_cloud_json() {
  (
    umask 077
    OSLOOP_STATE=$state OSLOOP_DEFAULT_VOLUME_TYPE=$default_volume_type OSLOOP_NOVA_FLAVOR=$nova_flavor \
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
    # Servers have no network (Neutron has no agents): create them with networks "none".
    "nova": {"up": True, "flavorId": env["OSLOOP_NOVA_FLAVOR"], "networkId": None,
             "instancesDir": env["OSLOOP_STATE"] + "/data/nova/instances"}
    if env["OSLOOP_NOVA"] == "1" else {"up": False},
}, indent=2))
PY
  )
  mv "$state/cloud.json.tmp" "$state/cloud.json"
}

cmd_up() {
  local also=
  [ "$with_nova" = 0 ] || also=" (with OSLOOP_NOVA=1)"
  packages_installed || die "the OpenStack packages are not installed: run$also $0 install (as root)"
  [ "$(id -u)" -eq 0 ] || die "up needs root (services run as root, mysql and rabbitmq)"
  local name port
  for name in "${services[@]}" "${nova_services[@]}"; do
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
  # Nova can be added to a cloud set up without it: its own marker says whether its set-up ran.
  local nova_cold=0
  [ "$with_nova" = 0 ] || [ -f "$state/data/nova-set-up" ] || nova_cold=1
  [ "$with_nova" = 0 ] || [ -z "$(our_guests)" ] || die "QEMU processes of this cloud's servers run: $(our_guests)"
  say "starting the loopback cloud in $state ($([ "$cold" = 1 ] && echo cold: first start || echo warm))$also"

  start_mariadb
  start_rabbitmq
  wait_for "MariaDB (127.0.0.1:3306)" 60 sql -e 'SELECT 1'
  local syncs=
  if [ "$cold" = 1 ]; then
    create_databases keystone barbican glance cinder
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
  local nova_syncs=
  if [ "$nova_cold" = 1 ]; then
    create_databases "${nova_databases[@]}"
    say "setting up Nova's, Placement's and Neutron's users and catalog entries, and their schemas"
    $python "$script_dir/cloud_setup.py" nova-identity >>"$state/log/cloud-setup.log" 2>&1 ||
      die "Nova's identity set-up failed: $state/log/cloud-setup.log"
    nova_cold_setup &
    nova_syncs=$!
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
  local nova_started=
  if [ "$with_nova" = 1 ]; then
    start_libvirt
    [ -z "$nova_syncs" ] || wait "$nova_syncs" || die "a database sync failed: $state/log/db-sync-*.log"
    nova_started=$(sql -e 'SELECT UTC_TIMESTAMP()')
    start_placement_and_neutron
    wait_for "libvirtd (virsh -c qemu:///system)" 60 libvirt_ready
    start_nova
  fi
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
  wait_for "cinder-scheduler to know the loopfile pool" 120 $python "$script_dir/cloud_setup.py" volume-pool
  if [ "$with_nova" = 1 ]; then
    wait_for "Placement (127.0.0.1:8778)" 120 http_answers http://127.0.0.1:8778/
    wait_for "neutron-server (127.0.0.1:9696)" 120 http_answers http://127.0.0.1:9696/
    wait_for "nova-api (127.0.0.1:8774)" 180 http_answers http://127.0.0.1:8774/
    wait_for "heartbeats of nova-conductor, -scheduler and -compute" 180 nova_services_heartbeat "$nova_started"
    say "Neutron's warm-up request, and the flavor $nova_flavor"
    $python "$script_dir/cloud_setup.py" nova >>"$state/log/cloud-setup.log" 2>&1 ||
      die "Nova's set-up failed: $state/log/cloud-setup.log"
    wait_for "the compute node in Placement and cell1" 180 nova_compute_schedulable
    touch "$state/data/nova-set-up"
  fi
  OSLOOP_NOVA=$with_nova write_cloud_json
  trap - EXIT
  say "up after $((SECONDS - up_started)) s: $state/cloud.json; logs in $state/log; $0 down stops it"
}

up_failed() {
  say "up failed; logs: $state/log. Stopping what it started."
  record_epmd
  cmd_down || true
}

# --- down, status --------------------------------------------------------------------------------


cmd_down() {
  [ -d "$state/run" ] || return 0
  local began=$SECONDS name pid stoppers=()
  # cinder-backup's os-brick calls run in a privsep-helper (under sudo) outside its process group.
  local privsep=()
  mapfile -t privsep < <(pgrep -f "privsep-helper.*--config-file $state/etc/(cinder|nova).conf" || true)
  stop_guests
  # Each group stops in parallel; waiting on those jobs only: after a failed up, the services are
  # this shell's children too, and a bare `wait` would wait for them all.
  for name in nova-api nova-conductor nova-scheduler nova-compute neutron-server placement; do
    stop_group "$name" &
    stoppers+=($!)
  done
  wait "${stoppers[@]}"
  stop_group libvirtd
  stop_group virtlogd
  # Clients first, then the servers they use; each group stops in parallel.
  stoppers=()
  for name in keystone barbican glance-api cinder-api cinder-scheduler cinder-volume cinder-backup; do
    stop_group "$name" &
    stoppers+=($!)
  done
  wait "${stoppers[@]}"
  for pid in "${privsep[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  release_loop_devices
  stop_group rabbitmq &
  stoppers=($!)
  stop_group mariadb &
  stoppers+=($!)
  wait "${stoppers[@]}"
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
  for name in "${services[@]}" epmd "${nova_services[@]}"; do
    if pid=$(recorded_pid "$name"); then
      echo "$name: running (pid $pid)"
      [[ " ${services[*]} " != *" $name "* ]] || running=$((running + 1))
    else
      [[ " ${services[*]} " != *" $name "* ]] || echo "$name: stopped"
    fi
  done
  [ -z "$(our_guests)" ] || echo "QEMU guests: $(our_guests | tr '\n' ' ')"
  ss -ltnp | grep -E ":($(
    IFS='|'
    echo "${ports[*]} ${nova_ports[*]}" | tr ' ' '|'
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
