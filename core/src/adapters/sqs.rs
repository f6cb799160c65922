use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use crate::config::Config;
use crate::domain::ImageJob;
use crate::error::{Error, Result};
use crate::ports::JobQueue;

/// SQS allows at most 10 entries per `SendMessageBatch`.
const BATCH: usize = 10;
/// Attempts per batch for entries SQS reports as failed.
const ATTEMPTS: usize = 4;

/// [`JobQueue`] on Amazon SQS or an SQS-compatible server.
#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
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

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, config: &Config) -> Self {
        Self { client, queue_url: config.queue_url.clone(), concurrency: config.enqueue_concurrency.max(1) }
    }

    async fn send_batch(&self, jobs: &[ImageJob]) -> Result<()> {
        let mut pending: Vec<(String, String)> = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| Ok((i.to_string(), serde_json::to_string(job).map_err(|e| Error::Queue(e.to_string()))?)))
            .collect::<Result<_>>()?;
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
impl JobQueue for SqsQueue {
    async fn send_jobs(&self, jobs: &[ImageJob]) -> Result<()> {
        let batches: Vec<BoxFuture<'_, Result<()>>> =
            jobs.chunks(BATCH).map(|chunk| self.send_batch(chunk).boxed()).collect();
        futures::stream::iter(batches).buffer_unordered(self.concurrency).try_collect::<()>().await
    }
}
