//! Every file in `events/` goes through the handler its trigger invokes on AWS, against the local stack, so the
//! events used with `cargo lambda invoke` and `sam local invoke` cannot rot.
//!
//! The files chain: `upload-s3-put.json` ingests `events/s3-objects/incoming/{FILE_TENANT}/Spring catalogue (v2).csv`
//! as the request `REQUEST_ID` of that tenant (derived from tenant, bucket, key and ETag, as on AWS), `worker-sqs-batch.json` carries that
//! request's two image jobs, and the `status-*` events read it. Only the bucket names and the image server's port
//! are rewritten to this test's; the request id is recomputed from the rewritten bucket.
//!
//! A file added to `events/` without an entry in [`EVENTS`] fails the test.

use std::path::{Path, PathBuf};

use aws_lambda_events::event::sqs::SqsEvent;
use imgpipe_core::auth::TenantId;
use imgpipe_core::domain::dropped_request_id;
use imgpipe_tests::{ImageServer, Stack, jpeg, photo};
use lambda_http::request::LambdaRequest;
use serde_json::Value;

/// Every event file, in the order the test runs them (a request is ingested before its images and its status).
const EVENTS: &[&str] = &[
    "upload-api-csv.json",
    "upload-api-multipart.json",
    "upload-api-presign.json",
    "upload-s3-put.json",
    "worker-sqs-batch.json",
    "status-api-get.json",
    "status-api-get-alias.json",
    "status-api-output-csv.json",
    "webhook-sqs-batch.json",
    "sweeper-schedule.json",
];

/// Folders of `events/` that hold data the events refer to, not events.
const DATA_DIRS: &[&str] = &["s3-objects"];

/// The request the S3 event creates in the bucket its file names; the SQS and status events refer to it.
const REQUEST_ID: &str = "bc90c9b8-50d0-56db-b4cc-2779b1017894";
/// The tenant of the files: the `client_id` claim of the API events' authorizer context, and the S3 key's prefix
/// (`incoming/{tenant}/`). The API uploads run first and register it, as a tenant's first upload does on AWS.
const FILE_TENANT: &str = "1example23456789abcdefghij";
/// Bucket and image host:port written in the files (the local stack's defaults and the demo's image server).
const FILE_BUCKET: &str = "imgpipe-uploads";
const FILE_IMAGE_HOST: &str = "127.0.0.1:8089";

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// The event files on disk, in [`EVENTS`] order; panics on a file the test does not know.
fn event_files() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(events_dir()).expect("events/ exists") {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            assert!(DATA_DIRS.contains(&name.as_str()), "events/{name}/ is not a known data folder ({DATA_DIRS:?})");
            continue;
        }
        assert!(
            EVENTS.contains(&name.as_str()),
            "events/{name} is not exercised: add it to EVENTS in tests/tests/events.rs with the handler it goes to"
        );
        names.push(name);
    }
    for known in EVENTS {
        assert!(names.iter().any(|n| n == known), "events/{known} is listed in EVENTS but missing");
    }
    names.sort_by_key(|n| EVENTS.iter().position(|e| e == n));
    names
}

/// What every file is rewritten with before it is handled.
struct Rewrite {
    bucket: String,
    image_host: String,
    request_id: String,
}

impl Rewrite {
    fn apply(&self, text: &str) -> String {
        text.replace(FILE_BUCKET, &self.bucket)
            .replace(FILE_IMAGE_HOST, &self.image_host)
            .replace(REQUEST_ID, &self.request_id)
    }

    fn load(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(events_dir().join(name)).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("events/{name}: {e}"));
        serde_json::from_str(&self.apply(&value.to_string())).unwrap()
    }
}

/// The S3 event's one record: bucket, decoded key and ETag.
fn s3_object(event: &Value) -> (String, String, String) {
    let s3 = &event["Records"][0]["s3"];
    let key = imgpipe_upload::s3::decode_key(s3["object"]["key"].as_str().unwrap());
    (s3["bucket"]["name"].as_str().unwrap().into(), key, s3["object"]["eTag"].as_str().unwrap().into())
}

