//! Presigned uploads against the local S3, which verifies SigV4 as S3 does (issue 17): the URLs come from the real
//! `POST /uploads/presign` answer and are PUT over TCP like a client would. A PUT of exactly the announced size is
//! stored; another size, an expired URL and a tampered one (key, signature, expiry) are refused with `403` and store
//! nothing. Against a server that does not verify signatures (moto by default) these tests fail.

use std::time::{Duration, Instant, SystemTime};

use imgpipe_tests::{Stack, authorized, json_of};
use serde_json::Value;

/// `POST /uploads/presign` for a file of `size` bytes, as the test tenant.
async fn presign(stack: &Stack, size: usize) -> Value {
    let body = serde_json::json!({ "size": size }).to_string();
    let req =
        http::Request::builder().method("POST").uri("/uploads/presign").body(lambda_http::Body::from(body)).unwrap();
    let (code, answer) = json_of(imgpipe_upload::handle(&stack.app, authorized(&stack.app, req)).await);
    assert_eq!(code, 200, "{answer}");
    answer
}

/// PUTs `body` to `url` with the headers the answer lists (the body's own length as `Content-Length`).
async fn put(url: &str, body: Vec<u8>) -> (u16, String) {
    let answer = reqwest::Client::new().put(url).header("content-type", "text/csv").body(body).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap_or_default())
}

fn csv(size: usize) -> Vec<u8> {
    let mut csv = b"S. No.,Product Name,Input Image Urls\n1,A,https://img.example/1.jpg\n".to_vec();
    assert!(csv.len() <= size);
    csv.resize(size, b'\n');
    csv
}

/// The answer's object key, and whether the uploads bucket holds anything at all.
async fn stored(stack: &Stack, answer: &Value) -> (Option<Vec<u8>>, usize) {
    let key = answer["key"].as_str().unwrap();
    let bucket = &stack.app.config.uploads_bucket;
    (stack.object(bucket, key).await, stack.keys(bucket, "").await.len())
}

#[track_caller]
fn assert_refused((code, body): &(u16, String), what: &str) {
    assert_eq!(*code, 403, "{what}: {body}");
    assert!(body.contains("<Code>"), "{what}: an S3 error document: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_another_size_than_the_announced_one_is_refused_and_stores_nothing() {
    let stack = Stack::new("presign-size").await;
    let size = 4096;
    let answer = presign(&stack, size).await;
    let url = answer["uploadUrl"].as_str().unwrap();

    assert_refused(&put(url, csv(size + 1)).await, "one byte more");
    assert_refused(&put(url, csv(size - 1)).await, "one byte less");
    assert_eq!(stored(&stack, &answer).await, (None, 0));

    let (code, body) = put(url, csv(size)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(stored(&stack, &answer).await, (Some(csv(size)), 1));
}

/// The instant a presigned URL stops being valid: its `X-Amz-Date` plus `X-Amz-Expires` seconds.
fn expiry_of(url: &str) -> SystemTime {
    let url = reqwest::Url::parse(url).unwrap();
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap();
    let signed = param("X-Amz-Date"); // 20261201T170000Z, the basic form of RFC 3339
    let (d, t) = signed.split_once('T').unwrap();
    let rfc3339 = format!("{}-{}-{}T{}:{}:{}", &d[..4], &d[4..6], &d[6..8], &t[..2], &t[2..4], &t[4..]);
    let signed_at = imgpipe_core::bson::DateTime::parse_rfc3339_str(&rfc3339).unwrap().to_system_time();
    signed_at + Duration::from_secs(param("X-Amz-Expires").parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_after_the_url_expired_is_refused_and_stores_nothing() {
    let stack = Stack::with("presign-expiry", |c| c.url_expiry_secs = 1).await;
    let size = 1000;
    let answer = presign(&stack, size).await;
    assert_eq!(answer["expiresIn"], 1, "{answer}");
    let url = answer["uploadUrl"].as_str().unwrap();

    // Wait for the clock (not for a fixed time) to pass the expiry by a second, so the server's clock (the same
    // machine's, with one-second timestamps) agrees.
    let expired = expiry_of(url) + Duration::from_secs(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while SystemTime::now() <= expired {
        assert!(Instant::now() < deadline, "the clock did not pass the URL's expiry within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = put(url, csv(size)).await;
    assert_refused(&refused, "expired");
    assert!(refused.1.contains("AccessDenied"), "{}", refused.1);
    assert_eq!(stored(&stack, &answer).await, (None, 0));
}

/// `url` with its query parameter `name` replaced by what `change` makes of its value.
fn with_param(url: &str, name: &str, change: impl Fn(&str) -> String) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name { change(&v) } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    assert!(pairs.iter().any(|(k, _)| k == name), "{url} has no {name}");
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_url_is_refused_and_stores_nothing() {
    let stack = Stack::new("presign-tampered").await;
    let size = 1000;
    let answer = presign(&stack, size).await;
    let url = answer["uploadUrl"].as_str().unwrap();
    let key = answer["key"].as_str().unwrap();

    let other_key = url.replacen(key, &key.replacen(".csv", "x.csv", 1), 1);
    assert_ne!(other_key, url);
    let flip = |s: &str| {
        let last = if s.ends_with('0') { '1' } else { '0' };
        format!("{}{last}", &s[..s.len() - 1])
    };
    let tampered = [
        ("another key", other_key),
        ("another signature", with_param(url, "X-Amz-Signature", flip)),
        ("a longer expiry", with_param(url, "X-Amz-Expires", |v| (v.parse::<u64>().unwrap() * 2).to_string())),
    ];
    for (what, url) in &tampered {
        assert_refused(&put(url, csv(size)).await, what);
    }
    assert_eq!(stored(&stack, &answer).await, (None, 0));

    // The URL as signed still works: what was refused was the change.
    let (code, body) = put(url, csv(size)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(stored(&stack, &answer).await, (Some(csv(size)), 1));
}
