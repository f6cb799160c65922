//! The application context: configuration and every client, built once per execution environment.

use std::sync::Arc;

use crate::adapters::{aws_config, mongo::MongoRepository, s3::S3Store, sqs};
use crate::config::Config;
use crate::decode_budget::DecodeBudget;
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::fetch::Fetcher;
use crate::ports::{BlobStore, JobQueue, Repository};

/// Shared by every invocation of a warm Lambda execution environment (and by the local runner).
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub repo: Arc<dyn Repository>,
    pub fetcher: Fetcher,
    /// What the images decoded at once may hold together, one budget for the whole process.
    pub decode_budget: Arc<DecodeBudget>,
    /// Fault-injection points, armed only by tests; empty (and never armed) in production.
    pub faults: Faults,
}

impl App {
    /// Builds the AWS, MongoDB and HTTP clients. No network call is made here: connections open lazily.
    pub async fn new(config: Config) -> Result<Self> {
        let sdk = aws_config(&config).await;
        let (_client, repo) = MongoRepository::connect(&config.mongodb_uri, &config.mongodb_database).await?;
        let sqs = sqs::sqs_client(&sdk, &config);
        let fetcher = Fetcher::new(&config).map_err(|e| Error::BadRequest(format!("HTTP client: {e}")))?;
        Ok(Self {
            blobs: Arc::new(S3Store::new(&sdk, &config)),
            queue: Arc::new(sqs::SqsQueue::new(sqs, &config)),
            repo: Arc::new(repo),
            fetcher,
            decode_budget: Arc::new(DecodeBudget::new(config.decode_budget())),
            faults: Faults::default(),
            config: Arc::new(config),
        })
    }

    /// [`App::new`] with the configuration read from the environment.
    pub async fn from_env() -> Result<Self> {
        let config = Config::from_env().map_err(|e| Error::BadRequest(format!("configuration: {e}")))?;
        Self::new(config).await
    }
}
