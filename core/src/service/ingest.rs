//! Upload: validate a CSV, store it, write the documents, enqueue one message per image. Idempotent: the same
//! upload (same `Idempotency-Key`, same S3 object) maps to the same request id, and a retry after a crash
//! finishes what the first attempt started, without duplicating documents.

use mongodb::bson::DateTime;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::App;
use crate::csv_input::{CsvLimits, CsvRejection, parse_csv};
use crate::domain::{ImageJob, ImageUrl, ProductRow, RequestId, RequestStatus, dropped_request_id, upload_csv_key};
use crate::error::{Error, Result};
use crate::model::{ImageSlot, ProgressShard, RequestDoc, RowDoc, Webhook};

/// What the upload API answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub total_products: usize,
    pub total_images: usize,
}

impl From<&RequestDoc> for Accepted {
    fn from(doc: &RequestDoc) -> Self {
        Self {
            request_id: doc.request_id.clone(),
            status: doc.status,
            total_products: doc.total_products as usize,
            total_images: doc.total_images as usize,
        }
    }
}

/// Where a CSV came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `POST /uploads`, with the caller's `Idempotency-Key` and webhook if any.
    Api { idempotency_key: Option<String>, webhook: Option<ImageUrl> },
    /// An object created in the uploads bucket.
    S3 { bucket: String, key: String, version: String },
}

