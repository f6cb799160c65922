//! Ingestion through the real upload handler against the local stack: the CSV corpus in `tests/csv/`, the S3 drop
//! trigger, `Idempotency-Key`, presigned uploads and crash safety.

use std::path::Path;

use futures::TryStreamExt;
use imgpipe_core::bson::{Document, doc};
use imgpipe_tests::{Stack, request_id, s3_event};
use serde_json::{Value, json};

fn corpus(dir: &str) -> Vec<(String, Vec<u8>, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("csv").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CSV files in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let expected = std::fs::read(p.with_extension("json")).expect("expected .json beside each .csv");
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
                serde_json::from_slice(&expected).unwrap(),
            )
        })
        .collect()
}

async fn totals(stack: &Stack) -> (u64, u64, usize, usize) {
    (
        stack.requests().count_documents(doc! {}).await.unwrap(),
        stack.request_data().count_documents(doc! {}).await.unwrap(),
        stack.keys(&stack.app.config.uploads_bucket, "").await.len(),
        stack.queue_depth().await,
    )
}

async fn rows_of(stack: &Stack, id: &str) -> Vec<Document> {
    let cursor = stack.request_data().find(doc! {"requestId": id}).sort(doc! {"serialNumber": 1}).await.unwrap();
    cursor.try_collect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_quirk_yields_exactly_the_expected_rows() {
    let stack = Stack::new("corpus-ok").await;
    for (name, csv, expected) in corpus("ok") {
        let (code, body) = stack.upload("text/csv", csv).await;
        assert_eq!(code, 202, "{name}: {body}");
        let id = request_id(&body);
        let rows = rows_of(&stack, id.as_str()).await;
        let got: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "serialNumber": r.get_i64("serialNumber").unwrap(),
                    "productName": r.get_str("productName").unwrap(),
                    "inputImageUrls": r.get_array("inputImageUrls").unwrap().iter().map(|u| u.as_str().unwrap()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let want: Vec<Value> = expected
            .as_array()
            .unwrap()
            .iter()
            .map(|r| json!({"serialNumber": r["serialNumber"], "productName": r["productName"], "inputImageUrls": r["inputImageUrls"]}))
            .collect();
        assert_eq!(got, want, "{name}");
        let images: usize = want.iter().map(|r| r["inputImageUrls"].as_array().unwrap().len()).sum();
        assert_eq!(body["totalImages"], images, "{name}");
    }
    // one message per image, for all files
    let expected_messages: usize = corpus("ok")
        .iter()
        .flat_map(|(_, _, e)| e.as_array().unwrap().iter().map(|r| r["inputImageUrls"].as_array().unwrap().len()))
        .sum();
    assert_eq!(stack.queue_depth().await, expected_messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_defect_is_rejected_at_its_line_and_column_and_writes_nothing() {
    let stack = Stack::new("corpus-bad").await;
    let before = totals(&stack).await;
    for (name, csv, expected) in corpus("bad") {
        let (code, body) = stack.upload("text/csv", csv).await;
        assert_eq!(code, expected["status"].as_u64().unwrap() as u16, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_csv", "{name}");
        assert_eq!(body["error"]["total"], expected["total"], "{name}: {body}");
        let got: Vec<Value> = body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| json!({"line": d["line"], "column": d["column"], "value": d["value"]}))
            .collect();
        assert_eq!(&got, expected["errors"].as_array().unwrap(), "{name}: {body}");
        assert!(
            body["error"]["details"].as_array().unwrap().iter().all(|d| !d["message"].as_str().unwrap().is_empty())
        );
        assert_eq!(totals(&stack).await, before, "{name} wrote something");
    }
}

async fn put_object(stack: &Stack, key: &str, body: &[u8]) -> String {
    let out = stack
        .s3
        .put_object()
        .bucket(&stack.app.config.uploads_bucket)
        .key(key)
        .body(body.to_vec().into())
        .content_type("text/csv")
        .send()
        .await
        .unwrap();
    out.e_tag().unwrap_or_default().trim_matches('"').to_string()
}

async fn dispatch(stack: &Stack, event: Value) -> Value {
    imgpipe_upload::s3::handle_event(&stack.app, event, Default::default()).await.expect("event handled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_dropped_under_incoming_is_ingested_once_however_often_the_event_arrives() {
    let stack = Stack::new("s3drop").await;
    let bucket = stack.app.config.uploads_bucket.clone();
    let key = "incoming/tests/spring catalogue, v2.csv";
    let csv = b"S. No.,Product Name,Input Image Urls\n1,A,\"https://img.example/1.jpg,https://img.example/2.jpg\"\n2,B,https://img.example/3.jpg\n";
    let etag = put_object(&stack, key, csv).await;
    let event = s3_event(&bucket, key, &etag);
    assert_eq!(dispatch(&stack, event.clone()).await["ingested"], 1);
    let request = stack.requests().find_one(doc! {}).await.unwrap().expect("a request");
    let id = request.get_str("requestId").unwrap().to_string();
    assert_eq!(request.get_str("status").unwrap(), "pending");
    assert_eq!(request.get_str("inputCsvKey").unwrap(), key, "the key was URL-decoded");
    assert_eq!(rows_of(&stack, &id).await.len(), 2);
    assert_eq!(stack.queue_depth().await, 3);

    // The same event again (S3 and Lambda both retry): nothing new.
    assert_eq!(dispatch(&stack, event).await["ingested"], 1);
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 1);
    assert_eq!(stack.request_data().count_documents(doc! {}).await.unwrap(), 2);
    assert_eq!(stack.queue_depth().await, 3);

    // Objects outside incoming/ or not .csv are skipped.
    assert_eq!(dispatch(&stack, s3_event(&bucket, "uploads/x.csv", "e")).await["ingested"], 0);
    assert_eq!(dispatch(&stack, s3_event(&bucket, "incoming/x.txt", "e")).await["ingested"], 0);
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 1);

    let (code, status) = stack.status(&id).await;
    assert_eq!(code, 200);
    assert_eq!(status["counts"]["images"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_dropped_csv_becomes_a_failed_request_with_its_row_errors() {
    let stack = Stack::new("s3bad").await;
    let bucket = stack.app.config.uploads_bucket.clone();
    let key = "incoming/tests/bad.csv";
    let etag =
        put_object(&stack, key, b"S. No.,Product Name,Input Image Urls\nx,A,https://img.example/1.jpg\n2,,nope\n")
            .await;
    dispatch(&stack, s3_event(&bucket, key, &etag)).await;
    dispatch(&stack, s3_event(&bucket, key, &etag)).await;
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 1);
    assert_eq!(stack.request_data().count_documents(doc! {}).await.unwrap(), 0);
    assert_eq!(stack.queue_depth().await, 0);
    let request = stack.requests().find_one(doc! {}).await.unwrap().unwrap();
    let id = request.get_str("requestId").unwrap();
    let (code, status) = stack.status(id).await;
    assert_eq!(code, 200);
    assert_eq!(status["status"], "failed");
    assert_eq!(status["errorTotal"], 3);
    let located: Vec<(u64, &str)> = status["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_str().unwrap()))
        .collect();
    assert_eq!(located, [(2, "S. No."), (3, "Product Name"), (3, "Input Image Urls")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_same_request_and_refuses_a_different_file() {
    let stack = Stack::new("idem").await;
    let csv = "S. No.,Product Name,Input Image Urls\n1,A,\"https://img.example/1.jpg,https://img.example/2.jpg\"\n";
    let upload = |body: String| {
        let req = http::Request::builder()
            .method("POST")
            .uri("/uploads")
            .header("content-type", "text/csv")
            .header("idempotency-key", "order-42")
            .body(lambda_http::Body::from(body))
            .unwrap();
        imgpipe_upload::handle(&stack.app, imgpipe_tests::authorized(&stack.app, req))
    };
    let (code, first) = imgpipe_tests::json_of(upload(csv.to_string()).await);
    assert_eq!(code, 202, "{first}");
    let (code, second) = imgpipe_tests::json_of(upload(csv.to_string()).await);
    assert_eq!(code, 202, "{second}");
    assert_eq!(first["requestId"], second["requestId"]);
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 1);
    assert_eq!(stack.request_data().count_documents(doc! {}).await.unwrap(), 1);
    assert_eq!(stack.queue_depth().await, 2, "a retried upload sends no second set of messages");

    let (code, body) = imgpipe_tests::json_of(upload(csv.replace("1.jpg", "9.jpg")).await);
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(stack.queue_depth().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_documents_and_messages_is_finished_by_the_retry() {
    let stack = Stack::new("crash").await;
    let csv = "S. No.,Product Name,Input Image Urls\n1,A,\"https://img.example/1.jpg,https://img.example/2.jpg\"\n2,B,https://img.example/3.jpg\n";
    let upload = || {
        let req = http::Request::builder()
            .method("POST")
            .uri("/uploads")
            .header("content-type", "text/csv")
            .header("idempotency-key", "crash-1")
            .body(lambda_http::Body::from(csv))
            .unwrap();
        imgpipe_upload::handle(&stack.app, imgpipe_tests::authorized(&stack.app, req))
    };
    stack.app.faults.arm("ingest.after_documents");
    let (code, body) = imgpipe_tests::json_of(upload().await);
    assert_eq!(code, 503, "{body}");
    let request = stack.requests().find_one(doc! {}).await.unwrap().expect("documents written before the crash");
    assert!(request.get("enqueuedAt").is_none());
    assert_eq!(stack.request_data().count_documents(doc! {}).await.unwrap(), 2);
    assert_eq!(stack.queue_depth().await, 0, "the crash came before any message");

    let (code, body) = imgpipe_tests::json_of(upload().await);
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["requestId"], request.get_str("requestId").unwrap());
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 1);
    assert_eq!(stack.request_data().count_documents(doc! {}).await.unwrap(), 2);
    assert_eq!(stack.queue_depth().await, 3);
    let request = stack.requests().find_one(doc! {}).await.unwrap().unwrap();
    assert!(request.get_datetime("enqueuedAt").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_upload_lands_in_incoming_and_gets_the_announced_request_id() {
    let stack = Stack::new("presign").await;
    let csv = "S. No.,Product Name,Input Image Urls\n1,A,https://img.example/1.jpg\n";
    let size = serde_json::json!({"size": csv.len()}).to_string();
    let req =
        http::Request::builder().method("POST").uri("/uploads/presign").body(lambda_http::Body::from(size)).unwrap();
    let (code, body) =
        imgpipe_tests::json_of(imgpipe_upload::handle(&stack.app, imgpipe_tests::authorized(&stack.app, req)).await);
    assert_eq!(code, 200, "{body}");
    let url = body["uploadUrl"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1"), "{url}");
    let key = body["key"].as_str().unwrap();
    assert!(key.starts_with("incoming/") && key.ends_with(".csv"));
    let put = reqwest::Client::new().put(url).header("content-type", "text/csv").body(csv).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let etag =
        put.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().trim_matches('"').to_string();
    let stored = stack.object(&stack.app.config.uploads_bucket, key).await;
    assert_eq!(stored.as_deref(), Some(csv.as_bytes()));

    dispatch(&stack, s3_event(&stack.app.config.uploads_bucket, key, &etag)).await;
    let (code, status) = stack.status(body["requestId"].as_str().unwrap()).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["counts"]["images"], 1);
}
