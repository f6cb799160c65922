//! Webhook delivery: one attempt per message of the webhook queue. A failed attempt is retried by the queue: the
//! message becomes visible again after a growing delay (`IMGPIPE_WEBHOOK_BACKOFF_SECS`, doubled per attempt, at
//! most `IMGPIPE_WEBHOOK_MAX_BACKOFF_SECS`), until `IMGPIPE_WEBHOOK_HORIZON_SECS` after the request became
//! final, when the delivery is marked `failed`. Every attempt is recorded on the request. Delivery is
//! at-least-once (a copy of a message, or a re-queued delivery, may be attempted twice): receivers de-duplicate
//! by `Webhook-Id`.

use std::time::Duration;

use serde_json::json;

use super::urls::Urls;
use crate::config::Config;
use crate::domain::{Request, Timestamp, WebhookAttempt, WebhookState};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::ports::{Clock, DeliveryQueue, RequestStore, WebhookDelivery, WebhookLog};
use crate::webhook;

/// One received message of the webhook queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub delivery: WebhookDelivery,
    pub receipt_handle: String,
    /// How many times the queue has handed this message out, this time included (1 for the first attempt).
    pub receive_count: u32,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    Delivered,
    /// Nothing to do: no such request or webhook, or the delivery was already settled.
    Skipped,
    /// Failed; the message comes back after this delay.
    RetryIn(Duration),
    /// Failed past the horizon: marked `failed`.
    GaveUp,
}

/// The ports the delivery handler uses.
pub struct Deliverer<'a> {
    pub requests: &'a dyn RequestStore,
    pub webhooks: &'a dyn WebhookLog,
    pub deliveries: &'a dyn DeliveryQueue,
    pub fetcher: &'a Fetcher,
    pub urls: Urls<'a>,
    pub clock: &'a dyn Clock,
    pub config: &'a Config,
}

/// The delay before attempt `receive_count + 1`.
pub fn backoff(config: &Config, receive_count: u32) -> Duration {
    let doubled = config.webhook_backoff_secs.saturating_mul(1 << receive_count.saturating_sub(1).min(20));
    Duration::from_secs(doubled.min(config.webhook_max_backoff_secs))
}

impl Deliverer<'_> {
    /// Makes one attempt at `message`'s delivery. `Err`: the attempt could not be made or recorded (the message
    /// is retried by the queue's own visibility timeout).
    pub async fn attempt(&self, message: &Received) -> Result<Attempted> {
        let key = message.delivery.key();
        let id = &key;
        let Some(request) = self.requests.get_request(id).await? else {
            tracing::warn!(tenant = %id.tenant, requestId = %id.id, "webhook delivery of an unknown request; dropped");
            return Ok(Attempted::Skipped);
        };
        let Some(hook) = request.webhook.as_ref().filter(|w| w.state == WebhookState::Queued) else {
            tracing::info!(tenant = %id.tenant, requestId = %id.id, "webhook delivery already settled (or never queued); dropped");
            return Ok(Attempted::Skipped);
        };
        let secret = self.config.webhook_secret.as_ref().ok_or_else(|| {
            Error::Config("a webhook is queued but IMGPIPE_WEBHOOK_SECRET is not set for the delivery handler".into())
        })?;
        let tenant_key = webhook::tenant_key(secret.expose().as_bytes(), &request.tenant);
        let body = self.payload(&request).to_string().into_bytes();
        let sent_at = self.clock.now();
        let headers = [
            (webhook::WEBHOOK_ID, message.delivery.webhook_id.clone()),
            (webhook::SIGNATURE, webhook::signature(tenant_key.as_bytes(), sent_at.millis() / 1000, &body)),
            (webhook::REQUEST_ID, key.id.to_string()),
        ];
        let (status, error) = match crate::domain::ImageUrl::parse(&hook.url) {
            Err(e) => (None, Some(format!("invalid webhook URL: {e}"))),
            Ok(url) => match self.fetcher.post_json(&url, body, &headers).await {
                Ok(code) if (200..300).contains(&code) => (Some(code), None),
                Ok(code) => (Some(code), Some(format!("HTTP {code}"))),
                // The caller reads the attempts: the reason's message only, the detail goes to the log.
                Err(e) => {
                    let failure = e.failure();
                    tracing::warn!(tenant = %id.tenant, requestId = %id.id, reason = failure.reason.code(), detail = %failure.detail, "webhook call failed");
                    (None, Some(failure.reason.message().to_string()))
                }
            },
        };
        let at = self.clock.now();
        self.webhooks.record_attempt(id, &WebhookAttempt { at, status, error: error.clone() }).await?;
        let attempt = message.receive_count;
        if error.is_none() {
            tracing::info!(tenant = %id.tenant, requestId = %id.id, attempt, "webhook delivered");
            self.webhooks.settle_delivery(id, WebhookState::Delivered, at).await?;
            return Ok(Attempted::Delivered);
        }
        let horizon = Duration::from_secs(self.config.webhook_horizon_secs);
        let since = hook.queued_at.unwrap_or(at);
        if at.since(since) >= horizon {
            tracing::warn!(tenant = %id.tenant, requestId = %id.id, attempt, error = error.as_deref(), "webhook failed for good");
            self.webhooks.settle_delivery(id, WebhookState::Failed, at).await?;
            return Ok(Attempted::GaveUp);
        }
        let delay = backoff(self.config, attempt);
        tracing::warn!(tenant = %id.tenant, requestId = %id.id, attempt, error = error.as_deref(), retry_in_s = delay.as_secs(), "webhook attempt failed");
        self.deliveries.postpone(&message.receipt_handle, delay).await?;
        Ok(Attempted::RetryIn(delay))
    }

    /// The JSON summary of a final request.
    fn payload(&self, request: &Request) -> serde_json::Value {
        let id = &request.id;
        let _ = &request.tenant;
        let tally = request.final_tally().unwrap_or_default();
        json!({
            "event": format!("request.{}", request.status.as_str()),
            "requestId": id,
            "status": request.status,
            "counts": {
                "products": request.total_products,
                "images": request.total_images,
                "succeeded": tally.succeeded(),
                "failed": tally.failed,
            },
            "createdAt": request.created_at.rfc3339(),
            "completedAt": request.completed_at.map(Timestamp::rfc3339),
            "statusUrl": self.urls.api(&format!("/requests/{id}")),
            "outputCsvUrl": self.urls.api(&format!("/requests/{id}/output.csv")),
        })
    }
}
