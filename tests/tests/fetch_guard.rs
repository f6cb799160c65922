//! The image fetcher against local servers: SSRF refusals (literal IPs, a hostname, other IPv4 spellings,
//! redirects), the allow-list, the byte cap, timeouts and the transient/permanent split.
//!
//! Network rule: every server here listens on loopback (127.0.0.0/8 or ::1) and every URL points at loopback, so
//! no test can reach another address even if the guard were broken. Refusal of non-loopback classes is tested on
//! the classifier itself (`imgpipe_core::net_guard`'s unit tests). These tests need no stack environment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use imgpipe_core::Config;
use imgpipe_core::domain::ImageUrl;
use imgpipe_core::failure::FailureReason;
use imgpipe_core::fetch::{FetchError, Fetcher, FetcherError, MAX_REDIRECTS};
use imgpipe_tests::{ImageServer, jpeg, photo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOCALHOST_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOCALHOST_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A configuration for the fetcher only. Built from the serde defaults, so fields added to `Config` later need no
/// change here; the stack endpoints are dummies that nothing here connects to.
fn config(allow: Option<&str>, adjust: impl FnOnce(&mut Config)) -> Config {
    let mut config: Config = serde_json::from_value(serde_json::json!({
        "mongodb_uri": "mongodb://127.0.0.1:1/unused",
        "uploads_bucket": "unused-uploads",
        "outputs_bucket": "unused-outputs",
        "queue_url": "http://127.0.0.1:1/000000000000/unused",
    }))
    .expect("a Config from its defaults");
    config.fetch_timeout_ms = 5_000;
    config.connect_timeout_ms = 1_000;
    config.max_image_bytes = 1024 * 1024;
    config.fetch_allow_cidrs = allow.map(str::to_string);
    adjust(&mut config);
    config
}

fn fetcher(allow: Option<&str>) -> Fetcher {
    Fetcher::new(&config(allow, |_| {})).expect("fetcher")
}

fn sample(size: u32) -> Vec<u8> {
    jpeg(&photo(size, size, 1), 80)
}

fn url(s: &str) -> ImageUrl {
    ImageUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[track_caller]
fn assert_permanent(result: Result<Vec<u8>, FetchError>, needles: &[&str]) -> String {
    match result {
        Err(FetchError::Permanent(failure)) => {
            let message = failure.detail;
            for needle in needles {
                assert!(message.contains(needle), "`{message}` does not mention `{needle}`");
            }
            message
        }
        other => panic!("expected a permanent error mentioning {needles:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_transient(result: Result<Vec<u8>, FetchError>) -> String {
    match result {
        Err(FetchError::Transient(failure)) => failure.detail,
        other => panic!("expected a transient error, got {other:?}"),
    }
}

/// What a [`RawServer`] answers.
#[derive(Clone)]
enum Reply {
    /// `200` with this body and its `Content-Length`.
    Ok(Vec<u8>),
    /// `302` to this location.
    Redirect(String),
    /// `200`, chunked (no `Content-Length`): `total` bytes in chunks of 16 KiB, or until the client goes away.
    Chunked { total: usize },
    /// Reads the request and never answers (until the server is dropped).
    StallBeforeHeaders,
    /// Sends the headers (announcing 1000 bytes) and 10 bytes of body, then nothing (until the server is dropped).
    StallInBody,
}

/// A minimal HTTP/1.1 server on a loopback address that counts the connections it accepts and the body bytes it
/// sends, for redirects, streamed bodies and stalls the harness's `ImageServer` cannot produce.
struct RawServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// Dropped with the server: ends the stalls and the connections' tasks.
    _stop: tokio::sync::watch::Sender<()>,
}

impl RawServer {
    /// Binds `ip` (which must be loopback) on a free port; `reply` gets the request path and the server's address.
    async fn bind(
        ip: IpAddr,
        reply: impl Fn(&str, SocketAddr) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        assert!(ip.is_loopback(), "test servers listen on loopback only, not {ip}");
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::watch::channel(());
        let reply = Arc::new(reply);
        let (counter, bytes) = (connections.clone(), sent.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let (reply, bytes, mut stopped) = (reply.clone(), bytes.clone(), stopped.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream, addr, &*reply, &bytes) => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(Self { addr, connections, sent, task, _stop: stop })
    }

    async fn start(reply: impl Fn(&str, SocketAddr) -> Reply + Send + Sync + 'static) -> Self {
        Self::bind(LOCALHOST_V4, reply).await.expect("bind 127.0.0.1")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Body bytes handed to the kernel so far (chunked replies).
    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    addr: SocketAddr,
    reply: &(dyn Fn(&str, SocketAddr) -> Reply + Send + Sync),
    sent_bytes: &AtomicUsize,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    match reply(&path, addr) {
        Reply::Ok(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Reply::Redirect(location) => {
            let head =
                format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
        }
        Reply::Chunked { total } => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let chunk = vec![0xAB; 16 * 1024];
            let mut sent = 0;
            while sent < total {
                let n = chunk.len().min(total - sent);
                stream.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                stream.write_all(&chunk[..n]).await?;
                stream.write_all(b"\r\n").await?;
                sent += n;
                sent_bytes.fetch_add(n, Ordering::SeqCst);
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
        // Stalls: nothing more is sent until the server is dropped (which ends this task).
        Reply::StallBeforeHeaders => std::future::pending().await,
        Reply::StallInBody => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await?;
            std::future::pending().await
        }
    }
    stream.shutdown().await
}

/// `localhost` must resolve to loopback only here, so that allowing public addresses can never let a test
/// leave the machine through it.
async fn assert_localhost_is_loopback() {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(("localhost", 0)).await.expect("resolve localhost").collect();
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| a.ip().is_loopback()), "localhost resolves to {addrs:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Refusals with the allow-list off

#[tokio::test]
async fn loopback_literal_is_refused_without_allow_list() {
    let server = ImageServer::start().await;
    let target = server.serve("/x.jpg", "image/jpeg", sample(8));
    for allow in [None, Some(""), Some("10.0.0.0/8")] {
        let message = assert_permanent(fetcher(allow).fetch(&url(&target)).await, &["loopback"]);
        assert!(message.starts_with("refused address 127.0.0.1 (loopback)"), "{message}");
    }
    assert_eq!(server.hits(), 0, "the refused server must receive nothing");
}

#[tokio::test]
async fn hostname_resolving_to_loopback_is_refused() {
    assert_localhost_is_loopback().await;
    let server = ImageServer::start().await;
    server.serve("/x.jpg", "image/jpeg", sample(8));
    let target = format!("http://localhost:{}/x.jpg", server.addr.port());
    let message = assert_permanent(fetcher(None).fetch(&url(&target)).await, &["localhost", "loopback"]);
    assert!(message.contains("refused address 127.0.0.1 (loopback)"), "{message}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn ipv6_loopback_literal_is_refused() {
    let server = RawServer::bind(LOCALHOST_V6, |_, _| Reply::Ok(b"image".to_vec())).await.unwrap_or_else(|e| {
        panic!(
            "cannot bind [::1] ({e}): this test needs IPv6 loopback; enable it (on Linux: \
             sysctl net.ipv6.conf.lo.disable_ipv6=0) rather than skipping the IPv6 refusal checks"
        )
    });
    let target = server.url("/x.jpg");
    assert!(target.starts_with("http://[::1]:"), "{target}");
    let message = assert_permanent(fetcher(None).fetch(&url(&target)).await, &["loopback"]);
    assert!(message.starts_with("refused address ::1 (loopback)"), "{message}");
    // 127.0.0.0/8 does not cover ::1.
    assert_permanent(fetcher(Some("127.0.0.0/8")).fetch(&url(&target)).await, &["::1", "loopback"]);
    assert_eq!(server.connections(), 0);

    // Allowed explicitly, the same URL works.
    assert_eq!(fetcher(Some("::1/128")).fetch(&url(&target)).await.unwrap(), b"image");
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn other_spellings_of_loopback_are_refused() {
    let server = ImageServer::start().await;
    server.serve("/x.jpg", "image/jpeg", sample(8));
    let port = server.addr.port();
    let fetcher = fetcher(None);
    for host in ["2130706433", "0177.0.0.1", "0x7f000001", "0x7f.0.0.1", "127.1", "017700000001"] {
        let target = url(&format!("http://{host}:{port}/x.jpg"));
        assert_eq!(target.url().host_str(), Some("127.0.0.1"), "`url` normalises {host}");
        let message = assert_permanent(fetcher.fetch(&target).await, &["loopback"]);
        assert!(message.starts_with("refused address 127.0.0.1 (loopback)"), "{host}: {message}");
    }
    for host in ["[::ffff:127.0.0.1]", "[::ffff:7f00:1]"] {
        let target = url(&format!("http://{host}:{port}/x.jpg"));
        assert_permanent(fetcher.fetch(&target).await, &["loopback"]);
    }
    assert_eq!(server.hits(), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// The allow-list and redirects

#[tokio::test]
async fn allow_list_lets_loopback_through() {
    assert_localhost_is_loopback().await;
    let server = ImageServer::start().await;
    let image = sample(16);
    let target = server.serve("/x.jpg", "image/jpeg", image.clone());
    let fetcher = fetcher(Some("127.0.0.0/8"));
    assert_eq!(fetcher.fetch(&url(&target)).await.unwrap(), image);
    let by_name = format!("http://localhost:{}/x.jpg", server.addr.port());
    assert_eq!(fetcher.fetch(&url(&by_name)).await.unwrap(), image);
    let by_number = format!("http://2130706433:{}/x.jpg", server.addr.port());
    assert_eq!(fetcher.fetch(&url(&by_number)).await.unwrap(), image);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn invalid_allow_list_is_a_configuration_error() {
    for bad in ["not-a-cidr", "127.0.0.0/33", "127.0.0.0/8,nope"] {
        match Fetcher::new(&config(Some(bad), |_| {})) {
            Err(e @ FetcherError::AllowList(_)) => {
                assert!(e.to_string().contains("IMGPIPE_FETCH_ALLOW_CIDRS"), "{e}")
            }
            Err(e) => panic!("{bad}: unexpected error {e}"),
            Ok(_) => panic!("{bad}: accepted"),
        }
    }
    assert!(Fetcher::new(&config(Some("127.0.0.0/8, ::1/128"), |_| {})).is_ok());
}

#[tokio::test]
async fn redirects_between_allowed_servers_are_followed() {
    assert_localhost_is_loopback().await;
    let image = sample(8);
    let b = {
        let image = image.clone();
        RawServer::start(move |_, _| Reply::Ok(image.clone())).await
    };
    let (by_ip, by_name) = (b.url("/b.jpg"), format!("http://localhost:{}/b.jpg", b.addr.port()));
    let a = RawServer::start(move |path, _| {
        Reply::Redirect(if path == "/by-name" { by_name.clone() } else { by_ip.clone() })
    })
    .await;
    let fetcher = fetcher(Some("127.0.0.0/8"));
    assert_eq!(fetcher.fetch(&url(&a.url("/by-ip"))).await.unwrap(), image);
    assert_eq!(fetcher.fetch(&url(&a.url("/by-name"))).await.unwrap(), image);
    assert_eq!((a.connections(), b.connections()), (2, 2));
}

#[tokio::test]
async fn redirect_to_a_refused_address_is_not_followed() {
    // B listens on 127.0.0.2, which the allow-list (127.0.0.1/32) does not cover.
    let b = match RawServer::bind(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), |_, _| Reply::Ok(b"secret".to_vec())).await {
        Ok(b) => b,
        Err(e) => panic!("cannot bind 127.0.0.2 ({e}); Linux routes all of 127.0.0.0/8 to loopback"),
    };
    let port = b.addr.port();
    let a = RawServer::start(move |path, _| {
        Reply::Redirect(match path {
            "/decimal" => format!("http://2130706434:{port}/"),
            "/mapped" => format!("http://[::ffff:127.0.0.2]:{port}/"),
            "/ipv6" => format!("http://[::1]:{port}/"),
            _ => format!("http://127.0.0.2:{port}/"),
        })
    })
    .await;
    let fetcher = fetcher(Some("127.0.0.1/32"));
    for path in ["/literal", "/decimal", "/mapped"] {
        let message = assert_permanent(fetcher.fetch(&url(&a.url(path))).await, &["redirect", "127.0.0.2", "loopback"]);
        assert!(message.contains("refused address"), "{path}: {message}");
    }
    assert_permanent(fetcher.fetch(&url(&a.url("/ipv6"))).await, &["redirect", "refused address ::1 (loopback)"]);
    assert_eq!(a.connections(), 4, "the allowed first hop is fetched");
    assert_eq!(b.connections(), 0, "the refused redirect target must receive nothing");
}

#[tokio::test]
async fn redirect_loop_ends_in_too_many_redirects() {
    let a = RawServer::start(|path, addr| {
        let n: usize = path.trim_start_matches("/r").parse().unwrap_or(0);
        Reply::Redirect(format!("http://{addr}/r{}", n + 1))
    })
    .await;
    assert_permanent(fetcher(Some("127.0.0.0/8")).fetch(&url(&a.url("/r0"))).await, &["too many redirects"]);
    assert_eq!(a.connections(), MAX_REDIRECTS + 1, "the first request and {MAX_REDIRECTS} redirects");

    // A→A on the same URL too.
    let same = RawServer::start(|_, addr| Reply::Redirect(format!("http://{addr}/loop"))).await;
    assert_permanent(fetcher(Some("127.0.0.0/8")).fetch(&url(&same.url("/loop"))).await, &["too many redirects"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Byte cap, timeouts, status codes

#[tokio::test]
async fn body_over_the_cap_with_content_length_is_refused() {
    let server = ImageServer::start().await;
    let big = server.serve("/big.jpg", "image/jpeg", vec![7; 1001]);
    let exact = server.serve("/exact.jpg", "image/jpeg", vec![7; 1000]);
    let fetcher = Fetcher::new(&config(Some("127.0.0.0/8"), |c| c.max_image_bytes = 1000)).unwrap();
    assert_permanent(fetcher.fetch(&url(&big)).await, &["larger than", "1000"]);
    assert_eq!(fetcher.fetch(&url(&exact)).await.unwrap().len(), 1000);
}

#[tokio::test]
async fn streamed_body_over_the_cap_is_refused_while_streaming() {
    let max = 100 * 1024;
    let server = RawServer::start(move |path, _| match path {
        // Far more than the cap (64 MiB): the fetch must stop reading long before the end.
        "/endless" => Reply::Chunked { total: 64 * 1024 * 1024 },
        "/over" => Reply::Chunked { total: max as usize + 1 },
        _ => Reply::Chunked { total: max as usize },
    })
    .await;
    let fetcher = Fetcher::new(&config(Some("127.0.0.0/8"), |c| c.max_image_bytes = max)).unwrap();
    assert_permanent(fetcher.fetch(&url(&server.url("/endless"))).await, &["larger than"]);
    // The client hung up: the server's writes stop once the socket buffers (a few MiB on loopback) are full.
    let sent = server.sent();
    assert!(sent < 32 * 1024 * 1024, "{sent} of 64 MiB were sent: the fetch read far past its cap");
    assert_permanent(fetcher.fetch(&url(&server.url("/over"))).await, &["larger than"]);
    assert_eq!(fetcher.fetch(&url(&server.url("/exact"))).await.unwrap().len(), max as usize);
}

#[tokio::test]
async fn stalled_server_times_out_as_transient() {
    let server =
        RawServer::start(
            |path, _| {
                if path == "/headers-then-stall" { Reply::StallInBody } else { Reply::StallBeforeHeaders }
            },
        )
        .await;
    let fetcher = Fetcher::new(&config(Some("127.0.0.0/8"), |c| {
        c.fetch_timeout_ms = 500;
        c.connect_timeout_ms = 500;
    }))
    .unwrap();
    // The server stalls until it is dropped: only the fetch's own timeout can end these fetches. The outer
    // deadline turns a fetch that never gives up into a failure instead of a hang; it is not a speed check.
    for path in ["/no-answer", "/headers-then-stall"] {
        let target = url(&server.url(path));
        let fetch = tokio::time::timeout(Duration::from_secs(30), fetcher.fetch(&target));
        match fetch.await.unwrap_or_else(|_| panic!("{path}: the fetch never gave up")) {
            Err(FetchError::Transient(failure)) => {
                assert_eq!(failure.reason, FailureReason::SourceTimeout, "{path}: {}", failure.detail)
            }
            other => panic!("{path}: expected a transient timeout, got {other:?}"),
        }
    }
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn closed_port_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    assert_transient(fetcher(Some("127.0.0.0/8")).fetch(&url(&format!("http://{addr}/x.jpg"))).await);
}

#[tokio::test]
async fn http_errors_are_split_into_permanent_and_transient() {
    let server = ImageServer::start().await;
    let missing = server.serve_status("/missing.jpg", 404, "text/plain", b"no".to_vec());
    let forbidden = server.serve_status("/forbidden.jpg", 403, "text/plain", b"no".to_vec());
    let unavailable = server.serve_status("/busy.jpg", 503, "text/plain", b"later".to_vec());
    let throttled = server.serve_status("/slow-down.jpg", 429, "text/plain", b"later".to_vec());
    let fetcher = fetcher(Some("127.0.0.0/8"));
    assert_permanent(fetcher.fetch(&url(&missing)).await, &["404"]);
    assert_permanent(fetcher.fetch(&url(&forbidden)).await, &["403"]);
    assert!(assert_transient(fetcher.fetch(&url(&unavailable)).await).contains("503"));
    assert!(assert_transient(fetcher.fetch(&url(&throttled)).await).contains("429"));
    assert_eq!(server.hits(), 4);
}
