//! The application context: configuration and every port, built once per execution environment, and the only
//! place that hands each service the ports it uses.

use std::sync::Arc;

use crate::adapters::memory::{MemoryBlobs, MemoryQueues, MemoryStore};
use crate::adapters::{aws_config, mongo::MongoStore, s3::S3Store, sqs};
use crate::config::Config;
use crate::decode_budget::DecodeBudget;
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::fetch::Fetcher;
use crate::ports::{
    BlobStore, Clock, DeliveryQueue, JobQueue, ProgressStore, ReportStore, RequestStore, RowStore, SweepStore,
    SystemClock, TenantStore, WebhookLog,
};
use crate::service::deliver::Deliverer;
use crate::service::finalise::Finaliser;
use crate::service::ingest::Ingest;
use crate::service::process::Worker;
use crate::service::reports::Reports;
use crate::service::status::StatusReader;
use crate::service::sweep::Sweeper;
use crate::service::urls::Urls;

/// Shared by every invocation of a warm Lambda execution environment (and by the local runner).
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub requests: Arc<dyn RequestStore>,
    pub rows: Arc<dyn RowStore>,
    pub progress: Arc<dyn ProgressStore>,
    pub webhooks: Arc<dyn WebhookLog>,
    pub reports: Arc<dyn ReportStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub sweep: Arc<dyn SweepStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub jobs: Arc<dyn JobQueue>,
    pub deliveries: Arc<dyn DeliveryQueue>,
    pub clock: Arc<dyn Clock>,
    pub fetcher: Fetcher,
    /// What the images decoded at once may hold together, one budget for the whole process.
    pub decode_budget: Arc<DecodeBudget>,
    /// Fault-injection points, armed only by tests; empty (and never armed) in production.
    pub faults: Faults,
}

/// Every document port on one store.
pub trait DocumentStore:
    RequestStore + RowStore + ProgressStore + WebhookLog + ReportStore + TenantStore + SweepStore + 'static
{
}

impl<T: RequestStore + RowStore + ProgressStore + WebhookLog + ReportStore + TenantStore + SweepStore + 'static>
    DocumentStore for T
{
}

impl App {
    /// Builds the AWS, MongoDB and HTTP clients. No network call is made here: connections open lazily.
    pub async fn new(config: Config) -> Result<Self> {
        let sdk = aws_config(&config).await;
        let (_client, store) = MongoStore::connect(config.mongodb_uri.expose(), &config.mongodb_database).await?;
        let sqs = sqs::sqs_client(&sdk, &config);
        let queues = Arc::new(sqs::SqsQueues::new(sqs, &config));
        let blobs = Arc::new(S3Store::new(&sdk, &config));
        Self::assemble(config, Arc::new(store), blobs, queues.clone(), queues, Arc::new(SystemClock))
    }

    /// [`App::new`] with the configuration read from the environment.
    pub async fn from_env() -> Result<Self> {
        let config = Config::from_env().map_err(|e| Error::Config(e.to_string()))?;
        Self::new(config).await
    }

    /// An application on in-memory twins of every port (fast deterministic tests), with `clock`.
    pub fn in_memory(
        config: Config,
        store: Arc<MemoryStore>,
        blobs: Arc<MemoryBlobs>,
        queues: Arc<MemoryQueues>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        Self::assemble(config, store, blobs, queues.clone(), queues, clock)
    }

    fn assemble<S: DocumentStore>(
        config: Config,
        store: Arc<S>,
        blobs: Arc<dyn BlobStore>,
        jobs: Arc<dyn JobQueue>,
        deliveries: Arc<dyn DeliveryQueue>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let fetcher = Fetcher::new(&config).map_err(|e| Error::Startup(format!("HTTP client: {e}")))?;
        let app = Self {
            requests: store.clone(),
            rows: store.clone(),
            progress: store.clone(),
            webhooks: store.clone(),
            reports: store.clone(),
            tenants: store.clone(),
            sweep: store,
            blobs,
            jobs,
            deliveries,
            clock,
            fetcher,
            decode_budget: Arc::new(DecodeBudget::new(config.decode_budget())),
            faults: Faults::default(),
            config: Arc::new(config),
        };
        Ok(app)
    }

    /// Puts every document port on `store` (e.g. a MongoDB store whose client monitors its commands).
    pub fn set_documents<S: DocumentStore>(&mut self, store: Arc<S>) {
        self.requests = store.clone();
        self.rows = store.clone();
        self.progress = store.clone();
        self.webhooks = store.clone();
        self.reports = store.clone();
        self.tenants = store.clone();
        self.sweep = store;
    }

    pub fn urls(&self) -> Urls<'_> {
        Urls { config: &self.config, blobs: &*self.blobs }
    }

    pub fn ingest(&self) -> Ingest<'_> {
        Ingest {
            requests: &*self.requests,
            rows: &*self.rows,
            progress: &*self.progress,
            tenants: &*self.tenants,
            blobs: &*self.blobs,
            jobs: &*self.jobs,
            fetcher: &self.fetcher,
            clock: &*self.clock,
            config: &self.config,
            faults: &self.faults,
        }
    }

    pub fn finaliser(&self) -> Finaliser<'_> {
        Finaliser {
            requests: &*self.requests,
            rows: &*self.rows,
            blobs: &*self.blobs,
            deliveries: &*self.deliveries,
            clock: &*self.clock,
            config: &self.config,
            faults: &self.faults,
        }
    }

    pub fn worker(&self) -> Worker<'_> {
        Worker {
            requests: &*self.requests,
            rows: &*self.rows,
            progress: &*self.progress,
            blobs: &*self.blobs,
            fetcher: &self.fetcher,
            decode_budget: &self.decode_budget,
            clock: &*self.clock,
            config: &self.config,
            faults: &self.faults,
            finaliser: self.finaliser(),
        }
    }

    pub fn status(&self) -> StatusReader<'_> {
        StatusReader { requests: &*self.requests, rows: &*self.rows, urls: self.urls() }
    }

    pub fn reports(&self) -> Reports<'_> {
        Reports { reports: &*self.reports, clock: &*self.clock }
    }

    pub fn sweeper(&self) -> Sweeper<'_> {
        Sweeper {
            sweep: &*self.sweep,
            webhooks: &*self.webhooks,
            deliveries: &*self.deliveries,
            ingest: self.ingest(),
            finaliser: self.finaliser(),
            clock: &*self.clock,
            config: &self.config,
        }
    }

    pub fn deliverer(&self) -> Deliverer<'_> {
        Deliverer {
            requests: &*self.requests,
            webhooks: &*self.webhooks,
            deliveries: &*self.deliveries,
            fetcher: &self.fetcher,
            urls: self.urls(),
            clock: &*self.clock,
            config: &self.config,
        }
    }
}
