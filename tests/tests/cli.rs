//! The `imgpipe` command-line client (crate `cli/`), run as a real process against the local runner started
//! in-process here (the same `serve_api` and `run_worker` as `make local`) on this test's isolated stack.
//!
//! The binary is built once per test run with `cargo build --workspace --bin imgpipe` (binaries of other packages
//! are not built by `cargo test`; `--workspace` gives it the test build's features, as scripts/bins.sh explains, so
//! no dependency is compiled again), and its path is taken from cargo's own JSON messages.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use imgpipe_core::auth::{Scope, TenantId};
use imgpipe_core::bson::doc;
use imgpipe_core::domain::{RequestId, presigned_upload_key};
use imgpipe_tests::{ImageServer, Runner, Stack, jpeg, photo, png, s3_event, test_key};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// How long one CLI run may take before the test fails (and the process is killed).
const CLI_DEADLINE: Duration = Duration::from_secs(120);

/// Builds the CLI once and returns the path of its executable.
fn cli_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let log = std::env::temp_dir().join(format!("imgpipe-cli-build-{}.json", uuid::Uuid::new_v4().simple()));
        let mut child = std::process::Command::new(cargo)
            .args(["build", "-q", "--locked", "--workspace", "--bin", "imgpipe", "--message-format=json"])
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run cargo build --bin imgpipe");
        let deadline = Instant::now() + Duration::from_secs(900);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("cargo build --bin imgpipe did not finish within 15 minutes");
            }
            // Polling the build (bounded by the deadline above).
            std::thread::sleep(Duration::from_millis(200));
        };
        let messages = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert!(status.success(), "cargo build --bin imgpipe failed");
        let exe = messages
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "imgpipe")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the imgpipe executable");
        assert!(exe.is_file(), "{}", exe.display());
        exe
    })
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("imgpipe-cli-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn command(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(cli_binary());
    // A token of the test tenant; no token endpoint; a token cache in the scratch directory, never the user's.
    cmd.args(args)
        .current_dir(dir)
        .env_remove("IMGPIPE_API_URL")
        .env("IMGPIPE_TOKEN", imgpipe_tests::token())
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("IMGPIPE_TOKEN_URL")
        .env_remove("IMGPIPE_CLIENT_ID")
        .env_remove("IMGPIPE_CLIENT_SECRET")
        .env_remove("IMGPIPE_SCOPE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `imgpipe ARGS` in `dir` (stdout is a pipe: the non-interactive output) and waits, bounded.
async fn imgpipe(dir: &Path, args: &[&str]) -> Run {
    finish(&mut command(dir, args)).await
}

/// Runs a prepared `imgpipe` command and waits, bounded.
async fn finish(cmd: &mut tokio::process::Command) -> Run {
    let out = tokio::time::timeout(CLI_DEADLINE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {CLI_DEADLINE:?}"))
        .expect("run imgpipe");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = reader.headers().unwrap().iter().map(str::to_string).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect();
    (headers, rows)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_download_and_status_of_a_completed_request() {
    cli_binary();
    let stack = Stack::new("cli-ok").await;
    let server = ImageServer::start().await;
    let runner = Runner::start(&stack, 2).await;
    let scratch = Scratch::new();
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(320, 240, 1), 95));
    let b = server.serve("/b.png", "image/png", png(&image::DynamicImage::ImageRgb8(photo(200, 150, 2))));
    let c = server.serve("/c.jpg", "image/jpeg", jpeg(&photo(256, 256, 3), 95));
    let hook = server.serve("/hook", "text/plain", Vec::new());
    let csv = scratch.write(
        "products.csv",
        &format!("S. No.,Product Name,Input Image Urls\n1,\"Shirt, blue\",\"{a},{b}\"\n2,Shoe,{c}\n"),
    );
    let csv = csv.to_str().unwrap();
    let api = ["--api-url", runner.url.as_str()];

    let run = imgpipe(
        &scratch.0,
        &[
            &["submit", csv, "--wait", "--out", "result.csv", "--interval-ms", "100", "--timeout-secs", "90"][..],
            &["--idempotency-key", "cli-ok-1", "--webhook", &hook],
            &api,
        ]
        .concat(),
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    let id = first_line(&run.stdout).to_string();
    RequestId::parse(&id).unwrap_or_else(|_| panic!("the first line is the request id: {run}"));
    assert!(run.stderr.contains("accepted: 2 products, 3 images"), "{run}");
    // stdout is a pipe: plain progress lines, no bar.
    assert!(run.stdout.lines().any(|l| l == "completed 3/3 images, 0 failed"), "{run}");
    assert!(!run.stdout.contains('\r') && !run.stdout.contains('\u{1b}'), "no terminal control codes: {run}");
    assert!(run.stdout.contains("output CSV written to result.csv"), "{run}");

    let (headers, rows) = csv_rows(&scratch.0.join("result.csv"));
    assert_eq!(headers, ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls", "Errors"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][..3], ["1", "Shirt, blue", format!("{a},{b}").as_str()]);
    assert_eq!(rows[1][..3], ["2", "Shoe", c.as_str()]);
    let outputs: Vec<&str> = rows.iter().flat_map(|r| r[3].split(',')).collect();
    assert_eq!(outputs.len(), 3);
    assert!(outputs.iter().all(|u| u.contains(&format!("outputs/tests/{id}/"))), "{outputs:?}");
    assert!(rows.iter().all(|r| r[4].is_empty()), "{rows:?}");
    let first = reqwest::get(outputs[0]).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(image::guess_format(&first.bytes().await.unwrap()).unwrap(), image::ImageFormat::Jpeg);

    // The webhook named on the command line was called.
    let start = Instant::now();
    loop {
        let request = stack.requests().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
        let state = request.get_document("webhook").ok().and_then(|w| w.get_str("state").ok().map(str::to_string));
        if state.as_deref() == Some("delivered") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "webhook not delivered: {request:?}");
        // Polling interval (bounded by the deadline above).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // status: the human summary and the JSON.
    let run = imgpipe(&scratch.0, &[&["status", id.as_str()][..], &api].concat()).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains(&format!("request    {id}")), "{run}");
    assert!(run.stdout.contains("status     completed"), "{run}");
    assert!(run.stdout.contains("images     3/3 processed (100.0%): 3 succeeded, 0 failed"), "{run}");
    assert!(run.stdout.contains("products   2"), "{run}");
    assert!(run.stdout.contains("created    20"), "{run}");
    assert!(!run.stdout.contains("completed  -"), "completedAt is set: {run}");
    let run = imgpipe(&scratch.0, &[&["status", id.as_str(), "--json"][..], &api].concat()).await;
    assert_eq!(run.code, 0, "{run}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("--json prints JSON");
    assert_eq!(
        json["counts"],
        serde_json::json!({"products": 2, "images": 3, "processed": 3, "succeeded": 3, "failed": 0})
    );

    // download: the same rows (the presigned URLs are fresh, so only the inputs are compared).
    let run = imgpipe(&scratch.0, &[&["download", id.as_str(), "-o", "again.csv"][..], &api].concat()).await;
    assert_eq!(run.code, 0, "{run}");
    let (_, again) = csv_rows(&scratch.0.join("again.csv"));
    assert_eq!(
        again.iter().map(|r| r[..3].to_vec()).collect::<Vec<_>>(),
        rows.iter().map(|r| r[..3].to_vec()).collect::<Vec<_>>()
    );
    let run = imgpipe(&scratch.0, &[&["download", id.as_str()][..], &api].concat()).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(scratch.0.join(format!("{id}.csv")).is_file(), "default name <requestId>.csv: {run}");

    // The same Idempotency-Key and file: the same request, nothing sent twice.
    let run = imgpipe(&scratch.0, &[&["submit", csv, "--idempotency-key", "cli-ok-1"][..], &api].concat()).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout.trim(), id, "{run}");
    assert_eq!(server.hits(), 4, "3 images and 1 webhook call, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_csv_exits_2_and_prints_every_row_error() {
    cli_binary();
    let stack = Stack::new("cli-bad").await;
    let runner = Runner::start(&stack, 1).await;
    let scratch = Scratch::new();
    let bad = "S. No.,Product Name,Input Image Urls\nx,A,https://img.example/1.jpg\n2,,https://img.example/2.jpg\n3,C,ftp://a/1.jpg\n";
    let path = scratch.write("bad.csv", bad);
    let run = imgpipe(&scratch.0, &["submit", path.to_str().unwrap(), "--wait", "--api-url", &runner.url]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stdout.is_empty(), "no request id for a rejected file: {run}");
    assert!(
        run.stderr.contains("error: the upload was rejected: the CSV has 3 error(s) (HTTP 400 invalid_csv)"),
        "{run}"
    );
    assert!(
        run.stderr.contains("  line 2, column \"S. No.\", value \"x\": serial number must be a positive integer"),
        "{run}"
    );
    // Every error the API reports is printed with its line, column, value and message.
    let (code, body) = stack.upload("text/csv", bad).await;
    assert_eq!(code, 400);
    let details = body["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 3);
    let lines: Vec<u64> = details.iter().map(|d| d["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 3, 4]);
    for d in details {
        let expected = format!(
            "  line {}, column {:?}, value {:?}: {}",
            d["line"],
            d["column"].as_str().unwrap(),
            d["value"].as_str().unwrap(),
            d["message"].as_str().unwrap()
        );
        assert!(run.stderr.contains(&expected), "missing `{expected}`: {run}");
    }
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_malformed_ids_usage_and_connection_errors_exit_2() {
    cli_binary();
    let stack = Stack::new("cli-errors").await;
    let runner = Runner::start(&stack, 0).await;
    let scratch = Scratch::new();
    let unknown = uuid::Uuid::new_v4().to_string();

    let run = imgpipe(&scratch.0, &["status", &unknown, "--api-url", &runner.url]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "error: cannot get request {unknown}: request {unknown} was not found (HTTP 404 not_found)"
        )),
        "{run}"
    );
    assert!(run.stderr.contains("hint: check the request id"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");

    let run = imgpipe(&scratch.0, &["download", &unknown, "--api-url", &runner.url]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("cannot download the output CSV") && run.stderr.contains("HTTP 404"), "{run}");
    assert!(!scratch.0.join(format!("{unknown}.csv")).exists(), "{run}");

    let run = imgpipe(&scratch.0, &["status", "not-a-uuid", "--api-url", &runner.url]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("HTTP 400 invalid_request_id"), "{run}");

    // IMGPIPE_API_URL is read when --api-url is absent.
    let out = tokio::time::timeout(
        CLI_DEADLINE,
        command(&scratch.0, &["status", &unknown]).env("IMGPIPE_API_URL", &runner.url).output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not found"));

    // Usage errors (clap).
    let run = imgpipe(&scratch.0, &["submit"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("<FILE>"), "{run}");
    let run = imgpipe(&scratch.0, &["submit", "x.csv", "--out", "y.csv"]).await;
    assert_eq!(run.code, 2, "--out needs --wait: {run}");
    let run = imgpipe(&scratch.0, &["submit", "missing.csv", "--api-url", &runner.url]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("cannot read missing.csv"), "{run}");

    // Nothing listens: a connection error.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let run = imgpipe(&scratch.0, &["status", &unknown, "--api-url", &format!("http://127.0.0.1:{port}")]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains(&format!("cannot reach the API at http://127.0.0.1:{port}/")), "{run}");

    // --wait gives up after --timeout-secs (no worker runs here, so the request stays pending).
    let path = scratch.write("one.csv", "S. No.,Product Name,Input Image Urls\n1,A,https://img.example/1.jpg\n");
    let started = Instant::now();
    let run = imgpipe(
        &scratch.0,
        &[
            "submit",
            path.to_str().unwrap(),
            "--wait",
            "--timeout-secs",
            "1",
            "--interval-ms",
            "100",
            "--api-url",
            &runner.url,
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("timed out after 1s waiting for request"), "{run}");
    assert!(run.stdout.lines().any(|l| l == "pending 0/1 images, 0 failed"), "{run}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_missing_image_ends_failed_and_exits_1() {
    cli_binary();
    let stack = Stack::new("cli-failed").await;
    let server = ImageServer::start().await;
    let runner = Runner::start(&stack, 2).await;
    let scratch = Scratch::new();
    let ok = server.serve("/ok.jpg", "image/jpeg", jpeg(&photo(128, 96, 4), 95));
    let missing = format!("http://{}/missing.jpg", server.addr);
    let path =
        scratch.write("products.csv", &format!("S. No.,Product Name,Input Image Urls\n1,Lamp,\"{ok},{missing}\"\n"));
    let run = imgpipe(
        &scratch.0,
        &[
            "submit",
            path.to_str().unwrap(),
            "--wait",
            "--interval-ms",
            "100",
            "--timeout-secs",
            "90",
            "-o",
            "out.csv",
            "--api-url",
            &runner.url,
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run}");
    let id = first_line(&run.stdout).to_string();
    assert!(run.stdout.lines().any(|l| l == "failed 2/2 images, 1 failed"), "{run}");
    assert!(run.stderr.contains(&format!("error: request {id} failed: 1 of 2 images failed")), "{run}");
    // The output CSV is still downloaded: the failed image leaves an empty entry and a reason.
    let (_, rows) = csv_rows(&scratch.0.join("out.csv"));
    assert_eq!(rows.len(), 1);
    let outputs: Vec<&str> = rows[0][3].split(',').collect();
    assert_eq!(outputs.len(), 2);
    assert!(!outputs[0].is_empty() && outputs[1].is_empty(), "{rows:?}");
    let reason = imgpipe_core::failure::FailureReason::HttpStatus.message();
    assert_eq!(rows[0][4], format!("image 2: {reason}"), "{rows:?}");

    let run = imgpipe(&scratch.0, &["status", &id, "--api-url", &runner.url]).await;
    assert_eq!(run.code, 0, "status itself succeeds: {run}");
    assert!(run.stdout.contains("status     failed"), "{run}");
    assert!(run.stdout.contains("failed images:"), "{run}");
    assert!(run.stdout.contains(&format!("  row 1 (Lamp) image 2 {missing}: ")), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presign_over_sends_the_file_through_a_presigned_put_and_waits_for_its_ingestion() {
    cli_binary();
    let stack = Stack::new("cli-presign").await;
    let server = ImageServer::start().await;
    let runner = Runner::start(&stack, 2).await;
    let scratch = Scratch::new();
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(96, 64, 5), 95));
    let (run, id) = presigned_submit(
        &stack,
        &runner,
        &scratch,
        "small.csv",
        &format!("S. No.,Product Name,Input Image Urls\n1,Mug,{a}\n"),
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("through a presigned URL"), "{run}");
    assert!(run.stdout.lines().any(|l| l == "waiting for the uploaded file to be ingested"), "{run}");
    assert!(run.stdout.lines().any(|l| l == "completed 1/1 images, 0 failed"), "{run}");
    let (_, rows) = csv_rows(&scratch.0.join(format!("{id}.csv")));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][..3], ["1", "Mug", a.as_str()]);
    assert!(rows[0][3].contains(&format!("outputs/tests/{id}/1-0.jpg")), "{rows:?}");

    // A presigned file rejected at ingestion: the request is failed, its row errors are printed, exit 1.
    let bad = "S. No.,Product Name,Input Image Urls\n1,Mug,https://img.example/1.jpg\n1,Cup,nope\n";
    let (run, id) = presigned_submit(&stack, &runner, &scratch, "bad.csv", bad).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains(&format!("error: request {id} failed: its CSV was rejected at ingestion")), "{run}");
    assert!(run.stderr.contains("  line 3, column \"S. No.\", value \"1\": duplicate serial number"), "{run}");
    assert!(run.stderr.contains("  line 3, column \"Input Image Urls\", value \"nope\": "), "{run}");
    assert!(!scratch.0.join(format!("{id}.csv")).exists(), "no output CSV for a rejected file: {run}");
}

/// Runs `imgpipe submit FILE --presign-over 0 --wait` and, once the file has landed in the uploads bucket,
/// delivers the bucket's S3 event to the upload function as Lambda would (locally nothing emits it), while the
/// CLI waits.
async fn presigned_submit(
    stack: &Stack,
    runner: &Runner,
    scratch: &Scratch,
    name: &str,
    contents: &str,
) -> (Run, RequestId) {
    let path = scratch.write(name, contents);
    let args = [
        "submit",
        path.to_str().unwrap(),
        "--presign-over",
        "0",
        "--wait",
        "--interval-ms",
        "100",
        "--timeout-secs",
        "90",
        "--api-url",
        &runner.url,
    ];
    let mut child = command(&scratch.0, &args).spawn().expect("spawn imgpipe");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut first))
        .await
        .expect("request id printed")
        .unwrap();
    let id = RequestId::parse(first.trim()).unwrap_or_else(|_| panic!("the first line is the request id: {first}"));

    let key = presigned_upload_key(&test_key(&id));
    let bucket = stack.app.config.uploads_bucket.clone();
    let start = Instant::now();
    let etag = loop {
        if let Ok(head) = stack.s3.head_object().bucket(&bucket).key(&key).send().await {
            break head.e_tag().unwrap_or_default().trim_matches('"').to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{key} never landed in {bucket}");
        // Polling interval (bounded by the deadline above).
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stack.object(&bucket, &key).await.as_deref(), Some(contents.as_bytes()));
    // The CLI must have polled for the request while it did not exist yet (answered 404) and kept waiting:
    // it says so once, on stdout.
    let waiting = "waiting for the uploaded file to be ingested";
    tokio::time::timeout(Duration::from_secs(60), async {
        while !first.lines().any(|l| l == waiting) {
            assert_ne!(stdout.read_line(&mut first).await.unwrap(), 0, "the CLI ended early: {first}");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the CLI did not poll for the not-yet-ingested request: {first}"));
    let ingested = imgpipe_upload::s3::handle_event(&stack.app, s3_event(&bucket, &key, &etag), Default::default())
        .await
        .expect("S3 event handled");
    assert_eq!(ingested["ingested"], 1);

    let (mut out, mut err) = (String::new(), String::new());
    let finished = tokio::time::timeout(CLI_DEADLINE, async {
        let (o, e, status) =
            tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err), child.wait());
        o.and(e).and(status)
    })
    .await
    .expect("imgpipe finished")
    .unwrap();
    (Run { code: finished.code().unwrap_or(-1), stdout: first + &out, stderr: err }, id)
}

// ---------------------------------------------------------------------------------------------------------------
// Access tokens: --token / IMGPIPE_TOKEN, or the client-credentials grant against the local issuer's endpoint.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_fetches_a_token_with_client_credentials_and_caches_it_until_it_expires() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::new("cli-token").await;
    let runner = Runner::start(&stack, 0).await;
    let scratch = Scratch::new();
    let tenant = TenantId::parse(&format!("cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).unwrap();
    let client = imgpipe_tests::issuer().register(&tenant, &[Scope::Upload, Scope::Read]).unwrap();
    let token_url = format!("{}/oauth2/token", runner.url);
    let unknown = RequestId::new().to_string();
    let status = ["status", unknown.as_str(), "--api-url", runner.url.as_str()];
    // An authenticated call on an unknown id is the API's 404; an unauthenticated one, the authorizer's 401.
    let authenticated = |run: &Run| run.code == 2 && run.stderr.contains("(HTTP 404 not_found)");
    let with_secret = |secret: Option<&str>| {
        let mut cmd = command(&scratch.0, &status);
        cmd.args(["--token-url", &token_url, "--client-id", &client.client_id]).env_remove("IMGPIPE_TOKEN");
        if let Some(secret) = secret {
            cmd.env("IMGPIPE_CLIENT_SECRET", secret);
        }
        cmd
    };

    let run = finish(command(&scratch.0, &status).env_remove("IMGPIPE_TOKEN")).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("Unauthorized (HTTP 401)") && run.stderr.contains("IMGPIPE_TOKEN"), "{run}");
    let run = finish(command(&scratch.0, &status).env("IMGPIPE_TOKEN", "not-a-token")).await;
    assert!(run.stderr.contains("(HTTP 401)"), "a bad --token is the API's 401: {run}");

    let run = finish(&mut with_secret(Some(&client.client_secret))).await;
    assert!(authenticated(&run), "{run}");
    let cache = scratch.0.join("cache/imgpipe/tokens.json");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&cache), mode(cache.parent().unwrap())), (0o600, 0o700), "the cache is private");
    let read_cache = || serde_json::from_slice::<serde_json::Value>(&std::fs::read(&cache).unwrap()).unwrap();
    let entries = read_cache();
    let entry = entries.as_object().unwrap().values().next().unwrap().clone();
    assert_eq!(entries.as_object().unwrap().len(), 1, "{entries}");
    let token = format!("Bearer {}", entry["access_token"].as_str().unwrap());
    let jwt = imgpipe_tests::issuer().authorizer().validate(Some(token.as_bytes())).expect("a real token");
    assert_eq!(jwt.claims["client_id"], tenant.as_str());

    // The cached token is used: a wrong secret does not matter while it lives.
    let run = finish(&mut with_secret(Some("wrong-secret"))).await;
    assert!(authenticated(&run), "the cached token, not the token endpoint: {run}");
    assert_eq!(read_cache(), entries, "the cache is unchanged");

    // Less than a minute to live: a new token is fetched (refused with the wrong secret, granted with the right one).
    let soon = jsonwebtoken::get_current_timestamp() + 30;
    let key = entries.as_object().unwrap().keys().next().unwrap().clone();
    let expiring = serde_json::json!({ key.clone(): {"access_token": entry["access_token"], "expires_at": soon} });
    std::fs::write(&cache, expiring.to_string()).unwrap();
    let run = finish(&mut with_secret(Some("wrong-secret"))).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("invalid_client") && !run.stderr.contains("HTTP 404"), "{run}");
    let run = finish(&mut with_secret(Some(&client.client_secret))).await;
    assert!(authenticated(&run), "{run}");
    assert!(read_cache()[&key]["expires_at"].as_u64().unwrap() > soon + 3000, "a fresh token is cached");

    // The secret comes from the environment only.
    let run = finish(&mut with_secret(None)).await;
    assert!(run.code == 2 && run.stderr.contains("IMGPIPE_CLIENT_SECRET"), "{run}");
    let run = imgpipe(&scratch.0, &["status", &unknown, "--client-secret", &client.client_secret]).await;
    assert!(run.code == 2 && run.stderr.contains("unexpected argument"), "no --client-secret flag: {run}");
}
