//! The worker-wide decode budget (issue 17): one image that cannot be decoded within budget fails alone while its
//! batch settles; a batch whose images together exceed the budget is decoded within it, each image once.
//!
//! Memory is measured from this process (peak RSS, so C allocations count). The two tests take turns (`TURN`),
//! and each test binary is its own process, so what one measures is its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgba, RgbaImage};
use imgpipe_core::bson::{Document, doc};
use imgpipe_core::decode_budget::FETCH_AHEAD;
use imgpipe_tests::{ImageServer, Stack, jpeg, photo, request_id};

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let value = status.lines().find_map(|l| l.strip_prefix(field)).unwrap();
    value.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Resets the peak-RSS mark to what is resident now and returns that (bytes).
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS (/proc/self/clear_refs)");
    status_kib("VmRSS:") * 1024
}

fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn tiff(image: &DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Tiff).unwrap();
    out.into_inner()
}

/// A 32-bit float RGBA TIFF declaring 7071×7071 (50 MP; two 800 MB copies to decode), its strip a 1×1 image's.
fn float_tiff_bomb() -> Vec<u8> {
    let mut tiff = tiff(&DynamicImage::ImageRgba32F(ImageBuffer::from_pixel(1, 1, Rgba([0.5f32; 4]))));
    let ifd = u32::from_le_bytes(tiff[4..8].try_into().unwrap()) as usize;
    let count = usize::from(u16::from_le_bytes([tiff[ifd], tiff[ifd + 1]]));
    for entry in (0..count).map(|i| ifd + 2 + 12 * i) {
        let tag = u16::from_le_bytes([tiff[entry], tiff[entry + 1]]);
        if tag == 256 || tag == 257 {
            let short = u16::from_le_bytes([tiff[entry + 2], tiff[entry + 3]]) == 3;
            let value = if short { [7071u16.to_le_bytes(), [0, 0]].concat() } else { 7071u32.to_le_bytes().to_vec() };
            tiff[entry + 8..entry + 12].copy_from_slice(&value);
        }
    }
    tiff
}

