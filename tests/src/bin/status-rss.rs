//! The status function's answers about one request in a fresh process, for the memory test of
//! tests/tests/status_bounds.rs: the process's resident set counts everything the function holds while it answers.
//!
//!   status-rss REQUEST_ID
//!
//! Builds the app from the environment (`IMGPIPE_*`, as the Lambda function does), resets the peak-RSS mark
//! (`/proc/self/clear_refs`) once the clients exist, then, as the test tenant, GETs `/requests/{id}/output.csv` and
//! walks every page of `/requests/{id}?limit=1000` by `nextCursor`. Prints one JSON line: `rss_before_kib`,
//! `peak_kib`, the CSV answer's `csv_status` and `csv_bytes`, `pages`, `rows`, `images` (with an output URL),
//! `max_page_bytes`, and every serial number seen out of order or twice as `disorder` (a count).

use imgpipe_core::App;
use imgpipe_core::telemetry::peak_rss_kib;
use imgpipe_tests::Caller;
use lambda_http::Body;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// What the walk reads of a page: serial numbers, which images have an output URL, the cursor. Everything else is
/// skipped unread, so that the walk's own memory (this process's too) stays small beside the function's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    rows: Vec<PageRow>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageRow {
    serial_number: i64,
    images: Vec<PageImage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageImage {
    output_url: Option<IgnoredAny>,
}

async fn get(app: &App, path: &str) -> http::Response<Body> {
    let req = http::Request::builder().method("GET").uri(path).body(Body::Empty).expect("a request");
    imgpipe_status::handle(app, Caller::test().authorize(app, req)).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let id = std::env::args().nth(1).expect("usage: status-rss REQUEST_ID");
    let app = App::from_env().await.expect("the app from IMGPIPE_* variables");
    // One answer first, so that the clients and their connection pools exist before the mark is reset.
    let unknown = format!("/requests/{}", uuid::Uuid::now_v7());
    assert_eq!(get(&app, &unknown).await.status(), 404);
    let rss_before_kib = imgpipe_tests::reset_peak_rss();

    let csv = get(&app, &format!("/requests/{id}/output.csv")).await;
    let (csv_status, csv_bytes) = (csv.status().as_u16(), csv.body().len());
    drop(csv);

    let (mut pages, mut rows, mut images, mut max_page_bytes, mut disorder) = (0u64, 0u64, 0u64, 0usize, 0u64);
    let mut last_serial = i64::MIN;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/requests/{id}?limit=1000&cursor={c}"),
            None => format!("/requests/{id}?limit=1000"),
        };
        let page = get(&app, &path).await;
        assert_eq!(page.status(), 200, "{path}: {:?}", String::from_utf8_lossy(page.body()));
        max_page_bytes = max_page_bytes.max(page.body().len());
        let body: Page = serde_json::from_slice(page.body()).expect("a JSON page");
        drop(page);
        pages += 1;
        for row in &body.rows {
            if row.serial_number <= last_serial {
                disorder += 1;
            }
            last_serial = row.serial_number;
            rows += 1;
            images += row.images.iter().filter(|i| i.output_url.is_some()).count() as u64;
        }
        match body.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        // A walk of a request ends: at most one page per row.
        assert!(pages <= rows + 1, "pages without rows");
    }
    let peak_kib = peak_rss_kib().expect("VmHWM");
    println!(
        "{}",
        serde_json::json!({
            "rss_before_kib": rss_before_kib,
            "peak_kib": peak_kib,
            "csv_status": csv_status,
            "csv_bytes": csv_bytes,
            "pages": pages,
            "rows": rows,
            "images": images,
            "max_page_bytes": max_page_bytes,
            "disorder": disorder,
        })
    );
}
