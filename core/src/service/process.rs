//! Worker: compress one image, record it exactly once, and finalise the request after its last image.
//!
//! Exactness without transactions:
//! 1. the image's slot in its `RequestData` row moves from `pending` to `succeeded`/`failed` in one guarded
//!    update, together with the row's counters, so a redelivered or parallel message cannot count it twice;
//! 2. the image's progress counter (one of the request's `RequestProgress` documents) is then incremented; it
//!    only decides *when* to recount, so a crash between 1 and 2 (redelivery increments it again) or a duplicate
//!    can only make it run ahead;
//! 3. once every counter of the request has reached its share, the exact counts are summed from the rows, and
//!    the request is finalised by a guarded `pending|processing → completed|failed` update, which succeeds once.
//!
//! The counters are spread over several documents so that a request with many images and many workers has no
//! single document that every image writes to: the `Requests` document takes a handful of writes per request.

use mongodb::bson::DateTime;
use tracing::Instrument;

use crate::App;
use crate::compress;
use crate::csv_output::{output_urls, write_csv};
use crate::decode_budget::Admitted;
use crate::domain::{ImageJob, ImageState, RequestStatus, output_csv_key};
use crate::error::{Error, Result};
use crate::failure::{Failure, FailureReason};
use crate::fetch::FetchError;
use crate::model::{ProgressShard, RequestDoc, RowDoc, rfc3339};
use crate::ports::ImageResult;
use crate::webhook;

/// What happened to a job that did not need a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// This delivery settled the image.
    Settled(ImageState),
    /// The image had already been settled by an earlier or parallel delivery.
    AlreadySettled,
}

/// Processes one job. `Err` means "retry later" (the message goes back to the queue); permanent problems with
/// the image itself are recorded on the image and return `Ok`.
pub async fn process_job(app: &App, job: &ImageJob) -> Result<Processed> {
    let span =
        tracing::info_span!("image", requestId = %job.request_id, serialNumber = job.serial_number, index = job.index);
    process(app, job).instrument(span).await
}

async fn process(app: &App, job: &ImageJob) -> Result<Processed> {
    let row = app
        .repo
        .get_row(&job.request_id, job.serial_number)
        .await?
        .ok_or_else(|| Error::NotFound(job.request_id.clone()))?;
    let slot = row
        .images
        .get(&job.index.to_string())
        .ok_or_else(|| Error::Corrupt(format!("row {} has no image {}", job.serial_number, job.index)))?;
    if slot.state != ImageState::Pending {
        tracing::info!(state = slot.state.as_str(), "image already settled; reconciling");
        advance(app, job, row).await?;
        return Ok(Processed::AlreadySettled);
    }

    let result = match compress_from_url(app, job).await {
        // The image's share of the decode budget is held until its output is stored.
        Ok((jpeg, _admitted)) => {
            let key = job.output_key();
            app.blobs.put(&app.config.outputs_bucket, &key, jpeg, "image/jpeg").await?;
            app.faults.check("worker.after_put")?;
            let url = app.output_url(&key);
            ImageResult::Succeeded { output_key: key, output_url: url }
        }
        Err(ImageFailure::Permanent(failure)) => {
            tracing::warn!(reason = failure.reason.code(), detail = %failure.detail, "image failed");
            ImageResult::Failed { reason: failure.reason }
        }
        Err(ImageFailure::Transient(failure)) => {
            tracing::warn!(reason = failure.reason.code(), detail = %failure.detail, "image fetch failed; retrying");
            return Err(Error::Upstream(failure.to_string()));
        }
    };
    record(app, job, &result).await
}

/// Records how an image ended (its output is already stored): settles its slot exactly once, counts it, and
/// finalises the request if it was the last one. Idempotent: a redelivery reconciles and changes nothing.
pub async fn record(app: &App, job: &ImageJob, result: &ImageResult) -> Result<Processed> {
    match app.repo.settle_image(job, result).await? {
        Some(row) => {
            tracing::info!(state = result.state().as_str(), "image settled");
            advance(app, job, row).await?;
            Ok(Processed::Settled(result.state()))
        }
        None => {
            let row = app
                .repo
                .get_row(&job.request_id, job.serial_number)
                .await?
                .ok_or_else(|| Error::NotFound(job.request_id.clone()))?;
            advance(app, job, row).await?;
            Ok(Processed::AlreadySettled)
        }
    }
}

enum ImageFailure {
    Transient(Failure),
    Permanent(Failure),
}

