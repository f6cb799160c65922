//! Test harness: an isolated slice of the local stack per test (own database and queue), a local image server,
//! and helpers that drive the real handlers the way API Gateway and the SQS event source mapping do.
//!
//! The stack is started by `make test` (scripts/stack/start.sh); a test that cannot reach it fails, it never
//! skips.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use imgpipe_core::adapters::{aws_config, sqs::sqs_client};
use imgpipe_core::auth::{Scope, TenantId};
use imgpipe_core::bson::Document;
use imgpipe_core::domain::RequestId;
use imgpipe_core::ports::BlobStore;
use imgpipe_core::{App, Config};
use imgpipe_local::issuer::LocalIssuer;
use lambda_http::Body;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts the local stack and exports it")
    })
}

/// The tenant the tests act as, unless a test says otherwise.
pub const TEST_TENANT: &str = "tests";
/// [`TEST_TENANT`] as a tenant id.
pub fn test_tenant() -> TenantId {
    TenantId::parse(TEST_TENANT).unwrap()
}

/// Request `id` of [`TEST_TENANT`], as the ports take it.
pub fn test_key(id: &imgpipe_core::domain::RequestId) -> imgpipe_core::domain::RequestKey {
    imgpipe_core::domain::RequestKey::new(&test_tenant(), id)
}

/// The job of one image of request `id` of [`TEST_TENANT`], as the upload sends it.
pub fn test_job(
    id: &imgpipe_core::domain::RequestId,
    serial_number: i64,
    index: u32,
    url: imgpipe_core::domain::ImageUrl,
    shard: u32,
) -> imgpipe_core::domain::ImageJob {
    imgpipe_core::domain::ImageJob {
        schema: imgpipe_core::domain::ImageJob::SCHEMA,
        tenant: test_tenant(),
        request_id: id.clone(),
        serial_number,
        index,
        url,
        shard,
        also: Vec::new(),
    }
}

/// The scopes the harness's requests carry: everything but admin.
pub const TEST_SCOPES: &[Scope] = &[Scope::Upload, Scope::Read];

/// The local issuer the tests' runners trust, shared by every test of the process: its key is made once, under
/// the system's temporary directory, and reused by later runs.
pub fn issuer() -> Arc<LocalIssuer> {
    static ISSUER: std::sync::OnceLock<Arc<LocalIssuer>> = std::sync::OnceLock::new();
    ISSUER
        .get_or_init(|| {
            let dir = std::env::temp_dir().join("imgpipe-test-issuer");
            Arc::new(LocalIssuer::open(&dir, "http://127.0.0.1/imgpipe-tests", "imgpipe").expect("the test issuer"))
        })
        .clone()
}

/// A real access token of [`TEST_TENANT`] with [`TEST_SCOPES`], for requests over TCP to a runner started with
/// [`issuer`].
pub fn token() -> String {
    issuer().access_token(TEST_TENANT, TEST_SCOPES)
}

/// The `Authorization` header carrying [`token`].
pub fn authorization() -> String {
    format!("Bearer {}", token())
}

/// Resets this process's peak-RSS mark (`VmHWM`) to its current resident set and returns that (KiB), so that a
/// child process of a memory test measures only what follows (Linux ≥ 4.0: `5` written to `/proc/self/clear_refs`).
pub fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS (/proc/self/clear_refs)");
    imgpipe_core::telemetry::status_kib("VmRSS:").expect("VmRSS in /proc/self/status")
}

/// Who a direct handler call comes from: the tenant and scopes of the token API Gateway validated.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn new(tenant: &str, scopes: &[Scope]) -> Self {
        Self { tenant: TenantId::parse(tenant).unwrap(), scopes: scopes.to_vec() }
    }

    /// [`TEST_TENANT`] with [`TEST_SCOPES`].
    pub fn test() -> Self {
        Self::new(TEST_TENANT, TEST_SCOPES)
    }

    /// `req` with this caller's authorizer context.
    pub fn authorize(&self, app: &App, req: lambda_http::Request) -> lambda_http::Request {
        imgpipe_identity::as_caller(req, &app.config.tenant_claim, &self.tenant, &self.scopes)
    }
}