impl App {
    pub fn csv_limits(&self) -> CsvLimits {
        CsvLimits::from_config(&self.config)
    }
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

/// Validates `csv` from an API upload and, if every row is good, creates the request and enqueues its images.
/// `webhook` is called when the request is finalised. A rejected CSV writes nothing anywhere.
pub async fn ingest_upload(
    app: &App,
    csv: &[u8],
    idempotency_key: Option<&str>,
    webhook: Option<ImageUrl>,
) -> Result<Accepted> {
    if let Some(url) = &webhook {
        if app.config.webhook_secret.is_none() {
            return Err(Error::BadRequest("webhooks are disabled here (IMGPIPE_WEBHOOK_SECRET is not set)".into()));
        }
        app.fetcher.check_literal(url).map_err(|reason| Error::BadRequest(format!("webhook URL: {reason}")))?;
    }
    if csv.len() > app.config.max_csv_bytes {
        return Err(Error::PayloadTooLarge(format!(
            "the CSV is {} bytes; the limit is {} bytes (use POST /uploads/presign for larger files)",
            csv.len(),
            app.config.max_csv_bytes
        )));
    }
    let rows = parse_csv(csv, app.csv_limits())?;
    let id = api_request_id(idempotency_key);
    let origin = Origin::Api { idempotency_key: idempotency_key.map(str::to_string), webhook };
    let span = tracing::info_span!("ingest", requestId = %id);
    create_request(app, id, origin, csv, rows).instrument(span).await
}

/// Ingests a CSV dropped into the uploads bucket. An invalid file yields a `failed` request carrying the row
/// errors (there is no caller to answer), visible through the status API. Repeated events are no-ops.
pub async fn ingest_dropped(app: &App, bucket: &str, key: &str, version: &str, csv: &[u8]) -> Result<Accepted> {
    let id = dropped_request_id(bucket, key, version);
    let origin = Origin::S3 { bucket: bucket.to_string(), key: key.to_string(), version: version.to_string() };
    let span = tracing::info_span!("ingest", requestId = %id, bucket, key);
    async move {
        let rows = if csv.len() > app.config.max_dropped_csv_bytes {
            Err(file_rejection(dropped_too_large(app, csv.len() as u64)))
        } else {
            parse_csv(csv, app.csv_limits())
        };
        match rows {
            Ok(rows) => create_request(app, id, origin, csv, rows).await,
            Err(rejection) => record_rejection(app, id, origin, csv, rejection).await,
        }
    }
    .instrument(span)
    .await
}

/// Why a dropped file over `IMGPIPE_MAX_DROPPED_CSV_BYTES` is refused.
pub fn dropped_too_large(app: &App, size: u64) -> String {
    format!("the file is {size} bytes; the limit is {} bytes", app.config.max_dropped_csv_bytes)
}

fn file_rejection(message: String) -> CsvRejection {
    let error = crate::csv_input::RowError { line: 0, column: String::new(), value: String::new(), message };
    CsvRejection { errors: vec![error], total: 1 }
}

/// Records a dropped file that is refused before it is read (too large, replaced, gone) as a `failed` request
/// with `message`, under the id the file would have had. Repeated events are no-ops.
pub async fn reject_dropped(app: &App, bucket: &str, key: &str, version: &str, message: String) -> Result<Accepted> {
    let id = dropped_request_id(bucket, key, version);
    let origin = Origin::S3 { bucket: bucket.to_string(), key: key.to_string(), version: version.to_string() };
    let span = tracing::info_span!("ingest", requestId = %id, bucket, key);
    record_rejection(app, id, origin, &[], file_rejection(message)).instrument(span).await
}

fn request_doc(
    id: &RequestId,
    origin: &Origin,
    csv: &[u8],
    (bucket, key): (String, String),
    now: DateTime,
) -> RequestDoc {
    RequestDoc {
        request_id: id.clone(),
        status: RequestStatus::Pending,
        created_at: now,
        completed_at: None,
        total_products: 0,
        total_images: 0,
        progress_shards: 0,
        succeeded_images: 0,
        failed_images: 0,
        input_csv_bucket: bucket,
        input_csv_key: key,
        output_csv_key: None,
        source: match origin {
            Origin::Api { .. } => "api".into(),
            Origin::S3 { .. } => "s3".into(),
        },
        content_sha256: sha256_hex(csv),
        enqueued_at: None,
        errors: Vec::new(),
        error_total: 0,
        completed_day: None,
        finalizing_at: None,
        webhook: match origin {
            Origin::Api { webhook: Some(url), .. } => Some(Webhook {
                url: url.as_str().to_string(),
                state: "waiting".into(),
                attempts: Vec::new(),
                delivered_at: None,
            }),
            _ => None,
        },
    }
}

async fn record_rejection(
    app: &App,
    id: RequestId,
    origin: Origin,
    csv: &[u8],
    rejection: CsvRejection,
) -> Result<Accepted> {
    let Origin::S3 { bucket, key, .. } = &origin else {
        return Err(rejection.into());
    };
    let now = DateTime::now();
    let mut doc = request_doc(&id, &origin, csv, (bucket.clone(), key.clone()), now);
    doc.status = RequestStatus::Failed;
    doc.completed_at = Some(now);
    doc.completed_day = Some(crate::model::day_of(now));
    doc.error_total = rejection.total as i64;
    doc.errors = rejection.errors;
    doc.enqueued_at = Some(now);
    let stored = app.repo.insert_request(&doc).await?;
    tracing::warn!(errors = doc.error_total, duplicate = stored.is_some(), "dropped CSV rejected");
    Ok(Accepted::from(stored.as_ref().unwrap_or(&doc)))
}

async fn create_request(
    app: &App,
    id: RequestId,
    origin: Origin,
    csv: &[u8],
    rows: Vec<ProductRow>,
) -> Result<Accepted> {
    let location = match &origin {
        Origin::Api { .. } => {
            let key = upload_csv_key(&id);
            // Stored first: a retry overwrites the same key with the same bytes.
            app.blobs.put(&app.config.uploads_bucket, &key, csv.to_vec(), "text/csv").await?;
            (app.config.uploads_bucket.clone(), key)
        }
        Origin::S3 { bucket, key, .. } => (bucket.clone(), key.clone()),
    };
    let now = DateTime::now();
    let mut jobs: Vec<ImageJob> = rows
        .iter()
        .flat_map(|row| {
            row.input_image_urls.iter().enumerate().map(|(index, url)| ImageJob {
                request_id: id.clone(),
                serial_number: row.serial_number,
                index: index as u32,
                url: url.clone(),
                shard: 0,
            })
        })
        .collect();
    let mut request = request_doc(&id, &origin, csv, location, now);
    request.total_products = rows.len() as i64;
    request.total_images = jobs.len() as i64;
    request.progress_shards = i64::from(app.config.progress_shards).clamp(1, request.total_images.max(1));

    if let Some(existing) = app.repo.insert_request(&request).await? {
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
        request = existing;
    }
    // Images are dealt round-robin over the progress counters (a resumed ingestion keeps the first one's count).
    let shards = request.progress_shards.max(1);
    for (ordinal, job) in jobs.iter_mut().enumerate() {
        job.shard = (ordinal as i64 % shards) as u32;
    }
    let progress: Vec<ProgressShard> = (0..shards)
        .map(|shard| ProgressShard {
            request_id: id.clone(),
            shard,
            expected: request.total_images / shards + i64::from(shard < request.total_images % shards),
            done: 0,
        })
        .collect();
    let docs: Vec<RowDoc> = rows
        .iter()
        .map(|row| RowDoc {
            request_id: id.clone(),
            serial_number: row.serial_number,
            product_name: row.product_name.clone(),
            input_image_urls: row.input_image_urls.iter().map(|u| u.as_str().to_string()).collect(),
            output_image_urls: Vec::new(),
            created_at: request.created_at,
            completed_at: None,
            images: (0..row.input_image_urls.len()).map(|i| (i.to_string(), ImageSlot::pending())).collect(),
            total_images: row.input_image_urls.len() as i64,
            settled_images: 0,
            failed_images: 0,
        })
        .collect();
    let started = std::time::Instant::now();
    app.repo.insert_rows(&docs).await?;
    app.repo.insert_progress(&progress).await?;
    let documents_ms = started.elapsed().as_millis() as u64;
    app.faults.check("ingest.after_documents")?;
    app.queue.send_jobs(&jobs).await?;
    app.repo.mark_enqueued(&id, DateTime::now()).await?;
    let enqueue_ms = started.elapsed().as_millis() as u64 - documents_ms;
    tracing::info!(products = rows.len(), images = jobs.len(), documents_ms, enqueue_ms, "request accepted");
    Ok(Accepted::from(&request))
}
