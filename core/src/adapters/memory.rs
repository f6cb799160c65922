//! In-memory twins of the ports, for fast deterministic tests (the exactly-once interleavings). They are held to
//! the MongoDB adapter's behaviour by the same contract tests (`ports::contract`), which also run against the
//! real server. Each operation takes one lock, so it is atomic like a single-document MongoDB update.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::domain::{
    DailyImages, Finalisation, ImageJob, ImageResult, ImageSlot, ImageState, ListFilter, ProgressShard, QuotaOverrides,
    Request, RequestId, RequestKey, RequestStatus, Row, Tally, Tenant, TenantId, Timestamp, Usage, Visible,
    WebhookAttempt, WebhookState,
};
use crate::error::Result;
use crate::ports::{
    BlobStore, Clock, DeliveryQueue, JobQueue, ProgressStore, ReportStore, RequestStore, RowStore, RowStream,
    SweepStore, TenantStore, WebhookDelivery, WebhookLog,
};

/// A checkpoint every twin operation passes before it acts: a test's scheduler can hold it there (to interleave
/// concurrent callers deterministically), make it fail, or drop the caller (a crash). Open by default.
#[async_trait]
pub trait Checkpoint: Send + Sync {
    async fn pass(&self, op: &'static str) -> Result<()>;
}

/// An optional [`Checkpoint`].
#[derive(Clone, Default)]
pub struct Gate(Option<std::sync::Arc<dyn Checkpoint>>);

impl Gate {
    pub fn new(checkpoint: std::sync::Arc<dyn Checkpoint>) -> Self {
        Self(Some(checkpoint))
    }

    async fn pass(&self, op: &'static str) -> Result<()> {
        match &self.0 {
            Some(c) => c.pass(op).await,
            None => Ok(()),
        }
    }
}

#[derive(Default)]
struct Documents {
    /// By `tenant/requestId`.
    requests: HashMap<String, Request>,
    rows: BTreeMap<(String, i64), Row>,
    progress: BTreeMap<(String, i64), ProgressShard>,
    tenants: HashMap<String, Tenant>,
    /// The tenants' upload locks: holder token and expiry.
    locks: HashMap<String, (i64, Timestamp)>,
    idempotency: HashMap<(String, String), RequestId>,
    next_token: i64,
}

/// Every document port on maps behind one lock.
#[derive(Default)]
pub struct MemoryStore {
    docs: Mutex<Documents>,
    gate: Gate,
}

impl MemoryStore {
    pub fn with_gate(gate: Gate) -> Self {
        Self { docs: Mutex::default(), gate }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Documents) -> T) -> T {
        f(&mut self.docs.lock().expect("memory store lock"))
    }
}

fn k(key: &RequestKey) -> String {
    key.to_string()
}

fn job_key(job: &ImageJob) -> String {
    job.key().to_string()
}

/// The (first, last) map keys of every row or counter of a request.
fn range_of(key: &RequestKey) -> std::ops::RangeInclusive<(String, i64)> {
    (k(key), i64::MIN)..=(k(key), i64::MAX)
}

fn visible(visible: &Visible, r: &Request) -> bool {
    match visible {
        Visible::Tenant(t) => &r.tenant == t,
        Visible::AllTenants => true,
    }
}

#[async_trait]
impl RequestStore for MemoryStore {
    async fn insert_request(&self, request: &Request) -> Result<Option<Request>> {
        self.gate.pass("insert_request").await?;
        Ok(self.with(|d| match d.requests.get(&k(&request.key())) {
            Some(existing) => Some(existing.clone()),
            None => {
                d.requests.insert(k(&request.key()), request.clone());
                None
            }
        }))
    }

    async fn get_request(&self, key: &RequestKey) -> Result<Option<Request>> {
        self.gate.pass("get_request").await?;
        Ok(self.with(|d| d.requests.get(&k(key)).cloned()))
    }