/// Fetches and compresses an image within the worker's decode budget: the header says what decoding will hold
/// (`compress::plan`), and decoding waits until that fits (`decode_budget`).
async fn compress_from_url(app: &App, job: &ImageJob) -> std::result::Result<(Vec<u8>, Admitted), ImageFailure> {
    let permanent = |e: &dyn std::fmt::Display, reason| ImageFailure::Permanent(Failure::new(reason, e.to_string()));
    let slot = app.decode_budget.fetch_slot().await;
    let bytes = app.fetcher.fetch(&job.url).await.map_err(|e| match e {
        FetchError::Transient(m) => ImageFailure::Transient(m),
        FetchError::Permanent(m) => ImageFailure::Permanent(m),
    })?;
    let quality = app.config.jpeg_quality;
    let limits = app.config.compress_limits();
    let plan = compress::plan(&bytes, limits).map_err(|e| permanent(&e, FailureReason::of_compress(&e)))?;
    let admitted = app
        .decode_budget
        .admit(plan.decode_bytes + bytes.len() as u64)
        .await
        .map_err(|e| permanent(&e, FailureReason::TooLarge))?;
    drop(slot);
    // Decoding and encoding are CPU-bound: keep them off the async executor.
    let jpeg = tokio::task::spawn_blocking(move || compress::compress(&bytes, quality, limits))
        .await
        .map_err(|e| {
            ImageFailure::Transient(Failure::new(FailureReason::ProcessingFailed, format!("compression task: {e}")))
        })?
        .map_err(|e| permanent(&e, FailureReason::of_compress(&e)))?;
    Ok((jpeg.jpeg, admitted))
}

/// Everything after the image's slot is settled; idempotent, so any delivery of the job may run it.
async fn advance(app: &App, job: &ImageJob, row: RowDoc) -> Result<()> {
    if row.is_settled() && row.completed_at.is_none() {
        app.repo.complete_row(&job.request_id, job.serial_number, &output_urls(&row), DateTime::now()).await?;
    }
    let id = &job.request_id;
    let counted = row.images.get(&job.index.to_string()).is_some_and(|s| s.counted);
    let shard = if counted { app.repo.get_progress(id, job.shard).await? } else { app.repo.count_image(job).await? };
    let shard = shard.ok_or_else(|| Error::Corrupt(format!("request {id} has no progress counter {}", job.shard)))?;
    if !counted && shard.done == 1 {
        // The first image of each counter (a few writes per request, not one per image).
        app.repo.mark_processing(id).await?;
    }
    if !shard.is_complete() {
        return Ok(());
    }
    // This counter has reached its share: the request may be done if every other counter has too.
    let all = app.repo.all_progress(id).await?;
    if !all.iter().all(ProgressShard::is_complete) {
        return Ok(());
    }
    let request = app.repo.get_request(id).await?.ok_or_else(|| Error::NotFound(id.clone()))?;
    if !request.status.is_final() && all.len() as i64 >= request.progress_shards {
        finalise_if_done(app, &request).await?;
    }
    Ok(())
}

/// Recounts exactly; if every image is settled, takes the finalisation lease, writes the output CSV, sets the
/// final status and calls the webhook. Concurrent finalisers: one takes the lease, the others return `false`;
/// a finaliser that dies is replaced once its lease expires (its message comes back from SQS).
pub async fn finalise_if_done(app: &App, request: &RequestDoc) -> Result<bool> {
    let id = &request.request_id;
    let tally = app.repo.tally(id).await?;
    if tally.settled < request.total_images {
        return Ok(false);
    }
    let lease = std::time::Duration::from_secs(app.config.finalise_lease_secs);
    if !app.repo.claim_finalisation(id, DateTime::now(), lease).await? {
        tracing::info!("another worker is finalising this request");
        return Ok(false);
    }
    let status = if tally.failed > 0 { RequestStatus::Failed } else { RequestStatus::Completed };
    let finalised = async {
        let rows = app.repo.all_rows(id).await?;
        let csv = write_csv(&rows).map_err(|e| Error::Corrupt(format!("output CSV: {e}")))?;
        let key = output_csv_key(id);
        app.blobs.put(&app.config.outputs_bucket, &key, csv, "text/csv").await?;
        app.faults.check("worker.before_final_status")?;
        app.repo.finalise(id, status, tally, &key, DateTime::now()).await
    }
    .await;
    let won = match finalised {
        Ok(won) => won,
        Err(e) => {
            if let Err(release) = app.repo.release_finalisation(id).await {
                tracing::warn!(error = %release, "could not release the finalisation lease; it will expire");
            }
            return Err(e);
        }
    };
    if won {
        tracing::info!(
            status = status.as_str(),
            succeeded = tally.settled - tally.failed,
            failed = tally.failed,
            "request finalised"
        );
        let done = app.repo.get_request(id).await?.ok_or_else(|| Error::NotFound(id.clone()))?;
        webhook::deliver(app, &done, &summary(app, &done).await?).await?;
    }
    Ok(won)
}

/// The webhook's JSON summary of a finalised request.
async fn summary(app: &App, request: &RequestDoc) -> Result<serde_json::Value> {
    let id = &request.request_id;
    let output_csv_url = match &request.output_csv_key {
        Some(key) => Some(
            app.blobs
                .presign_get(
                    &app.config.outputs_bucket,
                    key,
                    std::time::Duration::from_secs(app.config.url_expiry_secs),
                )
                .await?,
        ),
        None => None,
    };
    Ok(serde_json::json!({
        "event": format!("request.{}", request.status.as_str()),
        "requestId": id,
        "status": request.status,
        "counts": {
            "products": request.total_products,
            "images": request.total_images,
            "succeeded": request.succeeded_images,
            "failed": request.failed_images,
        },
        "createdAt": rfc3339(request.created_at),
        "completedAt": request.completed_at.map(rfc3339),
        "statusUrl": app.api_url(&format!("/requests/{id}")),
        "outputCsvUrl": output_csv_url,
    }))
}
