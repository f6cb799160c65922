#!/usr/bin/env bash
# Stop the servers that start.sh started: only pids from .stack/pids whose process is alive
# and is the expected command. Removes the pid files. Leaves installed files and data in place.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

stop_one() {
  local name="$1" pidfile="$PID_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || { log "$name: no pid file, nothing to stop"; return; }
  pid="$(cat "$pidfile")"
  if ! pid_matches "$pid" "${STACK_PATTERN[$name]}"; then
    log "$name: pid $pid is not running (or is not ${STACK_PATTERN[$name]}); removing stale pid file"
    rm -f "$pidfile"
    return
  fi
  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do   # up to 10 s, then SIGKILL
    pid_matches "$pid" "${STACK_PATTERN[$name]}" || break
    sleep 0.1
  done
  if pid_matches "$pid" "${STACK_PATTERN[$name]}"; then
    log "$name: still alive after 10 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

for name in ferretdb local-s3 elasticmq moto; do
  stop_one "$name"
done