/// `req` with the authorizer context API Gateway passes on for [`TEST_TENANT`] with [`TEST_SCOPES`]: for direct
/// handler calls.
pub fn authorized(app: &App, req: lambda_http::Request) -> lambda_http::Request {
    Caller::test().authorize(app, req)
}

/// The local runner (`serve_api` and `run_worker`, what `make local` runs) on 127.0.0.1:<free port>, serving a
/// stack's app and trusting [`issuer`]'s tokens; stopped on drop.
pub struct Runner {
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub url: String,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Runner {
    pub async fn start(stack: &Stack, workers: usize) -> Self {
        Self::start_on(stack, workers, Self::listener().await).await
    }

    /// A listener on 127.0.0.1:<free port>, to know the runner's address before the stack's configuration is made
    /// (e.g. its `/cdn` as the output base URL).
    pub async fn listener() -> tokio::net::TcpListener {
        imgpipe_local::bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    /// [`Runner::start`] on `listener`.
    pub async fn start_on(stack: &Stack, workers: usize, listener: tokio::net::TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(imgpipe_local::serve_api(stack.app.clone(), issuer(), listener, shutdown.clone()));
        for _ in 0..workers {
            tokio::spawn(imgpipe_local::run_worker(stack.app.clone(), stack.sqs.clone(), shutdown.clone()));
        }
        if workers > 0 {
            tokio::spawn(imgpipe_local::run_webhooks(stack.app.clone(), stack.sqs.clone(), shutdown.clone()));
        }
        Self { addr, url: format!("http://{addr}"), stop }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One test's view of the stack: its own MongoDB database, SQS queue and buckets.
pub struct Stack {
    pub app: App,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub db: mongodb::Database,
    puts: Arc<Mutex<HashMap<String, usize>>>,
}

/// The real S3 adapter, counting the writes per key (to assert "written once").
struct CountingBlobs {
    inner: Arc<dyn BlobStore>,
    puts: Arc<Mutex<HashMap<String, usize>>>,
}

#[async_trait::async_trait]
impl BlobStore for CountingBlobs {
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> imgpipe_core::Result<()> {
        let result = self.inner.put(bucket, key, body, content_type).await;
        if result.is_ok() {
            *self.puts.lock().unwrap().entry(key.to_string()).or_default() += 1;
        }
        result
    }
    async fn get(&self, bucket: &str, key: &str) -> imgpipe_core::Result<Option<Vec<u8>>> {
        self.inner.get(bucket, key).await
    }
    async fn get_bounded(
        &self,
        bucket: &str,
        key: &str,
        max: u64,
        etag: Option<&str>,
    ) -> imgpipe_core::Result<imgpipe_core::ports::Bounded> {
        self.inner.get_bounded(bucket, key, max, etag).await
    }
    async fn presign_put(
        &self,
        bucket: &str,
        key: &str,
        ct: &str,
        len: u64,
        exp: Duration,
    ) -> imgpipe_core::Result<String> {
        self.inner.presign_put(bucket, key, ct, len, exp).await
    }
    async fn presign_get(&self, bucket: &str, key: &str, exp: Duration) -> imgpipe_core::Result<String> {
        self.inner.presign_get(bucket, key, exp).await
    }
    fn object_url(&self, bucket: &str, key: &str) -> String {
        self.inner.object_url(bucket, key)
    }
}

impl Stack {
    pub async fn new(test: &str) -> Self {
        Self::with(test, |_| {}).await
    }

    /// A stack whose configuration `adjust` may change (limits, quality…).
    pub async fn with(test: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        // Warnings and errors of the functions, shown with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let sqs_endpoint = required_env("IMGPIPE_SQS_ENDPOINT");
        // Defaults for everything else, exactly as the functions get them.
        let mut config: Config = serde_json::from_value(serde_json::json!({
            "mongodb_uri": required_env("IMGPIPE_MONGODB_URI"),
            "mongodb_database": format!("t_{}_{suffix}", test.replace('-', "_")),
            "uploads_bucket": format!("t-{suffix}-uploads"),
            "outputs_bucket": format!("t-{suffix}-outputs"),
            "queue_url": format!("{sqs_endpoint}/000000000000/t-{test}-{suffix}"),
            "region": "us-east-1",
            "s3_endpoint": required_env("IMGPIPE_S3_ENDPOINT"),
            "sqs_endpoint": sqs_endpoint,
            "fetch_timeout_ms": 5_000,
            "connect_timeout_ms": 1_000,
            "max_image_bytes": 20 * 1024 * 1024,
            "max_pixels": 40_000_000,
            "max_dimension": 10_000,
            "fetch_allow_cidrs": "127.0.0.0/8",
            "url_expiry_secs": 600,
            "max_csv_bytes": 5 * 1024 * 1024,
            "max_dropped_csv_bytes": 50 * 1024 * 1024,
            "max_rows": 20_000,
            "max_urls_per_row": 20,
            "webhook_secret": "test-webhook-secret",
            "webhook_queue_url": format!("{sqs_endpoint}/000000000000/t-{test}-{suffix}-webhooks"),
            // Webhook retries one second apart, so that tests see several attempts quickly.
            "webhook_backoff_secs": 1,
            "webhook_max_backoff_secs": 1,
        }))
        .expect("test configuration");
        adjust(&mut config);
        config.queue_url = imgpipe_local::provision(&config, 3, 2).await.expect("provision the local stack");
        let sdk = aws_config(&config).await;
        let sqs = sqs_client(&sdk, &config);
        let s3 = imgpipe_core::adapters::s3::S3Store::new(&sdk, &config).client().clone();
        let db = mongodb::Client::with_uri_str(config.mongodb_uri.expose())
            .await
            .unwrap()
            .database_with_options(&config.mongodb_database, imgpipe_core::adapters::mongo::database_options());
        let mut app = App::new(config).await.expect("app");
        let puts = Arc::new(Mutex::new(HashMap::new()));
        app.blobs = Arc::new(CountingBlobs { inner: app.blobs.clone(), puts: puts.clone() });
        imgpipe_core::adapters::mongo::migrate(&db).await.expect("indexes");
        // The test tenant is provisioned, as an operator's `imgpipe-admin tenant add` would (its dropped files
        // are ingested); other tenants are registered by their first upload.
        let now = imgpipe_core::domain::Timestamp::now();
        app.tenants.register_tenant(&test_tenant(), now).await.expect("register the test tenant");
        Self { app, sqs, s3, db, puts }
    }

    /// How many times the functions wrote `key` (any bucket) through the real S3 adapter.
    pub fn puts_of(&self, key: &str) -> usize {
        self.puts.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Messages waiting in this test's dead-letter queue.
    pub async fn dlq_depth(&self) -> usize {
        let name = format!("{}-dlq", imgpipe_local::queue_name(&self.app.config.queue_url));
        let url = self.sqs.get_queue_url().queue_name(name).send().await.expect("GetQueueUrl").queue_url.unwrap();
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .expect("GetQueueAttributes");
        attrs.attributes().and_then(|a| a.values().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn requests(&self) -> mongodb::Collection<Document> {
        self.db.collection("Requests")
    }

    pub fn request_data(&self) -> mongodb::Collection<Document> {
        self.db.collection("RequestData")
    }

    /// POSTs a CSV to the upload handler, as API Gateway would.
    pub async fn upload(&self, content_type: &str, body: impl Into<Vec<u8>>) -> (u16, serde_json::Value) {
        let req = http::Request::builder()
            .method("POST")
            .uri("/uploads")
            .header("content-type", content_type)
            .body(Body::from(body.into()))
            .unwrap();
        json_of(self.call_upload(&Caller::test(), req).await)
    }

    /// Sends `req` to the upload handler as `caller`.
    pub async fn call_upload(&self, caller: &Caller, req: http::Request<Body>) -> http::Response<Body> {
        imgpipe_upload::handle(&self.app, caller.authorize(&self.app, req)).await
    }

    /// GETs a path from the status handler.
    pub async fn get(&self, path_and_query: &str) -> (u16, Vec<u8>) {
        self.get_as(&Caller::test(), path_and_query).await
    }

    /// GETs a path from the status handler as `caller`.
    pub async fn get_as(&self, caller: &Caller, path_and_query: &str) -> (u16, Vec<u8>) {
        let resp = self.get_response(caller, path_and_query).await;
        (resp.status().as_u16(), resp.body().to_vec())
    }

    /// The status handler's whole answer (status, headers, body) to a GET of `path_and_query` by `caller`.
    pub async fn get_response(&self, caller: &Caller, path_and_query: &str) -> http::Response<Body> {
        let req = http::Request::builder().method("GET").uri(path_and_query).body(Body::Empty).unwrap();
        imgpipe_status::handle(&self.app, caller.authorize(&self.app, req)).await
    }

    pub async fn status(&self, id: &str) -> (u16, serde_json::Value) {
        let (code, body) = self.get(&format!("/requests/{id}")).await;
        (code, serde_json::from_slice(&body).expect("JSON body"))
    }

    /// Receives up to one batch from this test's queue (long poll of `wait` seconds).
    pub async fn receive(&self, wait: i32) -> Vec<aws_sdk_sqs::types::Message> {
        self.sqs
            .receive_message()
            .queue_url(&self.app.config.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .send()
            .await
            .expect("ReceiveMessage")
            .messages
            .unwrap_or_default()
    }

    /// Runs the worker handler on `messages` as one SQS batch; deletes the messages it did not report failed.
    /// Returns the ids of the failed ones.
    pub async fn work(&self, messages: &[aws_sdk_sqs::types::Message]) -> Vec<String> {
        let records = messages
            .iter()
            .map(|m| {
                let mut r = aws_lambda_events::event::sqs::SqsMessage::default();
                r.message_id = m.message_id().map(str::to_string);
                r.receipt_handle = m.receipt_handle().map(str::to_string);
                r.body = m.body().map(str::to_string);
                r
            })
            .collect();
        let response = imgpipe_worker::handle(&self.app, imgpipe_local::sqs_event(records)).await;
        let failed: Vec<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        let entries: Vec<_> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()))
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap())
                    .build()
                    .unwrap()
            })
            .collect();
        if !entries.is_empty() {
            self.sqs
                .delete_message_batch()
                .queue_url(&self.app.config.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("DeleteMessageBatch");
        }
        failed
    }

    /// Runs the webhook delivery handler on this test's webhook queue, as its event source mapping does, until the
    /// queue holds no message (visible, in flight or delayed), within `deadline`. Returns how many messages it
    /// handed to the handler.
    pub async fn deliver_webhooks(&self, deadline: Duration) -> usize {
        use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
        let url = self.app.config.webhook_queue_url.clone().expect("the test stack has a webhook queue");
        let start = Instant::now();
        let mut handled = 0;
        loop {
            assert!(start.elapsed() < deadline, "webhook queue not drained within {deadline:?}");
            let attrs = self
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .expect("GetQueueAttributes");
            let depth: usize = attrs
                .attributes()
                .map(|a| a.values().filter_map(|v| v.parse::<usize>().ok()).sum())
                .unwrap_or_default();
            if depth == 0 {
                return handled;
            }
            let out = self
                .sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("ReceiveMessage");
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                continue;
            }
            handled += messages.len();
            let records = messages.iter().map(|m| imgpipe_local::to_event_message(m, "arn:webhooks")).collect();
            let response = imgpipe_webhook::handle(&self.app, imgpipe_local::sqs_event(records)).await;
            for m in &messages {
                if !response.batch_item_failures.iter().any(|f| Some(f.item_identifier.as_str()) == m.message_id()) {
                    let receipt = m.receipt_handle().unwrap_or_default();
                    self.sqs
                        .delete_message()
                        .queue_url(&url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                        .expect("DeleteMessage");
                }
            }
        }
    }

    /// Works the queue until it holds no message at all (waiting, in flight or delayed: a message a failed
    /// delivery left invisible counts until it is redelivered and worked, or dead-lettered), returning every
    /// message body that was processed successfully. Fails the test if that takes longer than `deadline`.
    pub async fn drain(&self, deadline: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut bodies = Vec::new();
        loop {
            let messages = self.receive(1).await;
            if messages.is_empty() {
                if self.queue_depth().await == 0 {
                    return bodies;
                }
            } else {
                let failed = self.work(&messages).await;
                bodies.extend(
                    messages
                        .iter()
                        .filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()))
                        .filter_map(|m| m.body().map(str::to_string)),
                );
            }
            assert!(
                start.elapsed() < deadline,
                "queue not drained within {deadline:?}: {} left",
                self.queue_depth().await
            );
        }
    }

    /// Receives at least `n` messages (without working or deleting them); fails the test if they do not arrive
    /// within 20 s.
    pub async fn take_messages(&self, n: usize) -> Vec<aws_sdk_sqs::types::Message> {
        let deadline = Duration::from_secs(20);
        let start = Instant::now();
        let mut messages = Vec::new();
        while messages.len() < n {
            assert!(start.elapsed() < deadline, "only {} of {n} messages arrived within {deadline:?}", messages.len());
            messages.extend(self.receive(1).await);
        }
        messages
    }

    /// Receives `n` messages and deletes them, returning their bodies (to deliver them by hand).
    pub async fn take_bodies(&self, n: usize) -> Vec<String> {
        let messages = self.take_messages(n).await;
        for m in &messages {
            self.sqs
                .delete_message()
                .queue_url(&self.app.config.queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .expect("DeleteMessage");
        }
        messages.iter().map(|m| m.body().unwrap().to_string()).collect()
    }

    /// The request's `Requests` document as stored, read from MongoDB directly. Tests read it (and S3) before
    /// calling the status API, so that nothing the API might do on a read can hide what the worker left undone.
    pub async fn stored_request(&self, id: &str) -> Document {
        let found = self.requests().find_one(imgpipe_core::bson::doc! {"requestId": id}).await.expect("find request");
        found.unwrap_or_else(|| panic!("request {id} is not stored"))
    }

    /// Reads an object from S3.
    pub async fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = self.s3.get_object().bucket(bucket).key(key).send().await.ok()?;
        Some(out.body.collect().await.ok()?.to_vec())
    }

    /// Every key under `prefix` in `bucket`, sorted (ListObjectsV2 returns at most 1,000 keys a page: this
    /// follows the continuation tokens to the end).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        for _page in 0..10_000 {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .expect("ListObjectsV2");
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => {
                    keys.sort();
                    return keys;
                }
            }
        }
        panic!("{bucket}/{prefix}: more than 10,000 pages of keys");
    }

    /// Messages in this test's queue: waiting, in flight (received, not yet deleted) and delayed, as SQS reports
    /// them (exact on ElasticMQ; approximate on AWS).
    pub async fn queue_depth(&self) -> usize {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.app.config.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("GetQueueAttributes");
        attrs.attributes().map(|a| a.values().filter_map(|v| v.parse::<usize>().ok()).sum()).unwrap_or_default()
    }
}

