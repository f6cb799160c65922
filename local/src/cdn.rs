//! What the stack's CloudFront distribution does on AWS, done on the runner's port: `GET /cdn/<key>` (and `HEAD`)
//! answers an object of the outputs bucket, streamed from S3 with its content type, without a token. As on AWS
//! (origin access control allowing `s3:GetObject` on `outputs/*` only), only `outputs/` keys of the outputs
//! bucket are served and nothing is listed: a key that is not an object answers `404`, like any other path here.
//!
//! The local configuration (`scripts/local.env`) makes `http://$IMGPIPE_LOCAL_ADDR/cdn` the output base URL, so
//! the stored `outputImageUrls` and the output CSV carry URLs that keep working as long as the runner runs.
//!
//! It reads the bucket with an S3 client of its own (built as the app's S3 adapter builds one), not through the
//! app's `BlobStore` port: the distribution is not part of the app on AWS either, it reads its origin directly, and
//! it streams objects, which the functions never need (the port's reads are whole or capped bodies).

use aws_sdk_s3::error::DisplayErrorContext;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use imgpipe_core::Config;

/// The path under which the outputs bucket is served.
pub const PREFIX: &str = "/cdn/";

/// The only keys served (what the distribution's bucket policy grants).
const SERVED_KEYS: &str = "outputs/";

/// The object key of a `/cdn/…` path: percent-decoded, under `outputs/`, without empty, `.` or `..` segments (S3
/// keys are literal, but no output key has them, and a client or proxy might normalise them into another key).
pub fn object_key(path: &str) -> Option<String> {
    let encoded = path.strip_prefix(PREFIX)?;
    let key = percent_encoding::percent_decode_str(encoded).decode_utf8().ok()?;
    let rest = key.strip_prefix(SERVED_KEYS)?;
    let clean = rest.split('/').all(|segment| !matches!(segment, "" | "." | ".."));
    clean.then(|| key.into_owned())
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// The outputs bucket, read the way the distribution reads its origin.
#[derive(Clone)]
pub struct Cdn {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl Cdn {
    pub async fn new(config: &Config) -> Self {
        let sdk = imgpipe_core::adapters::aws_config(config).await;
        let s3 = imgpipe_core::adapters::s3::S3Store::new(&sdk, config).client().clone();
        Self { s3, bucket: config.outputs_bucket.clone() }
    }

    /// Answers a request whose path starts with [`PREFIX`].
    pub async fn serve(&self, method: &Method, path: &str) -> Response {
        if method != Method::GET && method != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let Some(key) = object_key(path) else {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        let out = match self.s3.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return plain(StatusCode::NOT_FOUND, "not found\n");
            }
            Err(e) => {
                tracing::warn!(key, error = %DisplayErrorContext(&e), "cdn: GetObject failed");
                return plain(StatusCode::BAD_GATEWAY, "the origin did not answer\n");
            }
        };
        let mut response = Response::builder().status(StatusCode::OK);
        let headers = [
            (header::CONTENT_TYPE, out.content_type().unwrap_or("application/octet-stream").to_string()),
            (header::ETAG, out.e_tag().unwrap_or_default().to_string()),
            (header::CONTENT_LENGTH, out.content_length().map(|n| n.to_string()).unwrap_or_default()),
            (
                header::LAST_MODIFIED,
                out.last_modified()
                    .and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::HttpDate).ok())
                    .unwrap_or_default(),
            ),
        ];
        for (name, value) in headers.into_iter().filter(|(_, v)| !v.is_empty()) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response = response.header(name, value);
            }
        }
        let body =
            if method == Method::HEAD {
                Body::empty()
            } else {
                // Streamed chunk by chunk as S3 sends it: the runner never holds a whole object.
                let stream = futures::stream::unfold(out.body, |mut body| async move {
                    body.next().await.map(|chunk| (chunk, body))
                });
                Body::from_stream(stream)
            };
        response.body(body).unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad headers\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_outputs_keys_are_served() {
        let id = "0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b";
        assert_eq!(object_key(&format!("/cdn/outputs/acme/{id}/1-0.jpg")), Some(format!("outputs/acme/{id}/1-0.jpg")));
        assert_eq!(object_key("/cdn/outputs/a%20b/1-0.jpg").as_deref(), Some("outputs/a b/1-0.jpg"));
        for refused in [
            "/cdn/",
            "/cdn/outputs/",
            "/cdn/outputs",
            "/cdn/uploads/acme/x.csv",
            "/cdn/incoming/x.csv",
            "/cdn/outputs/../uploads/x.csv",
            "/cdn/outputs/%2E%2E/uploads/x.csv",
            "/cdn/outputs/a//b.jpg",
            "/cdn/outputs/./b.jpg",
            "/cdn/outputs/a/",
            "/cdn/outputs/%FF.jpg",
            "/cdnoutputs/a.jpg",
            "/outputs/a.jpg",
        ] {
            assert_eq!(object_key(refused), None, "{refused}");
        }
    }
}
