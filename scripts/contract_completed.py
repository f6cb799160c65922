"""The contract check's second half: drive one request to completion through a runner with a worker, and validate
every answer about it (status page and its alias, output CSV, request list, stats) against openapi.yaml with
openapi-core. Schemathesis cannot get there by itself: its generated uploads never complete.

    contract_completed.py SPEC API_URL IMAGES_URL IMAGE_NAME...

IMAGES_URL serves IMAGE_NAMEs (a loopback server of `imgpipe-local samples` output). Exits non-zero, saying
why, if the request does not complete within 120 s or any answer does not conform.
"""

import csv
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request

import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

DEADLINE_S = 120


def call(api, method, path, query="", body=None, content_type=None):
    """One HTTP call: (status, content type, headers, body bytes); HTTP errors are answers too."""
    url = f"{api}{path}" + (f"?{query}" if query else "")
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    # The access token (contract.sh's IMGPIPE_TOKEN) goes to the API only, never along a redirect to S3.
    req.add_unredirected_header("Authorization", f"Bearer {os.environ['IMGPIPE_TOKEN']}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), dict(e.headers), e.read()


def check(spec, api, path, query="", expect=200):
    """GETs `path` and validates the answer against the spec; returns the body."""
    status, ctype, headers, body = call(api, "GET", path, query)
    if status != expect:
        sys.exit(f"[contract] GET {path}?{query}: HTTP {status}, expected {expect}: {body[:500]!r}")
    args = dict(p.split("=", 1) for p in query.split("&")) if query else {}
    request = MockRequest(api, "get", path, args=args)
    media = ctype.split(";")[0]
    # openapi-core parses JSON itself; a text body (the CSV, `type: string`) is handed over as text.
    data = body.decode("utf-8") if media.startswith("text/") else body
    response = MockResponse(data, status_code=status, headers=headers, content_type=media)
    try:
        spec.validate_response(request, response)
    except Exception as e:  # openapi-core raises one of several validation errors; all of them fail the check
        details = getattr(e, "schema_errors", None) or getattr(e, "__cause__", None) or ""
        sys.exit(f"[contract] GET {path}?{query} does not conform to the spec: {e} {details}\n{body[:2000]!r}")
    print(f"[contract] GET {path}{'?' + query if query else ''}: {status} {ctype}, conforms")
    return body


HEADER = ["S. No.", "Product Name", "Input Image Urls"]


def finish(api, rows):
    """Uploads a CSV of `rows` and waits until the worker has finished it; returns (request id, final status)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([HEADER, *rows])
    status, _, _, body = call(api, "POST", "/uploads", body=out.getvalue().encode(), content_type="text/csv")
    if status != 202:
        sys.exit(f"[contract] upload: HTTP {status}: {body[:500]!r}")
    request_id = json.loads(body)["requestId"]
    start = time.monotonic()
    while True:
        status, _, _, body = call(api, "GET", f"/requests/{request_id}")
        state = json.loads(body).get("status") if status == 200 else None
        if state in ("completed", "failed"):
            print(f"[contract] request {request_id}: {state}")
            return request_id, state
        if time.monotonic() - start > DEADLINE_S:
            sys.exit(f"[contract] request {request_id} not finished within {DEADLINE_S} s: {body[:500]!r}")
        time.sleep(0.2)  # polling interval, bounded by the deadline above


def check_request(spec, api, request_id, rows, expected_counts):
    """Every answer about one finished request."""
    page = json.loads(check(spec, api, f"/requests/{request_id}"))
    counts = page["counts"]
    if (counts["images"], counts["succeeded"], counts["failed"]) != expected_counts:
        sys.exit(f"[contract] {request_id}: counts {counts}, expected (images, succeeded, failed) {expected_counts}")
    check(spec, api, f"/requests/{request_id}", "limit=1")
    check(spec, api, f"/status/{request_id}")
    status, _, _, body = call(api, "GET", f"/requests/{request_id}/output.csv")
    check(spec, api, f"/requests/{request_id}/output.csv", expect=status if status in (200, 303) else 200)
    if status == 200:
        records = list(csv.reader(io.StringIO(body.decode("utf-8"))))
        if len(records) != len(rows) + 1 or [r[:3] for r in records] != [HEADER, *rows]:
            sys.exit(f"[contract] {request_id}: output CSV {records}")


def main():
    spec_path, api, images, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    with open(spec_path) as f:
        document = yaml.safe_load(f)
    document["servers"] = [{"url": api}]  # the runner's address here, not the spec's example server
    spec = OpenAPI.from_dict(document)
    good = [["1", "Contract, first", ",".join(f"{images}/{n}" for n in names[:2])], ["2", "Last", f"{images}/{names[-1]}"]]
    # One image missing: the request fails, and the image's error is part of the answers.
    mixed = [["1", "Contract \"mixed\"", f"{images}/{names[0]},{images}/missing.jpg"]]
    completed, state = finish(api, good)
    if state != "completed":
        sys.exit(f"[contract] request {completed} ended {state}, expected completed")
    failed, state = finish(api, mixed)
    if state != "failed":
        sys.exit(f"[contract] request {failed} ended {state}, expected failed (one image is missing)")
    check_request(spec, api, completed, good, (3, 3, 0))
    check_request(spec, api, failed, mixed, (2, 1, 1))
    listed = json.loads(check(spec, api, "/requests"))
    ids = [r["requestId"] for r in listed["requests"]]
    if completed not in ids or failed not in ids:
        sys.exit(f"[contract] GET /requests does not list {completed} and {failed}: {ids}")
    check(spec, api, "/requests", "status=completed&limit=5")
    check(spec, api, "/requests", "status=failed&limit=5")
    check(spec, api, "/stats")
    check(spec, api, "/stats", "days=1")
    print(f"[contract] every answer about the finished requests conforms to {spec_path}")


if __name__ == "__main__":
    main()
