#!/usr/bin/env bash
# Start the local stack (imgpipe-local-s3 S3, ElasticMQ SQS, FerretDB MongoDB) on 127.0.0.1.
# Installs first (fast when already installed). A server whose port already answers is reused, not restarted.
# Writes .stack/env (KEY=VALUE) and prints the same lines.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WAIT_SECONDS="${IMGPIPE_STACK_WAIT_SECONDS:-60}"

bash "$STACK_ROOT/scripts/stack/install.sh"
mkdir -p "$LOG_DIR" "$PID_DIR" "$DATA_DIR/ferretdb" "$DATA_DIR/ferretdb-state"

fail_with_log() { # NAME MESSAGE
  local name="$1" msg="$2"
  printf '[stack] ERROR: %s: %s\n--- last 40 lines of %s ---\n' "$name" "$msg" "$LOG_DIR/$name.log" >&2
  tail -n 40 "$LOG_DIR/$name.log" >&2 || true
  exit 1
}

sqs_api_ok() { # an SQS API call (query protocol) that must answer 200 with a ListQueues result
  local out
  out="$(curl -fsS --max-time 3 "http://127.0.0.1:$SQS_PORT/?Action=ListQueues&Version=2012-11-05" 2>/dev/null)" &&
    [[ "$out" == *ListQueuesResponse* ]]
}

# launch NAME PORT READY_FN CMD... : start CMD in the background unless PORT already answers
launch() {
  local name="$1" port="$2" ready="$3"; shift 3
  local pidfile="$PID_DIR/$name.pid" pid
  if port_open "$port"; then
    if [[ -f "$pidfile" ]] && pid_matches "$(cat "$pidfile")" "${STACK_PATTERN[$name]}"; then
      log "$name: already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"
    else
      log "$name: port 127.0.0.1:$port already answers (not started by these scripts); reusing it"
    fi
    "$ready" || fail_with_log "$name" "port $port answers but the readiness check fails"
    return
  fi
  rm -f "$pidfile"
  log "$name: starting on 127.0.0.1:$port (log $LOG_DIR/$name.log)"
  printf '\n==== %s start %s ====\n' "$name" "$(date -Is)" >>"$LOG_DIR/$name.log"
  # setsid: own session, so the server outlives this script and its terminal;
  # not a group leader here, so setsid execs in place and $! is the server's pid.
  setsid "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  local deadline=$((SECONDS + WAIT_SECONDS))
  until port_open "$port" && "$ready"; do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; fail_with_log "$name" "process $pid exited during startup"; }
    ((SECONDS < deadline)) || fail_with_log "$name" "not ready on 127.0.0.1:$port after ${WAIT_SECONDS}s (pid $pid left running; run stop.sh)"
    sleep 0.5
  done
  pid_matches "$pid" "${STACK_PATTERN[$name]}" || fail_with_log "$name" "pid $pid is not the expected command"
  log "$name: ready (pid $pid)"
}

true_fn() { true; }

s3_answers() { # any HTTP answer; an unsigned request must be refused (403) by a server that verifies signatures
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$S3_PORT/")" || return 1
  [[ "$code" != 000 ]] || return 1
  if [[ "$code" != 403 ]]; then
    log "WARNING: the S3 server on 127.0.0.1:$S3_PORT answered an unsigned request $code: it does not verify" \
      "signatures (moto from before?), so the presign tests fail; restart the stack (make stop; make stack)"
  fi
}

# SQS: ElasticMQ (in-memory)
launch elasticmq "$SQS_PORT" sqs_api_ok \
  java -Xms64m -Xmx512m -Dconfig.file="$EMQ_DIR/elasticmq.conf" -cp "$EMQ_DIR/lib/*" org.elasticmq.server.Main

# S3: imgpipe-local-s3, objects as files under .stack/data/s3, emptied on a fresh start (as the in-memory SQS is);
# bucket notifications go to ElasticMQ, so it starts second.
if ! port_open "$S3_PORT"; then rm -rf "$DATA_DIR/s3"; fi
mkdir -p "$DATA_DIR/s3"
launch local-s3 "$S3_PORT" s3_answers \
  env AWS_ACCESS_KEY_ID="$STACK_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$STACK_SECRET_KEY" AWS_REGION="$STACK_REGION" \
    "$BIN_DIR/imgpipe-local-s3" --addr "127.0.0.1:$S3_PORT" --root "$DATA_DIR/s3" \
    --sqs-endpoint "http://127.0.0.1:$SQS_PORT"

# MongoDB: FerretDB with the SQLite handler (data persists in .stack/data/ferretdb)
launch ferretdb "$MONGO_PORT" true_fn \
  env DO_NOT_TRACK=1 FERRETDB_SCALAR_FIELDS=requestId,serialNumber,shard "$BIN_DIR/ferretdb" \
    --handler=sqlite --sqlite-url="file:$DATA_DIR/ferretdb/" \
    --state-dir="$DATA_DIR/ferretdb-state" \
    --listen-addr="127.0.0.1:$MONGO_PORT" \
    --debug-addr=- \
    --telemetry=disable \
    --log-level=warn

cat >"$STACK_DIR/env.tmp" <<ENV
IMGPIPE_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
IMGPIPE_SQS_ENDPOINT=http://127.0.0.1:$SQS_PORT
IMGPIPE_MONGODB_URI=mongodb://127.0.0.1:$MONGO_PORT/
AWS_REGION=$STACK_REGION
AWS_ACCESS_KEY_ID=$STACK_ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$STACK_SECRET_KEY
ENV
mv "$STACK_DIR/env.tmp" "$STACK_DIR/env"
log "stack up; environment written to $STACK_DIR/env:"
cat "$STACK_DIR/env"
