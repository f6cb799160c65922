//! Worker function: one SQS message per image, answered with a partial batch response.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use imgpipe_core::App;
use imgpipe_core::domain::ImageJob;
use imgpipe_core::retry::{Disposition, disposition};

/// Processes a batch. A record is reported in `batchItemFailures` (and so retried by SQS, then sent to the
/// dead-letter queue) only when it may succeed later or cannot be read.
///
/// Every record starts at once: how many images are fetched and decoded together is the process's decode budget's
/// to decide (`imgpipe_core::decode_budget`: at most `FETCH_AHEAD` fetches, and images decoded together only while
/// what they hold fits the function's memory), not a fixed number.
pub async fn handle(app: &App, event: SqsEvent) -> SqsBatchResponse {
    let records = event.records.len();
    imgpipe_lambda::partial_batch(event, records, |record| handle_record(app, record)).await
}

async fn handle_record(app: &App, record: SqsMessage) -> bool {
    let Some(job) = imgpipe_lambda::versioned_body(&record, ImageJob::SCHEMA, |job: &ImageJob| job.schema) else {
        return false;
    };
    match app.worker().process_job(&job).await {
        Ok(_) => true,
        Err(e) => match disposition(&e) {
            Disposition::Retry => {
                tracing::warn!(requestId = %job.request_id, serialNumber = job.serial_number, index = job.index, error = %e, "image will be retried");
                false
            }
            Disposition::Drop => {
                tracing::error!(requestId = %job.request_id, serialNumber = job.serial_number, index = job.index, error = %e, "image message dropped");
                true
            }
        },
    }
}