    async fn mark_enqueued(&self, key: &RequestKey, at: Timestamp) -> Result<()> {
        self.gate.pass("mark_enqueued").await?;
        self.with(|d| {
            if let Some(r) = d.requests.get_mut(&k(key)) {
                r.enqueued_at.get_or_insert(at);
            }
        });
        Ok(())
    }

    async fn mark_processing(&self, key: &RequestKey) -> Result<()> {
        self.gate.pass("mark_processing").await?;
        self.with(|d| {
            if let Some(r) = d.requests.get_mut(&k(key)).filter(|r| r.status == RequestStatus::Pending) {
                r.status = RequestStatus::Processing;
            }
        });
        Ok(())
    }

    async fn claim_finalisation(&self, key: &RequestKey, now: Timestamp, lease: Duration) -> Result<bool> {
        self.gate.pass("claim_finalisation").await?;
        let expired = now.minus(lease);
        Ok(self.with(|d| match d.requests.get_mut(&k(key)) {
            Some(r) if !r.status.is_final() && r.finalising_since.is_none_or(|since| since < expired) => {
                r.finalising_since = Some(now);
                true
            }
            _ => false,
        }))
    }

    async fn release_finalisation(&self, key: &RequestKey) -> Result<()> {
        self.gate.pass("release_finalisation").await?;
        self.with(|d| {
            if let Some(r) = d.requests.get_mut(&k(key)) {
                r.finalising_since = None;
            }
        });
        Ok(())
    }

    async fn finalise(&self, key: &RequestKey, fin: &Finalisation) -> Result<bool> {
        self.gate.pass("finalise").await?;
        if !fin.status.is_final() {
            return Err(crate::Error::Corrupt(format!("finalise with non-final status {:?}", fin.status)));
        }
        Ok(self.with(|d| match d.requests.get_mut(&k(key)) {
            Some(r) if !r.status.is_final() => {
                r.status = fin.status;
                r.completed_at = Some(fin.at);
                r.succeeded_images = fin.tally.succeeded();
                r.failed_images = fin.tally.failed;
                r.output_csv_key = Some(fin.output_csv_key.clone());
                if let Some(w) = r.webhook.as_mut().filter(|_| fin.queue_webhook) {
                    w.state = WebhookState::Queued;
                    w.queued_at = Some(fin.at);
                    w.last_activity_at = Some(fin.at);
                }
                true
            }
            _ => false,
        }))
    }
}

#[async_trait]
impl RowStore for MemoryStore {
    async fn insert_rows(&self, rows: &[Row]) -> Result<()> {
        self.gate.pass("insert_rows").await?;
        self.with(|d| {
            for row in rows {
                let key = RequestKey::new(&row.tenant, &row.request_id);
                d.rows.entry((k(&key), row.serial_number)).or_insert_with(|| row.clone());
            }
        });
        Ok(())
    }

    async fn get_row(&self, key: &RequestKey, serial_number: i64) -> Result<Option<Row>> {
        self.gate.pass("get_row").await?;
        Ok(self.with(|d| d.rows.get(&(k(key), serial_number)).cloned()))
    }

    async fn rows_page(&self, key: &RequestKey, after: Option<i64>, limit: i64) -> Result<Vec<Row>> {
        self.gate.pass("rows_page").await?;
        let from = after.map_or(i64::MIN, |a| a.saturating_add(1));
        Ok(self.with(|d| {
            d.rows
                .range((k(key), from)..=(k(key), i64::MAX))
                .take(limit.max(0) as usize)
                .map(|(_, r)| r.clone())
                .collect()
        }))
    }

    async fn rows_after(&self, key: &RequestKey, after: Option<i64>) -> Result<RowStream> {
        self.gate.pass("rows_after").await?;
        let from = after.map_or(i64::MIN, |a| a.saturating_add(1));
        // The twin holds every row in memory anyway: a snapshot taken now.
        let rows: Vec<Result<Row>> =
            self.with(|d| d.rows.range((k(key), from)..=(k(key), i64::MAX)).map(|(_, r)| Ok(r.clone())).collect());
        Ok(futures::stream::iter(rows).boxed())
    }

