use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use crate::config::Config;
use crate::domain::ImageJob;
use crate::error::{Error, Result};
use crate::ports::{DeliveryQueue, JobQueue, WebhookDelivery};

/// SQS allows at most 10 entries per `SendMessageBatch`.
const BATCH: usize = 10;
/// Largest sum of message bodies in one `SendMessageBatch`, in bytes. AWS's current API reference gives 1 MiB
/// (1,048,576 bytes) for a message and for a batch; older regions' documentation and ElasticMQ's strict limits
/// (the local stack) give 256 KiB (262,144 bytes), so batches are built to the smaller figure, which holds
/// everywhere.
pub const MAX_BATCH_BYTES: usize = 262_144;
/// Attempts per batch for entries SQS reports as failed.
const ATTEMPTS: usize = 4;

/// [`JobQueue`] and [`DeliveryQueue`] on Amazon SQS or an SQS-compatible server.
#[derive(Clone)]
pub struct SqsQueues {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    webhook_queue_url: Option<String>,
    concurrency: usize,
}

/// An SQS client for `config`, honouring the local-stack endpoint.
pub fn sqs_client(sdk: &aws_config::SdkConfig, config: &Config) -> aws_sdk_sqs::Client {
    let mut builder = aws_sdk_sqs::config::Builder::from(sdk);
    if let Some(endpoint) = &config.sqs_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_sqs::Client::from_conf(builder.build())
}

impl SqsQueues {
    pub fn new(client: aws_sdk_sqs::Client, config: &Config) -> Self {
        Self {
            client,
            queue_url: config.queue_url.clone(),
            webhook_queue_url: config.webhook_queue_url.clone(),
            concurrency: config.enqueue_concurrency.max(1),
        }
    }

    fn webhook_queue(&self) -> Result<&str> {
        self.webhook_queue_url.as_deref().ok_or_else(|| Error::Config("IMGPIPE_WEBHOOK_QUEUE_URL is not set".into()))
    }

    async fn send_batch(&self, bodies: Vec<String>) -> Result<()> {
        let mut pending: Vec<(String, String)> =
            bodies.into_iter().enumerate().map(|(i, body)| (i.to_string(), body)).collect();
        for attempt in 1..=ATTEMPTS {
            let entries = pending
                .iter()
                .map(|(id, body)| SendMessageBatchRequestEntry::builder().id(id).message_body(body).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Queue(e.to_string()))?;
            let out = match self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(attempt, error = %DisplayErrorContext(&e), "SendMessageBatch failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Queue(format!("SendMessageBatch: {}", DisplayErrorContext(e))));
                }
            };
            let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
            if failed.is_empty() {
                return Ok(());
            }
            tracing::warn!(attempt, failed = failed.len(), "SendMessageBatch entries failed; retrying them");
            pending.retain(|(id, _)| failed.contains(&id.as_str()));
            tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
        }
        Err(Error::Queue(format!("{} message(s) could not be sent after {ATTEMPTS} attempts", pending.len())))
    }
}

#[async_trait]
impl JobQueue for SqsQueues {
    async fn send_jobs(&self, jobs: &[ImageJob]) -> Result<()> {
        let bodies = jobs
            .iter()
            .map(|job| serde_json::to_string(job).map_err(|e| Error::Queue(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let batches: Vec<BoxFuture<'_, Result<()>>> =
            batches(bodies, BATCH, MAX_BATCH_BYTES)?.into_iter().map(|batch| self.send_batch(batch).boxed()).collect();
        futures::stream::iter(batches).buffer_unordered(self.concurrency).try_collect::<()>().await
    }
}

#[async_trait]
impl DeliveryQueue for SqsQueues {
    async fn enqueue(&self, delivery: &WebhookDelivery) -> Result<()> {
        let body = serde_json::to_string(delivery).map_err(|e| Error::Queue(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(self.webhook_queue()?)
            .message_body(body)
            .send()
            .await
            .map_err(|e| Error::Queue(format!("SendMessage: {}", DisplayErrorContext(e))))?;
        Ok(())
    }

    async fn postpone(&self, receipt_handle: &str, delay: std::time::Duration) -> Result<()> {
        // SQS allows at most 12 hours of visibility.
        let seconds = delay.as_secs().min(12 * 3600) as i32;
        self.client
            .change_message_visibility()
            .queue_url(self.webhook_queue()?)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| Error::Queue(format!("ChangeMessageVisibility: {}", DisplayErrorContext(e))))?;
        Ok(())
    }
}

/// Splits message bodies, in order, into batches of at most `max_count` entries and `max_bytes` bytes. A body
/// that alone is over `max_bytes` is an error before anything is sent (the CSV limits make it impossible).
fn batches(bodies: Vec<String>, max_count: usize, max_bytes: usize) -> Result<Vec<Vec<String>>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for body in bodies {
        if body.len() > max_bytes {
            return Err(Error::Queue(format!("a message of {} bytes is over the {max_bytes}-byte limit", body.len())));
        }
        match out.last_mut() {
            Some(batch) if batch.len() < max_count && bytes + body.len() <= max_bytes => {
                bytes += body.len();
                batch.push(body);
            }
            _ => {
                bytes = body.len();
                out.push(vec![body]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(batches: &[Vec<String>]) -> Vec<Vec<usize>> {
        batches.iter().map(|b| b.iter().map(String::len).collect()).collect()
    }

    #[test]
    fn batches_by_count_and_by_bytes() {
        let bodies = |lens: &[usize]| lens.iter().map(|&n| "x".repeat(n)).collect::<Vec<_>>();
        // count: 25 small bodies are 10 + 10 + 5
        let got = batches(bodies(&[1; 25]), 10, 100).unwrap();
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        // bytes: exactly the limit fits in one batch, one byte more starts the next
        assert_eq!(sizes(&batches(bodies(&[60, 40, 1]), 10, 100).unwrap()), [vec![60, 40], vec![1]]);
        assert_eq!(sizes(&batches(bodies(&[60, 41]), 10, 100).unwrap()), [vec![60], vec![41]]);
        // a body of exactly the limit is sent alone; one over it is refused
        assert_eq!(sizes(&batches(bodies(&[100, 1]), 10, 100).unwrap()), [vec![100], vec![1]]);
        assert!(batches(bodies(&[101]), 10, 100).is_err());
        // order is kept
        let got = batches(vec!["a".into(), "bb".into(), "c".into()], 2, 100).unwrap();
        assert_eq!(got, [vec!["a".to_string(), "bb".into()], vec!["c".into()]]);
    }
}
