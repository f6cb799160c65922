//! The fetcher's port rule and the reasons callers see. A public address may be fetched from on ports 80 and 443
//! only (`IMGPIPE_FETCH_ALLOW_PORTS`); an allow-listed address on any port. A failed image stores one reason of a
//! closed set with its short message; the precise cause (address, port, status) stays in the logs.
//!
//! Network rule: every listener and URL here is on loopback. Loopback is made "not allow-listed" by allowing only
//! 127.0.0.1 and pointing refused URLs at 127.0.0.2 (also loopback), so a broken guard could still reach nothing
//! but this machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use imgpipe_core::Config;
use imgpipe_core::bson::{Document, doc};
use imgpipe_core::domain::ImageUrl;
use imgpipe_core::failure::FailureReason;
use imgpipe_core::fetch::{FetchError, Fetcher};
use imgpipe_tests::{ImageServer, Stack, jpeg, photo, request_id};

/// A TCP listener on `ip` that counts the connections it accepts (and closes them).
struct CountingListener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingListener {
    async fn start(ip: &str) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { port, accepted, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fetcher(allow: &str, ports: Option<&str>) -> Fetcher {
    let mut config: Config = serde_json::from_value(serde_json::json!({
        "mongodb_uri": "mongodb://127.0.0.1:1/unused", "uploads_bucket": "u", "outputs_bucket": "o",
        "queue_url": "http://127.0.0.1:1/000000000000/unused",
    }))
    .unwrap();
    config.connect_timeout_ms = 1_000;
    config.fetch_timeout_ms = 3_000;
    config.fetch_allow_cidrs = Some(allow.into());
    config.fetch_allow_ports = ports.map(str::to_string);
    Fetcher::new(&config).unwrap()
}

fn url(s: &str) -> ImageUrl {
    ImageUrl::parse(s).unwrap()
}

#[track_caller]
fn assert_refused_port(result: Result<Vec<u8>, FetchError>) {
    match result {
        Err(FetchError::Permanent(f)) => {
            assert_eq!(f.reason, FailureReason::SourceNotPublic, "{f}");
            assert!(f.detail.contains("port"), "refused by the port rule: {f}");
        }
        other => panic!("expected a permanent source_not_public, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_to_a_port_that_is_not_allowed_is_refused_without_connecting() {
    let listener = CountingListener::start("127.0.0.1").await;
    let port = listener.port;
    let literal = url(&format!("http://127.0.0.1:{port}/a.jpg"));
    let name = url(&format!("http://localhost:{port}/a.jpg"));
    // Nothing of this listener is allow-listed, and its port is neither 80 nor 443: refused by the port rule,
    // for an IP literal and for a host name (whose resolver does not see the port).
    let guarded = fetcher("127.0.0.3/32", None);
    assert_refused_port(guarded.fetch(&literal).await);
    assert_refused_port(guarded.fetch(&name).await);
    assert_eq!(listener.accepted(), 0, "nothing connected to the listener");

    // With the port allowed, the address rule still refuses loopback (and says so in the detail, not the port).
    let port_allowed = fetcher("127.0.0.3/32", Some(&format!("80,{port}")));
    match port_allowed.fetch(&literal).await {
        Err(FetchError::Permanent(f)) => assert!(f.detail.contains("loopback") && !f.detail.contains("port"), "{f}"),
        other => panic!("expected the address rule to refuse, got {other:?}"),
    }
    assert_eq!(listener.accepted(), 0);

    // An allow-listed address may use any port: this one connects (the listener closes it at once).
    let allow_listed = fetcher("127.0.0.0/8", None);
    let _ = allow_listed.fetch(&literal).await;
    assert!(listener.accepted() >= 1, "the allow-listed fetch reached the listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_port_that_is_not_allowed_is_not_followed() {
    let listener = CountingListener::start("127.0.0.2").await;
    let server = ImageServer::start().await;
    let target = format!("http://127.0.0.2:{}/a.jpg", listener.port);
    let start = server.redirect("/r.jpg", &target);
    let guarded = fetcher("127.0.0.1/32", None);
    assert_refused_port(guarded.fetch(&url(&start)).await);
    assert_eq!(server.hits_of("/r.jpg"), 1);
    assert_eq!(listener.accepted(), 0);
}

fn slots(rows: &[Document]) -> Vec<Document> {
    let mut out = Vec::new();
    for row in rows {
        let images = row.get_document("images").unwrap();
        for i in 0..images.len() {
            out.push(images.get_document(i.to_string()).unwrap().clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_and_shown_reasons_come_from_the_enum_never_the_low_level_text() {
    let stack = Stack::with("reasons", |c| {
        c.fetch_allow_cidrs = Some("127.0.0.1/32".into());
        c.max_image_bytes = 10_000;
    })
    .await;
    let server = ImageServer::start().await;
    let listener = CountingListener::start("127.0.0.2").await;
    let good = server.serve("/good.jpg", "image/jpeg", jpeg(&photo(40, 30, 1), 80));
    let missing = server.serve_status("/missing.jpg", 404, "text/plain", b"no".to_vec());
    let text = server.serve("/text.jpg", "image/jpeg", b"plain text".to_vec());
    let big = server.serve("/big.jpg", "image/jpeg", vec![0xff; 20_000]);
    let port_refused = format!("http://127.0.0.2:{}/p.jpg", listener.port);
    let csv = format!(
        "S. No.,Product Name,Input Image Urls\n1,A,\"{good},{missing},{text}\"\n2,B,\"{big},{port_refused}\"\n"
    );
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    stack.drain(Duration::from_secs(60)).await;
    assert_eq!(listener.accepted(), 0);

    // MongoDB: each failed slot holds a code of the enum and exactly that code's message.
    let rows: Vec<Document> = stack
        .request_data()
        .find(doc! {"requestId": id.as_str()})
        .sort(doc! {"serialNumber": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let stored: Vec<(String, Option<String>, Option<String>)> = slots(&rows)
        .iter()
        .map(|s| {
            (
                s.get_str("state").unwrap().to_string(),
                s.get_str("reason").ok().map(str::to_string),
                s.get_str("error").ok().map(str::to_string),
            )
        })
        .collect();
    use FailureReason::*;
    let want = [None, Some(HttpStatus), Some(UnsupportedFormat), Some(TooLarge), Some(SourceNotPublic)];
    let want: Vec<(String, Option<String>, Option<String>)> = want
        .iter()
        .map(|r| match r {
            None => ("succeeded".into(), None, None),
            Some(r) => ("failed".into(), Some(r.code().into()), Some(r.message().into())),
        })
        .collect();
    assert_eq!(stored, want);

    // The status API and the output CSV show the same codes and messages, and none of the precise causes.
    let (code, status) = stack.status(id.as_str()).await;
    assert_eq!(code, 200);
    let images: Vec<&serde_json::Value> =
        status["rows"].as_array().unwrap().iter().flat_map(|r| r["images"].as_array().unwrap()).collect();
    for (image, (_, reason, error)) in images.iter().zip(&want) {
        assert_eq!(image["reason"].as_str(), reason.as_deref(), "{image}");
        assert_eq!(image["error"].as_str(), error.as_deref(), "{image}");
    }
    let (code, csv) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 200);
    let csv = String::from_utf8(csv).unwrap();
    assert!(
        csv.contains(&format!("image 2: {}; image 3: {}", HttpStatus.message(), UnsupportedFormat.message())),
        "{csv}"
    );
    assert!(csv.contains(&format!("image 1: {}; image 2: {}", TooLarge.message(), SourceNotPublic.message())), "{csv}");
    let shown = format!("{status}{csv}");
    for low_level in ["refused", "loopback", "HTTP 404", "404 Not Found", "10000-byte", "not an image:", "port "] {
        assert!(!shown.contains(low_level), "`{low_level}` reached the caller");
    }
}