    async fn settle_image(&self, job: &ImageJob, result: &ImageResult) -> Result<Option<Row>> {
        self.gate.pass("settle_image").await?;
        Ok(self.with(|d| {
            let row = d.rows.get_mut(&(job_key(job), job.serial_number))?;
            let slot = row.images.get_mut(job.index as usize).filter(|s| s.state == ImageState::Pending)?;
            *slot = ImageSlot::settled(result);
            row.settled_images += 1;
            row.failed_images += i64::from(result.state() == ImageState::Failed);
            Some(row.clone())
        }))
    }

    async fn mark_counted(&self, job: &ImageJob) -> Result<()> {
        self.gate.pass("mark_counted").await?;
        self.with(|d| {
            let slot = d
                .rows
                .get_mut(&(job_key(job), job.serial_number))
                .and_then(|row| row.images.get_mut(job.index as usize));
            if let Some(slot) = slot {
                slot.counted = true;
            }
        });
        Ok(())
    }

    async fn complete_row(&self, key: &RequestKey, serial_number: i64, urls: &[String], at: Timestamp) -> Result<()> {
        self.gate.pass("complete_row").await?;
        self.with(|d| {
            if let Some(row) = d.rows.get_mut(&(k(key), serial_number)).filter(|r| r.completed_at.is_none()) {
                row.output_image_urls = urls.to_vec();
                row.completed_at = Some(at);
            }
        });
        Ok(())
    }

    async fn tally(&self, key: &RequestKey) -> Result<Tally> {
        self.gate.pass("tally").await?;
        Ok(self.with(|d| {
            d.rows.range(range_of(key)).fold(Tally::default(), |t, (_, r)| Tally {
                settled: t.settled + r.settled_images,
                failed: t.failed + r.failed_images,
            })
        }))
    }
}

#[async_trait]
impl ProgressStore for MemoryStore {
    async fn insert_progress(&self, shards: &[ProgressShard]) -> Result<()> {
        self.gate.pass("insert_progress").await?;
        self.with(|d| {
            for s in shards {
                let key = RequestKey::new(&s.tenant, &s.request_id);
                d.progress.entry((k(&key), s.shard)).or_insert_with(|| s.clone());
            }
        });
        Ok(())
    }

    async fn increment(&self, key: &RequestKey, shard: u32) -> Result<Option<ProgressShard>> {
        self.gate.pass("increment").await?;
        Ok(self.with(|d| {
            let s = d.progress.get_mut(&(k(key), i64::from(shard)))?;
            s.done += 1;
            Some(s.clone())
        }))
    }

    async fn get_progress(&self, key: &RequestKey, shard: u32) -> Result<Option<ProgressShard>> {
        self.gate.pass("get_progress").await?;
        Ok(self.with(|d| d.progress.get(&(k(key), i64::from(shard))).cloned()))
    }

    async fn all_progress(&self, key: &RequestKey) -> Result<Vec<ProgressShard>> {
        self.gate.pass("all_progress").await?;
        Ok(self.with(|d| d.progress.range(range_of(key)).map(|(_, s)| s.clone()).collect()))
    }
}

#[async_trait]
impl WebhookLog for MemoryStore {
    async fn record_attempt(&self, key: &RequestKey, attempt: &WebhookAttempt) -> Result<()> {
        self.gate.pass("record_attempt").await?;
        self.with(|d| {
            if let Some(w) = d.requests.get_mut(&k(key)).and_then(|r| r.webhook.as_mut()) {
                w.attempts.push(attempt.clone());
                w.last_activity_at = Some(attempt.at);
            }
        });
        Ok(())
    }

