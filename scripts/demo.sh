#!/usr/bin/env bash
# make demo: samples/products.csv through the local runner, printing progress, the final status and the output CSV;
# then the same file dropped into the uploads bucket with `aws s3 cp` (the other way in), waiting for its request.
# As a tenant `demo` would on AWS: the CLI gets its access token from the runner's token endpoint with the demo
# client's id and secret (client-credentials grant), curl uses one from `imgpipe-local token`.
# Outputs land in demo-output/ (the output CSV and the compressed images, downloaded through the status API's URLs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${IMGPIPE_SQS_ENDPOINT:?run through make demo (it exports .stack/env)}"
set -a; source scripts/local.env; set +a
api="http://$IMGPIPE_LOCAL_ADDR"
images_port=8089
out=demo-output
cleanup() {
  [[ -n "${images_pid:-}" ]] && kill "$images_pid" 2>/dev/null || true
  bash scripts/local.sh stop >/dev/null || true
}
trap cleanup EXIT

echo "== building and starting the local runner (API $api, worker loops on SQS)"
bins="$(bash scripts/bins.sh)"
"$bins/imgpipe-local" samples .stack/demo-images >/dev/null
python3 -m http.server "$images_port" --bind 127.0.0.1 --directory .stack/demo-images >/dev/null 2>&1 &
images_pid=$!
bash scripts/local.sh start
local_bin="$bins/imgpipe-local"
echo "== the tenant demo and its OAuth client (imgpipe-local client --tenant demo)"
set -a; source <("$local_bin" client --tenant demo --scope upload,read); set +a
export XDG_CACHE_HOME="$root/.stack/cache" # the CLI's token cache: in the project, not in your home
echo "   client id $IMGPIPE_CLIENT_ID, token endpoint $IMGPIPE_TOKEN_URL (secret in IMGPIPE_CLIENT_SECRET)"
token="$("$local_bin" token --tenant demo --scope read | tail -n 1)"
for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$images_port/hat-logo.png" && break; sleep 0.1; done

echo "== imgpipe submit samples/products.csv --wait (the CLI client: token, upload, progress, output CSV)"
rm -rf "$out"; mkdir -p "$out"
"$bins/imgpipe" --api-url "$api" submit samples/products.csv --wait --interval-ms 300 --timeout-secs 120 \
  --out "$out/output.csv" | tee "$out/submit.log"
id="$(head -n 1 "$out/submit.log")"
"$bins/imgpipe" --api-url "$api" status "$id"
full="$(curl -fsS -H "Authorization: Bearer $token" "$api/requests/$id")"
echo "$full" | python3 -m json.tool >"$out/status.json"
echo "== output CSV ($out/output.csv)"
cat "$out/output.csv"
echo
echo "== compressed images (downloaded through the status API's URLs into $out/)"
python3 - "$out" <<'PY'
import json, os, sys, urllib.request
out = sys.argv[1]
d = json.load(open(os.path.join(out, "status.json")))
for row in d["rows"]:
    for i, (src, url) in enumerate(zip(row["inputImageUrls"], row["outputImageUrls"])):
        data = urllib.request.urlopen(url).read()
        assert data[:3] == b"\xff\xd8\xff", f"not a JPEG: {url}"
        name = f"{row['serialNumber']}-{i}.jpg"
        open(os.path.join(out, name), "wb").write(data)
        src_size = os.path.getsize(os.path.join(".stack/demo-images", os.path.basename(src)))
        print(f"   {name}: {len(data):>8} bytes (input {src_size:>8} bytes)  <- {src}")
PY

drop_key="incoming/demo/products-$(date -u +%Y%m%dT%H%M%S).csv"
echo "== aws s3 cp samples/products.csv s3://$IMGPIPE_UPLOADS_BUCKET/$drop_key (an S3 drop: the bucket notifies"
echo "   the runner's drops queue, which invokes the upload function's S3 handler as the bucket trigger does on AWS)"
since="$(date -u -d '-1 second' +%Y-%m-%dT%H:%M:%SZ)"
printf '[default]\nregion = %s\ns3 =\n    addressing_style = path\n' "$AWS_REGION" >.stack/aws-config
AWS_CONFIG_FILE=.stack/aws-config AWS_SHARED_CREDENTIALS_FILE=/dev/null .stack/venv/bin/aws \
  --endpoint-url "$IMGPIPE_S3_ENDPOINT" s3 cp --no-progress samples/products.csv "s3://$IMGPIPE_UPLOADS_BUCKET/$drop_key"
drop_id="$(python3 - "$api" "$token" "$since" <<'PY'
import json, sys, time, urllib.parse, urllib.request
api, token, since = sys.argv[1:]
url = f"{api}/requests?createdAfter={urllib.parse.quote(since)}"
deadline = time.time() + 120
while True:
    rows = json.load(urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})))
    done = [r for r in rows["requests"] if r["status"] in ("completed", "failed")]
    if done:
        print(done[0]["requestId"])
        sys.exit(0 if done[0]["status"] == "completed" else 1)
    if time.time() > deadline:
        sys.exit(f"the dropped file's request did not finish within 120 s: {rows}")
    time.sleep(0.3)
PY
)"
"$bins/imgpipe" --api-url "$api" status "$drop_id"
echo "== done: request $id (API upload) and request $drop_id (S3 drop) completed"