/// Status code and parsed JSON body of a handler response.
pub fn json_of(resp: http::Response<Body>) -> (u16, serde_json::Value) {
    let code = resp.status().as_u16();
    let body = serde_json::from_slice(resp.body().as_ref()).unwrap_or(serde_json::Value::Null);
    (code, body)
}

pub fn request_id(body: &serde_json::Value) -> RequestId {
    RequestId::parse(body["requestId"].as_str().expect("requestId in body")).unwrap()
}

pub use imgpipe_local::samples::{jpeg, photo, png};

/// One canned response of the image server.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// A misbehaving answer of the image server (see [`ImageServer::redirect`], [`ImageServer::stall`], …).
#[derive(Clone)]
enum Special {
    /// `302 Found` to `location`.
    Redirect { location: String },
    /// Headers and `prefix` of a body that never ends (with `content_length`, if given, announced), or, without
    /// headers, no answer at all; released when the server is dropped.
    Stall { headers: bool, content_length: Option<u64>, prefix: Vec<u8> },
    /// `body` sent chunked (no `Content-Length`), in 16 KiB pieces.
    Chunked { content_type: &'static str, body: Vec<u8> },
}

/// Requests for `paths` are held until `needed` of them have arrived (see [`ImageServer::hold_until`]).
struct Gate {
    paths: Vec<String>,
    needed: usize,
    arrived: tokio::sync::watch::Sender<usize>,
}

/// How long a held request waits for the others before it is answered anyway (the test then sees, from the hit
/// counts, that the requests it expected never came).
const GATE_DEADLINE: Duration = Duration::from_secs(10);

/// A local HTTP server on 127.0.0.1 serving canned responses by path, counting the requests it receives.
pub struct ImageServer {
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Canned>>>,
    specials: Arc<Mutex<HashMap<String, Special>>>,
    gate: Arc<Mutex<Option<Gate>>>,
    hits: Arc<AtomicUsize>,
    path_hits: Arc<Mutex<HashMap<String, usize>>>,
    released: tokio::sync::watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ImageServer {
    pub async fn start() -> Self {
        let routes: Arc<Mutex<HashMap<String, Canned>>> = Arc::default();
        let specials: Arc<Mutex<HashMap<String, Special>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let path_hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let gate: Arc<Mutex<Option<Gate>>> = Arc::default();
        let (released, release) = tokio::sync::watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (r, sp, h, ph, g) = (routes.clone(), specials.clone(), hits.clone(), path_hits.clone(), gate.clone());
        let router = axum::Router::new().fallback(move |uri: http::Uri| {
            let (r, sp, h, ph, g, release) = (r.clone(), sp.clone(), h.clone(), ph.clone(), g.clone(), release.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                *ph.lock().unwrap().entry(uri.path().to_string()).or_default() += 1;
                let held = g.lock().unwrap().as_ref().filter(|g| g.paths.iter().any(|p| p == uri.path())).map(|g| {
                    g.arrived.send_modify(|n| *n += 1);
                    (g.arrived.subscribe(), g.needed)
                });
                if let Some((mut arrived, needed)) = held {
                    let _ = tokio::time::timeout(GATE_DEADLINE, arrived.wait_for(|n| *n >= needed)).await;
                }
                let special = sp.lock().unwrap().get(uri.path()).cloned();
                if let Some(special) = special {
                    return special_response(special, release).await;
                }
                let canned = r.lock().unwrap().get(uri.path()).cloned();
                match canned {
                    Some(c) => http::Response::builder()
                        .status(c.status)
                        .header("content-type", c.content_type)
                        .body(axum::body::Body::from(c.body))
                        .unwrap(),
                    None => http::Response::builder().status(404).body(axum::body::Body::from("not found")).unwrap(),
                }
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self { addr, routes, specials, gate, hits, path_hits, released, stop: Some(stop) }
    }

    /// From now on, holds every request for one of `paths` until `needed` such requests have arrived, then
    /// answers them all: the requests were provably in flight at the same time (a race a test wants to happen,
    /// not hope for). A held request is answered anyway after 10 s, so a request that never comes shows as a
    /// missing hit instead of a hang. Replaces the previous gate.
    pub fn hold_until(&self, needed: usize, paths: &[&str]) {
        let paths = paths.iter().map(|p| p.to_string()).collect();
        *self.gate.lock().unwrap() = Some(Gate { paths, needed, arrived: tokio::sync::watch::channel(0).0 });
    }

    /// Serves `body` at `path` and returns its URL.
    pub fn serve(&self, path: &str, content_type: &'static str, body: Vec<u8>) -> String {
        self.serve_status(path, 200, content_type, body)
    }

    pub fn serve_status(&self, path: &str, status: u16, content_type: &'static str, body: Vec<u8>) -> String {
        self.specials.lock().unwrap().remove(path);
        self.routes.lock().unwrap().insert(path.to_string(), Canned { status, content_type, body });
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests received for `path`.
    pub fn hits_of(&self, path: &str) -> usize {
        self.path_hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn special(&self, path: &str, special: Special) -> String {
        self.routes.lock().unwrap().remove(path);
        self.specials.lock().unwrap().insert(path.to_string(), special);
        format!("http://{}{path}", self.addr)
    }

    /// Answers `path` with `302 Found` to `location` (a path of this server, or a full URL).
    pub fn redirect(&self, path: &str, location: &str) -> String {
        let location =
            if location.starts_with('/') { format!("http://{}{location}", self.addr) } else { location.to_string() };
        self.special(path, Special::Redirect { location })
    }

    /// Accepts requests for `path` and never answers (until the server is dropped).
    pub fn stall(&self, path: &str) -> String {
        self.special(path, Special::Stall { headers: false, content_length: None, prefix: Vec::new() })
    }

    /// Answers `path` with `200`, announces `content_length` bytes, sends `prefix` and then nothing more.
    pub fn stall_body(&self, path: &str, content_length: u64, prefix: Vec<u8>) -> String {
        self.special(path, Special::Stall { headers: true, content_length: Some(content_length), prefix })
    }

    /// Serves `body` at `path` chunked, without `Content-Length` (so a size cap must count while streaming).
    pub fn serve_chunked(&self, path: &str, content_type: &'static str, body: Vec<u8>) -> String {
        self.special(path, Special::Chunked { content_type, body })
    }
}

async fn special_response(
    special: Special,
    mut release: tokio::sync::watch::Receiver<bool>,
) -> http::Response<axum::body::Body> {
    match special {
        Special::Redirect { location } => http::Response::builder()
            .status(302)
            .header("location", location)
            .body(axum::body::Body::from("moved"))
            .unwrap(),
        Special::Stall { headers: false, .. } => {
            let _ = release.wait_for(|r| *r).await;
            http::Response::builder().status(503).body(axum::body::Body::from("released")).unwrap()
        }
        Special::Stall { content_length, prefix, .. } => {
            let head = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes_of(prefix)) });
            let tail = futures::stream::once(async move {
                let _ = release.wait_for(|r| *r).await;
                Err::<axum::body::Bytes, _>(std::io::Error::other("released"))
            });
            let mut response = http::Response::builder().status(200).header("content-type", "image/jpeg");
            if let Some(n) = content_length {
                response = response.header("content-length", n);
            }
            response.body(axum::body::Body::from_stream(futures::StreamExt::chain(head, tail))).unwrap()
        }
        Special::Chunked { content_type, body } => {
            let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> =
                body.chunks(16 * 1024).map(|c| Ok(bytes_of(c.to_vec()))).collect();
            http::Response::builder()
                .status(200)
                .header("content-type", content_type)
                .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
                .unwrap()
        }
    }
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        let _ = self.released.send(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP proxy on 127.0.0.1 in front of a real server, which a test can take down (connections refused, open
/// ones cut) and bring back up on the same port: a server outage without losing the server's data.
pub struct Outage {
    pub port: u16,
    upstream: SocketAddr,
    state: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Outage {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self { port, upstream, state: Arc::default(), conns: Arc::default() };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (upstream, conns) = (self.upstream, self.conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(conn.abort_handle());
            }
        });
        *self.state.lock().unwrap() = Some(task);
    }

    /// The server "stops": the port refuses connections and open connections are cut.
    pub fn down(&self) {
        if let Some(task) = self.state.lock().unwrap().take() {
            task.abort();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    /// The server is back on the same port.
    pub async fn up(&self) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    // Polling (with the deadline above) until the old listener's port is free again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        self.serve(listener);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.down();
    }
}

/// The host:port of a URL or MongoDB URI (`scheme://host:port/...`).
pub fn socket_of(uri: &str) -> SocketAddr {
    let rest = uri.split("://").nth(1).unwrap_or(uri);
    let host_port = rest.split(['/', '?']).next().unwrap();
    host_port.parse().unwrap_or_else(|_| panic!("{uri}: expected an IP:port"))
}

/// An S3 `ObjectCreated:Put` notification for `key`, shaped like the real ones (key URL-encoded).
pub fn s3_event(bucket: &str, key: &str, etag: &str) -> serde_json::Value {
    let encoded: String = url_encode_key(key);
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:EXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "I"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "incoming-csv",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": encoded, "size": 100, "eTag": etag, "sequencer": "0A1B2C3D4E5F678901"}}
    }]})
}

/// S3 event keys are URL-encoded with `+` for spaces.
fn url_encode_key(key: &str) -> String {
    key.split(' ').map(|part| part.replace(',', "%2C")).collect::<Vec<_>>().join("+")
}
