//! The status function's answers stay bounded whatever the request's size (issue 17, item 5): a status page is
//! bounded in bytes as well as rows (`nextCursor` when the next row would pass it), the output CSV is answered inline
//! only within its bound (else a redirect to the stored one), and a 100,000-image request is walked, CSV and every
//! page, within a stated peak resident set of a child process.

use std::time::Duration;

use imgpipe_core::csv_output::write_csv;
use imgpipe_core::domain::{
    ImageState, Request, RequestId, RequestStatus, Row, Source, StoredObject, Timestamp, output_csv_key,
};
use imgpipe_core::service::pages::{INLINE_CSV_BYTES, PAGE_BYTES};
use imgpipe_tests::{Stack, test_key};

/// `rows` rows of a request of the test tenant, each of `images` succeeded images whose input URLs are `url_len`
/// bytes long, as the pipeline leaves them.
fn rows_of(stack: &Stack, id: &RequestId, rows: i64, images: usize, url_len: usize) -> Vec<Row> {
    let key = test_key(id);
    let at = Timestamp::now();
    let urls = stack.app.urls();
    let mut all = Vec::with_capacity(rows as usize);
    for serial in 1..=rows {
        let inputs = (0..images)
            .map(|i| {
                let url = format!("http://127.0.0.1:9/{serial}/{i}/");
                format!("{url}{}.jpg", "p".repeat(url_len.saturating_sub(url.len() + 4)))
            })
            .collect();
        let mut row = Row::new(&key, serial, format!("product {serial}"), inputs, at);
        for (i, slot) in row.images.iter_mut().enumerate() {
            let output_key = format!("outputs/{}/{}/{serial}-{i}.jpg", key.tenant, key.id);
            slot.state = ImageState::Succeeded;
            slot.output_url = Some(urls.stored(&output_key));
            slot.output_key = Some(output_key);
            slot.counted = true;
        }
        row.output_image_urls = row.output_urls();
        row.settled_images = images as i64;
        row.completed_at = Some(at);
        all.push(row);
    }
    all
}

/// A completed request of `rows` ([`rows_of`]) written through the ports, with its output CSV stored as the
/// finaliser stores it.
async fn seed(stack: &Stack, id: &RequestId, all: &[Row]) {
    let key = test_key(id);
    let at = Timestamp::now();
    let (rows, images) = (all.len() as i64, all.iter().map(|r| r.images.len() as i64).sum::<i64>());
    for chunk in all.chunks(500) {
        stack.app.rows.insert_rows(chunk).await.expect("insert rows");
    }
    let csv_key = output_csv_key(&key);
    let csv = write_csv(all).expect("the output CSV");
    stack.app.blobs.put(&stack.app.config.outputs_bucket, &csv_key, csv, "text/csv").await.expect("store the CSV");
    let total = images;
    let request = Request {
        tenant: key.tenant.clone(),
        id: id.clone(),
        status: RequestStatus::Completed,
        source: Source::Api,
        created_at: at,
        completed_at: Some(at),
        total_products: rows,
        total_images: total,
        progress_shards: 1,
        succeeded_images: total,
        failed_images: 0,
        input_csv: StoredObject { bucket: stack.app.config.uploads_bucket.clone(), key: "uploads/seeded.csv".into() },
        output_csv_key: Some(csv_key),
        content_sha256: "seeded".into(),
        enqueued_at: Some(at),
        rejection: None,
        finalising_since: None,
        webhook: None,
    };
    assert!(stack.app.requests.insert_request(&request).await.expect("insert the request").is_none());
}

/// A new completed request of `rows` rows of `images` images with `url_len`-byte URLs ([`rows_of`], [`seed`]).
async fn seeded(stack: &Stack, rows: i64, images: usize, url_len: usize) -> RequestId {
    let id = RequestId::new();
    seed(stack, &id, &rows_of(stack, &id, rows, images, url_len)).await;
    id
}

/// Every page of `/requests/{id}?limit=LIMIT`, by `nextCursor`: (body bytes as Lambda's response carries them,
/// serial numbers) per page.
async fn walk(stack: &Stack, id: &RequestId, limit: i64) -> Vec<(usize, Vec<i64>)> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/requests/{id}?limit={limit}&cursor={c}"),
            None => format!("/requests/{id}?limit={limit}"),
        };
        let (code, body) = stack.get(&path).await;
        assert_eq!(code, 200, "{path}");
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let serials = page["rows"].as_array().unwrap().iter().map(|r| r["serialNumber"].as_i64().unwrap()).collect();
        pages.push((escaped_len(&body), serials));
        assert!(pages.len() <= 1000, "the walk does not end");
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn a_page_stops_before_the_row_that_would_pass_its_byte_bound_and_the_walk_sees_every_row_once() {
    let stack = Stack::new("page-bytes").await;
    // 150 rows of 20 images with 3,000-byte URLs: about 66 KB of JSON per row, so 100 rows would be about 6.6 MB.
    let id = seeded(&stack, 150, 20, 3000).await;
    let pages = walk(&stack, &id, 100).await;
    assert!(pages.len() >= 2, "150 rows of ~66 KB cannot share one {PAGE_BYTES}-byte page: {} page(s)", pages.len());
    for (bytes, serials) in &pages {
        assert!(
            *bytes <= PAGE_BYTES,
            "a page of {bytes} bytes (as Lambda carries it) passes its bound of {PAGE_BYTES}"
        );
        assert!(!serials.is_empty(), "every page has a row");
    }
    // Filled up to the bound: each page but the last would have passed it with one more row (~66 KB).
    for (bytes, serials) in &pages[..pages.len() - 1] {
        assert!(serials.len() < 100 && *bytes > PAGE_BYTES - 70_000, "a page of {bytes} bytes stopped early");
    }
    let seen: Vec<i64> = pages.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    assert_eq!(seen, (1..=150).collect::<Vec<_>>(), "every row once, in serial order");
}

