//! S3 drops on the local stack (issue 19): `aws s3 cp` (the AWS CLI from PyPI, in the stack's venv) into the
//! uploads bucket; the local S3 notifies the drops queue, and the local runner's drops loop (`imgpipe_local::drops`,
//! what `make local` runs) invokes the upload function's S3 handler with the `S3Event`. Nothing here builds an
//! event by hand: a file under `incoming/{tenant}/` becomes a request of that tenant that completes; one outside a
//! tenant prefix becomes none and a line in the runner's log; one over the drop limit a failed request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use imgpipe_core::bson::{Document, doc};
use imgpipe_tests::{ImageServer, Runner, Stack, TEST_TENANT, jpeg, photo};

/// Everything the tracing subscriber of this test process writes: the runner's log, as `make local` writes it.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the capturing subscriber before the harness's own (which then leaves it in place).
fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,imgpipe_local=info")
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
}

fn log_lines_with(needles: &[&str]) -> Vec<String> {
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    log.lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(str::to_string).collect()
}

/// The runner (one worker loop) and its drops loop on this stack; both stop when dropped.
struct Drops {
    _runner: Runner,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drops {
    async fn start(stack: &Stack) -> Self {
        let runner = Runner::start(stack, 1).await;
        let url = imgpipe_local::drops::provision(&stack.app.config, 2).await.expect("drops queue and notification");
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(imgpipe_local::drops::run(stack.app.clone(), stack.sqs.clone(), url, shutdown));
        Self { _runner: runner, stop }
    }
}

impl Drop for Drops {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The AWS CLI installed by `scripts/stack/install.sh`.
fn aws_cli() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let aws = root.join(".stack/venv/bin/aws");
    assert!(
        aws.is_file(),
        "{} missing: run `make stack` (scripts/stack/install.sh installs the AWS CLI)",
        aws.display()
    );
    aws
}

/// `aws s3 cp` of `body` to `s3://{uploads bucket}/{key}`, with the stack's endpoint and key pair and no user
/// configuration; fails the test unless the CLI succeeds within a minute.
async fn aws_s3_cp(stack: &Stack, key: &str, body: &[u8]) {
    let dir = std::env::temp_dir().join(format!("imgpipe-drops-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("products.csv");
    std::fs::write(&file, body).unwrap();
    // Path-style addressing, as for any S3-compatible server on an IP address.
    std::fs::write(dir.join("config"), "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n").unwrap();
    let target = format!("s3://{}/{key}", stack.app.config.uploads_bucket);
    let run = tokio::process::Command::new(aws_cli())
        .args(["--endpoint-url", stack.app.config.s3_endpoint.as_deref().unwrap(), "s3", "cp"])
        .arg(&file)
        .arg(&target)
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("aws s3 cp within 60 s").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "aws s3 cp to {target}: {text}");
}

/// Polls this stack's `Requests` until one matches `done`, within `limit`.
async fn wait_for_request(stack: &Stack, limit: Duration, done: impl Fn(&Document) -> bool) -> Document {
    let deadline = Instant::now() + limit;
    loop {
        let all: Vec<Document> =
            futures::TryStreamExt::try_collect(stack.requests().find(doc! {}).await.unwrap()).await.unwrap();
        if let Some(found) = all.iter().find(|r| done(r)) {
            return found.clone();
        }
        assert!(Instant::now() < deadline, "no such request within {limit:?}; requests: {all:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_s3_cp_into_a_tenant_prefix_makes_a_request_of_that_tenant_that_completes() {
    capture_logs();
    let stack = Stack::new("drops-cp").await;
    let images = ImageServer::start().await;
    let url = images.serve("/a.jpg", "image/jpeg", jpeg(&photo(120, 80, 1), 90));
    let _drops = Drops::start(&stack).await;

    let key = format!("incoming/{TEST_TENANT}/my products.csv");
    aws_s3_cp(&stack, &key, format!("S. No.,Product Name,Input Image Urls\n1,Hat,{url}\n").as_bytes()).await;
    let request =
        wait_for_request(&stack, Duration::from_secs(60), |r| r.get_str("status").ok() == Some("completed")).await;
    assert_eq!(request.get_str("tenantId").ok(), Some(TEST_TENANT), "{request}");
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 1);
    assert_eq!(images.hits_of("/a.jpg"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_file_outside_a_tenant_prefix_makes_no_request_and_a_log_line() {
    capture_logs();
    let stack = Stack::new("drops-no-tenant").await;
    let _drops = Drops::start(&stack).await;
    let bucket = stack.app.config.uploads_bucket.clone();

    aws_s3_cp(&stack, "incoming/x.csv", b"S. No.,Product Name,Input Image Urls\n1,Hat,https://img.example/a.jpg\n")
        .await;
    let needles = [bucket.as_str(), "incoming/x.csv", "outside incoming/{tenant}/; skipped"];
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_lines_with(&needles).is_empty() {
        assert!(Instant::now() < deadline, "no log line with {needles:?} within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log_lines_with(&needles)[0].contains("WARN"), "{:?}", log_lines_with(&needles));
    // The line is written after the handler decided: nothing of it can still appear.
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 0);
    assert_eq!(stack.keys(&bucket, "").await, ["incoming/x.csv"], "the file stays where it was dropped");
}

/// A valid CSV of one loopback image, padded with blank lines to exactly `size` bytes.
fn csv_of(size: usize, url: &str) -> Vec<u8> {
    let mut csv = format!("S. No.,Product Name,Input Image Urls\n1,Hat,{url}\n").into_bytes();
    csv.resize(size, b'\n');
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_file_over_a_1_mib_limit_is_a_failed_request_with_the_reason_and_one_at_it_completes() {
    capture_logs();
    let limit = 1024 * 1024;
    let stack = Stack::with("drops-limit", |c| c.max_dropped_csv_bytes = limit).await;
    let images = ImageServer::start().await;
    let url = images.serve("/a.jpg", "image/jpeg", jpeg(&photo(120, 80, 1), 90));
    let _drops = Drops::start(&stack).await;

    aws_s3_cp(&stack, &format!("incoming/{TEST_TENANT}/big.csv"), &csv_of(limit + 1, &url)).await;
    let failed =
        wait_for_request(&stack, Duration::from_secs(30), |r| r.get_str("status").ok() == Some("failed")).await;
    let reason = failed.get_array("errors").unwrap()[0].as_document().unwrap().get_str("message").unwrap();
    assert!(reason.starts_with(&format!("the file is {} bytes; the limit is {limit}", limit + 1)), "{reason}");

    aws_s3_cp(&stack, &format!("incoming/{TEST_TENANT}/edge.csv"), &csv_of(limit, &url)).await;
    wait_for_request(&stack, Duration::from_secs(60), |r| r.get_str("status").ok() == Some("completed")).await;
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 2);
    assert_eq!((images.hits_of("/a.jpg"), stack.dlq_depth().await), (1, 0));
}
