//! The document store's roles (MongoDB). Every method is one atomic single-document operation, or a read, so
//! that the services work on a standalone server, a replica set or a sharded cluster without transactions.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    DailyImages, Finalisation, ImageJob, ImageResult, ListFilter, ProgressShard, Request, RequestId, RequestStatus,
    Row, Tally, Timestamp, WebhookAttempt, WebhookState,
};
use crate::error::Result;

/// One request's document (`Requests`).
#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Inserts the request; if one with the same id exists, returns it instead (and writes nothing).
    async fn insert_request(&self, request: &Request) -> Result<Option<Request>>;
    async fn get_request(&self, id: &RequestId) -> Result<Option<Request>>;
    /// Records that every image message was sent (first call wins).
    async fn mark_enqueued(&self, id: &RequestId, at: Timestamp) -> Result<()>;
    /// `pending` → `processing` (no-op in any other state).
    async fn mark_processing(&self, id: &RequestId) -> Result<()>;
    /// Takes the right to finalise a request that is not final: free, or its holder's lease (`lease` long) has
    /// expired at `now`. `false`: someone else holds it, or the request is final.
    async fn claim_finalisation(&self, id: &RequestId, now: Timestamp, lease: Duration) -> Result<bool>;
    /// Gives the right back after a failure, so that a retry need not wait for the lease.
    async fn release_finalisation(&self, id: &RequestId) -> Result<()>;
    /// Sets the final status, counts and output CSV once (`pending|processing` → final), and with
    /// `fin.queue_webhook` (set exactly when the request has a webhook) marks the webhook `queued` in the same
    /// update. `false`: the request was already final.
    async fn finalise(&self, id: &RequestId, fin: &Finalisation) -> Result<bool>;
}

/// A request's rows (`RequestData`).
#[async_trait]
pub trait RowStore: Send + Sync {
    /// Inserts rows, skipping those already present (a retried ingestion).
    async fn insert_rows(&self, rows: &[Row]) -> Result<()>;
    async fn get_row(&self, id: &RequestId, serial_number: i64) -> Result<Option<Row>>;
    /// At most `limit` rows with a serial number above `after`, in serial order.
    async fn rows_page(&self, id: &RequestId, after: Option<i64>, limit: i64) -> Result<Vec<Row>>;
    /// Moves one image from `pending` to its result and adds it to the row's counts, in one guarded update that
    /// succeeds once. Returns the row after the change, or `None` when the image was not pending (settled by
    /// this job's earlier delivery or a parallel one).
    async fn settle_image(&self, job: &ImageJob, result: &ImageResult) -> Result<Option<Row>>;
    /// Marks the image as added to its progress counter.
    async fn mark_counted(&self, job: &ImageJob) -> Result<()>;
    /// Writes the row's aligned `outputImageUrls` and `completedAt` (first call wins).
    async fn complete_row(&self, id: &RequestId, serial_number: i64, urls: &[String], at: Timestamp) -> Result<()>;
    /// Exact settled / failed counts summed over the rows, both from one read of each row.
    async fn tally(&self, id: &RequestId) -> Result<Tally>;
}

/// A request's progress counters (`RequestProgress`).
#[async_trait]
pub trait ProgressStore: Send + Sync {
    /// Inserts counters, skipping those already present (a retried ingestion).
    async fn insert_progress(&self, shards: &[ProgressShard]) -> Result<()>;
    /// Adds one settled image to counter `shard`; returns the counter after the increment.
    async fn increment(&self, id: &RequestId, shard: u32) -> Result<Option<ProgressShard>>;
    async fn get_progress(&self, id: &RequestId, shard: u32) -> Result<Option<ProgressShard>>;
    async fn all_progress(&self, id: &RequestId) -> Result<Vec<ProgressShard>>;
}

/// A request's webhook delivery record (`Requests.webhook`).
#[async_trait]
pub trait WebhookLog: Send + Sync {
    /// Appends one delivery attempt (and makes it the delivery's last activity).
    async fn record_attempt(&self, id: &RequestId, attempt: &WebhookAttempt) -> Result<()>;
    /// Makes `at` the queued delivery's last activity (it was queued again).
    async fn touch_delivery(&self, id: &RequestId, at: Timestamp) -> Result<()>;
    /// `queued` → `delivered` or `failed` at `at`; `false` if the delivery was not queued (already settled).
    async fn settle_delivery(&self, id: &RequestId, state: WebhookState, at: Timestamp) -> Result<bool>;
}

/// Reports across requests (`Requests`).
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Requests matching `filter`, newest first, after the (createdAt, requestId) position `after`.
    async fn list_requests(
        &self,
        filter: &ListFilter,
        after: Option<(Timestamp, RequestId)>,
        limit: i64,
    ) -> Result<Vec<Request>>;
    /// How many requests are in each status (statuses without requests may be absent).
    async fn count_by_status(&self) -> Result<Vec<(RequestStatus, i64)>>;
    /// Images of requests finalised on each day from `since_day` (`YYYY-MM-DD`) on, oldest first.
    async fn daily_images(&self, since_day: &str) -> Result<Vec<DailyImages>>;
}

/// The sweeper's system role: queries across all requests, to find work whose owner died. The only port that is
/// not scoped to one request.
#[async_trait]
pub trait SweepStore: Send + Sync {
    /// Requests not final, created before `created_before`, oldest first, after the (createdAt, requestId)
    /// position `after`.
    async fn unfinished_requests(
        &self,
        created_before: Timestamp,
        after: Option<(Timestamp, RequestId)>,
        limit: i64,
    ) -> Result<Vec<Request>>;
    /// Requests whose webhook is queued and quiet (neither queued nor attempted) since before `quiet_since`,
    /// quietest first.
    async fn stalled_webhooks(&self, quiet_since: Timestamp, limit: i64) -> Result<Vec<Request>>;
}