/// Large bodies on 127.0.0.1, shared rather than copied per request (what this process holds is measured),
/// counting requests per path.
struct BodyServer {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl BodyServer {
    async fn start(bodies: HashMap<String, Bytes>) -> Self {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (bodies, counted) = (Arc::new(bodies), hits.clone());
        let router = axum::Router::new().fallback(move |uri: http::Uri| {
            let (bodies, counted) = (bodies.clone(), counted.clone());
            async move {
                *counted.lock().unwrap().entry(uri.path().to_string()).or_default() += 1;
                match bodies.get(uri.path()) {
                    Some(body) => http::Response::new(axum::body::Body::from(body.clone())),
                    None => http::Response::builder().status(404).body(axum::body::Body::empty()).unwrap(),
                }
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            axum::serve(listener, router).with_graceful_shutdown(shutdown).await.unwrap();
        });
        BodyServer { base, hits, _stop: stop }
    }

    fn hits_of(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// Uploads one product per URL and returns the request id and its messages (received, not yet worked).
async fn upload(stack: &Stack, urls: &[String]) -> (String, Vec<aws_sdk_sqs::types::Message>) {
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for (i, url) in urls.iter().enumerate() {
        csv.push_str(&format!("{},Product {i},{url}\n", i + 1));
    }
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut messages = Vec::new();
    while messages.len() < urls.len() {
        assert!(Instant::now() < deadline, "{} of {} messages received", messages.len(), urls.len());
        messages.extend(stack.receive(1).await);
    }
    (request_id(&body).to_string(), messages)
}

/// The image slot of each product (serial numbers 1…), read from MongoDB.
async fn slots(stack: &Stack, id: &str) -> Vec<Document> {
    let mut rows: Vec<Document> = Vec::new();
    let mut cursor = stack.request_data().find(doc! {"requestId": id}).sort(doc! {"serialNumber": 1}).await.unwrap();
    while cursor.advance().await.unwrap() {
        rows.push(cursor.deserialize_current().unwrap());
    }
    rows.iter().map(|r| r.get_document("images").unwrap().get_document("0").unwrap().clone()).collect()
}

/// Uploads one product per URL, works all their messages as one batch (none may go back to the queue), and returns
/// the request id, the products' image slots, and how much the process's peak RSS grew while the batch was worked.
async fn work_one_batch(stack: &Stack, urls: &[String]) -> (String, Vec<Document>, u64) {
    let (id, messages) = upload(stack, urls).await;
    let before = reset_peak_rss();
    let failed = stack.work(&messages).await;
    let grew = peak_rss().saturating_sub(before);
    assert!(failed.is_empty(), "no message goes back to the queue: {failed:?}");
    (id.clone(), slots(stack, &id).await, grew)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_float_tiff_over_budget_fails_alone_and_its_batch_settles() {
    let _turn = TURN.lock().await;
    // The production limits: 50 MP, 20,000 px a side, 1 GiB of decoding memory for one image.
    let stack = Stack::with("budget-tiff", |c| {
        c.max_pixels = 50_000_000;
        c.max_dimension = 20_000;
    })
    .await;
    let server = ImageServer::start().await;
    let urls = vec![
        server.serve("/a.jpg", "image/jpeg", jpeg(&photo(640, 480, 1), 90)),
        server.serve("/bomb.tif", "image/tiff", float_tiff_bomb()),
        server.serve("/b.jpg", "image/jpeg", jpeg(&photo(800, 600, 2), 90)),
        server.serve("/c.jpg", "image/jpeg", jpeg(&photo(320, 240, 3), 90)),
    ];
    let (id, slots, grew) = work_one_batch(&stack, &urls).await;
    let states: Vec<&str> = slots.iter().map(|s| s.get_str("state").unwrap()).collect();
    assert_eq!(states, ["succeeded", "failed", "succeeded", "succeeded"], "{slots:?}");
    assert_eq!(slots[1].get_str("reason").unwrap(), "too_large", "{:?}", slots[1]);
    let request = stack.requests().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    assert_eq!(request.get_str("status").unwrap(), "failed", "finalised by the worker: {request:?}");
    assert_eq!(stack.dlq_depth().await, 0);
    // Three small JPEGs and the clients; the TIFF's 1.6 GB never.
    println!("batch with the float TIFF: peak RSS grew by {grew} bytes");
    assert!(grew < 64 << 20, "peak RSS grew by {grew} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_over_the_budget_is_decoded_within_it_each_image_once() {
    let _turn = TURN.lock().await;
    // 2048×1536 RGBA float TIFFs: 50 MB each as fetched, 100 MB held while decoding (two copies), a decode budget
    // of about 160 MB (with the input-sized allowance) and 50 MB of input: one image at a time fits in 256 MiB,
    // two do not.
    let capacity: u64 = 256 << 20;
    let stack = Stack::with("budget-batch", |c| {
        c.decode_budget_bytes = Some(capacity);
        c.max_image_bytes = 64 << 20;
    })
    .await;
    assert_eq!(stack.app.decode_budget.capacity(), capacity);
    let images = 6;
    let bodies: HashMap<String, Bytes> = (0..images)
        .map(|i| {
            let pixels =
                RgbaImage::from_fn(2048, 1536, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, i as u8 * 40, 255]));
            let body = tiff(&DynamicImage::ImageRgba32F(DynamicImage::ImageRgba8(pixels).to_rgba32f()));
            (format!("/{i}.tif"), Bytes::from(body))
        })
        .collect();
    let server = BodyServer::start(bodies).await;
    let urls: Vec<String> = (0..images).map(|i| format!("{}/{i}.tif", server.base)).collect();
    let input_bytes = 2048 * 1536 * 16;
    let (id, slots, grew) = work_one_batch(&stack, &urls).await;
    assert!(slots.iter().all(|s| s.get_str("state").unwrap() == "succeeded"), "{slots:?}");
    let request = stack.requests().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    assert_eq!(request.get_str("status").unwrap(), "completed", "finalised by the worker: {request:?}");
    let succeeded = request.get("succeededImages").and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)));
    assert_eq!(succeeded, Some(images), "{request:?}");
    for i in 0..images {
        assert_eq!(server.hits_of(&format!("/{i}.tif")), 1, "image {i} fetched once");
    }
    // Within the budget, plus the bodies fetched ahead and waiting their turn (the reserve's share: at most
    // FETCH_AHEAD while one decodes), plus the clients.
    let bound = capacity + FETCH_AHEAD as u64 * input_bytes + (48 << 20);
    println!(
        "batch of {images} float TIFFs: peak RSS grew by {grew} bytes (bound {bound}; all at once would hold {})",
        images as u64 * (input_bytes + 2 * input_bytes)
    );
    assert!(grew <= bound, "peak RSS grew by {grew} bytes, over {bound}");
    assert!(stack.app.decode_budget.peak() <= capacity);
}
