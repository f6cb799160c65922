#!/usr/bin/env bash
# Contract check, in two parts.
# 1. schemathesis (PyPI) drives the local runner from openapi.yaml and fails on any 5xx, any status code, content
#    type, header or body that the spec does not describe, and any undocumented method that is not 405. That runner
#    has no worker loops, so generated uploads never fetch anything (and never finish). It sends a valid access token
#    of a local tenant (imgpipe-local token); before it, every operation without a token must be 401.
# 2. A second runner, with a worker and a loopback image server of the sample images, finishes one completed and
#    one failed request; scripts/contract_completed.py validates every answer about them (status page, alias,
#    output CSV, request list, stats) against openapi.yaml with openapi-core.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${IMGPIPE_SQS_ENDPOINT:?run through make test (it exports .stack/env)}"

# venv DIR PACKAGE==VERSION: a virtualenv holding exactly that package (installed once).
venv() {
  if [[ "$(cat "$1/.installed" 2>/dev/null)" != "$2" ]]; then
    echo "[contract] installing $2"
    python3 -m venv "$1"
    "$1/bin/pip" install --quiet --disable-pip-version-check "$2"
    echo "$2" >"$1/.installed"
  fi
}
venv .stack/contract-venv schemathesis==4.32.5
# Its own virtualenv: openapi-core's jsonschema pins need not agree with schemathesis's.
venv .stack/contract-check-venv openapi-core==0.23.1

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
bins="$(bash scripts/bins.sh)"
bin="$bins/imgpipe-local"
admin="$bins/imgpipe-admin"
mkdir -p .stack/logs
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done' EXIT

# runner NAME PORT [VAR=value...] COMMAND...: imgpipe-local COMMAND for the runner on 127.0.0.1:PORT with its own
# database, buckets and queue (named after NAME); its tokens name that address as their issuer.
runner() {
  local name=$1 port=$2
  shift 2
  # The deploy step that creates the indexes (no function creates them).
  IMGPIPE_MONGODB_DATABASE="imgpipe_${name//-/_}" "$admin" migrate >/dev/null
  env IMGPIPE_LOCAL_ADDR="127.0.0.1:$port" IMGPIPE_MONGODB_DATABASE="imgpipe_${name//-/_}" \
    IMGPIPE_UPLOADS_BUCKET="imgpipe-$name-uploads" IMGPIPE_OUTPUTS_BUCKET="imgpipe-$name-outputs" \
    IMGPIPE_QUEUE_URL="$IMGPIPE_SQS_ENDPOINT/000000000000/imgpipe-$name" \
    IMGPIPE_API_BASE_URL="http://127.0.0.1:$port" RUST_LOG=warn "$@"
}

# start_runner NAME PORT [VAR=value...]: that runner, serving, waiting (30 s at most) until it answers.
start_runner() {
  local name=$1 port=$2 log=".stack/logs/$1-runner.log"
  shift 2
  runner "$name" "$port" "$@" "$bin" serve >"$log" 2>&1 &
  pids+=($!)
  local pid=$!
  for _ in $(seq 150); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/.well-known/jwks.json" && return
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; exit 1; }
    sleep 0.2 # polling until the runner answers (bounded by the loop)
  done
  echo "[contract] the $name runner did not answer within 30 s" >&2; tail -n 30 "$log" >&2; exit 1
}

# 1. Generated requests against a runner without workers: ids exercise 400/404, uploads 202/4xx.
port="${IMGPIPE_CONTRACT_PORT:-3100}"
start_runner contract "$port" IMGPIPE_LOCAL_WORKERS=0
# Every operation of the spec, without a token: API Gateway's 401, exactly.
.stack/contract-check-venv/bin/python - openapi.yaml "http://127.0.0.1:$port" <<'PY'
import sys, urllib.error, urllib.request, yaml
spec, api = yaml.safe_load(open(sys.argv[1])), sys.argv[2]
for path, item in spec["paths"].items():
    for method in item:
        url = api + path.replace("{requestId}", "0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b")
        req = urllib.request.Request(url, data=b"" if method == "post" else None, method=method.upper())
        try:
            status, body = urllib.request.urlopen(req, timeout=10).status, b""
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        assert (status, body) == (401, b'{"message":"Unauthorized"}'), f"{method.upper()} {path} without a token: {status} {body!r}"
        print(f"[contract] {method.upper()} {path} without a token: 401")
PY
token="$(runner contract "$port" "$bin" token --tenant contract --scope upload,read | tail -n 1)"
.stack/contract-venv/bin/schemathesis run openapi.yaml --url "http://127.0.0.1:$port" -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance \
  --max-examples "${IMGPIPE_CONTRACT_EXAMPLES:-50}" --seed 1 --no-color --report-dir .stack/contract-report \
  --request-timeout 10 --suppress-health-check all

# 2. Finished requests: a worker fetching the sample images from a loopback server (and nothing else).
images=.stack/contract-images
mapfile -t names < <("$bin" samples "$images" | xargs -n 1 basename)
images_port="$(free_port)"
python3 -m http.server "$images_port" --bind 127.0.0.1 --directory "$images" >.stack/logs/contract-images.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$images_port/${names[0]}" && break
  sleep 0.1 # polling until the image server answers (bounded by the loop)
done
done_port="$(free_port)"
start_runner contract-finished "$done_port" IMGPIPE_LOCAL_WORKERS=1 IMGPIPE_FETCH_ALLOW_CIDRS=127.0.0.1/32
IMGPIPE_TOKEN="$(runner contract-finished "$done_port" "$bin" token --tenant contract --scope upload,read | tail -n 1)" \
  .stack/contract-check-venv/bin/python scripts/contract_completed.py openapi.yaml "http://127.0.0.1:$done_port" \
  "http://127.0.0.1:$images_port" "${names[@]}"
