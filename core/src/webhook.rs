//! Webhook calls on finalisation: a JSON summary, signed with HMAC-SHA256 over `"<timestamp>.<body>"`, retried
//! with exponential backoff; every attempt and the outcome are recorded on the `Requests` document.
//!
//! Headers: `Imgpipe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` and
//! `Imgpipe-Request-Id: <requestId>` (a receiver deduplicates on it).

use std::time::Duration;

use hmac::{KeyInit, Mac};
use mongodb::bson::DateTime;
use serde_json::Value;

use crate::App;
use crate::domain::ImageUrl;
use crate::error::Result;
use crate::model::{RequestDoc, WebhookAttempt};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature header value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex(&mac.finalize().into_bytes()))
}

/// Whether `header` is a valid signature of `body` (what a receiver checks).
pub fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let Some(timestamp) = header.split(',').find_map(|p| p.strip_prefix("t=")).and_then(|t| t.parse::<i64>().ok())
    else {
        return false;
    };
    let Some(given) = header.split(',').find_map(|p| p.strip_prefix("v1=")) else { return false };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let Ok(given) = (0..given.len())
        .step_by(2)
        .map(|i| given.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or(()))
        .collect::<Result<Vec<u8>, ()>>()
    else {
        return false;
    };
    mac.verify_slice(&given).is_ok()
}

/// Delivers the request's webhook, if it has one. Failures of the receiver are recorded, not returned.
pub async fn deliver(app: &App, request: &RequestDoc, payload: &Value) -> Result<()> {
    let (Some(webhook), Some(secret)) = (&request.webhook, &app.config.webhook_secret) else {
        return Ok(());
    };
    let id = &request.request_id;
    let url = match ImageUrl::parse(&webhook.url) {
        Ok(url) => url,
        Err(e) => {
            let attempt = WebhookAttempt { at: DateTime::now(), status: None, error: Some(e.to_string()) };
            app.repo.record_webhook_attempt(id, &attempt).await?;
            return app.repo.set_webhook_state(id, "failed", None).await;
        }
    };
    app.repo.set_webhook_state(id, "delivering", None).await?;
    let body = payload.to_string().into_bytes();
    let attempts = app.config.webhook_attempts.max(1);
    for n in 0..attempts {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(app.config.webhook_backoff_ms << (n - 1).min(10))).await;
        }
        let timestamp = DateTime::now().timestamp_millis() / 1000;
        let headers = [
            ("imgpipe-signature", signature(secret.as_bytes(), timestamp, &body)),
            ("imgpipe-request-id", id.to_string()),
        ];
        let (status, error) = match app.fetcher.post_json(&url, body.clone(), &headers).await {
            Ok(code) if (200..300).contains(&code) => (Some(code), None),
            Ok(code) => (Some(code), Some(format!("HTTP {code}"))),
            // The caller reads the attempts: the reason's message only, the detail goes to the log.
            Err(e) => {
                tracing::warn!(reason = e.failure().reason.code(), detail = %e.failure().detail, "webhook call failed");
                (None, Some(e.failure().reason.message().to_string()))
            }
        };
        let delivered = error.is_none();
        let at = DateTime::now();
        app.repo
            .record_webhook_attempt(id, &WebhookAttempt { at, status: status.map(i32::from), error: error.clone() })
            .await?;
        if delivered {
            tracing::info!(attempt = n + 1, "webhook delivered");
            return app.repo.set_webhook_state(id, "delivered", Some(at)).await;
        }
        tracing::warn!(attempt = n + 1, error = error.as_deref(), "webhook attempt failed");
    }
    app.repo.set_webhook_state(id, "failed", None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_is_detected() {
        let header = signature(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(b"s3cret", &header, b"{\"a\":1}"));
        assert!(!verify(b"s3cret", &header, b"{\"a\":2}"));
        assert!(!verify(b"other", &header, b"{\"a\":1}"));
        assert!(!verify(b"s3cret", &header.replace("t=1700000000", "t=1700000001"), b"{\"a\":1}"));
        assert!(!verify(b"s3cret", "garbage", b"{\"a\":1}"));
    }
}
