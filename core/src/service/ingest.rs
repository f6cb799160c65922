//! Upload: validate a CSV, store it, write the documents, enqueue one message per image. Idempotent: the same
//! upload (same `Idempotency-Key`, same S3 object) maps to the same request id, and a retry after a crash
//! finishes what the first attempt started, without duplicating documents. (A crash that no retry follows is
//! finished by the sweeper: [`Ingest::resume`].)

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::config::Config;
use crate::csv_input::{CsvLimits, CsvRejection, RowError, parse_csv};
use crate::domain::{
    ImageJob, ImageUrl, ProductRow, ProgressShard, Rejection, Request, RequestId, RequestStatus, Row, Source,
    StoredObject, Webhook, dropped_request_id, upload_csv_key,
};
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::fetch::Fetcher;
use crate::ports::{BlobStore, Clock, JobQueue, ProgressStore, RequestStore, RowStore};

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

/// The request id an API upload gets: derived from the `Idempotency-Key` when there is one.
pub fn api_request_id(idempotency_key: Option<&str>) -> RequestId {
    match idempotency_key {
        Some(key) => RequestId::derived_from(&format!("idempotency-key:{key}")),
        None => RequestId::new(),
    }
}

fn file_rejection(message: String) -> CsvRejection {
    let error = RowError { line: 0, column: String::new(), value: String::new(), message };
    CsvRejection { errors: vec![error], total: 1 }
}

/// The jobs of a request's images, in row order, dealt round-robin over `shards` progress counters (the same
/// dealing as [`ProgressShard::deal`]'s shares).
pub fn jobs_of(id: &RequestId, products: &[ProductRow], shards: i64) -> Vec<ImageJob> {
    let shards = shards.max(1);
    let images = products.iter().flat_map(|p| {
        p.input_image_urls.iter().enumerate().map(move |(index, url)| (p.serial_number, index as u32, url))
    });
    images
        .enumerate()
        .map(|(ordinal, (serial_number, index, url))| ImageJob {
            request_id: id.clone(),
            serial_number,
            index,
            url: url.clone(),
            shard: (ordinal as i64 % shards) as u32,
        })
        .collect()
}

impl Ingest<'_> {
    pub fn csv_limits(&self) -> CsvLimits {
        CsvLimits::from_config(self.config)
    }

    /// Validates `csv` from an API upload and, if every row is good, creates the request and enqueues its
    /// images. `webhook` is called when the request is final. A rejected CSV writes nothing anywhere.
    pub async fn upload(
        &self,
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
        let rows = parse_csv(csv, self.csv_limits())?;
        let id = api_request_id(idempotency_key);
        let key = upload_csv_key(&id);
        let location = StoredObject { bucket: self.config.uploads_bucket.clone(), key };
        let mut request = self.new_request(&id, Source::Api, location, csv);
        request.webhook = webhook.map(|url| Webhook::waiting(url.as_str().to_string()));
        let span = tracing::info_span!("ingest", requestId = %id);
        async {
            // Stored first: a retry overwrites the same key with the same bytes.
            self.blobs.put(&request.input_csv.bucket, &request.input_csv.key, csv.to_vec(), "text/csv").await?;
            self.create(request, rows).await
        }
        .instrument(span)
        .await
    }

    /// Ingests a CSV dropped into the uploads bucket. An invalid file yields a `failed` request carrying the row
    /// errors (there is no caller to answer), visible through the status API. Repeated events are no-ops.
    pub async fn dropped(&self, bucket: &str, key: &str, version: &str, csv: &[u8]) -> Result<Accepted> {
        let id = dropped_request_id(bucket, key, version);
        let location = StoredObject { bucket: bucket.to_string(), key: key.to_string() };
        let request = self.new_request(&id, Source::S3, location, csv);
        let span = tracing::info_span!("ingest", requestId = %id, bucket, key);
        async move {
            let rows = if csv.len() > self.config.max_dropped_csv_bytes {
                Err(file_rejection(self.dropped_too_large(csv.len() as u64)))
            } else {
                parse_csv(csv, self.csv_limits())
            };
            match rows {
                Ok(rows) => self.create(request, rows).await,
                Err(rejection) => self.reject(request, rejection).await,
            }
        }
        .instrument(span)
        .await
    }

    /// Why a dropped file over `IMGPIPE_MAX_DROPPED_CSV_BYTES` is refused.
    pub fn dropped_too_large(&self, size: u64) -> String {
        format!("the file is {size} bytes; the limit is {} bytes", self.config.max_dropped_csv_bytes)
    }

    /// Records a dropped file that is refused before it is read (too large, replaced, gone) as a `failed`
    /// request with `message`, under the id the file would have had. Repeated events are no-ops.
    pub async fn reject_dropped(&self, bucket: &str, key: &str, version: &str, message: String) -> Result<Accepted> {
        let id = dropped_request_id(bucket, key, version);
        let location = StoredObject { bucket: bucket.to_string(), key: key.to_string() };
        let request = self.new_request(&id, Source::S3, location, &[]);
        let span = tracing::info_span!("ingest", requestId = %id, bucket, key);
        self.reject(request, file_rejection(message)).instrument(span).await
    }

    fn new_request(&self, id: &RequestId, source: Source, input_csv: StoredObject, csv: &[u8]) -> Request {
        Request {
            id: id.clone(),
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

    async fn create(&self, mut request: Request, products: Vec<ProductRow>) -> Result<Accepted> {
        let id = request.id.clone();
        request.total_products = products.len() as i64;
        request.total_images = products.iter().map(|p| p.input_image_urls.len() as i64).sum();
        request.progress_shards = i64::from(self.config.progress_shards).clamp(1, request.total_images.max(1));
        if let Some(existing) = self.requests.insert_request(&request).await? {
            if existing.content_sha256 != request.content_sha256 {
                return Err(Error::IdempotencyMismatch(format!(
                    "request {id} was created from a different file; an Idempotency-Key may be reused only for the same CSV"
                )));
            }
            if existing.enqueued_at.is_some() {
                tracing::info!("duplicate upload: request already exists");
                return Ok(Accepted::from(&existing));
            }
            tracing::warn!("resuming an ingestion that stopped before all messages were sent");
            // A resumed ingestion keeps the first attempt's counters and times.
            request = existing;
        }
        let jobs = jobs_of(&id, &products, request.progress_shards);
        let rows: Vec<Row> = products
            .into_iter()
            .map(|p| {
                let urls = p.input_image_urls.iter().map(|u| u.as_str().to_string()).collect();
                Row::new(id.clone(), p.serial_number, p.product_name, urls, request.created_at)
            })
            .collect();
        let started = std::time::Instant::now();
        self.rows.insert_rows(&rows).await?;
        self.progress.insert_progress(&ProgressShard::deal(&id, request.total_images, request.progress_shards)).await?;
        let documents_ms = started.elapsed().as_millis() as u64;
        self.faults.check("ingest.after_documents")?;
        self.jobs.send_jobs(&jobs).await?;
        self.requests.mark_enqueued(&id, self.clock.now()).await?;
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
        let span = tracing::info_span!("ingest", requestId = %request.id);
        self.create(request.clone(), products).instrument(span).await
    }
}
