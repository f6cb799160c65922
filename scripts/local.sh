#!/usr/bin/env bash
# The local runner (target/debug/imgpipe-local): the HTTP API on $IMGPIPE_LOCAL_ADDR and SQS worker loops.
#   local.sh run     build and run in the foreground (printing how to get an access token)
#   local.sh start   build and start in the background (pid file .stack/pids/local.pid), wait until it answers
#   local.sh stop    stop the runner started by `start`
# Needs the stack's endpoints in the environment (make local / make demo export .stack/env).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pidfile=.stack/pids/local.pid
log=.stack/logs/local.log

running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && grep -q imgpipe-local "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null; }

case "${1:-run}" in
  stop)
    if running; then
      kill -TERM "$(cat "$pidfile")"
      for _ in $(seq 50); do running || break; sleep 0.1; done
      echo "[local] stopped"
    fi
    rm -f "$pidfile"
    exit 0
    ;;
esac

: "${IMGPIPE_SQS_ENDPOINT:?run through make (it exports .stack/env)}"
set -a
# shellcheck source=local.env
source scripts/local.env
set +a
bin="$(bash scripts/bins.sh)/imgpipe-local"

case "${1:-run}" in
  run)
    cat <<EOF
[local] every API route needs an access token of a local tenant, e.g.:
  token=\$($bin token --tenant demo --scope upload,read | tail -n 1)
  curl -H "Authorization: Bearer \$token" http://$IMGPIPE_LOCAL_ADDR/requests
or a client id and secret for the token endpoint (client-credentials grant; the CLI fetches tokens with them):
  $bin client --tenant demo     # prints IMGPIPE_CLIENT_ID, IMGPIPE_CLIENT_SECRET, IMGPIPE_TOKEN_URL
(run them with the stack's environment: set -a; source .stack/env; source scripts/local.env; set +a)
EOF
    exec "$bin" serve
    ;;
  start)
    mkdir -p .stack/pids .stack/logs
    if running; then echo "[local] already running (pid $(cat "$pidfile"))"; exit 0; fi
    setsid "$bin" serve </dev/null >>"$log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 150); do
      if curl -fs -o /dev/null "http://$IMGPIPE_LOCAL_ADDR/.well-known/jwks.json"; then
        echo "[local] API on http://$IMGPIPE_LOCAL_ADDR (pid $(cat "$pidfile"), log $log)"
        exit 0
      fi
      running || { echo "[local] runner exited; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
      sleep 0.2
    done
    echo "[local] runner did not answer in 30 s; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1
    ;;
  *) echo "usage: local.sh run|start|stop" >&2; exit 2 ;;
esac
