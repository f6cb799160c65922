#!/usr/bin/env python3
"""Capacity model: measured per-image costs -> throughput limits and a monthly AWS bill.

Inputs, all measured by the project's own commands on the local stack:
  * MongoDB operations per image, and writes per image to the busiest document, from
    `imgpipe-local bench-hotspot` (its JSON: `--hotspot FILE`);
  * worker CPU time per megapixel, from the codec benchmark (`--mp-per-s`, single core, JPEG -> JPEG q50);
  * S3 and SQS requests per image, from the code paths (one output PUT per image; one SendMessageBatch,
    one ReceiveMessage and one DeleteMessageBatch per 10 images), printed here so they can be checked.
Assumptions (flags, printed with the table): images per request, megapixels and bytes per image, fetch latency,
peak-to-average ratio, the MongoDB cluster's sustained write rate.

Prices: AWS list prices for us-east-1 (N. Virginia) as published on the service pricing pages, read 2025-01-15;
MongoDB Atlas dedicated-cluster hourly prices (AWS, us-east-1) read the same day. They are inputs, not facts about
today: check https://aws.amazon.com/pricing/ before relying on them.

Standard library only. `--short` is the CI mode: the same computation, one scenario.
"""

import argparse
import json
import math
import sys

PRICES_DATE = "2025-01-15"
PRICE = {
    "lambda_gb_s_arm64": 0.0000133334,
    "lambda_gb_s_x86_64": 0.0000166667,
    "lambda_request": 0.20 / 1e6,
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KiB request chunk, after the free tier
    "s3_put": 0.005 / 1e3,
    "s3_get": 0.0004 / 1e3,
    "s3_gb_month": 0.023,
    "http_api_request": 1.00 / 1e6,
    "logs_gb": 0.50,  # CloudWatch Logs ingestion
}
# Atlas dedicated tiers on AWS: (name, USD per hour, sustained writes/s we plan for).
# The writes/s column is a planning figure (a fraction of what a tier of that size serves with small indexed
# single-document updates), not a measurement: the local stand-in cannot measure a real cluster.
ATLAS = [("M10", 0.08, 500), ("M20", 0.20, 1_000), ("M30", 0.54, 3_000), ("M40", 1.04, 6_000), ("M50", 2.00, 12_000)]

# AWS quotas and limits that bound throughput (documented defaults).
LAMBDA_ACCOUNT_CONCURRENCY = 1_000  # per region, raisable by a quota request
S3_PUT_PER_PREFIX = 3_500  # PUT/COPY/POST/DELETE per second per partitioned prefix
SINGLE_DOCUMENT_WRITES = 1_000  # planning figure for one hot MongoDB document (writes are serialised per document)
SECONDS_PER_MONTH = 30 * 86_400


def load_hotspot(path):
    """The bench-hotspot run with the most progress counters (the configuration the product ships)."""
    with open(path) as f:
        runs = json.load(f)
    if not runs:
        sys.exit(f"{path}: no runs")
    return max(runs, key=lambda r: r["shards"]), runs


def worker_ops_per_image(hot):
    """MongoDB operations of the worker per image: bench-hotspot's (after the output is stored) + the read of the
    row before fetching, which bench-hotspot does not make."""
    return hot["mongoOpsPerImage"] + 1


