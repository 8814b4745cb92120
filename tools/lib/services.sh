# Services that tools/openstack/osloop.sh and tools/swift/swiftloop.sh start and stop by PID.
# The caller sets `state` (its folder: run/ holds the PIDs, log/ the output), `packages`, `say`
# and `service_log_suffix` (".out" or ".log"), and may set `stop_grace` (seconds, default 30)
# and `stop_poll` (seconds between checks, default 1).

# Whether every one of `packages` is installed.
packages_installed() {
  local status
  status=$(dpkg-query -W -f='${Status}\n' "${packages[@]}" 2>/dev/null) || return 1
  [ "$(grep -c '^install ok installed$' <<<"$status")" -eq "${#packages[@]}" ]
}

# "<pid> <start time in clock ticks>": a recorded PID is only ours while both match. A zombie does not
# count: a killed server is reparented to PID 1, which reaps late on this machine.
proc_start_time() {
  local stat
  { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 0
  stat=${stat##*) } # the fields after the command's name: state is the 1st, start time the 20th
  # shellcheck disable=SC2086 # split into the fields
  set -- $stat
  [ "$1" = Z ] || echo "${20}"
}
record_pid() { echo "$2 $(proc_start_time "$2")" >"$state/run/$1.pid"; }
recorded_pid() { # prints the PID if the process recorded as $1 still runs
  local pid start
  read -r pid start 2>/dev/null <"$state/run/$1.pid" || return 1
  [ -n "$pid" ] && [ "$(proc_start_time "$pid")" = "$start" ] && echo "$pid"
}

# Each service runs in its own session (setsid), so its PID is also its process group: stop_group
# stops the group, workers included. Output goes to <state>/log/<name><service_log_suffix>.
start_service() {
  local name=$1
  shift
  setsid "$@" >>"$state/log/$name$service_log_suffix" 2>&1 </dev/null &
  record_pid "$name" $!
}

stop_group() { # TERM the service's process group, KILL it after the grace period
  local name=$1 pid grace=${stop_grace:-30} poll=${stop_poll:-1} began=$SECONDS
  pid=$(recorded_pid "$name") || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null || pgrep -g "$pid" >/dev/null; do
    if [ $((SECONDS - began)) -ge "$grace" ]; then
      say "$name ($pid) did not stop within $grace s: KILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep "$poll"
  done
}
