#!/usr/bin/env bash
# Smoke test of a running imgpipe, end to end: the same script for `sam deploy` and for the local runner.
#   scripts/smoke.sh API_BASE_URL
# with a client of the API's issuer in the environment (client-credentials grant, as Cognito and the local issuer
# grant it; `sam deploy` prints TokenUrl and AppClientId, README "Deploy" shows how to read the secret):
#   IMGPIPE_TOKEN_URL      the token endpoint (https://<domain>.auth.<region>.amazoncognito.com/oauth2/token)
#   IMGPIPE_CLIENT_ID      the app client's id (its tenant, with TenantClaim=client_id)
#   IMGPIPE_CLIENT_SECRET  its secret
# optional:
#   IMGPIPE_SCOPE          scopes to ask for (space-separated); default: the client's own (it needs upload and read)
#   SMOKE_CSV              the CSV to upload (default samples/products.csv, whose images are on 127.0.0.1:8089:
#                          against AWS give a CSV of images the deployment can fetch)
#   SMOKE_TIMEOUT_SECS     how long each request may take to complete (default 300)
#   SMOKE_SKIP=presigned   leave the presigned upload out (printed as SKIP), for a stack that delivers no S3 events
# Steps: a token; an unauthenticated call refused; the CSV through POST /uploads and through a presigned upload
# (POST /uploads/presign, then the PUT); both requests completed without a failed image; each output CSV downloaded
# with one row per input row; one image of each downloaded through its URL as the output CSV gives it (no token):
# 200 image/jpeg. One PASS/FAIL line per step; exit status 1 at the first failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ $# -eq 1 ]] || { echo "usage: scripts/smoke.sh API_BASE_URL (and IMGPIPE_TOKEN_URL, _CLIENT_ID, _CLIENT_SECRET)" >&2; exit 2; }
: "${IMGPIPE_TOKEN_URL:?set IMGPIPE_TOKEN_URL, IMGPIPE_CLIENT_ID and IMGPIPE_CLIENT_SECRET}"
: "${IMGPIPE_CLIENT_ID:?set IMGPIPE_CLIENT_ID}"
: "${IMGPIPE_CLIENT_SECRET:?set IMGPIPE_CLIENT_SECRET}"
export SMOKE_API="${1%/}" SMOKE_CSV="${SMOKE_CSV:-$root/samples/products.csv}"
exec python3 "$root/scripts/smoke.py"
