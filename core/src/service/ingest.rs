//! Upload: validate a CSV, admit it against the tenant's quotas, store it, write the documents, enqueue one message
//! per distinct image. Idempotent: the same upload (same tenant and `Idempotency-Key`, same S3 object) maps to the
//! same request, and a retry after a crash finishes what the first attempt started, without duplicating documents.
//! (A crash that no retry follows is finished by the sweeper: [`Ingest::resume`].)
//!
//! Admission is serialised per tenant by the tenant's upload lock (`TenantStore::lock_uploads`): under it the
//! quotas are checked against what the tenant has running and the request document is inserted, so two concurrent
//! uploads cannot both take the last slot; a refused upload writes nothing (MongoDB, S3, SQS).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::config::Config;
use crate::csv_input::{CsvLimits, CsvRejection, RowError, parse_csv};
use crate::domain::{
    ImageJob, ImageUrl, Position, ProductRow, ProgressShard, Rejection, Request, RequestId, RequestKey, RequestStatus,
    Row, Source, StoredObject, TenantId, Webhook, dropped_request_id, upload_csv_key,
};
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::fetch::Fetcher;
use crate::ports::{BlobStore, Clock, JobQueue, ProgressStore, RequestStore, RowStore, TenantStore};

/// How long one upload may hold its tenant's upload lock (it is released as soon as the request is admitted).
const LOCK_LEASE: Duration = Duration::from_secs(30);
/// How long an upload waits for its tenant's lock before answering "retry later".
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// What `Retry-After` says on a quota refusal.
pub const QUOTA_RETRY_AFTER_SECS: u64 = 60;

/// What the upload API answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub total_products: usize,
    pub total_images: usize,
}

impl From<&Request> for Accepted {
    fn from(r: &Request) -> Self {
        Self {
            request_id: r.id.clone(),
            status: r.status,
            total_products: r.total_products as usize,
            total_images: r.total_images as usize,
        }
    }
}

/// The ports ingestion uses.
pub struct Ingest<'a> {
    pub requests: &'a dyn RequestStore,
    pub rows: &'a dyn RowStore,
    pub progress: &'a dyn ProgressStore,
    pub tenants: &'a dyn TenantStore,
    pub blobs: &'a dyn BlobStore,
    pub jobs: &'a dyn JobQueue,
    pub fetcher: &'a Fetcher,
    pub clock: &'a dyn Clock,
    pub config: &'a Config,
    pub faults: &'a Faults,
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::webhook::hex(&Sha256::digest(bytes))
}

fn file_rejection(message: String) -> CsvRejection {
    let error = RowError { line: 0, column: String::new(), value: String::new(), message };
    CsvRejection { errors: vec![error], total: 1 }
}

/// The jobs of a request's images: one per distinct URL (its first position, and the others in `also`), in row
/// order, dealt round-robin over `shards` progress counters.
pub fn jobs_of(key: &RequestKey, products: &[ProductRow], shards: i64) -> Vec<ImageJob> {
    let shards = shards.max(1);
    let mut jobs: Vec<ImageJob> = Vec::new();
    let mut by_url: HashMap<&str, usize> = HashMap::new();
    for p in products {
        for (index, url) in p.input_image_urls.iter().enumerate() {
            let position = Position { serial_number: p.serial_number, index: index as u32 };
            match by_url.get(url.as_str()) {
                Some(&j) => jobs[j].also.push(position),
                None => {
                    by_url.insert(url.as_str(), jobs.len());
                    jobs.push(ImageJob {
                        schema: ImageJob::SCHEMA,
                        tenant: key.tenant.clone(),
                        request_id: key.id.clone(),
                        serial_number: position.serial_number,
                        index: position.index,
                        url: url.clone(),
                        shard: (jobs.len() as i64 % shards) as u32,
                        also: Vec::new(),
                    });
                }
            }
        }
    }
    jobs
}

/// The distinct image URLs of a CSV (what is fetched).
fn distinct_images(products: &[ProductRow]) -> i64 {
    let mut urls: Vec<&str> = products.iter().flat_map(|p| p.input_image_urls.iter().map(ImageUrl::as_str)).collect();
    urls.sort_unstable();
    urls.dedup();
    urls.len() as i64
}

/// What admitting an upload came to.
enum Admission {
    /// A new request, inserted.
    New(Request),
    /// The request this upload was already (a retry).
    Existing(Request),
}

