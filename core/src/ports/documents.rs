//! The document store's roles (MongoDB). Every method is one atomic single-document operation, or a read, so
//! that the services work on a standalone server, a replica set or a sharded cluster without transactions. Every
//! per-request method is keyed by a [`RequestKey`] (tenant and request id), so no query can leave the tenant out;
//! [`SweepStore`] is the one port that looks across tenants, as a system role.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    DailyImages, Finalisation, ImageJob, ImageResult, ListFilter, ProgressShard, QuotaOverrides, Request, RequestId,
    RequestKey, RequestStatus, Row, Tally, Tenant, TenantId, Timestamp, Usage, Visible, WebhookAttempt, WebhookState,
};
use crate::error::Result;

/// One request's document (`Requests`).
#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Inserts the request; if one with the same key exists, returns it instead (and writes nothing).
    async fn insert_request(&self, request: &Request) -> Result<Option<Request>>;
    async fn get_request(&self, key: &RequestKey) -> Result<Option<Request>>;
    /// Records that every image message was sent (first call wins).
    async fn mark_enqueued(&self, key: &RequestKey, at: Timestamp) -> Result<()>;
    /// `pending` → `processing` (no-op in any other state).
    async fn mark_processing(&self, key: &RequestKey) -> Result<()>;
    /// Takes the right to finalise a request that is not final: free, or its holder's lease (`lease` long) has
    /// expired at `now`. `false`: someone else holds it, or the request is final.
    async fn claim_finalisation(&self, key: &RequestKey, now: Timestamp, lease: Duration) -> Result<bool>;
    /// Gives the right back after a failure, so that a retry need not wait for the lease.
    async fn release_finalisation(&self, key: &RequestKey) -> Result<()>;
    /// Sets the final status, counts and output CSV once (`pending|processing` → final), and with
    /// `fin.queue_webhook` (set exactly when the request has a webhook) marks the webhook `queued` in the same
    /// update. `false`: the request was already final.
    async fn finalise(&self, key: &RequestKey, fin: &Finalisation) -> Result<bool>;
}

/// Rows in serial order, read as they are consumed ([`RowStore::rows_after`]); dropping it ends the query.
pub type RowStream = futures::stream::BoxStream<'static, Result<Row>>;

/// Rows per read of a [`RowStream`]: a `RequestData` document is at most about 400 KiB under the CSV limits, so a
/// batch holds at most about 40 MiB (typically well under 1 MiB).
pub const ROW_BATCH: u32 = 100;

/// A request's rows (`RequestData`).
#[async_trait]
pub trait RowStore: Send + Sync {
    /// Inserts rows, skipping those already present (a retried ingestion).
    async fn insert_rows(&self, rows: &[Row]) -> Result<()>;
    async fn get_row(&self, key: &RequestKey, serial_number: i64) -> Result<Option<Row>>;
    /// At most `limit` rows with a serial number above `after`, in serial order.
    async fn rows_page(&self, key: &RequestKey, after: Option<i64>, limit: i64) -> Result<Vec<Row>>;
    /// Every row with a serial number above `after`, in serial order, read as the stream is consumed: one query
    /// whose reads hold at most a batch of [`ROW_BATCH`] rows, whatever the request's size (the status answers).
    async fn rows_after(&self, key: &RequestKey, after: Option<i64>) -> Result<RowStream>;
    /// Moves the job's image (its first position) from `pending` to its result and adds it to the row's counts, in
    /// one guarded update that succeeds once. Returns the row after the change, or `None` when the image was not
    /// pending (settled by this job's earlier delivery or a parallel one).
    async fn settle_image(&self, job: &ImageJob, result: &ImageResult) -> Result<Option<Row>>;
    /// Marks the job's image (its first position) as added to its progress counter.
    async fn mark_counted(&self, job: &ImageJob) -> Result<()>;
    /// Writes the row's aligned `outputImageUrls` and `completedAt` (first call wins).
    async fn complete_row(&self, key: &RequestKey, serial_number: i64, urls: &[String], at: Timestamp) -> Result<()>;
    /// Exact settled / failed counts summed over the rows, both from one read of each row.
    async fn tally(&self, key: &RequestKey) -> Result<Tally>;
}