    async fn touch_delivery(&self, key: &RequestKey, at: Timestamp) -> Result<()> {
        self.gate.pass("touch_delivery").await?;
        self.with(|d| {
            let queued = d.requests.get_mut(&k(key)).and_then(|r| r.webhook.as_mut());
            if let Some(w) = queued.filter(|w| w.state == WebhookState::Queued) {
                w.last_activity_at = Some(at);
            }
        });
        Ok(())
    }

    async fn settle_delivery(&self, key: &RequestKey, state: WebhookState, at: Timestamp) -> Result<bool> {
        self.gate.pass("settle_delivery").await?;
        Ok(self.with(|d| match d.requests.get_mut(&k(key)).and_then(|r| r.webhook.as_mut()) {
            Some(w) if w.state == WebhookState::Queued => {
                w.state = state;
                if state == WebhookState::Delivered {
                    w.delivered_at = Some(at);
                }
                true
            }
            _ => false,
        }))
    }
}

#[async_trait]
impl ReportStore for MemoryStore {
    async fn list_requests(
        &self,
        scope: &Visible,
        filter: &ListFilter,
        after: Option<(Timestamp, RequestId)>,
        limit: i64,
    ) -> Result<Vec<Request>> {
        self.gate.pass("list_requests").await?;
        let mut found: Vec<Request> = self.with(|d| {
            d.requests
                .values()
                .filter(|r| visible(scope, r))
                .filter(|r| filter.status.is_none_or(|s| r.status == s))
                .filter(|r| filter.created_after.is_none_or(|t| r.created_at >= t))
                .filter(|r| filter.created_before.is_none_or(|t| r.created_at < t))
                .filter(|r| {
                    after.as_ref().is_none_or(|(at, id)| {
                        r.created_at < *at || (r.created_at == *at && r.id.as_str() < id.as_str())
                    })
                })
                .cloned()
                .collect()
        });
        found.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
        found.truncate(limit.max(0) as usize);
        Ok(found)
    }

    async fn count_by_status(&self, scope: &Visible) -> Result<Vec<(RequestStatus, i64)>> {
        self.gate.pass("count_by_status").await?;
        let mut counts: BTreeMap<&'static str, (RequestStatus, i64)> = BTreeMap::new();
        self.with(|d| {
            for r in d.requests.values().filter(|r| visible(scope, r)) {
                counts.entry(r.status.as_str()).or_insert((r.status, 0)).1 += 1;
            }
        });
        Ok(counts.into_values().collect())
    }

    async fn daily_images(&self, scope: &Visible, since_day: &str) -> Result<Vec<DailyImages>> {
        self.gate.pass("daily_images").await?;
        let mut days: BTreeMap<String, DailyImages> = BTreeMap::new();
        self.with(|d| {
            for r in d.requests.values().filter(|r| visible(scope, r)) {
                let Some(day) = r.completed_at.map(Timestamp::day).filter(|day| day.as_str() >= since_day) else {
                    continue;
                };
                let entry = days.entry(day.clone()).or_insert_with(|| DailyImages { day, processed: 0, failed: 0 });
                entry.processed += r.succeeded_images + r.failed_images;
                entry.failed += r.failed_images;
            }
        });
        Ok(days.into_values().collect())
    }
}

#[async_trait]
impl TenantStore for MemoryStore {
    async fn get_tenant(&self, tenant: &TenantId) -> Result<Option<Tenant>> {
        self.gate.pass("get_tenant").await?;
        Ok(self.with(|d| d.tenants.get(tenant.as_str()).cloned()))
    }

    async fn register_tenant(&self, tenant: &TenantId, at: Timestamp) -> Result<bool> {
        self.gate.pass("register_tenant").await?;
        Ok(self.with(|d| {
            let new = !d.tenants.contains_key(tenant.as_str());
            d.tenants.entry(tenant.to_string()).or_insert_with(|| Tenant {
                id: tenant.clone(),
                created_at: at,
                quotas: QuotaOverrides::default(),
            });
            new
        }))
    }

