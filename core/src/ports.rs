//! Ports: what the services need from the outside world. Adapters live in [`crate::adapters`].

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::DateTime;

use crate::domain::{ImageJob, ImageState, RequestId, RequestStatus};
use crate::error::Result;
use crate::failure::FailureReason;
use crate::model::{DailyImages, ListFilter, ProgressShard, RequestDoc, RowDoc, Tally, WebhookAttempt};

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

/// How one image ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageResult {
    Succeeded { output_key: String, output_url: String },
    Failed { reason: FailureReason },
}

impl ImageResult {
    pub fn state(&self) -> ImageState {
        match self {
            ImageResult::Succeeded { .. } => ImageState::Succeeded,
            ImageResult::Failed { .. } => ImageState::Failed,
        }
    }
}

/// The document store (MongoDB).
#[async_trait]
pub trait Repository: Send + Sync {
    /// Creates the indexes the queries need; safe to call at every start.
    async fn ensure_indexes(&self) -> Result<()>;
    /// Inserts the request document; if one with the same `requestId` exists, returns it instead.
    async fn insert_request(&self, request: &RequestDoc) -> Result<Option<RequestDoc>>;
    /// Inserts rows, skipping those already present (a retried ingestion).
    async fn insert_rows(&self, rows: &[RowDoc]) -> Result<()>;
    /// Inserts the request's progress counters, skipping those already present (a retried ingestion).
    async fn insert_progress(&self, shards: &[ProgressShard]) -> Result<()>;
    /// Records that every message of the request was sent.
    async fn mark_enqueued(&self, id: &RequestId, at: DateTime) -> Result<()>;
    async fn get_request(&self, id: &RequestId) -> Result<Option<RequestDoc>>;
    async fn get_row(&self, id: &RequestId, serial_number: i64) -> Result<Option<RowDoc>>;
    /// Rows with a serial number above `after`, in serial order.
    async fn rows_page(&self, id: &RequestId, after: Option<i64>, limit: i64) -> Result<Vec<RowDoc>>;
    /// Every row of a request in serial order.
    async fn all_rows(&self, id: &RequestId) -> Result<Vec<RowDoc>>;
    /// Moves one image from `pending` to its result, exactly once. Returns the row after the change,
    /// or `None` when the image was already settled (by this job's earlier delivery or a parallel one).
    async fn settle_image(&self, job: &ImageJob, result: &ImageResult) -> Result<Option<RowDoc>>;
    /// Writes the row's aligned `outputImageUrls` and `completedAt` (idempotent).
    async fn complete_row(
        &self,
        id: &RequestId,
        serial_number: i64,
        output_urls: &[String],
        at: DateTime,
    ) -> Result<()>;
    /// Adds one settled image to its progress counter (`job.shard`), then marks the image as counted.
    /// Returns the counter after the increment.
    async fn count_image(&self, job: &ImageJob) -> Result<Option<ProgressShard>>;
    /// One progress counter of a request.
    async fn get_progress(&self, id: &RequestId, shard: u32) -> Result<Option<ProgressShard>>;
    /// Every progress counter of a request.
    async fn all_progress(&self, id: &RequestId) -> Result<Vec<ProgressShard>>;
    /// `pending` → `processing` (no-op in any other state).
    async fn mark_processing(&self, id: &RequestId) -> Result<()>;
    /// Exact settled / failed counts summed over the rows.
    async fn tally(&self, id: &RequestId) -> Result<Tally>;
    /// Takes the right to finalise the request (free, or its holder's lease expired). `false`: someone else has it.
    async fn claim_finalisation(&self, id: &RequestId, now: DateTime, lease: Duration) -> Result<bool>;
    /// Gives the right back after a failure, so a retry need not wait for the lease.
    async fn release_finalisation(&self, id: &RequestId) -> Result<()>;
    /// Appends one webhook delivery attempt.
    async fn record_webhook_attempt(&self, id: &RequestId, attempt: &WebhookAttempt) -> Result<()>;
    /// Sets the webhook's state (`delivering`, `delivered`, `failed`), with the delivery time when delivered.
    async fn set_webhook_state(&self, id: &RequestId, state: &str, delivered_at: Option<DateTime>) -> Result<()>;
    /// Requests matching `filter`, newest first, after the (createdAt, requestId) position `after`.
    async fn list_requests(
        &self,
        filter: &ListFilter,
        after: Option<(DateTime, RequestId)>,
        limit: i64,
    ) -> Result<Vec<RequestDoc>>;
    /// How many requests are in each status.
    async fn count_by_status(&self) -> Result<Vec<(String, i64)>>;
    /// Images of requests finalised on each day from `since_day` (`YYYY-MM-DD`) on, oldest first.
    async fn daily_images(&self, since_day: &str) -> Result<Vec<DailyImages>>;
    /// Sets the final status once: returns `false` if the request was already final.
    async fn finalise(
        &self,
        id: &RequestId,
        status: RequestStatus,
        tally: Tally,
        output_csv_key: &str,
        at: DateTime,
    ) -> Result<bool>;
}