/// A request's progress counters (`RequestProgress`).
#[async_trait]
pub trait ProgressStore: Send + Sync {
    /// Inserts counters, skipping those already present (a retried ingestion).
    async fn insert_progress(&self, shards: &[ProgressShard]) -> Result<()>;
    /// Adds one settled image to counter `shard`; returns the counter after the increment.
    async fn increment(&self, key: &RequestKey, shard: u32) -> Result<Option<ProgressShard>>;
    async fn get_progress(&self, key: &RequestKey, shard: u32) -> Result<Option<ProgressShard>>;
    async fn all_progress(&self, key: &RequestKey) -> Result<Vec<ProgressShard>>;
}

/// A request's webhook delivery record (`Requests.webhook`).
#[async_trait]
pub trait WebhookLog: Send + Sync {
    /// Appends one delivery attempt (and makes it the delivery's last activity).
    async fn record_attempt(&self, key: &RequestKey, attempt: &WebhookAttempt) -> Result<()>;
    /// Makes `at` the queued delivery's last activity (it was queued again).
    async fn touch_delivery(&self, key: &RequestKey, at: Timestamp) -> Result<()>;
    /// `queued` → `delivered` or `failed` at `at`; `false` if the delivery was not queued (already settled).
    async fn settle_delivery(&self, key: &RequestKey, state: WebhookState, at: Timestamp) -> Result<bool>;
}

/// Reports across requests (`Requests`), of one tenant or (admin) of all.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Requests matching `filter`, newest first, after the (createdAt, requestId) position `after`.
    async fn list_requests(
        &self,
        visible: &Visible,
        filter: &ListFilter,
        after: Option<(Timestamp, RequestId)>,
        limit: i64,
    ) -> Result<Vec<Request>>;
    /// How many requests are in each status (statuses without requests may be absent).
    async fn count_by_status(&self, visible: &Visible) -> Result<Vec<(RequestStatus, i64)>>;
    /// Images of requests finalised on each day from `since_day` (`YYYY-MM-DD`) on, oldest first.
    async fn daily_images(&self, visible: &Visible, since_day: &str) -> Result<Vec<DailyImages>>;
}

/// Tenants (`Tenants`) and what the upload checks against their quotas.
#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn get_tenant(&self, tenant: &TenantId) -> Result<Option<Tenant>>;
    /// Adds the tenant unless it exists; `true` if it was new.
    async fn register_tenant(&self, tenant: &TenantId, at: Timestamp) -> Result<bool>;
    /// Sets the tenant's quota overrides (`None` keeps the default), adding the tenant if it is new.
    async fn set_quotas(&self, tenant: &TenantId, quotas: &QuotaOverrides, at: Timestamp) -> Result<()>;
    /// Takes the tenant's upload lock (free, or its holder's `lease` expired at `now`), which serialises the
    /// tenant's quota checks; returns the holder's token, or `None` if another upload holds it. The tenant need
    /// not be registered.
    async fn lock_uploads(&self, tenant: &TenantId, now: Timestamp, lease: Duration) -> Result<Option<i64>>;
    /// Releases the lock taken with `token` (a no-op if it expired and another took it).
    async fn unlock_uploads(&self, tenant: &TenantId, token: i64) -> Result<()>;
    /// The tenant's requests that are not final, and their images.
    async fn usage(&self, tenant: &TenantId) -> Result<Usage>;
    /// The request an `Idempotency-Key` (by its hash) of the tenant first created, if any.
    async fn find_idempotency_key(&self, tenant: &TenantId, key_hash: &str) -> Result<Option<RequestId>>;
    /// The request an `Idempotency-Key` (by its hash) first created for the tenant: records `id` for it if the key
    /// is new (returning `None`), else returns the id recorded first.
    async fn claim_idempotency_key(
        &self,
        tenant: &TenantId,
        key_hash: &str,
        id: &RequestId,
    ) -> Result<Option<RequestId>>;
}

/// The sweeper's system role: queries across all requests of all tenants, to find work whose owner died. The only
/// port that is not scoped to one tenant; what it returns carries each request's tenant, and everything the sweeper
/// then does goes through the scoped ports.
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