    async fn set_quotas(&self, tenant: &TenantId, quotas: &QuotaOverrides, at: Timestamp) -> Result<()> {
        self.gate.pass("set_quotas").await?;
        self.with(|d| {
            let entry = d.tenants.entry(tenant.to_string()).or_insert_with(|| Tenant {
                id: tenant.clone(),
                created_at: at,
                quotas: QuotaOverrides::default(),
            });
            entry.quotas = *quotas;
        });
        Ok(())
    }

    async fn lock_uploads(&self, tenant: &TenantId, now: Timestamp, lease: Duration) -> Result<Option<i64>> {
        self.gate.pass("lock_uploads").await?;
        Ok(self.with(|d| {
            if d.locks.get(tenant.as_str()).is_some_and(|(_, until)| *until >= now) {
                return None;
            }
            d.next_token += 1;
            let token = d.next_token;
            d.locks.insert(tenant.to_string(), (token, now.plus(lease)));
            Some(token)
        }))
    }

    async fn unlock_uploads(&self, tenant: &TenantId, token: i64) -> Result<()> {
        self.gate.pass("unlock_uploads").await?;
        self.with(|d| {
            if d.locks.get(tenant.as_str()).is_some_and(|(held, _)| *held == token) {
                d.locks.remove(tenant.as_str());
            }
        });
        Ok(())
    }

    async fn usage(&self, tenant: &TenantId) -> Result<Usage> {
        self.gate.pass("usage").await?;
        Ok(self.with(|d| {
            d.requests.values().filter(|r| &r.tenant == tenant && !r.status.is_final()).fold(
                Usage::default(),
                |u, r| Usage { open_requests: u.open_requests + 1, queued_images: u.queued_images + r.total_images },
            )
        }))
    }

    async fn find_idempotency_key(&self, tenant: &TenantId, key_hash: &str) -> Result<Option<RequestId>> {
        self.gate.pass("find_idempotency_key").await?;
        Ok(self.with(|d| d.idempotency.get(&(tenant.to_string(), key_hash.to_string())).cloned()))
    }

    async fn claim_idempotency_key(
        &self,
        tenant: &TenantId,
        key_hash: &str,
        id: &RequestId,
    ) -> Result<Option<RequestId>> {
        self.gate.pass("claim_idempotency_key").await?;
        Ok(self.with(|d| match d.idempotency.get(&(tenant.to_string(), key_hash.to_string())) {
            Some(first) => Some(first.clone()),
            None => {
                d.idempotency.insert((tenant.to_string(), key_hash.to_string()), id.clone());
                None
            }
        }))
    }
}

#[async_trait]
impl SweepStore for MemoryStore {
    async fn unfinished_requests(
        &self,
        created_before: Timestamp,
        after: Option<(Timestamp, RequestId)>,
        limit: i64,
    ) -> Result<Vec<Request>> {
        self.gate.pass("unfinished_requests").await?;
        let past =
            |r: &&Request| after.as_ref().is_none_or(|(at, id)| (r.created_at, r.id.as_str()) > (*at, id.as_str()));
        let mut found: Vec<Request> = self.with(|d| {
            d.requests
                .values()
                .filter(|r| !r.status.is_final() && r.created_at < created_before)
                .filter(past)
                .cloned()
                .collect()
        });
        found.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        found.truncate(limit.max(0) as usize);
        Ok(found)
    }

    async fn stalled_webhooks(&self, quiet_since: Timestamp, limit: i64) -> Result<Vec<Request>> {
        self.gate.pass("stalled_webhooks").await?;
        let activity = |r: &Request| r.webhook.as_ref().filter(|w| w.state == WebhookState::Queued)?.last_activity_at;
        let mut found: Vec<Request> = self.with(|d| {
            d.requests.values().filter(|r| activity(r).is_some_and(|at| at < quiet_since)).cloned().collect()
        });
        found.sort_by_key(|r| (activity(r), r.id.to_string()));
        found.truncate(limit.max(0) as usize);
        Ok(found)
    }
}

