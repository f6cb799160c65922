//! Objects (S3) and queues (SQS).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{ImageJob, RequestId, RequestKey, TenantId};
use crate::error::Result;

/// An object read with a byte cap ([`BlobStore::get_bounded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounded {
    Body(Vec<u8>),
    /// Larger than the cap (the size, or at least how much was seen before stopping).
    TooLarge(u64),
    /// The object is no longer the one asked for (its ETag changed).
    Replaced,
    Missing,
}

/// Object storage (S3).
#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<()>;
    /// `None` when the object does not exist.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>>;
    /// Reads at most `max_bytes` of the object, only if its ETag is still `etag` (when given). The default reads
    /// the whole object; the S3 adapter checks the size before reading and stops as soon as the cap is passed.
    async fn get_bounded(&self, bucket: &str, key: &str, max_bytes: u64, etag: Option<&str>) -> Result<Bounded> {
        let _ = etag;
        Ok(match self.get(bucket, key).await? {
            None => Bounded::Missing,
            Some(body) if body.len() as u64 > max_bytes => Bounded::TooLarge(body.len() as u64),
            Some(body) => Bounded::Body(body),
        })
    }
    /// A time-limited PUT URL for exactly `content_length` bytes: `Content-Type` and `Content-Length` are signed,
    /// so S3 refuses any other size.
    async fn presign_put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        content_length: u64,
        expires_in: Duration,
    ) -> Result<String>;
    /// A time-limited GET URL for a private object.
    async fn presign_get(&self, bucket: &str, key: &str, expires_in: Duration) -> Result<String>;
    /// The object's canonical (unsigned) URL.
    fn object_url(&self, bucket: &str, key: &str) -> String;
}

/// The image job queue (SQS).
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Sends every job, in batches; fails only if some job could not be sent after retries.
    async fn send_jobs(&self, jobs: &[ImageJob]) -> Result<()>;
}

/// One webhook delivery: the body of a message on the webhook queue. The payload is built when the delivery is
/// attempted, from the final request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    /// Version of this message's shape.
    pub schema: u32,
    /// Sent as the `Webhook-Id` header: the same for every attempt and every copy of the delivery, so that a
    /// receiver can de-duplicate.
    pub webhook_id: String,
    pub tenant: TenantId,
    pub request_id: RequestId,
}

impl WebhookDelivery {
    /// 2: the tenant (1 had none).
    pub const SCHEMA: u32 = 2;

    /// The delivery of a request's final-status webhook (one per request: its id is derived from the request's).
    pub fn of(key: &RequestKey) -> Self {
        Self {
            schema: Self::SCHEMA,
            webhook_id: RequestId::derived_from(&format!("webhook:{}:{}", key.tenant, key.id)).to_string(),
            tenant: key.tenant.clone(),
            request_id: key.id.clone(),
        }
    }

    pub fn key(&self) -> RequestKey {
        RequestKey::new(&self.tenant, &self.request_id)
    }
}

/// The webhook delivery queue (SQS, with a dead-letter queue). Retries are the queue's: a failed attempt makes
/// its message visible again after a delay.
#[async_trait]
pub trait DeliveryQueue: Send + Sync {
    async fn enqueue(&self, delivery: &WebhookDelivery) -> Result<()>;
    /// Makes the received message `receipt_handle` visible again after `delay` (the next attempt).
    async fn postpone(&self, receipt_handle: &str, delay: Duration) -> Result<()>;
}
