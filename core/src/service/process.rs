//! Worker: compress one image, record it exactly once, and finalise the request after its last image.
//!
//! Exactness without transactions:
//! 1. the image's slot in its `RequestData` row moves from `pending` to `succeeded`/`failed` in one guarded
//!    update, together with the row's counters, so a redelivered or parallel message cannot count it twice;
//! 2. the image's progress counter (one of the request's `RequestProgress` documents) is then incremented, and
//!    the slot marked `counted`; the counter only decides *when* to recount, so a crash between 1 and 2
//!    (redelivery increments it again) or a duplicate can only make it run ahead, never behind;
//! 3. once every counter of the request has reached its share, the exact counts are summed from the rows, and
//!    the request is finalised ([`super::finalise`]): a lease picks one finaliser, a guarded
//!    `pending|processing → completed|failed` update succeeds once, and the webhook is queued.
//!
//! The counters are spread over several documents so that a request with many images and many workers has no
//! single document that every image writes to: the `Requests` document takes a handful of writes per request.
//! `service::interleaving` (tests) runs every interleaving of two deliveries through these steps.

use tracing::Instrument;

use super::finalise::Finaliser;
use super::urls::Urls;
use crate::compress;
use crate::config::Config;
use crate::decode_budget::{Admitted, DecodeBudget};
use crate::domain::{ImageJob, ImageResult, ImageState, ProgressShard, Row};
use crate::error::{Error, Result};
use crate::failure::{Failure, FailureReason};
use crate::fault::Faults;
use crate::fetch::{FetchError, Fetcher};
use crate::ports::{BlobStore, Clock, ProgressStore, RequestStore, RowStore};

/// What happened to a job that did not need a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// This delivery settled the image.
    Settled(ImageState),
    /// The image had already been settled by an earlier or parallel delivery.
    AlreadySettled,
}

/// The ports the worker uses.
pub struct Worker<'a> {
    pub requests: &'a dyn RequestStore,
    pub rows: &'a dyn RowStore,
    pub progress: &'a dyn ProgressStore,
    pub blobs: &'a dyn BlobStore,
    pub fetcher: &'a Fetcher,
    pub decode_budget: &'a DecodeBudget,
    pub clock: &'a dyn Clock,
    pub config: &'a Config,
    pub faults: &'a Faults,
    pub finaliser: Finaliser<'a>,
}

enum ImageFailure {
    Transient(Failure),
    Permanent(Failure),
}

