//! Size limits on what goes into an SQS message or a MongoDB document, through the real upload handler against
//! the local stack: an oversized cell is a `400` row error with its line and column, and nothing is written
//! (MongoDB, S3, SQS checked); a value at its limit is accepted and reaches the queue.

use imgpipe_core::bson::doc;
use imgpipe_core::domain::{ImageJob, ImageUrl, RequestId};
use imgpipe_tests::Stack;
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
    let jobs: Vec<ImageJob> = (0..10)
        .map(|i| ImageJob {
            request_id: RequestId::new(),
            serial_number: 1,
            index: i,
            url: ImageUrl::parse(&format!("{}{i}", url_of(119_999))).unwrap(),
            shard: 0,
        })
        .collect();
    stack.app.queue.send_jobs(&jobs).await.expect("every batch accepted");
    assert_eq!(stack.queue_depth().await, 10);
}
