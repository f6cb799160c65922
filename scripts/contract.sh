#!/usr/bin/env bash
# Contract check: schemathesis (PyPI) drives the local runner from openapi.yaml and fails on any 5xx, any status
# code, content type, header or body that the spec does not describe, and any undocumented method that is not 405.
# The runner is started here on its own port with no worker loops, so generated uploads never fetch anything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${IMGPIPE_SQS_ENDPOINT:?run through make test (it exports .stack/env)}"

SCHEMATHESIS_VERSION=4.32.5
venv=.stack/contract-venv
if [[ ! -x $venv/bin/schemathesis || "$(cat $venv/.installed 2>/dev/null)" != "$SCHEMATHESIS_VERSION" ]]; then
  echo "[contract] installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  echo "$SCHEMATHESIS_VERSION" >"$venv/.installed"
fi

port="${IMGPIPE_CONTRACT_PORT:-3100}"
export IMGPIPE_LOCAL_ADDR="127.0.0.1:$port" IMGPIPE_LOCAL_WORKERS=0 \
  IMGPIPE_MONGODB_DATABASE=imgpipe_contract IMGPIPE_UPLOADS_BUCKET=imgpipe-contract-uploads \
  IMGPIPE_OUTPUTS_BUCKET=imgpipe-contract-outputs \
  IMGPIPE_QUEUE_URL="$IMGPIPE_SQS_ENDPOINT/000000000000/imgpipe-contract" \
  IMGPIPE_API_BASE_URL="http://127.0.0.1:$port" RUST_LOG=warn
cargo build --locked -q -p imgpipe-local
mkdir -p .stack/logs
"${CARGO_TARGET_DIR:-target}"/debug/imgpipe-local serve >.stack/logs/contract-runner.log 2>&1 &
runner=$!
trap 'kill $runner 2>/dev/null || true; wait $runner 2>/dev/null || true' EXIT
for _ in $(seq 150); do
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/requests/x" || true)"
  [[ $code == 400 ]] && break
  kill -0 $runner 2>/dev/null || { tail -n 30 .stack/logs/contract-runner.log >&2; exit 1; }
  sleep 0.2
done

# A completed-looking request is not needed: generated ids exercise 400/404, and the handler tests cover 200s.
"$venv/bin/schemathesis" run openapi.yaml --url "http://127.0.0.1:$port" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance \
  --max-examples "${IMGPIPE_CONTRACT_EXAMPLES:-50}" --seed 1 --no-color --report-dir .stack/contract-report \
  --request-timeout 10 --suppress-health-check all
