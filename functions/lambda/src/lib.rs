//! What the Lambda functions share at the edge, kept out of the core (which knows no Lambda event types).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use serde::de::DeserializeOwned;

/// Handles each record of an SQS batch with `handle` (at most `concurrency` at once) and answers with a partial
/// batch response: a record for which `handle` returns `false` is reported in `batchItemFailures` and stays on
/// the queue (retried, then dead-lettered); the others are deleted. One bad record never fails the batch.
pub async fn partial_batch<F, Fut>(event: SqsEvent, concurrency: usize, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let handle = &handle;
    let failures: Vec<String> = futures::stream::iter(event.records)
        .map(|record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            (id, handle(record).await)
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|(id, ok)| async move { (!ok).then_some(id) })
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for id in failures {
        response.add_failure(id);
    }
    response
}

/// How many times SQS has handed out `record` (its `ApproximateReceiveCount`; 1 if absent).
pub fn receive_count(record: &SqsMessage) -> u32 {
    record.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// The record's body as a `T` whose schema version (`schema_of`) is `reads`, the one this function reads. `None`,
/// logged with the record's id, when the body cannot be read or is of another schema: the caller leaves the record
/// on the queue, so it reaches the dead-letter queue, kept for whoever can read it.
pub fn versioned_body<T: DeserializeOwned>(
    record: &SqsMessage,
    reads: u32,
    schema_of: impl Fn(&T) -> u32,
) -> Option<T> {
    let message_id = record.message_id.as_deref();
    match serde_json::from_str::<T>(record.body.as_deref().unwrap_or_default()) {
        Ok(body) if schema_of(&body) == reads => Some(body),
        Ok(body) => {
            let schema = schema_of(&body);
            tracing::error!(
                messageId = message_id,
                schema,
                reads,
                "message of another schema; it will reach the dead-letter queue"
            );
            None
        }
        Err(e) => {
            tracing::error!(messageId = message_id, error = %e, "unreadable message; it will reach the dead-letter queue");
            None
        }
    }
}
