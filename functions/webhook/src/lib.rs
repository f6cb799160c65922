//! Webhook delivery function: one attempt per message of the webhook queue, answered with a partial batch
//! response (see `imgpipe_core::service::deliver`).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use imgpipe_core::App;
use imgpipe_core::ports::WebhookDelivery;
use imgpipe_core::retry::{Disposition, disposition};
use imgpipe_core::service::deliver::{Attempted, Received};

/// Deliveries attempted at once within one batch (each attempt takes at most 10 s).
const CONCURRENCY: usize = 10;

pub async fn handle(app: &App, event: SqsEvent) -> SqsBatchResponse {
    imgpipe_lambda::partial_batch(event, CONCURRENCY, |record| handle_record(app, record)).await
}

/// `false`: the message stays on the queue (the next attempt, after the delay it was postponed by).
async fn handle_record(app: &App, record: SqsMessage) -> bool {
    let Some(delivery) =
        imgpipe_lambda::versioned_body(&record, WebhookDelivery::SCHEMA, |d: &WebhookDelivery| d.schema)
    else {
        return false;
    };
    let received = Received {
        receive_count: imgpipe_lambda::receive_count(&record),
        receipt_handle: record.receipt_handle.unwrap_or_default(),
        delivery,
    };
    match app.deliverer().attempt(&received).await {
        Ok(Attempted::RetryIn(_)) => false,
        Ok(Attempted::Delivered | Attempted::Skipped | Attempted::GaveUp) => true,
        Err(e) => {
            tracing::warn!(requestId = %received.delivery.request_id, error = %e, "webhook attempt could not be made");
            disposition(&e) == Disposition::Drop
        }
    }
}