/// An API Gateway HTTP API (payload 2.0) response as the upload function returns it: status and JSON body.
fn api_response(name: &str, response: &Value) -> (u64, Value) {
    let code = response["statusCode"].as_u64().unwrap_or_else(|| panic!("{name}: no statusCode in {response}"));
    let body = response["body"].as_str().map(|b| serde_json::from_str(b).unwrap_or(Value::Null));
    (code, body.unwrap_or(Value::Null))
}

async fn invoke_upload(stack: &Stack, name: &str, event: Value) -> Value {
    imgpipe_upload::s3::handle_event(&stack.app, event, lambda_http::Context::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: the upload function failed: {e}"))
}

/// Runs an API Gateway event through the status function, the way lambda_http hands it over on AWS.
async fn invoke_status(stack: &Stack, name: &str, event: Value) -> (u16, String, Vec<u8>) {
    let request: LambdaRequest = serde_json::from_value(event).unwrap_or_else(|e| panic!("{name}: {e}"));
    let response = imgpipe_status::handle(&stack.app, lambda_http::Request::from(request)).await;
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (response.status().as_u16(), content_type, response.body().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_file_runs_through_its_handler() {
    let stack = Stack::new("events").await;
    let images = ImageServer::start().await;
    images.serve("/shirt-front.jpg", "image/jpeg", jpeg(&photo(640, 480, 1), 90));
    images.serve("/shirt-back.jpg", "image/jpeg", jpeg(&photo(480, 640, 2), 90));

    // The files' request id is the one the S3 event creates in the files' bucket (what `cargo lambda invoke` sees).
    let files =
        Rewrite { bucket: FILE_BUCKET.into(), image_host: FILE_IMAGE_HOST.into(), request_id: REQUEST_ID.into() };
    let (file_bucket, key, etag) = s3_object(&files.load("upload-s3-put.json"));
    let tenant = TenantId::parse(FILE_TENANT).unwrap();
    assert_eq!(file_bucket, FILE_BUCKET);
    assert_eq!(
        dropped_request_id(&tenant, FILE_BUCKET, &key, &etag).as_str(),
        REQUEST_ID,
        "the SQS and status events must refer to the request upload-s3-put.json creates"
    );
    let _ = etag;
    let bucket = stack.app.config.uploads_bucket.clone();
    // The object the S3 event names, with this test's image server in it: its ETag is the event's (the upload
    // function reads the object only while its ETag is the event's), and the request id follows from it.
    let image_host = images.addr.to_string();
    let csv = std::fs::read_to_string(events_dir().join("s3-objects").join(&key))
        .unwrap_or_else(|e| panic!("the object upload-s3-put.json names is events/s3-objects/{key}: {e}"))
        .replace(FILE_IMAGE_HOST, &image_host);
    let put = stack.s3.put_object().bucket(&bucket).key(&key).body(csv.into_bytes().into()).send().await;
    let etag = put.expect("PutObject").e_tag().unwrap_or_default().trim_matches('"').to_string();
    let request_id = dropped_request_id(&tenant, &bucket, &key, &etag).to_string();
    let rewrite = Rewrite { bucket: bucket.clone(), image_host, request_id: request_id.clone() };

    // Before the request exists its status is a 404 in the single error shape.
    let (code, _, body) = invoke_status(&stack, "status-api-get.json", rewrite.load("status-api-get.json")).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");

    let names = event_files();
    for name in &names {
        let event = rewrite.load(name);
        match name.as_str() {
            "upload-api-csv.json" | "upload-api-multipart.json" => {
                let (code, body) = api_response(name, &invoke_upload(&stack, name, event).await);
                assert_eq!(code, 202, "{name}: {body}");
                assert_eq!(
                    (body["totalProducts"].as_u64(), body["totalImages"].as_u64()),
                    (Some(2), Some(4)),
                    "{name}"
                );
                assert_eq!(body["status"], "pending", "{name}: {body}");
            }
            "upload-api-presign.json" => {
                let (code, body) = api_response(name, &invoke_upload(&stack, name, event).await);
                assert_eq!(code, 200, "{name}: {body}");
                assert_eq!(body["method"], "PUT", "{name}: {body}");
                assert!(body["key"].as_str().unwrap().starts_with("incoming/"), "{name}: {body}");
                assert!(body["uploadUrl"].as_str().unwrap().contains(&bucket), "{name}: {body}");
            }
            "upload-s3-put.json" => {
                let mut event = event;
                let (event_bucket, event_key, _) = s3_object(&event);
                assert_eq!((event_bucket.as_str(), event_key.as_str()), (bucket.as_str(), key.as_str()));
                assert_eq!(
                    key,
                    format!("incoming/{FILE_TENANT}/Spring catalogue (v2).csv"),
                    "the key is URL-encoded in the event"
                );
                event["Records"][0]["s3"]["object"]["eTag"] = etag.clone().into();
                let out = invoke_upload(&stack, name, event).await;
                assert_eq!(out["ingested"], 1, "{name}: {out}");
                let stored = stack.stored_request(request_id.as_str()).await;
                assert_eq!(stored.get_str("tenantId").unwrap(), FILE_TENANT, "{name}: {stored:?}");
                assert_eq!(stored.get_i64("totalImages").unwrap(), 2, "{name}: {stored:?}");
            }
            "worker-sqs-batch.json" => {
                let event: SqsEvent = serde_json::from_value(event).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(event.records.len(), 2, "{name}");
                let response = imgpipe_worker::handle(&stack.app, event).await;
                assert!(response.batch_item_failures.is_empty(), "{name}: {:?}", response.batch_item_failures);
                assert_eq!(images.hits(), 2, "{name}: each image fetched once");
                // The worker finished the request itself (read before the status events below run).
                let stored = stack.stored_request(request_id.as_str()).await;
                assert_eq!(stored.get_str("status").unwrap(), "completed", "{name}: {stored:?}");
            }
            "status-api-get.json" | "status-api-get-alias.json" => {
                let (code, content_type, body) = invoke_status(&stack, name, event).await;
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(code, 200, "{name}: {body}");
                assert!(content_type.starts_with("application/json"), "{name}: {content_type}");
                assert_eq!(body["requestId"], request_id.as_str(), "{name}");
                assert_eq!(body["status"], "completed", "{name}: {body}");
                assert_eq!(body["counts"]["succeeded"], 2, "{name}: {body}");
            }
            "status-api-output-csv.json" => {
                let (code, content_type, body) = invoke_status(&stack, name, event).await;
                let csv = String::from_utf8(body).unwrap();
                assert_eq!(code, 200, "{name}: {csv}");
                assert!(content_type.starts_with("text/csv"), "{name}: {content_type}");
                let mut reader = csv::Reader::from_reader(csv.as_bytes());
                let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
                assert_eq!(header[..4], ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"], "{name}");
                let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
                assert_eq!(rows.len(), 1, "{name}: {csv}");
                assert_eq!(&rows[0][1], "Oxford shirt, blue", "{name}");
                let outputs: Vec<&str> = rows[0][3].split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
                assert_eq!(outputs.len(), 2, "{name}: one output URL per input image: {csv}");
            }
            "webhook-sqs-batch.json" => {
                // A delivery of the request the S3 event created, which has no webhook: read, then dropped.
                let event: SqsEvent = serde_json::from_value(event).unwrap_or_else(|e| panic!("{name}: {e}"));
                let response = imgpipe_webhook::handle(&stack.app, event).await;
                assert!(response.batch_item_failures.is_empty(), "{name}: {:?}", response.batch_item_failures);
            }
            "sweeper-schedule.json" => {
                // EventBridge Scheduler's input is ignored; everything here is young and in order.
                let report = imgpipe_sweeper::handle(&stack.app).await.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!((report.resumed, report.finalised, report.errors), (0, 0, 0), "{name}: {report:?}");
            }
            other => panic!("events/{other} is in EVENTS but has no handler in this test"),
        }
    }
    assert_eq!(names.len(), EVENTS.len());
}
