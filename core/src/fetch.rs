//! Fetching an image over HTTP(S): timeouts, bounded redirects, and a byte cap enforced while streaming.

use std::time::Duration;

use crate::config::Config;
use crate::domain::ImageUrl;

/// Why a fetch failed, split by whether a retry can help.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Timeouts, connection failures, 5xx, 408 and 429: retried through SQS.
    #[error("{0}")]
    Transient(String),
    /// Other 4xx, oversize bodies, bad redirects: recorded on the image, not retried.
    #[error("{0}")]
    Permanent(String),
}

/// An HTTP client built once per execution environment and reused by every invocation.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: u64,
}

impl Fetcher {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.fetch_timeout_ms))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("imgpipe/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()?;
        Ok(Self { client, max_bytes: config.max_image_bytes })
    }

    /// Downloads the body of `url`, refusing it as soon as it exceeds the byte cap.
    pub async fn fetch(&self, url: &ImageUrl) -> Result<Vec<u8>, FetchError> {
        let mut response = self.client.get(url.url().clone()).send().await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("HTTP {status} from {}", url.url().host_str().unwrap_or(""));
            return Err(if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                FetchError::Transient(message)
            } else {
                FetchError::Permanent(message)
            });
        }
        if response.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(too_large(self.max_bytes));
        }
        let mut body = Vec::with_capacity(response.content_length().unwrap_or(64 * 1024).min(self.max_bytes) as usize);
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(too_large(self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn too_large(max: u64) -> FetchError {
    FetchError::Permanent(format!("image is larger than the {max}-byte limit"))
}

fn classify(e: reqwest::Error) -> FetchError {
    if e.is_redirect() {
        FetchError::Permanent(format!("too many redirects: {e}"))
    } else if e.is_builder() {
        FetchError::Permanent(format!("invalid request: {e}"))
    } else {
        FetchError::Transient(format!("fetch failed: {e}"))
    }
}
