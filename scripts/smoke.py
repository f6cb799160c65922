"""The steps of scripts/smoke.sh (which checks the environment and documents it); Python's standard library only."""

import base64
import csv
import io
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

API = os.environ["SMOKE_API"]
CSV_PATH = os.environ["SMOKE_CSV"]
TIMEOUT_SECS = float(os.environ.get("SMOKE_TIMEOUT_SECS", "300"))
CALL_TIMEOUT_SECS = 60
# SMOKE_SKIP=presigned leaves the presigned upload out, saying so (for a stack that delivers no S3 events).
SKIP = {s for s in os.environ.get("SMOKE_SKIP", "").split(",") if s}
if SKIP - {"presigned"}:
    sys.exit(f"SMOKE_SKIP: unknown {sorted(SKIP - {'presigned'})} (only `presigned`)")


class Failed(Exception):
    pass


def step(name, run):
    """Runs one step, printing its PASS or FAIL line; a failure ends the smoke test."""
    try:
        detail = run()
    except (Failed, OSError, ValueError, KeyError) as e:
        print(f"FAIL {name}: {e}", flush=True)
        sys.exit(1)
    shown = detail.split("?")[0] if isinstance(detail, str) else None  # no presigned signature in the log
    print(f"PASS {name}" + (f" ({shown})" if shown else ""), flush=True)
    return detail


def call(method, url, token=None, body=None, headers=None):
    """(status, headers, body) of one HTTP call; error statuses are answers too. The token goes to the API only:
    it is not forwarded on a redirect (a presigned S3 URL refuses a second kind of authentication)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if token:
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_SECS) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def expect(answer, status, what):
    code, _, body = answer
    if code != status:
        raise Failed(f"{what}: HTTP {code}, expected {status}: {body[:300].decode('utf-8', 'replace')}")
    return answer


def get_token():
    form = {"grant_type": "client_credentials"}
    if os.environ.get("IMGPIPE_SCOPE"):
        form["scope"] = os.environ["IMGPIPE_SCOPE"]
    # RFC 6749 2.3.1: id and secret are form-encoded, then sent as HTTP Basic credentials.
    quote = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
    basic = base64.b64encode(f"{quote(os.environ['IMGPIPE_CLIENT_ID'])}:{quote(os.environ['IMGPIPE_CLIENT_SECRET'])}".encode())
    answer = call("POST", os.environ["IMGPIPE_TOKEN_URL"], body=urllib.parse.urlencode(form).encode(),
                  headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {basic.decode()}"})
    return json.loads(expect(answer, 200, "token endpoint")[2])["access_token"]


def refused_without_token():
    code, _, _ = call("GET", f"{API}/requests")
    if code != 401:
        raise Failed(f"GET /requests without a token answered HTTP {code}, expected 401")
    return "401"


def upload_through_api(token, csv_bytes):
    answer = call("POST", f"{API}/uploads", token, csv_bytes, {"Content-Type": "text/csv"})
    return json.loads(expect(answer, 202, "POST /uploads")[2])["requestId"]


def upload_presigned(token, csv_bytes):
    answer = call("POST", f"{API}/uploads/presign", token, json.dumps({"size": len(csv_bytes)}).encode(),
                  {"Content-Type": "application/json"})
    presigned = json.loads(expect(answer, 200, "POST /uploads/presign")[2])
    headers = {k: v for k, v in presigned.get("headers", {}).items() if k.lower() != "content-length"}
    url = urllib.parse.urljoin(API + "/", presigned["uploadUrl"])
    code, _, body = call(presigned.get("method") or "PUT", url, body=csv_bytes, headers=headers)
    if not 200 <= code < 300:
        raise Failed(f"the PUT to the presigned URL answered HTTP {code}: {body[:300].decode('utf-8', 'replace')}")
    return presigned["requestId"]


def wait_completed(token, request_id, presigned):
    """Polls the status until the request is final, within SMOKE_TIMEOUT_SECS. A presigned request answers 404
    until its file has been ingested."""
    deadline = time.monotonic() + TIMEOUT_SECS
    last = "no answer yet"
    while time.monotonic() < deadline:
        code, _, body = call("GET", f"{API}/requests/{request_id}", token)
        if code == 200:
            status = json.loads(body)
            counts = status.get("counts", {})
            last = f"{status['status']}, {counts.get('processed')}/{counts.get('images')} images"
            if status["status"] == "completed" and counts.get("failed") == 0:
                return f"{request_id}: {counts['images']} images in {TIMEOUT_SECS - (deadline - time.monotonic()):.1f} s"
            if status["status"] in ("completed", "failed"):
                raise Failed(f"request {request_id} ended {last}, {counts.get('failed')} failed: {body[:500]!r}")
        elif not (presigned and code == 404):
            raise Failed(f"GET /requests/{request_id}: HTTP {code}: {body[:300].decode('utf-8', 'replace')}")
        else:
            last = "404: the uploaded file not ingested yet"
        time.sleep(0.5)
    raise Failed(f"request {request_id} not completed within {TIMEOUT_SECS:.0f} s (last: {last})")


def output_csv(token, request_id, input_rows):
    _, headers, body = expect(call("GET", f"{API}/requests/{request_id}/output.csv", token), 200, "output CSV")
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    if len(rows) != input_rows:
        raise Failed(f"{len(rows)} rows, expected {input_rows}")
    urls = [u.strip() for u in rows[0].get("Output Image Urls", "").split(",") if u.strip()]
    if not urls:
        raise Failed(f"no Output Image Urls in the first row: {rows[0]}")
    return urls[0]


def image(url):
    code, headers, body = call("GET", url)  # as a shop importing the CSV would: no token
    kind = headers.get("Content-Type", "") if headers else ""
    if code != 200 or kind != "image/jpeg" or body[:3] != b"\xff\xd8\xff":
        raise Failed(f"{url}: HTTP {code}, Content-Type {kind!r}, {len(body)} bytes starting {body[:3]!r}")
    return f"200 image/jpeg, {len(body)} bytes"


def get_token_step():
    tokens = []
    step("token (client-credentials grant)", lambda: tokens.append(get_token()))  # the token is never printed
    return tokens[0]


def main():
    csv_bytes = open(CSV_PATH, "rb").read()
    input_rows = len(list(csv.DictReader(io.StringIO(csv_bytes.decode("utf-8-sig")))))
    print(f"smoke test of {API} with {CSV_PATH} ({input_rows} rows)", flush=True)
    token = get_token_step()
    step("unauthenticated GET /requests refused", refused_without_token)
    api_id = step("upload through POST /uploads", lambda: upload_through_api(token, csv_bytes))
    uploads = [("API upload", api_id, False)]
    if "presigned" in SKIP:
        print("SKIP upload through POST /uploads/presign and PUT (SMOKE_SKIP=presigned)", flush=True)
    else:
        presigned_id = step("upload through POST /uploads/presign and PUT", lambda: upload_presigned(token, csv_bytes))
        uploads.append(("presigned upload", presigned_id, True))
    for name, request_id, presigned in uploads:
        step(f"{name} completed", lambda: wait_completed(token, request_id, presigned))
        url = step(f"{name}: output CSV", lambda: output_csv(token, request_id, input_rows))
        step(f"{name}: an output image through its URL", lambda: image(url))
    print("PASS smoke test" + (f" (skipped: {', '.join(sorted(SKIP))})" if SKIP else ""), flush=True)


main()