def model(a, hot, images_per_day):
    images_per_s = images_per_day / 86_400
    peak_per_s = images_per_s * a.peak
    vcpu = min(a.memory_mb / 1769, 6)
    # Worker: a batch of 10 images, 4 fetched at a time (FETCH_AHEAD; 12 MP photos take ~40-110 MB of the 1.2 GB
    # decode budget each, so decoding never waits for memory here). CPU-bound part: decode + encode at `mp_per_s`
    # per vCPU.
    cpu_s_per_image = a.megapixels / a.mp_per_s
    batch_cpu_s = a.batch * cpu_s_per_image / min(vcpu, a.in_flight)
    ops_per_image = worker_ops_per_image(hot)
    db_ms = ops_per_image * a.mongo_ms
    batch_wait_s = math.ceil(a.batch / a.in_flight) * (a.fetch_ms + a.store_ms + db_ms) / 1e3
    batch_s = max(batch_cpu_s, batch_wait_s) + a.invoke_overhead_ms / 1e3
    gb_s_per_image = batch_s * a.memory_mb / 1024 / a.batch
    per_invocation_rate = a.batch / batch_s  # images/s one concurrent worker invocation sustains

    writes_per_image = hot["mongoWritesPerImage"]
    busiest_doc_per_image = hot["busiestDocumentWritesPerImage"]
    limits = [
        (
            f"worker concurrency (WorkerMaxConcurrency={a.max_concurrency})",
            a.max_concurrency * per_invocation_rate,
            "raise the WorkerMaxConcurrency parameter (and the account quota past 1,000)",
        ),
        (
            "Lambda account concurrency (1,000 default)",
            LAMBDA_ACCOUNT_CONCURRENCY * per_invocation_rate,
            "Service Quotas: Lambda concurrent executions",
        ),
        (
            f"MongoDB writes ({a.atlas} plan: {a.mongo_writes_per_s:,}/s)",
            a.mongo_writes_per_s / writes_per_image,
            "a larger tier, or shard RequestData/RequestProgress on requestId",
        ),
        (
            f"busiest document ({hot['busiestDocument']}, {busiest_doc_per_image:.3f} writes/image)",
            SINGLE_DOCUMENT_WRITES / busiest_doc_per_image,
            "IMGPIPE_PROGRESS_SHARDS",
        ),
        (
            "S3 PUTs under one request's prefix (outputs/<requestId>/)",
            S3_PUT_PER_PREFIX,
            "none needed: each request has its own prefix (S3 also splits hot prefixes)",
        ),
        ("SQS standard queue", float("inf"), "none: standard queues have no practical throughput limit"),
    ]
    requests_per_day = images_per_day / a.images_per_request
    monthly_images = images_per_day * 30
    lambda_arch = "lambda_gb_s_arm64" if a.arch == "arm64" else "lambda_gb_s_x86_64"
    cost = {
        "Lambda worker (GB-s)": monthly_images * gb_s_per_image * PRICE[lambda_arch],
        "Lambda invocations": monthly_images / a.batch * PRICE["lambda_request"]
        + requests_per_day * 30 * (1 + a.polls) * PRICE["lambda_request"],
        "SQS requests": monthly_images * (3 / a.batch) * PRICE["sqs_request"],
        "S3 PUT (images + CSVs)": (monthly_images + requests_per_day * 30 * 2) * PRICE["s3_put"],
        "S3 storage (outputs kept 30 days)": images_per_day * 30 * a.output_kb / 1e6 * PRICE["s3_gb_month"],
        "API Gateway (uploads + status polls)": requests_per_day * 30 * (1 + a.polls) * PRICE["http_api_request"],
        "CloudWatch Logs (~1 KB/image)": monthly_images * 1e3 / 1e9 * PRICE["logs_gb"],
        f"MongoDB Atlas {a.atlas} (730 h)": next(p for n, p, _ in ATLAS if n == a.atlas) * 730,
    }
    return {
        "images_per_day": images_per_day,
        "average_per_s": images_per_s,
        "peak_per_s": peak_per_s,
        "batch_s": batch_s,
        "gb_s_per_image": gb_s_per_image,
        "per_invocation_rate": per_invocation_rate,
        "concurrency_needed": math.ceil(peak_per_s / per_invocation_rate),
        "mongo_writes_peak": peak_per_s * writes_per_image,
        "mongo_ops_peak": peak_per_s * ops_per_image,
        "limits": sorted(limits, key=lambda l: l[1]),
        "cost": cost,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotspot", default=".bench/hotspot.json", help="JSON written by imgpipe-local bench-hotspot")
    p.add_argument(
        "--mp-per-s", type=float, default=120.0, help="compress speed, MP/s on one core (make bench-codec, all JPEG)"
    )
    p.add_argument("--megapixels", type=float, default=12.0, help="average input image size")
    p.add_argument(
        "--output-kb", type=float, default=900.0, help="average output size (12 MP corpus photos: 450-1,090 KB)"
    )
    p.add_argument("--fetch-ms", type=float, default=150.0, help="average time to fetch one input image")
    p.add_argument("--store-ms", type=float, default=40.0, help="average S3 PUT time of one output")
    p.add_argument("--mongo-ms", type=float, default=4.0, help="one MongoDB operation in-region (not measurable here)")
    p.add_argument("--invoke-overhead-ms", type=float, default=20.0)
    p.add_argument("--memory-mb", type=int, default=1769, help="worker MemorySize (template.yaml)")
    p.add_argument("--arch", choices=["arm64", "x86_64"], default="arm64")
    p.add_argument("--batch", type=int, default=10, help="WorkerBatchSize")
    p.add_argument("--in-flight", type=int, default=4, help="images in flight per invocation (the worker fetches 4 ahead)")
    p.add_argument("--max-concurrency", type=int, default=20, help="WorkerMaxConcurrency")
    p.add_argument("--images-per-request", type=int, default=1_000)
    p.add_argument("--polls", type=int, default=20, help="status polls per request")
    p.add_argument("--peak", type=float, default=3.0, help="peak hour rate / average rate")
    p.add_argument("--atlas", choices=[n for n, _, _ in ATLAS], default="M30")
    p.add_argument("--ingest-per-s", type=float, default=11_000, help="image URLs accepted per second (bench-ingest)")
    p.add_argument("--big-request", type=int, default=100_000, help="size of the one-big-request scenario")
    p.add_argument("--short", action="store_true", help="CI mode: one scenario (1 million images a day)")
    a = p.parse_args()
    a.mongo_writes_per_s = next(w for n, _, w in ATLAS if n == a.atlas)

    hot, runs = load_hotspot(a.hotspot)
    print(f"Measured (bench-hotspot, {hot['images']} images, {hot['workers']} concurrent workers, local stack):")
    for r in runs:
        print(
            f"  {r['shards']:>3} progress counter(s): {r['mongoOpsPerImage']:.2f} MongoDB ops/image "
            f"({r['mongoWritesPerImage']:.2f} writes; busiest document {r['busiestDocument']}, "
            f"{r['busiestDocumentWritesPerImage']:.3f} writes/image), {r['imagesPerSecond']:.0f} images/s, record() p50 "
            f"{r['recordMsP50']:.0f} ms (the stand-in serialises every write: its latency is not AWS's)"
        )
    print(
        f"Per image: {hot['mongoWritesPerImage']:.2f} MongoDB writes + {worker_ops_per_image(hot) - hot['mongoWritesPerImage']:.2f} reads; "
        f"1 S3 PUT; {3 / a.batch:.1f} SQS requests; {a.megapixels} MP at {a.mp_per_s} MP/s per core"
    )
    print(
        f"Assumptions: {a.images_per_request:,} images/request, {a.polls} status polls/request, peak {a.peak}x average, "
        f"fetch {a.fetch_ms:.0f} ms, {a.mongo_ms:.0f} ms per MongoDB op, worker {a.memory_mb} MB {a.arch}, batch {a.batch} ({a.in_flight} at once), "
        f"MongoDB Atlas {a.atlas}; prices us-east-1 read {PRICES_DATE}\n"
    )
    scenarios = [1_000_000] if a.short else [1_000_000, 10_000_000]
    results = [model(a, hot, n) for n in scenarios]

    print("| | " + " | ".join(f"{n / 1e6:g} M images/day" for n in scenarios) + " |")
    print("|---|" + "---:|" * len(scenarios))
    rows = [
        ("average / peak images/s", lambda r: f"{r['average_per_s']:.0f} / {r['peak_per_s']:.0f}"),
        ("worker invocation (10 images)", lambda r: f"{r['batch_s']:.2f} s, {r['per_invocation_rate']:.1f} images/s"),
        ("worker concurrency needed at peak", lambda r: f"{r['concurrency_needed']}"),
        ("MongoDB writes/s at peak", lambda r: f"{r['mongo_writes_peak']:,.0f}"),
    ]
    for label, f in rows:
        print(f"| {label} | " + " | ".join(f(r) for r in results) + " |")
    for item in results[0]["cost"]:
        print(f"| {item} | " + " | ".join(f"${r['cost'][item]:,.2f}" for r in results) + " |")
    print("| **monthly total** | " + " | ".join(f"**${sum(r['cost'].values()):,.0f}**" for r in results) + " |")

    print("\nThroughput limits (images/s), lowest first, with the setting that raises each:\n")
    print("| limit | images/s | raise it with |")
    print("|---|---:|---|")
    for name, rate, fix in results[0]["limits"]:
        shown = "unbounded" if math.isinf(rate) else f"{rate:,.0f}"
        print(f"| {name} | {shown} | {fix} |")
    for r in results:
        first = next((l for l in r["limits"] if l[1] < r["peak_per_s"]), None)
        verdict = (
            f"first limit hit: {first[0]} ({first[1]:,.0f} images/s < peak {r['peak_per_s']:,.0f}); raise: {first[2]}"
            if first
            else f"no limit hit at peak {r['peak_per_s']:,.0f} images/s; the first one ahead is {r['limits'][0][0]}"
        )
        print(f"{r['images_per_day'] / 1e6:g} M images/day: {verdict}")

    n = a.big_request
    rate = min(a.max_concurrency * results[0]["per_invocation_rate"], S3_PUT_PER_PREFIX)
    print(
        f"\nOne request of {n:,} images: accepted in ~{n / a.ingest_per_s:.0f} s ({n / 3:,.0f} RequestData rows at "
        f"3 images/row, {n:,} SQS messages); worked at {rate:,.0f} images/s in ~{n / rate / 60:.0f} min at "
        f"WorkerMaxConcurrency={a.max_concurrency}; its Requests document takes ~{hot['shards'] + 2} writes and each "
        f"of its {hot['shards']} progress counters ~{n / max(hot['shards'], 1):,.0f} "
        f"(~{rate / max(hot['shards'], 1):,.0f} writes/s each, against ~{rate:,.0f}/s on one document without them)."
    )


if __name__ == "__main__":
    main()
