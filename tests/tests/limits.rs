//! Size limits on what goes into an SQS message or a MongoDB document, through the real upload handler against
//! the local stack: an oversized cell is a `400` row error with its line and column, and nothing is written
//! (MongoDB, S3, SQS checked); a value at its limit is accepted and reaches the queue.

use imgpipe_core::bson::doc;
use imgpipe_core::domain::{ImageUrl, RequestId};
use imgpipe_tests::{Stack, test_job};
use serde_json::Value;

const HEADER: &str = "S. No.,Product Name,Input Image Urls\n";

/// Documents, uploaded objects and queued messages of this test's slice of the stack.
async fn written(stack: &Stack) -> (u64, u64, usize, usize) {
    (
        stack.requests().count_documents(doc! {}).await.unwrap(),
        stack.request_data().count_documents(doc! {}).await.unwrap(),
        stack.keys(&stack.app.config.uploads_bucket, "").await.len(),
        stack.queue_depth().await,
    )
}

/// An ASCII image URL of exactly `n` characters.
fn url_of(n: usize) -> String {
    let prefix = "https://img.example/";
    format!("{prefix}{}", "u".repeat(n - prefix.len()))
}

#[track_caller]
fn assert_row_error(code: u16, body: &Value, line: u64, column: &str, message_start: &str) {
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_csv", "{body}");
    let detail = &body["error"]["details"][0];
    assert_eq!((detail["line"].as_u64(), detail["column"].as_str()), (Some(line), Some(column)), "{body}");
    let message = detail["message"].as_str().unwrap();
    assert!(message.starts_with(message_start), "{message}");
    assert!(detail["value"].as_str().unwrap().len() <= 210, "the echoed value is truncated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mb_url_is_a_row_error_and_nothing_is_written() {
    let csv = format!("{HEADER}1,Good,https://img.example/1.jpg\n2,Huge,{}\n", url_of(2_000_000));
    // With the default limits the row is over its byte limit first …
    let stack = Stack::new("limits-url").await;
    let (code, body) = stack.upload("text/csv", csv.clone()).await;
    assert_row_error(code, &body, 3, "Input Image Urls", "the row is 2000005 bytes; at most 131072 bytes per row");
    assert_eq!(written(&stack).await, (0, 0, 0, 0));
    // … and with room for the row, the URL is over its own limit.
    let stack = Stack::with("limits-url-only", |c| c.max_row_bytes = 4 * 1024 * 1024).await;
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_row_error(code, &body, 3, "Input Image Urls", "image URL is 2000000 characters; at most 2048");
    assert_eq!(written(&stack).await, (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_product_name_is_a_row_error_and_nothing_is_written() {
    let stack = Stack::new("limits-name").await;
    let csv = format!("{HEADER}1,{},https://img.example/1.jpg\n", "n".repeat(1025));
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_row_error(code, &body, 2, "Product Name", "product name is 1025 bytes; at most 1024 bytes");
    assert_eq!(written(&stack).await, (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_row_is_a_row_error_and_nothing_is_written() {
    // 20 URLs of 2,048 characters (each within the URL limit, 19 commas between them) and a 1,024-byte name:
    // 42,004 bytes of cells, over a limit of 40,000.
    let stack = Stack::with("limits-row", |c| c.max_row_bytes = 40_000).await;
    let urls: Vec<String> = (0..20).map(|_| url_of(2048)).collect();
    let csv = format!("{HEADER}1,{},\"{}\"\n", "n".repeat(1024), urls.join(","));
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_row_error(code, &body, 2, "Input Image Urls", "the row is 42004 bytes; at most 40000 bytes per row");
    assert_eq!(written(&stack).await, (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_at_their_limits_are_accepted_and_queued() {
    let stack = Stack::new("limits-edge").await;
    let csv = format!("{HEADER}1,{},{}\n", "n".repeat(1024), url_of(2048));
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(written(&stack).await, (1, 1, 1, 1));
    let message = stack.receive(1).await;
    let job: Value = serde_json::from_str(message[0].body().unwrap()).unwrap();
    assert_eq!(job["url"].as_str().map(str::len), Some(2048));
}

/// Ten messages of about 120 KB: 1.2 MB together, over the 1 MiB that SQS (and ElasticMQ, the local stack) accepts
/// in one `SendMessageBatch`, so a batch built by count alone is refused. The adapter builds batches of at most
/// 256 KiB (the smaller, older SQS figure) and every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_adapter_builds_batches_by_bytes_as_well_as_count() {
    let stack = Stack::new("limits-batch").await;
    let jobs: Vec<_> = (0..10)
        .map(|i| test_job(&RequestId::new(), 1, i, ImageUrl::parse(&format!("{}{i}", url_of(119_999))).unwrap(), 0))
        .collect();
    stack.app.jobs.send_jobs(&jobs).await.expect("every batch accepted");
    assert_eq!(stack.queue_depth().await, 10);
}

async fn presign(stack: &Stack, body: &str) -> (u16, Value) {
    let req = http::Request::builder()
        .method("POST")
        .uri("/uploads/presign")
        .body(lambda_http::Body::from(body.to_string()))
        .unwrap();
    imgpipe_tests::json_of(imgpipe_upload::handle(&stack.app, imgpipe_tests::authorized(&stack.app, req)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presign_takes_the_size_refuses_it_over_the_limit_and_signs_it_into_the_url() {
    let limit = 1024 * 1024;
    let stack = Stack::with("limits-presign", |c| c.max_dropped_csv_bytes = limit).await;
    let (code, body) = presign(&stack, &format!("{{\"size\": {limit}}}")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["headers"]["Content-Length"], limit.to_string());
    let url = reqwest::Url::parse(body["uploadUrl"].as_str().unwrap()).unwrap();
    let signed = url.query_pairs().find(|(k, _)| k == "X-Amz-SignedHeaders").map(|(_, v)| v.into_owned());
    assert!(signed.as_deref().unwrap_or_default().split(';').any(|h| h == "content-length"), "{url}");

    let (code, body) = presign(&stack, &format!("{{\"size\": {}}}", limit + 1)).await;
    assert_eq!((code, body["error"]["code"].as_str()), (413, Some("payload_too_large")), "{body}");
    for bad in ["", "{}", "{\"size\": 0}", "{\"size\": -1}", "{\"size\": \"10\"}", "{\"size\": 1, \"x\": 1}"] {
        let (code, body) = presign(&stack, bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    assert_eq!(written(&stack).await, (0, 0, 0, 0));
}

async fn drop_object(stack: &Stack, key: &str, body: Vec<u8>) -> String {
    let out = stack
        .s3
        .put_object()
        .bucket(&stack.app.config.uploads_bucket)
        .key(key)
        .body(body.into())
        .content_type("text/csv")
        .send()
        .await
        .unwrap();
    out.e_tag().unwrap_or_default().trim_matches('"').to_string()
}

async fn dispatch(stack: &Stack, event: Value) {
    imgpipe_upload::s3::handle_event(&stack.app, event, Default::default()).await.expect("handled, not retried");
}

/// A valid CSV of exactly `size` bytes: a header, rows of one URL (about 240 bytes each, so a MiB stays under the
/// row limit), and blank lines to fill up.
fn csv_of(size: usize) -> Vec<u8> {
    let name = "n".repeat(200);
    let mut csv = HEADER.to_string();
    for n in 1.. {
        let row = format!("{n},{name},https://img.example/{n}.jpg\n");
        if csv.len() + row.len() > size {
            break;
        }
        csv.push_str(&row);
    }
    let mut csv = csv.into_bytes();
    csv.resize(size, b'\n');
    csv
}

async fn only_request(stack: &Stack) -> imgpipe_core::bson::Document {
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 1);
    stack.requests().find_one(doc! {}).await.unwrap().unwrap()
}

#[track_caller]
fn assert_failed_with(request: &imgpipe_core::bson::Document, reason_start: &str) {
    assert_eq!(request.get_str("status").unwrap(), "failed", "{request}");
    let errors = request.get_array("errors").unwrap();
    let message = errors[0].as_document().unwrap().get_str("message").unwrap();
    assert!(message.starts_with(reason_start), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_file_over_the_limit_is_a_failed_request_with_the_reason() {
    let limit = 1024 * 1024;
    let bucket = |s: &Stack| s.app.config.uploads_bucket.clone();

    // The event gives the size: refused without reading.
    let stack = Stack::with("limits-drop-event", |c| c.max_dropped_csv_bytes = limit).await;
    let etag = drop_object(&stack, "incoming/tests/big.csv", csv_of(limit + 1)).await;
    let mut event = imgpipe_tests::s3_event(&bucket(&stack), "incoming/tests/big.csv", &etag);
    event["Records"][0]["s3"]["object"]["size"] = (limit + 1).into();
    dispatch(&stack, event.clone()).await;
    dispatch(&stack, event).await;
    assert_failed_with(&only_request(&stack).await, &format!("the file is {} bytes; the limit is {limit}", limit + 1));
    assert_eq!((stack.request_data().count_documents(doc! {}).await.unwrap(), stack.queue_depth().await), (0, 0));

    // The event understates it (100 bytes): the capped read stops past the limit.
    let stack = Stack::with("limits-drop-read", |c| c.max_dropped_csv_bytes = limit).await;
    let etag = drop_object(&stack, "incoming/tests/big.csv", csv_of(limit + 1)).await;
    dispatch(&stack, imgpipe_tests::s3_event(&bucket(&stack), "incoming/tests/big.csv", &etag)).await;
    assert_failed_with(&only_request(&stack).await, "the file is ");
    assert!(
        only_request(&stack).await.get_array("errors").unwrap()[0]
            .as_document()
            .unwrap()
            .get_str("message")
            .unwrap()
            .ends_with(&format!("the limit is {limit} bytes"))
    );

    // At the limit exactly: ingested.
    let stack = Stack::with("limits-drop-edge", |c| c.max_dropped_csv_bytes = limit).await;
    let etag = drop_object(&stack, "incoming/tests/edge.csv", csv_of(limit)).await;
    dispatch(&stack, imgpipe_tests::s3_event(&bucket(&stack), "incoming/tests/edge.csv", &etag)).await;
    assert_eq!(only_request(&stack).await.get_str("status").unwrap(), "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_file_replaced_after_its_event_is_a_failed_request_with_the_reason() {
    let stack = Stack::new("limits-drop-replaced").await;
    let old = drop_object(&stack, "incoming/tests/p.csv", csv_of(200)).await;
    drop_object(&stack, "incoming/tests/p.csv", csv_of(300)).await;
    dispatch(&stack, imgpipe_tests::s3_event(&stack.app.config.uploads_bucket, "incoming/tests/p.csv", &old)).await;
    assert_failed_with(&only_request(&stack).await, "the object was replaced after this event");
    assert_eq!((stack.request_data().count_documents(doc! {}).await.unwrap(), stack.queue_depth().await), (0, 0));
}