impl Ingest<'_> {
    pub fn csv_limits(&self) -> CsvLimits {
        CsvLimits::from_config(self.config)
    }

    /// Validates `csv` from an API upload of `tenant` and, if every row is good and the tenant's quotas allow it,
    /// creates the request and enqueues its images. `webhook` is called when the request is final. A rejected or
    /// refused CSV writes nothing anywhere.
    pub async fn upload(
        &self,
        tenant: &TenantId,
        csv: &[u8],
        idempotency_key: Option<&str>,
        webhook: Option<ImageUrl>,
    ) -> Result<Accepted> {
        if let Some(url) = &webhook {
            if self.config.webhook_secret.is_none() || self.config.webhook_queue_url.is_none() {
                return Err(Error::BadRequest(
                    "webhooks are disabled here (IMGPIPE_WEBHOOK_SECRET or IMGPIPE_WEBHOOK_QUEUE_URL is not set)"
                        .into(),
                ));
            }
            self.fetcher.check_literal(url).map_err(|reason| Error::BadRequest(format!("webhook URL: {reason}")))?;
        }
        if csv.len() > self.config.max_csv_bytes {
            return Err(Error::PayloadTooLarge(format!(
                "the CSV is {} bytes; the limit is {} bytes (use POST /uploads/presign for larger files)",
                csv.len(),
                self.config.max_csv_bytes
            )));
        }
        let products = parse_csv(csv, self.csv_limits())?;
        let key = RequestKey::new(tenant, &RequestId::new());
        let location = StoredObject { bucket: self.config.uploads_bucket.clone(), key: upload_csv_key(&key) };
        let mut request = self.new_request(&key, Source::Api, location, csv);
        request.webhook = webhook.map(|url| Webhook::waiting(url.as_str().to_string()));
        let key_hash = idempotency_key.map(|k| sha256_hex(k.as_bytes()));
        let span = tracing::info_span!("ingest", tenant = %tenant, requestId = %key.id);
        async {
            match self.admit(request, &products, key_hash.as_deref(), Some(csv)).await? {
                Admission::Existing(existing) => self.finish(existing, products).await,
                Admission::New(request) => self.finish(request, products).await,
            }
        }
        .instrument(span)
        .await
    }

    /// Ingests a CSV dropped into the uploads bucket by `tenant`. An invalid file, or one over the tenant's quotas,
    /// yields a `failed` request carrying the reasons (there is no caller to answer), visible through the status
    /// API. Repeated events are no-ops.
    pub async fn dropped(
        &self,
        tenant: &TenantId,
        bucket: &str,
        key: &str,
        version: &str,
        csv: &[u8],
    ) -> Result<Accepted> {
        let request_key = RequestKey::new(tenant, &dropped_request_id(tenant, bucket, key, version));
        let location = StoredObject { bucket: bucket.to_string(), key: key.to_string() };
        let request = self.new_request(&request_key, Source::S3, location, csv);
        let span = tracing::info_span!("ingest", tenant = %tenant, requestId = %request_key.id, bucket, key);
        async move {
            let rows = if csv.len() > self.config.max_dropped_csv_bytes {
                Err(file_rejection(self.dropped_too_large(csv.len() as u64)))
            } else {
                parse_csv(csv, self.csv_limits())
            };
            let products = match rows {
                Ok(products) => products,
                Err(rejection) => return self.reject(request, rejection).await,
            };
            match self.admit(request.clone(), &products, None, None).await {
                Ok(Admission::New(request) | Admission::Existing(request)) => self.finish(request, products).await,
                Err(Error::QuotaExceeded { message, .. }) => self.reject(request, file_rejection(message)).await,
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await
    }

    /// Refuses a presigned upload up front when the tenant is at its open-request quota (what its size allows is
    /// checked again when the file lands). Registers a new tenant, so that its dropped file is accepted; writes
    /// nothing else.
    pub async fn check_presign(&self, tenant: &TenantId) -> Result<()> {
        self.tenants.register_tenant(tenant, self.clock.now()).await?;
        let quotas = self.quotas(tenant).await?;
        let usage = self.tenants.usage(tenant).await?;
        if usage.open_requests >= quotas.max_open_requests {
            return Err(quota_exceeded(
                "max-open-requests",
                usage.open_requests,
                quotas.max_open_requests,
                "open requests",
            ));
        }
        Ok(())
    }

    /// Why a dropped file over `IMGPIPE_MAX_DROPPED_CSV_BYTES` is refused.
    pub fn dropped_too_large(&self, size: u64) -> String {
        format!("the file is {size} bytes; the limit is {} bytes", self.config.max_dropped_csv_bytes)
    }

    /// Records a dropped file that is refused before it is read (too large, replaced, gone) as a `failed`
    /// request with `message`, under the id the file would have had. Repeated events are no-ops.
    pub async fn reject_dropped(
        &self,
        tenant: &TenantId,
        bucket: &str,
        key: &str,
        version: &str,
        message: String,
    ) -> Result<Accepted> {
        let request_key = RequestKey::new(tenant, &dropped_request_id(tenant, bucket, key, version));
        let location = StoredObject { bucket: bucket.to_string(), key: key.to_string() };
        let request = self.new_request(&request_key, Source::S3, location, &[]);
        let span = tracing::info_span!("ingest", tenant = %tenant, requestId = %request_key.id, bucket, key);
        self.reject(request, file_rejection(message)).instrument(span).await
    }

    fn new_request(&self, key: &RequestKey, source: Source, input_csv: StoredObject, csv: &[u8]) -> Request {
        Request {
            tenant: key.tenant.clone(),
            id: key.id.clone(),
            status: RequestStatus::Pending,
            source,
            created_at: self.clock.now(),
            completed_at: None,
            total_products: 0,
            total_images: 0,
            progress_shards: 0,
            succeeded_images: 0,
            failed_images: 0,
            input_csv,
            output_csv_key: None,
            content_sha256: sha256_hex(csv),
            enqueued_at: None,
            rejection: None,
            finalising_since: None,
            webhook: None,
        }
    }

    async fn reject(&self, mut request: Request, rejection: CsvRejection) -> Result<Accepted> {
        request.status = RequestStatus::Failed;
        request.completed_at = Some(request.created_at);
        request.enqueued_at = Some(request.created_at);
        request.rejection = Some(Rejection { errors: rejection.errors, total: rejection.total as i64 });
        let stored = self.requests.insert_request(&request).await?;
        tracing::warn!(errors = rejection.total, duplicate = stored.is_some(), "dropped CSV rejected");
        Ok(Accepted::from(stored.as_ref().unwrap_or(&request)))
    }

    /// The tenant's effective quotas: its overrides in `Tenants`, else the deployment's defaults.
    async fn quotas(&self, tenant: &TenantId) -> Result<Quotas> {
        let overrides = self.tenants.get_tenant(tenant).await?.map(|t| t.quotas).unwrap_or_default();
        Ok(Quotas {
            max_images_per_request: overrides.max_images_per_request.unwrap_or(self.config.max_images_per_request),
            max_open_requests: overrides.max_open_requests.unwrap_or(self.config.max_open_requests),
            max_queued_images: overrides.max_queued_images.unwrap_or(self.config.max_queued_images),
        })
    }

    /// Admits a new request under its tenant's upload lock: an upload that is a retry (its `Idempotency-Key`, or
    /// its id, already names a request) is that request; a new one must fit the quotas, and is then inserted (its
    /// CSV stored first, for an API upload, and its `Idempotency-Key` recorded). Over a quota, nothing is written.
    async fn admit(
        &self,
        mut request: Request,
        products: &[ProductRow],
        idempotency_key: Option<&str>,
        csv: Option<&[u8]>,
    ) -> Result<Admission> {
        let tenant = request.tenant.clone();
        let token = self.lock(&tenant).await?;
        let admitted = async {
            if let Some(hash) = idempotency_key
                && let Some(first) = self.tenants.find_idempotency_key(&tenant, hash).await?
            {
                request.id = first;
            }
            if let Some(existing) = self.requests.get_request(&request.key()).await? {
                if existing.content_sha256 != request.content_sha256 {
                    return Err(Error::IdempotencyMismatch(format!(
                        "request {} was created from a different file; an Idempotency-Key may be reused only for the same CSV",
                        existing.id
                    )));
                }
                return Ok(Admission::Existing(existing));
            }
            let quotas = self.quotas(&tenant).await?;
            let images = products.iter().map(|p| p.input_image_urls.len() as i64).sum::<i64>();
            if images > quotas.max_images_per_request {
                return Err(quota_exceeded("max-images-per-request", images, quotas.max_images_per_request, "images in this request"));
            }
            let usage = self.tenants.usage(&tenant).await?;
            if usage.open_requests + 1 > quotas.max_open_requests {
                return Err(quota_exceeded("max-open-requests", usage.open_requests, quotas.max_open_requests, "open requests"));
            }
            if usage.queued_images + images > quotas.max_queued_images {
                let queued = usage.queued_images + images;
                return Err(quota_exceeded("max-queued-images", queued, quotas.max_queued_images, "images queued with this request"));
            }
            request.total_products = products.len() as i64;
            request.total_images = images;
            request.progress_shards = i64::from(self.config.progress_shards).clamp(1, distinct_images(products).max(1));
            if let Some(csv) = csv {
                // Stored before the document: a retry overwrites the same key with the same bytes.
                self.blobs.put(&request.input_csv.bucket, &request.input_csv.key, csv.to_vec(), "text/csv").await?;
            }
            if let Some(hash) = idempotency_key {
                self.tenants.claim_idempotency_key(&tenant, hash, &request.id).await?;
            }
            match self.requests.insert_request(&request).await? {
                Some(existing) => Ok(Admission::Existing(existing)),
                None => Ok(Admission::New(request)),
            }
        }
        .await;
        self.tenants.unlock_uploads(&tenant, token).await?;
        admitted
    }

    /// Takes the tenant's upload lock, waiting for another upload of the tenant to be admitted.
    async fn lock(&self, tenant: &TenantId) -> Result<i64> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            if let Some(token) = self.tenants.lock_uploads(tenant, self.clock.now(), LOCK_LEASE).await? {
                return Ok(token);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Upstream(format!("tenant {tenant}: another upload is being admitted; retry")));
            }
            // Another upload of the tenant holds the lock for a few milliseconds: poll it (bounded by LOCK_WAIT).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes the rows, counters and messages of an admitted request and marks it enqueued; for a request that was
    /// already enqueued (a retry), only answers.
    async fn finish(&self, request: Request, products: Vec<ProductRow>) -> Result<Accepted> {
        if request.enqueued_at.is_some() {
            tracing::info!("duplicate upload: request already exists");
            return Ok(Accepted::from(&request));
        }
        let key = request.key();
        let jobs = jobs_of(&key, &products, request.progress_shards);
        let rows: Vec<Row> = products
            .into_iter()
            .map(|p| {
                let urls = p.input_image_urls.iter().map(|u| u.as_str().to_string()).collect();
                Row::new(&key, p.serial_number, p.product_name, urls, request.created_at)
            })
            .collect();
        let started = std::time::Instant::now();
        self.rows.insert_rows(&rows).await?;
        self.progress.insert_progress(&ProgressShard::for_jobs(&key, &jobs, request.progress_shards)).await?;
        let documents_ms = started.elapsed().as_millis() as u64;
        self.faults.check("ingest.after_documents")?;
        self.jobs.send_jobs(&jobs).await?;
        self.requests.mark_enqueued(&key, self.clock.now()).await?;
        let enqueue_ms = started.elapsed().as_millis() as u64 - documents_ms;
        tracing::info!(products = rows.len(), images = jobs.len(), documents_ms, enqueue_ms, "request accepted");
        Ok(Accepted::from(&request))
    }

    /// Finishes an ingestion that died between its documents and its last message, with no retry of the upload
    /// to finish it (the sweeper's re-drive): the stored CSV is parsed again and ingested under the same request,
    /// which inserts what is missing and sends every job (a job sent twice is harmless: exactly-once settlement).
    pub async fn resume(&self, request: &Request) -> Result<Accepted> {
        let StoredObject { bucket, key } = &request.input_csv;
        let csv = self.blobs.get(bucket, key).await?.ok_or_else(|| {
            Error::Corrupt(format!("request {} cannot be resumed: s3://{bucket}/{key} is gone", request.id))
        })?;
        let products = parse_csv(&csv, self.csv_limits())
            .map_err(|e| Error::Corrupt(format!("request {}: its stored CSV no longer parses: {e}", request.id)))?;
        let span = tracing::info_span!("ingest", tenant = %request.tenant, requestId = %request.id);
        self.finish(request.clone(), products).instrument(span).await
    }
}

/// A tenant's effective quotas.
struct Quotas {
    max_images_per_request: i64,
    max_open_requests: i64,
    max_queued_images: i64,
}

fn quota_exceeded(limit: &'static str, have: i64, max: i64, what: &str) -> Error {
    Error::QuotaExceeded {
        limit,
        message: format!("quota {limit} exceeded: {have} {what}, the limit is {max}"),
        retry_after_secs: QUOTA_RETRY_AFTER_SECS,
    }
}