/// The length of `csv` as Lambda's response carries it: one JSON string (its contents, without the quotes).
fn escaped_len(csv: &[u8]) -> usize {
    serde_json::to_string(std::str::from_utf8(csv).unwrap()).unwrap().len() - 2
}

#[tokio::test]
async fn the_output_csv_is_inline_up_to_its_bound_and_a_redirect_to_the_stored_csv_past_it() {
    // Under a public base URL the URLs of the answered CSV are the stored ones: its size is known in advance.
    let stack = Stack::with("csv-bound", |c| c.output_base_url = Some("https://cdn.example.com".into())).await;
    // Rows of 20 images with 1,000-byte URLs (about 22 KB of CSV each): as many as fit the bound, then one more.
    let id = RequestId::new();
    let mut rows = rows_of(&stack, &id, (INLINE_CSV_BYTES / 20_000) as i64, 20, 1000);
    while escaped_len(&write_csv(&rows).unwrap()) > INLINE_CSV_BYTES {
        rows.pop();
    }
    let expected = write_csv(&rows).unwrap();
    let spare = INLINE_CSV_BYTES - escaped_len(&expected);
    assert!(spare < 22_000, "{spare} bytes under the bound: one more row would pass it");
    seed(&stack, &id, &rows).await;
    let (code, body) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 200, "{} bytes fit the bound of {INLINE_CSV_BYTES}", escaped_len(&expected));
    assert_eq!(body, expected, "the inline CSV is the request's CSV");

    let id = RequestId::new();
    let rows = rows_of(&stack, &id, rows.len() as i64 + 1, 20, 1000);
    assert!(escaped_len(&write_csv(&rows).unwrap()) > INLINE_CSV_BYTES, "one row more passes the bound");
    seed(&stack, &id, &rows).await;
    let resp = stack.get_response(&imgpipe_tests::Caller::test(), &format!("/requests/{id}/output.csv")).await;
    assert_eq!(resp.status(), 303, "past the bound: a redirect");
    let location = resp.headers()["location"].to_str().unwrap();
    assert_eq!(location, format!("https://cdn.example.com/{}", output_csv_key(&test_key(&id))));
}

/// The peak resident set the status function may reach above its idle one while answering about a request of any
/// size (the function has 256 MB; see the README's limits). Measured: about 25 MiB (one 5 MiB page as rows, as JSON
/// and as the walk reads it); the whole output CSV built in memory first, as before issue 17, took 42 MiB.
const STATUS_PEAK_ABOVE_IDLE_KIB: u64 = 32 * 1024;

#[tokio::test]
async fn a_100000_image_request_is_answered_csv_and_every_page_within_a_bounded_peak_rss() {
    // The private mode (no base URL), the worst case: every URL answered is presigned at answer time (about 400
    // bytes where a base URL's is 90), so the CSV is a redirect to the stored one and a page holds fewer rows (the
    // test server, FerretDB on SQLite, scans the whole collection per query, so pages cost seconds each here).
    let stack = Stack::new("status-rss").await;
    let id = seeded(&stack, 10_000, 10, 40).await;
    let config = &stack.app.config;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_status-rss"))
        .arg(id.to_string())
        .env("IMGPIPE_MONGODB_DATABASE", &config.mongodb_database)
        .env("IMGPIPE_UPLOADS_BUCKET", &config.uploads_bucket)
        .env("IMGPIPE_OUTPUTS_BUCKET", &config.outputs_bucket)
        .env("IMGPIPE_QUEUE_URL", &config.queue_url)
        .env_remove("IMGPIPE_OUTPUT_BASE_URL")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), child).await.expect("the walk ends").expect("spawn");
    assert!(out.status.success(), "status-rss failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    println!("status-rss: {report}");
    assert_eq!(report["csv_status"], 303, "a 100,000-image CSV is a redirect: {report}");
    assert_eq!(report["rows"], 10_000, "{report}");
    assert_eq!(report["images"], 100_000, "every image's URL answered: {report}");
    assert_eq!(report["disorder"], 0, "every row once, in order: {report}");
    assert!(report["max_page_bytes"].as_u64().unwrap() <= PAGE_BYTES as u64, "{report}");
    let above = report["peak_kib"].as_u64().unwrap().saturating_sub(report["rss_before_kib"].as_u64().unwrap());
    assert!(
        above <= STATUS_PEAK_ABOVE_IDLE_KIB,
        "peak {above} KiB above idle passes the bound of {STATUS_PEAK_ABOVE_IDLE_KIB} KiB: {report}"
    );
}
