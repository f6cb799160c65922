//! A bad-input corpus through the real HTTP API: the local runner's server (`imgpipe_local::serve_api`, what
//! `make local` runs) on 127.0.0.1, reached over real TCP connections (reqwest, or a raw socket for requests no
//! client library sends: truncated, aborted, oversized), and for bad image URLs and formula cells through the
//! runner's worker loops (`imgpipe_local::run_worker`) and the status API as well.
//!
//! Every case asserts what was written, exactly: `Requests` and `RequestData` documents, objects in both buckets,
//! messages in the queue and in its dead-letter queue, and the image server's hits. Image URLs point at the
//! test's own image server on 127.0.0.1 only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use imgpipe_core::bson::{Document, doc};
use imgpipe_tests::{ImageServer, Runner, Stack, jpeg, photo, png};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const HEADER: &str = "S. No.,Product Name,Input Image Urls\n";
const UNKNOWN_ID: &str = "0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b";
/// How long the server may take to answer a refused request before the test calls it hung.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------------------
// The local runner, and clients.

/// The local runner on 127.0.0.1:<free port> serving `stack`'s app, with `workers` worker loops; stopped on drop.
struct Api {
    addr: SocketAddr,
    http: reqwest::Client,
    _runner: Runner,
}

impl Api {
    async fn start(stack: &Stack, workers: usize) -> Self {
        let runner = Runner::start(stack, workers).await;
        assert!(runner.addr.ip().is_loopback());
        // Every request carries a valid token: the corpus is about bodies and headers, not authentication.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", imgpipe_tests::authorization().parse().unwrap());
        let http = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { addr: runner.addr, http, _runner: runner }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /uploads` with `content_type` (none if `None`).
    async fn upload(&self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> (u16, Value) {
        let mut request = self.http.post(self.url("/uploads")).body(body.into());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.expect("the local API answers");
        let code = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (code, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{code}: not JSON: {bytes:?}")))
    }

    async fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let response = self.http.get(self.url(path)).send().await.expect("the local API answers");
        let code = response.status().as_u16();
        let ct = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (code, ct, response.bytes().await.unwrap().to_vec())
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let (code, ct, body) = self.get(path).await;
        assert_eq!(ct, "application/json", "{path}");
        (code, serde_json::from_slice(&body).unwrap())
    }

    /// The server still answers a new connection normally.
    async fn assert_serving(&self) {
        let (code, body) = self.get_json(&format!("/requests/{UNKNOWN_ID}")).await;
        assert_eq!(code, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
    }

    /// Waits until the workers have finalised request `id` (read from MongoDB: a status call must not be what
    /// finishes a request), then returns its status page.
    async fn wait_final(&self, stack: &Stack, id: &str, deadline: Duration) -> Value {
        let start = Instant::now();
        loop {
            let stored = stack.stored_request(id).await;
            let status = stored.get_str("status").unwrap();
            if status == "completed" || status == "failed" {
                break;
            }
            assert!(start.elapsed() < deadline, "request {id} not finalised within {deadline:?}: {stored:?}");
            // Polling interval (bounded by the deadline above).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (code, body) = self.get_json(&format!("/requests/{id}?limit=1000")).await;
        assert_eq!(code, 200, "{body}");
        body
    }
}

/// An HTTP answer read off a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The header block, lower-cased.
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        assert!(self.head.contains("\r\ncontent-type: application/json"), "{self:?}");
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The answer in `buf`, if its head and (by `Content-Length`) its whole body have arrived; with `eof`, whatever
/// body has arrived.
fn parse_answer(buf: &[u8], eof: bool) -> Option<Answer> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    let body = &buf[end + 4..];
    match length {
        Some(n) if body.len() >= n => Some(Answer { status, head, body: body[..n].to_vec() }),
        _ if eof => Some(Answer { status, head, body: body.to_vec() }),
        _ => None,
    }
}

/// Reads one answer; `None` if the connection closed without one. Fails the test if nothing conclusive comes
/// within [`ANSWER_DEADLINE`]: the server hung.
async fn read_answer(read: &mut (impl AsyncRead + Unpin)) -> Option<Answer> {
    let deadline = Instant::now() + ANSWER_DEADLINE;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(answer) = parse_answer(&buf, false) {
            return Some(answer);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read.read(&mut chunk)).await {
            Err(_) => panic!("no answer within {ANSWER_DEADLINE:?}; got {:?}", String::from_utf8_lossy(&buf)),
            Ok(Ok(0)) | Ok(Err(_)) => return parse_answer(&buf, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// After an answer: the server closes the connection (EOF or reset) instead of leaving it hanging.
async fn assert_closed(read: &mut (impl AsyncRead + Unpin)) {
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + ANSWER_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read.read(&mut chunk)).await {
            Err(_) => panic!("the server kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends `request` (which says `Connection: close`) on a new connection, reads the answer, and checks that the
/// server then closes the connection.
async fn raw(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let _ = write.write_all(request).await;
    let answer = read_answer(&mut read).await;
    assert_closed(&mut read).await;
    answer
}

/// [`raw`], closing the sending side after `request`: the body ends there, whatever it announced.
async fn raw_cut(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let _ = write.write_all(request).await;
    let _ = write.shutdown().await;
    let answer = read_answer(&mut read).await;
    assert_closed(&mut read).await;
    answer
}

fn post_head(content_type: &str, extra: &str) -> String {
    let authorization = imgpipe_tests::authorization();
    format!(
        "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: {authorization}\r\n\
         Content-Type: {content_type}\r\n{extra}\r\n"
    )
}

/// Checks the one error shape, `{"error": {"code", "message", "details"?, "total"?}}`, and returns the code.
fn error_code(body: &Value) -> &str {
    let error = body["error"].as_object().unwrap_or_else(|| panic!("not the error shape: {body}"));
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    for key in error.keys() {
        assert!(["code", "message", "details", "total"].contains(&key.as_str()), "unexpected `{key}`: {body}");
    }
    assert!(!error["message"].as_str().unwrap().is_empty(), "{body}");
    error["code"].as_str().unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// What was written.

#[derive(Debug, PartialEq, Eq)]
struct Written {
    requests: u64,
    rows: u64,
    uploads: usize,
    outputs: usize,
    queued: usize,
    dead_lettered: usize,
}

async fn written(stack: &Stack) -> Written {
    Written {
        requests: stack.requests().count_documents(doc! {}).await.unwrap(),
        rows: stack.request_data().count_documents(doc! {}).await.unwrap(),
        uploads: stack.keys(&stack.app.config.uploads_bucket, "").await.len(),
        outputs: stack.keys(&stack.app.config.outputs_bucket, "").await.len(),
        queued: stack.queue_depth().await,
        dead_lettered: stack.dlq_depth().await,
    }
}

const NOTHING: Written = Written { requests: 0, rows: 0, uploads: 0, outputs: 0, queued: 0, dead_lettered: 0 };

async fn assert_nothing_written(stack: &Stack, case: &str) {
    assert_eq!(written(stack).await, NOTHING, "{case} wrote something");
}

/// The server's end of a connection to this process's server, as the kernel reports it.
struct ServerSocket {
    inode: u64,
    /// Bytes received that the server has not read yet.
    rx_queue: u64,
}

/// The server side of the TCP connection from `client` to `server` (both in this process, IPv4), from
/// `/proc/self/net/tcp` (Linux: `local rem st tx_queue:rx_queue ... inode`, addresses as little-endian hex).
fn server_socket(server: SocketAddr, client: SocketAddr) -> Option<ServerSocket> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!("{:08X}:{:04X}", u32::from_le_bytes(a.ip().octets()), a.port()),
        SocketAddr::V6(_) => panic!("IPv4 only"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/self/net/tcp").expect("read /proc/self/net/tcp (Linux)");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[1] != local || f[2] != remote {
            return None;
        }
        let rx_queue = u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok()?;
        Some(ServerSocket { inode: f[9].parse().ok()?, rx_queue })
    })
}

/// Whether this process still holds the socket `inode` open.
fn fd_open(inode: u64) -> bool {
    let target = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd (Linux)")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|link| link.to_str() == Some(target.as_str()))
}

/// Polls `check` until it gives a value; fails the test after [`ANSWER_DEADLINE`].
async fn poll<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < ANSWER_DEADLINE, "condition not reached within {ANSWER_DEADLINE:?}");
        // Polling interval (bounded by the deadline above).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs.

fn pseudo_random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// CRC-32 (ISO-HDLC), as gzip and zip need.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A valid gzip file of `data` (one stored deflate block; `data` under 64 KiB).
fn gzip(data: &[u8]) -> Vec<u8> {
    let len = data.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A valid zip archive holding `data` as `name`, stored.
fn zip(name: &str, data: &[u8]) -> Vec<u8> {
    let (crc, size, name_len) = (crc32(data), data.len() as u32, name.len() as u16);
    let mut out = Vec::new();
    out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x21\x00");
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(data);
    let central = out.len() as u32;
    out.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x21\x00");
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&[0; 12]); // extra, comment, disk, internal and external attributes
    out.extend_from_slice(&0u32.to_le_bytes()); // offset of the local header
    out.extend_from_slice(name.as_bytes());
    let central_len = out.len() as u32 - central;
    out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00");
    out.extend_from_slice(&central_len.to_le_bytes());
    out.extend_from_slice(&central.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A `multipart/form-data` body of `parts` (`name`, file name, content).
fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, content) in parts {
        out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = filename {
            out.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: text/csv").as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

const BOUNDARY: &str = "bad-input-boundary";

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A valid CSV of `rows` rows whose URLs are never fetched (no worker loops run in the tests that send it).
fn valid_csv(rows: usize) -> String {
    let mut csv = String::from(HEADER);
    for i in 1..=rows {
        csv.push_str(&format!("{i},Product {i},https://img.example/{i}.jpg\n"));
    }
    csv
}

fn details(body: &Value) -> Vec<(u64, String)> {
    body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {body}"))
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["column"].as_str().unwrap().to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Request bodies that are not CSV.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_bodies_are_refused_with_the_one_error_shape_and_write_nothing() {
    let stack = Stack::new("bin-bodies").await;
    let api = Api::start(&stack, 0).await;
    let csv = valid_csv(3);
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(csv.encode_utf16().flat_map(u16::to_le_bytes));
    let bodies: [(&str, Vec<u8>); 6] = [
        ("random bytes", pseudo_random_bytes(4096, 0x9E37_79B9_7F4A_7C15)),
        ("a PNG", png(&image::DynamicImage::ImageRgb8(photo(64, 48, 3)))),
        ("a gzip of a valid CSV", gzip(csv.as_bytes())),
        ("a zip of a valid CSV", zip("products.csv", csv.as_bytes())),
        ("a UTF-16LE CSV (Excel's \"Unicode text\")", utf16),
        ("NUL bytes", vec![0; 1000]),
    ];
    for (case, body) in &bodies {
        for (how, content_type, body) in [
            ("text/csv", "text/csv".to_string(), body.clone()),
            ("multipart", multipart_type(), multipart(BOUNDARY, &[("file", Some("p.csv"), body)])),
        ] {
            let (code, answer) = api.upload(Some(&content_type), body).await;
            assert_eq!((code, error_code(&answer)), (400, "invalid_csv"), "{case} as {how}: {answer}");
            let listed = answer["error"]["details"].as_array().unwrap();
            assert!(!listed.is_empty() && listed.len() <= 100, "{case} as {how}: {answer}");
            assert!(answer["error"]["total"].as_u64().unwrap() >= listed.len() as u64);
            for d in listed {
                assert!(d["line"].as_u64().unwrap() >= 1, "{case}: {d}");
                assert!(d["value"].as_str().unwrap().chars().count() <= 201, "{case}: value not truncated: {d}");
            }
        }
        for content_type in ["application/octet-stream", "image/png", "application/gzip", "application/zip"] {
            let (code, answer) = api.upload(Some(content_type), body.clone()).await;
            assert_eq!((code, error_code(&answer)), (415, "unsupported_media_type"), "{case} as {content_type}");
        }
        assert_nothing_written(&stack, case).await;
    }
    // The compressed CSV said it was compressed: not decoded (API Gateway does not either), refused.
    let response = api
        .http
        .post(api.url("/uploads"))
        .header("content-type", "text/csv")
        .header("content-encoding", "gzip")
        .body(gzip(csv.as_bytes()))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!((code, error_code(&answer)), (415, "unsupported_media_type"), "{answer}");
    assert_nothing_written(&stack, "a gzip body with Content-Encoding: gzip").await;
    // Control: the same CSV, plain, is accepted.
    let (code, answer) = api.upload(Some("text/csv"), csv).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(written(&stack).await, Written { requests: 1, rows: 3, uploads: 1, queued: 3, ..NOTHING });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_refused_at_its_line_and_column() {
    let stack = Stack::new("bad-utf8").await;
    let api = Api::start(&stack, 0).await;
    // (case, rows after the header, expected (line, column) of each error)
    type Case = (&'static str, &'static [u8], &'static [(u64, &'static str)]);
    let cases: [Case; 6] = [
        (
            "a stray byte in a name",
            b"1,Good,https://img.example/1.jpg\n2,Caf\xe9,https://img.example/2.jpg\n",
            &[(3, "Product Name")],
        ),
        ("an overlong `/`", b"1,A\xc0\xafB,https://img.example/1.jpg\n", &[(2, "Product Name")]),
        ("a UTF-16 surrogate", b"1,A\xed\xa0\x80B,https://img.example/1.jpg\n", &[(2, "Product Name")]),
        ("a truncated sequence in a URL", b"1,A,https://img.example/\xe2\x82.jpg\n", &[(2, "Input Image Urls")]),
        ("in a serial number", b"1\xff,A,https://img.example/1.jpg\n", &[(2, "S. No.")]),
        (
            "in spilled URL cells and two rows",
            b"1,A,https://img.example/1.jpg,https://img.example/\xff.jpg\n\n3\xfe,B,https://img.example/3.jpg\n",
            &[(2, "Input Image Urls"), (4, "S. No.")],
        ),
    ];
    for (case, rows, expected) in cases {
        let mut body = HEADER.as_bytes().to_vec();
        body.extend_from_slice(rows);
        let (code, answer) = api.upload(Some("text/csv; charset=utf-8"), body).await;
        assert_eq!((code, error_code(&answer)), (400, "invalid_csv"), "{case}: {answer}");
        let want: Vec<(u64, String)> = expected.iter().map(|(l, c)| (*l, c.to_string())).collect();
        assert_eq!(details(&answer), want, "{case}: {answer}");
        assert_eq!(answer["error"]["total"], expected.len(), "{case}");
        for d in answer["error"]["details"].as_array().unwrap() {
            assert!(d["message"].as_str().unwrap().contains("UTF-8"), "{case}: {d}");
        }
        assert_nothing_written(&stack, case).await;
    }
    // In a header name an invalid byte is ignored like punctuation: `Product \xff Name` is `Product Name`.
    let csv = &b"S. No.,Product \xff Name,Input Image Urls\n1,A,https://img.example/1.jpg\n"[..];
    let (code, answer) = api.upload(Some("text/csv"), csv).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(written(&stack).await, Written { requests: 1, rows: 1, uploads: 1, queued: 1, ..NOTHING });
    let row = stack.request_data().find_one(doc! {}).await.unwrap().unwrap();
    assert_eq!(row.get_str("productName").unwrap(), "A");
}

// ---------------------------------------------------------------------------------------------------------------
// Sizes: bodies and headers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413_without_the_server_reading_them() {
    let stack = Stack::with("big-bodies", |c| c.max_csv_bytes = 64 * 1024).await;
    let api = Api::start(&stack, 0).await;

    // Over IMGPIPE_MAX_CSV_BYTES but under the API's payload limit: the function refuses it.
    let mut csv = valid_csv(2000);
    assert!(csv.len() > 64 * 1024);
    let (code, answer) = api.upload(Some("text/csv"), csv.clone()).await;
    assert_eq!((code, error_code(&answer)), (413, "payload_too_large"), "{answer}");
    let form = multipart(BOUNDARY, &[("file", Some("big.csv"), csv.as_bytes())]);
    let (code, answer) = api.upload(Some(&multipart_type()), form).await;
    assert_eq!((code, error_code(&answer)), (413, "payload_too_large"), "{answer}");
    assert_nothing_written(&stack, "a CSV over the limit").await;

    // Over API Gateway's 10 MB: a declared length is refused before a byte of the body is read.
    for length in [imgpipe_local::API_PAYLOAD_LIMIT as u64 + 1, 1 << 40] {
        let start = Instant::now();
        let answer = raw(api.addr, post_head("text/csv", &format!("Content-Length: {length}\r\n")).as_bytes())
            .await
            .expect("an answer");
        assert_eq!((answer.status, error_code(&answer.json())), (413, "payload_too_large"), "{answer:?}");
        assert!(start.elapsed() < Duration::from_secs(3), "the server waited for the body");
    }
    // The same with `Expect: 100-continue`: no `100 Continue`, the final answer at once.
    let answer =
        raw(api.addr, post_head("text/csv", "Content-Length: 20000000\r\nExpect: 100-continue\r\n").as_bytes())
            .await
            .unwrap();
    assert_eq!(answer.status, 413, "{answer:?}");

    // A chunked body (no length) of 64 MiB: refused once it passes 10 MiB; the server stops reading, so the
    // client cannot send it all.
    let stream = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        if write.write_all(post_head("text/csv", "Transfer-Encoding: chunked\r\n").as_bytes()).await.is_err() {
            return sent;
        }
        let line = "9,Product,https://img.example/9.jpg\n".repeat(1024);
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        while sent < 64 << 20 {
            if write.write_all(chunk.as_bytes()).await.is_err() {
                return sent;
            }
            sent += line.len();
        }
        let _ = write.write_all(b"0\r\n\r\n").await;
        sent
    });
    let answer = read_answer(&mut read).await.expect("an answer");
    assert_eq!((answer.status, error_code(&answer.json())), (413, "payload_too_large"), "{answer:?}");
    assert_closed(&mut read).await;
    drop(read);
    let sent = tokio::time::timeout(ANSWER_DEADLINE, sender).await.expect("the sender is not stuck").unwrap();
    assert!(sent < 64 << 20, "the server read the whole 64 MiB body");

    api.assert_serving().await;
    assert_nothing_written(&stack, "bodies over the API limit").await;
    // Control: a CSV just under the limit is accepted.
    while csv.len() > 60 * 1024 {
        csv.truncate(csv[..csv.len() - 1].rfind('\n').unwrap() + 1);
    }
    let (code, answer) = api.upload(Some("text/csv"), csv).await;
    assert_eq!(code, 202, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_or_numerous_headers_get_a_clean_431_and_the_server_keeps_serving() {
    let stack = Stack::new("big-headers").await;
    let api = Api::start(&stack, 0).await;
    let csv = valid_csv(1);
    let upload_with = |extra: String| {
        let mut request = post_head("text/csv", &format!("Content-Length: {}\r\n{extra}", csv.len())).into_bytes();
        request.extend_from_slice(csv.as_bytes());
        request
    };

    // Over API Gateway's 10,240 bytes of request line and headers: refused by the local runner, in the JSON shape.
    for (case, extra) in [
        ("one 64 KiB header", format!("X-Pad: {}\r\n", "a".repeat(64 * 1024))),
        ("a 12 KiB cookie", format!("Cookie: c={}\r\n", "b".repeat(12 * 1024))),
        ("90 headers of 120 bytes", (0..90).map(|i| format!("X-H{i}: {}\r\n", "c".repeat(120))).collect()),
    ] {
        let answer = raw(api.addr, &upload_with(extra)).await.unwrap_or_else(|| panic!("{case}: no answer"));
        assert_eq!((answer.status, error_code(&answer.json())), (431, "headers_too_large"), "{case}: {answer:?}");
        api.assert_serving().await;
    }
    // Over what the HTTP server parses at all (100 headers, about 400 KiB): its own empty 431, then it closes.
    for (case, extra) in [
        ("1,000 headers", (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()),
        ("one 512 KiB header", format!("X-Pad: {}\r\n", "a".repeat(512 * 1024))),
    ] {
        let answer = raw(api.addr, &upload_with(extra)).await.unwrap_or_else(|| panic!("{case}: no answer"));
        assert_eq!(answer.status, 431, "{case}: {answer:?}");
        api.assert_serving().await;
    }
    // An Idempotency-Key over its documented 255 characters.
    let answer = raw(api.addr, &upload_with(format!("Idempotency-Key: {}\r\n", "k".repeat(256)))).await.unwrap();
    assert_eq!((answer.status, error_code(&answer.json())), (400, "bad_request"), "{answer:?}");
    assert_nothing_written(&stack, "huge headers").await;

    // Control: 9 KiB of headers is under the limit, and the upload goes through.
    let answer = raw(api.addr, &upload_with(format!("X-Pad: {}\r\n", "a".repeat(9 * 1024)))).await.unwrap();
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(written(&stack).await, Written { requests: 1, rows: 1, uploads: 1, queued: 1, ..NOTHING });
}

// ---------------------------------------------------------------------------------------------------------------
// Bodies that end early, and requests that are not what the API takes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_aborted_bodies_are_never_ingested() {
    let stack = Stack::new("truncated").await;
    let api = Api::start(&stack, 0).await;
    // 10 complete rows, then the connection ends: a prefix of 5 complete rows must not become a request.
    let csv = valid_csv(10);
    let half = csv[..csv.len() / 2].rfind('\n').unwrap() + 1;
    let prefix = &csv[..half];
    assert!(imgpipe_core::csv_input::parse_csv(prefix.as_bytes(), stack.app.ingest().csv_limits()).is_ok());

    // Content-Length announces the whole CSV, half arrives, the client closes its side.
    let mut request = post_head("text/csv", &format!("Content-Length: {}\r\n", csv.len())).into_bytes();
    request.extend_from_slice(prefix.as_bytes());
    let answer = raw_cut(api.addr, &request).await.expect("an answer");
    assert_eq!((answer.status, error_code(&answer.json())), (400, "bad_request"), "{answer:?}");
    assert_nothing_written(&stack, "a body shorter than its Content-Length").await;

    // Chunked, with complete chunks, then the client closes its side without the last chunk.
    let mut request = post_head("text/csv", "Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(format!("{:x}\r\n{prefix}\r\n", prefix.len()).as_bytes());
    let answer = raw_cut(api.addr, &request).await.expect("an answer");
    assert_eq!((answer.status, error_code(&answer.json())), (400, "bad_request"), "{answer:?}");
    assert_nothing_written(&stack, "a chunked body without its last chunk").await;

    // A broken chunk header.
    let mut request = post_head("text/csv", "Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(format!("{:x}\r\n{prefix}\r\nzz\r\n", prefix.len()).as_bytes());
    let answer = raw_cut(api.addr, &request).await.expect("an answer");
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_nothing_written(&stack, "a broken chunk header").await;

    // The client disappears mid-body (the socket is reset, nobody is left to answer).
    for chunked in [false, true] {
        let stream = tokio::net::TcpStream::connect(api.addr).await.unwrap();
        let mut request = if chunked {
            let mut r = post_head("text/csv", "Transfer-Encoding: chunked\r\n").into_bytes();
            r.extend_from_slice(format!("{:x}\r\n{prefix}\r\n", prefix.len()).as_bytes());
            r
        } else {
            post_head("text/csv", &format!("Content-Length: {}\r\n", csv.len())).into_bytes()
        };
        if !chunked {
            request.extend_from_slice(prefix.as_bytes());
        }
        let mut stream = stream;
        stream.write_all(&request).await.unwrap();
        // The server has read all that was sent (it is now waiting for the rest of the body)...
        let client = stream.local_addr().unwrap();
        let inode = poll(|| server_socket(api.addr, client).filter(|s| s.rx_queue == 0).map(|s| s.inode)).await;
        stream.set_zero_linger().unwrap();
        drop(stream);
        // ...and, after the reset, has let go of the connection: its handler is done with this request.
        poll(|| (!fd_open(inode)).then_some(())).await;
        assert_nothing_written(&stack, &format!("a client gone mid-body (chunked: {chunked})")).await;
    }
    api.assert_serving().await;

    // Control: the whole body, the same way, is accepted with its 10 rows.
    let mut request = post_head("text/csv", &format!("Content-Length: {}\r\n", csv.len())).into_bytes();
    request.extend_from_slice(csv.as_bytes());
    let answer = raw(api.addr, &request).await.unwrap();
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.json()["totalProducts"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_types_and_forms_without_a_file_are_refused() {
    let stack = Stack::new("ctypes").await;
    let api = Api::start(&stack, 0).await;
    let csv = valid_csv(2);
    for content_type in [
        None,
        Some(""),
        Some("application/octet-stream"),
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("text/html"),
        Some("image/png"),
        Some("multipart/mixed; boundary=x"),
        Some("text/csvx"),
        Some("csv"),
    ] {
        let (code, answer) = api.upload(content_type, csv.clone()).await;
        assert_eq!((code, error_code(&answer)), (415, "unsupported_media_type"), "{content_type:?}: {answer}");
    }
    let file = ("file", Some("p.csv"), csv.as_bytes());
    let forms: [(&str, String, Vec<u8>, &str); 7] = [
        ("no boundary", "multipart/form-data".into(), multipart(BOUNDARY, &[file]), "multipart"),
        ("only another field", multipart_type(), multipart(BOUNDARY, &[("note", None, b"hi")]), "`file`"),
        (
            "the file under another name",
            multipart_type(),
            multipart(BOUNDARY, &[("File", Some("p.csv"), csv.as_bytes())]),
            "`file`",
        ),
        ("no parts at all", multipart_type(), format!("--{BOUNDARY}--\r\n").into_bytes(), "`file`"),
        ("an empty body", multipart_type(), Vec::new(), "multipart"),
        ("another boundary", "multipart/form-data; boundary=other".into(), multipart(BOUNDARY, &[file]), "multipart"),
        (
            "cut before the end of the file part",
            multipart_type(),
            multipart(BOUNDARY, &[file])[..60].to_vec(),
            "multipart",
        ),
    ];
    for (case, content_type, body, needle) in forms {
        let (code, answer) = api.upload(Some(&content_type), body).await;
        assert_eq!((code, error_code(&answer)), (400, "bad_request"), "{case}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{case}: {message}");
    }
    // A file part that is empty is an empty CSV.
    let (code, answer) =
        api.upload(Some(&multipart_type()), multipart(BOUNDARY, &[("file", Some("e.csv"), b"")])).await;
    assert_eq!((code, error_code(&answer)), (400, "invalid_csv"), "{answer}");
    assert_nothing_written(&stack, "wrong content types and forms").await;

    // Controls: the media type is case-insensitive and takes parameters; the file field may follow others.
    let (code, answer) = api.upload(Some("Text/CSV; charset=UTF-8; header=present"), csv.clone()).await;
    assert_eq!(code, 202, "{answer}");
    let form = multipart(BOUNDARY, &[("note", None, b"hi"), file]);
    let (code, answer) = api.upload(Some(&multipart_type()), form).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(written(&stack).await, Written { requests: 2, rows: 4, uploads: 2, queued: 4, ..NOTHING });
}

// ---------------------------------------------------------------------------------------------------------------
// Through the whole pipeline.

async fn rows_of(stack: &Stack, id: &str) -> Vec<Document> {
    let cursor = stack.request_data().find(doc! {"requestId": id}).sort(doc! {"serialNumber": 1}).await.unwrap();
    cursor.try_collect().await.unwrap()
}

/// The records of an output CSV, header first.
fn csv_records(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes);
    reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formula_cells_are_escaped_in_the_output_csv_and_kept_as_they_are_by_the_status_api() {
    let stack = Stack::new("formulas").await;
    let server = ImageServer::start().await;
    let api = Api::start(&stack, 2).await;
    // (CSV cell as written, product name as stored and returned by the status API)
    let names: [(&str, &str); 12] = [
        ("=cmd|' /C calc'!A0", "=cmd|' /C calc'!A0"),
        ("\"+SUM(1,2)*cmd|' /C calc'!A0\"", "+SUM(1,2)*cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0"),
        (
            "\"=HYPERLINK(\"\"http://evil.example/?x\"\",\"\"click\"\")\"",
            "=HYPERLINK(\"http://evil.example/?x\",\"click\")",
        ),
        ("\"\t=1+1\"", "=1+1"),
        ("\"\r=2+2\"", "=2+2"),
        (" =3+3", "=3+3"),
        ("\"=4+4\n=5+5\"", "=4+4\n=5+5"),
        ("Plain name", "Plain name"),
        ("\"Shoe, =red\"", "Shoe, =red"),
        ("'=already quoted", "'=already quoted"),
    ];
    let mut csv = String::from(HEADER);
    for (i, (cell, _)) in names.iter().enumerate() {
        let url = server.serve(&format!("/{i}.jpg"), "image/jpeg", jpeg(&photo(24, 16, i as u32), 90));
        csv.push_str(&format!("{},{cell},{url}\n", i + 1));
    }
    let (code, accepted) = api.upload(Some("text/csv"), csv).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["requestId"].as_str().unwrap().to_string();
    let status = api.wait_final(&stack, &id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "completed", "{status}");
    let n = names.len();
    assert_eq!(status["counts"], json!({"products": n, "images": n, "processed": n, "succeeded": n, "failed": 0}));
    let got: Vec<&str> =
        status["rows"].as_array().unwrap().iter().map(|r| r["productName"].as_str().unwrap()).collect();
    let stored: Vec<&str> = names.iter().map(|(_, s)| *s).collect();
    assert_eq!(got, stored, "the status API returns the names as they were read");

    let (code, content_type, served) = api.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!((code, content_type.as_str()), (200, "text/csv; charset=utf-8"));
    let saved =
        stack.object(&stack.app.config.outputs_bucket, &format!("outputs/tests/{id}/output.csv")).await.unwrap();
    for (which, bytes) in [("served", &served), ("stored", &saved)] {
        let records = csv_records(bytes);
        assert_eq!(records.len(), n + 1, "{which}");
        for (i, record) in records.iter().enumerate() {
            for cell in record {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{which}: record {i} has a cell a spreadsheet would run: {cell:?}"
                );
            }
        }
        let names_out: Vec<&str> = records[1..].iter().map(|r| r[1].as_str()).collect();
        let expected: Vec<String> = stored
            .iter()
            .map(|s| if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() })
            .collect();
        assert_eq!(names_out, expected, "{which}");
        assert!(records[1..].iter().all(|r| r[4].is_empty() && !r[3].is_empty()), "{which}");
    }
    assert_eq!(stack.puts_of(&format!("outputs/tests/{id}/output.csv")), 1);
    assert_eq!(server.hits(), n, "each image fetched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_urls_that_are_not_images_fail_only_themselves_each_with_its_reason() {
    let stack = Stack::with("bad-urls", |c| c.max_image_bytes = 100_000).await;
    let server = ImageServer::start().await;
    let api = Api::start(&stack, 2).await;
    let good = server.serve("/good.jpg", "image/jpeg", jpeg(&photo(120, 80, 1), 90));
    let good_png = server.serve("/good.png", "image/png", png(&image::DynamicImage::ImageRgb8(photo(40, 30, 2))));
    let html = server.serve("/page.jpg", "text/html", b"<!DOCTYPE html><html><body>Sign in</body></html>".to_vec());
    let svg = server.serve(
        "/logo.png",
        "image/svg+xml",
        br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#
            .to_vec(),
    );
    let text = server.serve("/notes.jpg", "image/jpeg", b"just some text, not a picture\n".to_vec());
    let looped = server.redirect("/loop.jpg", "/loop.jpg");
    let ping = server.redirect("/ping.jpg", "/pong.jpg");
    server.redirect("/pong.jpg", "/ping.jpg");
    let big = server.serve("/big.jpg", "image/jpeg", pseudo_random_bytes(150_000, 7));
    let big_chunked = server.serve_chunked("/big-chunked.jpg", "image/jpeg", pseudo_random_bytes(150_000, 8));
    let missing = server.serve_status("/missing.jpg", 404, "text/plain", b"not here".to_vec());
    let gone = server.serve_status("/gone.jpg", 410, "text/plain", b"gone".to_vec());
    let csv = format!(
        "{HEADER}1,Row one,\"{good},{html},{svg}\"\n2,Row two,\"{text},{looped},{ping}\"\n\
         3,Row three,\"{big},{big_chunked},{missing},{good_png}\"\n4,Row four,{gone}\n"
    );
    let (code, accepted) = api.upload(Some("text/csv"), csv).await;
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(accepted["totalImages"], 11);
    let id = accepted["requestId"].as_str().unwrap().to_string();
    let status = api.wait_final(&stack, &id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(
        status["counts"],
        json!({"products": 4, "images": 11, "processed": 11, "succeeded": 2, "failed": 9}),
        "{status}"
    );

    // Each image: its state and its recorded reason (the precise cause is in the logs only).
    use imgpipe_core::failure::FailureReason::{self, *};
    let expected: [(usize, usize, Option<FailureReason>); 11] = [
        (0, 0, None),
        (0, 1, Some(UnsupportedFormat)),
        (0, 2, Some(UnsupportedFormat)),
        (1, 0, Some(UnsupportedFormat)),
        (1, 1, Some(BadRedirect)),
        (1, 2, Some(BadRedirect)),
        (2, 0, Some(TooLarge)),
        (2, 1, Some(TooLarge)),
        (2, 2, Some(HttpStatus)),
        (2, 3, None),
        (3, 0, Some(HttpStatus)),
    ];
    for (row, index, reason) in expected {
        let image = &status["rows"][row]["images"][index];
        let output = &status["rows"][row]["outputImageUrls"][index];
        match reason {
            None => {
                assert_eq!(image["state"], "succeeded", "row {row} image {index}: {image}");
                assert!(output.as_str().is_some_and(|u| !u.is_empty()), "row {row} image {index}: {output}");
            }
            Some(reason) => {
                assert_eq!(image["state"], "failed", "row {row} image {index}: {image}");
                assert_eq!(image["reason"], reason.code(), "row {row} image {index}: {image}");
                assert_eq!(image["error"], reason.message(), "row {row} image {index}: {image}");
                assert!(output.is_null(), "row {row} image {index}: {output}");
            }
        }
    }
    // Permanent failures are not retried; a redirect loop stops after 5 redirects.
    for path in ["/good.jpg", "/good.png", "/page.jpg", "/logo.png", "/notes.jpg", "/big.jpg", "/big-chunked.jpg"] {
        assert_eq!(server.hits_of(path), 1, "{path}");
    }
    assert_eq!((server.hits_of("/missing.jpg"), server.hits_of("/gone.jpg")), (1, 1));
    assert_eq!(server.hits_of("/loop.jpg"), 6, "the first request and 5 redirects");
    assert_eq!(server.hits_of("/ping.jpg") + server.hits_of("/pong.jpg"), 6);

    // The output CSV: aligned, with each reason.
    let (code, _, served) = api.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 200);
    let records = csv_records(&served);
    assert_eq!(records.len(), 5);
    let shape: Vec<Vec<bool>> = records[1..].iter().map(|r| r[3].split(',').map(|u| !u.is_empty()).collect()).collect();
    assert_eq!(
        shape,
        [vec![true, false, false], vec![false, false, false], vec![false, false, false, true], vec![false]]
    );
    assert!(records[1][4].starts_with("image 2: ") && records[1][4].contains("; image 3: "), "{:?}", records[1]);
    let http = HttpStatus.message();
    assert!(records[3][4].contains(&format!("image 3: {http}")), "{:?}", records[3]);
    assert_eq!(records[4][4], format!("image 1: {http}"), "{:?}", records[4]);

    // Written exactly once: two images and the output CSV; nothing left queued or dead-lettered.
    let mut keys = stack.keys(&stack.app.config.outputs_bucket, "").await;
    keys.sort();
    let want = [
        format!("outputs/tests/{id}/1-0.jpg"),
        format!("outputs/tests/{id}/3-3.jpg"),
        format!("outputs/tests/{id}/output.csv"),
    ];
    assert_eq!(keys, want);
    assert!(want.iter().all(|k| stack.puts_of(k) == 1), "{want:?}");
    let rows = rows_of(&stack, &id).await;
    let settled: Vec<(i64, i64)> =
        rows.iter().map(|r| (r.get_i64("settledImages").unwrap(), r.get_i64("failedImages").unwrap())).collect();
    assert_eq!(settled, [(3, 2), (3, 3), (4, 3), (1, 1)]);
    assert_eq!((stack.queue_depth().await, stack.dlq_depth().await), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_failing_image_servers_are_retried_dead_lettered_and_lose_nothing() {
    // The stack's queue redrives after 3 receives, 2 s visibility timeout; stalls time out after 1 s.
    let stack = Stack::with("stalls", |c| c.fetch_timeout_ms = 1_000).await;
    let server = ImageServer::start().await;
    let api = Api::start(&stack, 2).await;
    let good = server.serve("/good.jpg", "image/jpeg", jpeg(&photo(64, 48, 1), 90));
    let error = server.serve_status("/error.jpg", 500, "text/plain", b"internal error".to_vec());
    let silent = server.stall("/silent.jpg");
    let slow = server.stall_body("/slow.jpg", 50_000, jpeg(&photo(64, 48, 2), 90)[..100].to_vec());
    let csv = format!("{HEADER}1,A,\"{good},{error}\"\n2,B,\"{silent},{slow}\"\n");
    let (code, accepted) = api.upload(Some("text/csv"), csv).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["requestId"].as_str().unwrap().to_string();

    // Each failing image is tried once per receive, then its message is dead-lettered; the request waits.
    let start = Instant::now();
    while stack.dlq_depth().await < 3 {
        assert!(start.elapsed() < Duration::from_secs(40), "not dead-lettered: {}", stack.dlq_depth().await);
        // Polling interval (bounded by the deadline above).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, status) = api.get_json(&format!("/requests/{id}")).await;
    assert_eq!(status["status"], "processing", "{status}");
    assert_eq!(
        status["counts"],
        json!({"products": 2, "images": 4, "processed": 1, "succeeded": 1, "failed": 0}),
        "a transient failure is not the image's outcome"
    );
    for (row, index) in [(0, 1), (1, 0), (1, 1)] {
        assert_eq!(status["rows"][row]["images"][index]["state"], "pending", "row {row} image {index}");
    }
    for path in ["/error.jpg", "/silent.jpg", "/slow.jpg"] {
        assert_eq!(server.hits_of(path), 3, "{path}: one fetch per receive");
    }
    let (code, body) = api.get_json(&format!("/requests/{id}/output.csv")).await;
    assert_eq!((code, error_code(&body)), (409, "not_ready"));
    assert_eq!((stack.dlq_depth().await, stack.queue_depth().await), (3, 0));

    // The sources are fixed and the dead-lettered messages moved back (the documented operator action).
    for (path, seed) in [("/error.jpg", 3), ("/silent.jpg", 4), ("/slow.jpg", 5)] {
        server.serve(path, "image/jpeg", jpeg(&photo(64, 48, seed), 90));
    }
    let dlq_name = format!("{}-dlq", imgpipe_local::queue_name(&stack.app.config.queue_url));
    let dlq = stack.sqs.get_queue_url().queue_name(dlq_name).send().await.unwrap().queue_url.unwrap();
    let mut moved = 0;
    let start = Instant::now();
    while moved < 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "only {moved} of 3 dead-lettered messages received");
        let out = stack.sqs.receive_message().queue_url(&dlq).max_number_of_messages(10).wait_time_seconds(1).send();
        for m in out.await.unwrap().messages.unwrap_or_default() {
            let body = m.body().unwrap();
            stack.sqs.send_message().queue_url(&stack.app.config.queue_url).message_body(body).send().await.unwrap();
            stack
                .sqs
                .delete_message()
                .queue_url(&dlq)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            moved += 1;
        }
    }
    let status = api.wait_final(&stack, &id, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["counts"], json!({"products": 2, "images": 4, "processed": 4, "succeeded": 4, "failed": 0}));
    for path in ["/error.jpg", "/silent.jpg", "/slow.jpg"] {
        assert_eq!(server.hits_of(path), 4, "{path}");
    }
    assert_eq!(server.hits_of("/good.jpg"), 1);
    let mut keys = stack.keys(&stack.app.config.outputs_bucket, "").await;
    keys.sort();
    let want: Vec<String> = ["1-0.jpg", "1-1.jpg", "2-0.jpg", "2-1.jpg", "output.csv"]
        .iter()
        .map(|k| format!("outputs/tests/{id}/{k}"))
        .collect();
    assert_eq!(keys, want);
    assert!(want.iter().all(|k| stack.puts_of(k) == 1), "each object written once");
    let (_, _, served) = api.get(&format!("/requests/{id}/output.csv")).await;
    let records = csv_records(&served);
    assert!(records[1..].iter().all(|r| r[3].split(',').all(|u| !u.is_empty()) && r[4].is_empty()), "{records:?}");
    assert_eq!((stack.queue_depth().await, stack.dlq_depth().await), (0, 0));
}
