//! Output URLs that last (issue 19, items 1 and 2): under an output base URL (the stack's CloudFront distribution on
//! AWS, the local runner's `/cdn` here) the stored `outputImageUrls` and the output CSV carry URLs that do not
//! expire; in the private mode (no base URL) every URL answered is presigned and labelled with when it expires.

use std::time::{Duration, Instant};

use imgpipe_core::bson::doc;
use imgpipe_tests::{Caller, ImageServer, Runner, Stack, authorization, jpeg, photo, request_id};

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The output CSV's `Output Image Urls` column: every URL of every row.
fn output_urls(csv: &[u8]) -> Vec<String> {
    let mut reader = csv::Reader::from_reader(csv);
    let column = reader.headers().unwrap().iter().position(|h| h == "Output Image Urls").expect("the column");
    let urls = reader.records().flat_map(|r| r.unwrap()[column].split(',').map(str::to_string).collect::<Vec<_>>());
    urls.filter(|u| !u.is_empty()).collect()
}

#[tokio::test]
async fn output_urls_under_the_local_cdn_still_answer_images_after_the_presign_expiry() {
    let listener = Runner::listener().await;
    let base = format!("http://{}/cdn", listener.local_addr().unwrap());
    let stack = Stack::with("cdn-local", |c| {
        c.output_base_url = Some(base.clone());
        c.url_expiry_secs = 2;
    })
    .await;
    let runner = Runner::start_on(&stack, 0, listener).await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(64, 48, 1), 90));
    let b = server.serve("/b.jpg", "image/jpeg", jpeg(&photo(48, 64, 2), 90));
    let (code, body) =
        stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,A,\"{a},{b}\"\n")).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    stack.drain(Duration::from_secs(30)).await;
    let finished = Instant::now();

    // Past the presign expiry (2 s) with a margin for clock granularity: a presigned URL would be dead by now.
    while finished.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let csv = http()
        .get(format!("{}/requests/{id}/output.csv", runner.url))
        .header("authorization", authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers().get("imgpipe-urls-expire-at").is_none(), "URLs under the base URL do not expire");
    let urls = output_urls(&csv.bytes().await.unwrap());
    assert_eq!(urls.len(), 2, "{urls:?}");
    for url in &urls {
        assert!(url.starts_with(&format!("{base}/outputs/tests/{id}/")), "{url}");
        assert!(!url.contains("X-Amz-"), "not presigned: {url}");
        // No token: the distribution (here the runner's /cdn) serves the objects to anyone with the URL.
        let image = http().get(url).send().await.unwrap();
        assert_eq!(image.status(), 200, "{url}");
        assert_eq!(image.headers()["content-type"], "image/jpeg", "{url}");
        let bytes = image.bytes().await.unwrap();
        assert!(image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).is_ok(), "{url}: a JPEG");
    }
    // What the stored RequestData documents hold is those same URLs.
    let row = stack.request_data().find_one(doc! {"requestId": id.as_str()}).await.unwrap().unwrap();
    let stored: Vec<&str> = row.get_array("outputImageUrls").unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    assert_eq!(stored, urls);

    // Only output objects are served, and nothing is listed: everything else answers 404 like an unknown path.
    stack.app.blobs.put(&stack.app.config.outputs_bucket, "private/x.txt", b"no".to_vec(), "text/plain").await.unwrap();
    for path in [
        "/cdn/private/x.txt".to_string(),
        format!("/cdn/outputs/tests/{id}/"),
        format!("/cdn/outputs/tests/{id}/9-9.jpg"),
        format!("/cdn/outputs/tests/{id}/../../../private/x.txt"),
        "/cdn/".to_string(),
    ] {
        let resp = http().get(format!("{}{path}", runner.url)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    let put = http().put(&urls[0]).body("overwrite").send().await.unwrap();
    assert_eq!(put.status(), 405, "the CDN is read-only");
}

#[tokio::test]
async fn in_the_private_mode_every_answered_url_is_presigned_and_says_when_it_expires() {
    let stack = Stack::with("cdn-private", |c| c.url_expiry_secs = 600).await;
    assert!(stack.app.config.output_base_url.is_none());
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(40, 30, 1), 90));
    let (_, body) = stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,A,{a}\n")).await;
    let id = request_id(&body);
    let before = std::time::SystemTime::now();
    stack.drain(Duration::from_secs(30)).await;
    let (_, status) = stack.status(id.as_str()).await;
    let image = &status["rows"][0]["images"][0];
    assert!(image["outputUrl"].as_str().unwrap().contains("X-Amz-Signature="), "{image}");
    let expires = image["expiresAt"].as_str().expect("expiresAt on a presigned URL");
    let expires = chrono_like_seconds(expires);
    let signed = before.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((signed + 598..=signed + 660).contains(&expires), "expiresAt {expires} vs signed at {signed} + 600 s");

    let resp = stack.get_response(&Caller::test(), &format!("/requests/{id}/output.csv")).await;
    assert_eq!(resp.status(), 200);
    let header = resp.headers()["imgpipe-urls-expire-at"].to_str().unwrap().to_string();
    assert!((signed + 598..=signed + 660).contains(&chrono_like_seconds(&header)), "{header}");
    let urls = output_urls(resp.body());
    assert!(urls.iter().all(|u| u.contains("X-Amz-Expires=600")), "{urls:?}");
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SS[.fff]Z` (days from the civil date,
/// as in Howard Hinnant's algorithm: independent of the product's own date code).
fn chrono_like_seconds(rfc3339: &str) -> i64 {
    let (date, time) = rfc3339.split_once('T').expect("a date and a time");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<i64> = time.trim_end_matches('Z').split(':').map(|p| p.parse::<f64>().unwrap() as i64).collect();
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]
}
