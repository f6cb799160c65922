//! S3 drops on the local stack: what the bucket trigger (S3 invoking the upload function) does on AWS. The uploads
//! bucket notifies a queue of every object created under `incoming/` (the local S3 sends its notifications to
//! ElasticMQ; moto would only send them to its own SQS); [`run`] long-polls that queue like an event source mapping
//! and invokes the upload function's S3 handler with each message's `S3Event`, deleting a message only once the
//! handler returned `Ok`. A failed one comes back after its visibility timeout and, after
//! [`DROPS_MAX_RECEIVE_COUNT`] receives, waits in the dead-letter queue: nothing is lost.

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration,
    S3KeyFilter,
};
use imgpipe_core::adapters::s3::S3Store;
use imgpipe_core::adapters::{aws_config, sqs::sqs_client};
use imgpipe_core::domain::INCOMING_PREFIX;
use imgpipe_core::{App, Config, Error};
use tokio::sync::watch;

/// Receives of one drop's message before it goes to the dead-letter queue.
pub const DROPS_MAX_RECEIVE_COUNT: u32 = 5;

/// The drops queue of a configuration, named after its uploads bucket (`imgpipe-uploads-drops` for `make local`).
pub fn drops_queue_name(config: &Config) -> String {
    format!("{}-drops", config.uploads_bucket)
}

/// Creates the drops queue (and its dead-letter queue) and points the uploads bucket's notification of `incoming/`
/// creations at it, as `template.yaml`'s bucket trigger does for the function. Idempotent; the local S3 keeps
/// notification configurations in memory, so the runner sets it on every start. Returns the queue's URL.
pub async fn provision(config: &Config, visibility_timeout_secs: u32) -> Result<String, Error> {
    let sdk = aws_config(config).await;
    let sqs = sqs_client(&sdk, config);
    let name = drops_queue_name(config);
    let url = crate::create_queue_with_dlq(&sqs, &name, DROPS_MAX_RECEIVE_COUNT, visibility_timeout_secs).await?;
    // The ARN as the local runner names ElasticMQ's queues (see `run_queue`).
    let arn = format!("arn:aws:sqs:{}:000000000000:{name}", config.region);
    let storage_error = |e: &dyn std::fmt::Display| Error::Storage(format!("drops notification: {e}"));
    let prefix = FilterRule::builder().name(FilterRuleName::Prefix).value(INCOMING_PREFIX).build();
    let filter =
        NotificationConfigurationFilter::builder().key(S3KeyFilter::builder().filter_rules(prefix).build()).build();
    let queue = QueueConfiguration::builder()
        .id("incoming-drops")
        .queue_arn(arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(filter)
        .build()
        .map_err(|e| storage_error(&e))?;
    S3Store::new(&sdk, config)
        .client()
        .put_bucket_notification_configuration()
        .bucket(&config.uploads_bucket)
        .notification_configuration(NotificationConfiguration::builder().queue_configurations(queue).build())
        .send()
        .await
        .map_err(|e| storage_error(&aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(url)
}

/// The upload function as the bucket trigger invokes it, one notification at a time (each message carries one).
pub fn drops_handler<'a>(app: &'a App, event: SqsEvent) -> futures::future::BoxFuture<'a, SqsBatchResponse> {
    Box::pin(imgpipe_lambda::partial_batch(event, 1, move |message| handle_message(app, message)))
}

/// `false`: the message stays on the queue (retried, then dead-lettered).
async fn handle_message(app: &App, message: SqsMessage) -> bool {
    let id = message.message_id.as_deref().unwrap_or_default();
    let body: serde_json::Value = match serde_json::from_str(message.body.as_deref().unwrap_or_default()) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(messageId = id, error = %e, "unreadable S3 notification; it will reach the dead-letter queue");
            return false;
        }
    };
    // Sent once when a notification configuration is set; S3 never invokes a function with it.
    if body["Event"] == "s3:TestEvent" {
        tracing::debug!(messageId = id, bucket = body["Bucket"].as_str(), "s3:TestEvent skipped");
        return true;
    }
    let event: S3Event = match serde_json::from_value(body) {
        Ok(event) => event,
        Err(e) => {
            tracing::error!(messageId = id, error = %e, "not an S3 event; it will reach the dead-letter queue");
            return false;
        }
    };
    match imgpipe_upload::s3::handle_s3(app, event).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(messageId = id, error = %e, "S3 drop not ingested; retried after the visibility timeout");
            false
        }
    }
}

/// What the bucket trigger does, until `shutdown` turns true: polls the drops queue at `queue_url` (made by
/// [`provision`]; see [`crate::run_queue`]). Returns how many batches it ran.
pub async fn run(app: App, sqs: aws_sdk_sqs::Client, queue_url: String, shutdown: watch::Receiver<bool>) -> usize {
    tracing::info!(bucket = app.config.uploads_bucket, prefix = INCOMING_PREFIX, queue = queue_url, "S3 drops polled");
    crate::run_queue(app, sqs, queue_url, drops_handler, shutdown).await
}