impl Worker<'_> {
    /// Processes one job. `Err` means "retry later" (the message goes back to the queue); permanent problems
    /// with the image itself are recorded on the image and return `Ok`.
    pub async fn process_job(&self, job: &ImageJob) -> Result<Processed> {
        let span = tracing::info_span!("image", tenant = %job.tenant, requestId = %job.request_id, serialNumber = job.serial_number, index = job.index);
        self.process(job).instrument(span).await
    }

    async fn process(&self, job: &ImageJob) -> Result<Processed> {
        let row = self.row(job).await?;
        let slot = row
            .images
            .get(job.index as usize)
            .ok_or_else(|| Error::Corrupt(format!("row {} has no image {}", job.serial_number, job.index)))?;
        if let Some(result) = slot.result() {
            // Settled by an earlier delivery: its further positions (if it died between them) get the same result.
            tracing::info!(state = slot.state.as_str(), "image already settled; reconciling");
            self.record(job, &result).await?;
            return Ok(Processed::AlreadySettled);
        }
        let result = match self.compress_from_url(job).await {
            // The image's share of the decode budget is held until its output is stored.
            Ok((jpeg, _admitted)) => {
                let key = job.output_key();
                self.blobs.put(&self.config.outputs_bucket, &key, jpeg, "image/jpeg").await?;
                self.faults.check("worker.after_put")?;
                let url = Urls { config: self.config, blobs: self.blobs }.stored(&key);
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
        self.record(job, &result).await
    }

    async fn row(&self, job: &ImageJob) -> Result<Row> {
        self.rows.get_row(&job.key(), job.serial_number).await?.ok_or_else(|| Error::NotFound(job.request_id.clone()))
    }

    /// Records how an image ended (its output is already stored) at every position of the job: settles each
    /// position's slot exactly once, counts it, and finalises the request after its last image. Idempotent: a
    /// redelivery reconciles, changing nothing. The outcome is the first position's.
    pub async fn record(&self, job: &ImageJob, result: &ImageResult) -> Result<Processed> {
        let mut first = None;
        for position in job.positions() {
            let outcome = self.record_at(&job.at(position), result).await?;
            first.get_or_insert(outcome);
        }
        Ok(first.unwrap_or(Processed::AlreadySettled))
    }

    async fn record_at(&self, job: &ImageJob, result: &ImageResult) -> Result<Processed> {
        match self.rows.settle_image(job, result).await? {
            Some(row) => {
                tracing::info!(state = result.state().as_str(), "image settled");
                self.faults.check("worker.after_settle")?;
                self.advance(job, row).await?;
                Ok(Processed::Settled(result.state()))
            }
            None => {
                let row = self.row(job).await?;
                self.advance(job, row).await?;
                Ok(Processed::AlreadySettled)
            }
        }
    }

    /// Fetches and compresses an image within the worker's decode budget: the header says what decoding will
    /// hold (`compress::plan`), and decoding waits until that fits (`decode_budget`).
    async fn compress_from_url(&self, job: &ImageJob) -> std::result::Result<(Vec<u8>, Admitted), ImageFailure> {
        let permanent =
            |e: &dyn std::fmt::Display, reason| ImageFailure::Permanent(Failure::new(reason, e.to_string()));
        let slot = self.decode_budget.fetch_slot().await;
        let bytes = self.fetcher.fetch(&job.url).await.map_err(|e| match e {
            FetchError::Transient(m) => ImageFailure::Transient(m),
            FetchError::Permanent(m) => ImageFailure::Permanent(m),
        })?;
        let (quality, output) = (self.config.jpeg_quality, self.config.output_options());
        let limits = self.config.compress_limits();
        let plan = compress::plan(&bytes, limits).map_err(|e| permanent(&e, FailureReason::of_compress(&e)))?;
        let admitted = self
            .decode_budget
            .admit(plan.decode_bytes + bytes.len() as u64)
            .await
            .map_err(|e| permanent(&e, FailureReason::TooLarge))?;
        drop(slot);
        // Decoding and encoding are CPU-bound: keep them off the async executor.
        let jpeg = tokio::task::spawn_blocking(move || compress::compress_with(&bytes, quality, limits, output))
            .await
            .map_err(|e| {
                ImageFailure::Transient(Failure::new(FailureReason::ProcessingFailed, format!("compression task: {e}")))
            })?
            .map_err(|e| permanent(&e, FailureReason::of_compress(&e)))?;
        Ok((jpeg.jpeg, admitted))
    }

    /// Everything after the image's slot is settled; idempotent, so any delivery of the job may run it.
    async fn advance(&self, job: &ImageJob, row: Row) -> Result<()> {
        let key = job.key();
        let id = &key;
        if row.is_settled() && row.completed_at.is_none() {
            self.rows.complete_row(id, job.serial_number, &row.output_urls(), self.clock.now()).await?;
        }
        let counted = row.images.get(job.index as usize).is_some_and(|s| s.counted);
        let shard = if counted {
            self.progress.get_progress(id, job.shard).await?
        } else {
            let shard = self.progress.increment(id, job.shard).await?;
            self.faults.check("worker.after_count")?;
            self.rows.mark_counted(job).await?;
            shard
        };
        let shard =
            shard.ok_or_else(|| Error::Corrupt(format!("request {id} has no progress counter {}", job.shard)))?;
        if !counted && shard.done == 1 {
            // The first image of each counter (a few writes per request, not one per image).
            self.requests.mark_processing(id).await?;
        }
        if !shard.is_complete() {
            return Ok(());
        }
        // This counter has reached its share: the request may be done if every other counter has too.
        let all = self.progress.all_progress(id).await?;
        if !all.iter().all(ProgressShard::is_complete) {
            return Ok(());
        }
        let request = self.requests.get_request(id).await?.ok_or_else(|| Error::NotFound(id.id.clone()))?;
        if all.len() as i64 >= request.progress_shards {
            self.finaliser.finalise_if_done(&request).await?;
        }
        Ok(())
    }
}