/// Objects in memory, counting the writes per key.
#[derive(Default)]
pub struct MemoryBlobs {
    objects: Mutex<HashMap<(String, String), Vec<u8>>>,
    puts: Mutex<HashMap<String, usize>>,
    gate: Gate,
}

impl MemoryBlobs {
    pub fn with_gate(gate: Gate) -> Self {
        Self { gate, ..Self::default() }
    }

    /// How many times `key` was written (any bucket).
    pub fn puts_of(&self, key: &str) -> usize {
        self.puts.lock().expect("blobs lock").get(key).copied().unwrap_or(0)
    }

    /// Keys stored in `bucket`, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .objects
            .lock()
            .expect("blobs lock")
            .keys()
            .filter(|(b, _)| b == bucket)
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        keys
    }
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, _content_type: &str) -> Result<()> {
        self.gate.pass("put").await?;
        self.objects.lock().expect("blobs lock").insert((bucket.to_string(), key.to_string()), body);
        *self.puts.lock().expect("blobs lock").entry(key.to_string()).or_default() += 1;
        Ok(())
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.gate.pass("get").await?;
        Ok(self.objects.lock().expect("blobs lock").get(&(bucket.to_string(), key.to_string())).cloned())
    }

    async fn presign_put(&self, bucket: &str, key: &str, _ct: &str, size: u64, expires_in: Duration) -> Result<String> {
        self.gate.pass("presign_put").await?;
        Ok(format!("memory://{bucket}/{key}?put&size={size}&expires={}", expires_in.as_secs()))
    }

    async fn presign_get(&self, bucket: &str, key: &str, expires_in: Duration) -> Result<String> {
        self.gate.pass("presign_get").await?;
        Ok(format!("memory://{bucket}/{key}?expires={}", expires_in.as_secs()))
    }

    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("memory://{bucket}/{key}")
    }
}

/// Queues in memory: what was sent, in order.
#[derive(Default)]
pub struct MemoryQueues {
    jobs: Mutex<Vec<ImageJob>>,
    deliveries: Mutex<Vec<WebhookDelivery>>,
    postponed: Mutex<Vec<(String, Duration)>>,
    gate: Gate,
}

impl MemoryQueues {
    pub fn with_gate(gate: Gate) -> Self {
        Self { gate, ..Self::default() }
    }

    pub fn jobs(&self) -> Vec<ImageJob> {
        self.jobs.lock().expect("queue lock").clone()
    }

    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.deliveries.lock().expect("queue lock").clone()
    }

    pub fn postponed(&self) -> Vec<(String, Duration)> {
        self.postponed.lock().expect("queue lock").clone()
    }
}

#[async_trait]
impl JobQueue for MemoryQueues {
    async fn send_jobs(&self, jobs: &[ImageJob]) -> Result<()> {
        self.gate.pass("send_jobs").await?;
        self.jobs.lock().expect("queue lock").extend_from_slice(jobs);
        Ok(())
    }
}

#[async_trait]
impl DeliveryQueue for MemoryQueues {
    async fn enqueue(&self, delivery: &WebhookDelivery) -> Result<()> {
        self.gate.pass("enqueue").await?;
        self.deliveries.lock().expect("queue lock").push(delivery.clone());
        Ok(())
    }

    async fn postpone(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        self.gate.pass("postpone").await?;
        self.postponed.lock().expect("queue lock").push((receipt_handle.to_string(), delay));
        Ok(())
    }
}

/// A clock that moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        Self(AtomicI64::new(t.millis()))
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryStore;

    async fn fresh(_test: &str) -> Arc<MemoryStore> {
        Arc::new(MemoryStore::default())
    }

    crate::port_contract_tests!(fresh);
}
