//! A request (one uploaded CSV) and what hangs off it: its lifecycle, its progress counters and its webhook.

use serde::{Deserialize, Serialize};

use super::{RequestId, RequestKey, TenantId, Timestamp};
use crate::csv_input::RowError;

/// Lifecycle of a request, as stored in `Requests.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 4] = [Self::Pending, Self::Processing, Self::Completed, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// Where a request's CSV came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /uploads`.
    Api,
    /// A CSV created in the uploads bucket (a presigned upload or a dropped file).
    S3,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::S3 => "s3",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Api, Self::S3].into_iter().find(|source| source.as_str() == s)
    }
}

/// An object in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub bucket: String,
    pub key: String,
}

/// Why an ingested CSV was refused: the first rows' errors, and how many there were.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rejection {
    pub errors: Vec<RowError>,
    pub total: i64,
}

/// One upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub tenant: TenantId,
    pub id: RequestId,
    pub status: RequestStatus,
    pub source: Source,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub total_products: i64,
    pub total_images: i64,
    /// How many progress counters the request's images are dealt over.
    pub progress_shards: i64,
    /// Exact counts, written at finalisation (while the request runs they are summed from its rows).
    pub succeeded_images: i64,
    pub failed_images: i64,
    pub input_csv: StoredObject,
    pub output_csv_key: Option<String>,
    /// SHA-256 of the CSV: a retried upload with the same `Idempotency-Key` must carry the same file.
    pub content_sha256: String,
    /// Set once every image message is on the queue; unset means the ingestion stopped before that.
    pub enqueued_at: Option<Timestamp>,
    /// Why the CSV was refused (a dropped file: there was no caller to answer).
    pub rejection: Option<Rejection>,
    /// Since when a finaliser holds the request's finalisation lease.
    pub finalising_since: Option<Timestamp>,
    pub webhook: Option<Webhook>,
}

impl Request {
    pub fn key(&self) -> RequestKey {
        RequestKey::new(&self.tenant, &self.id)
    }

    /// The exact counts once final; `None` while running.
    pub fn final_tally(&self) -> Option<Tally> {
        self.status
            .is_final()
            .then(|| Tally { settled: self.succeeded_images + self.failed_images, failed: self.failed_images })
    }
}

/// What finalisation writes, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalisation {
    pub status: RequestStatus,
    /// Whether the request has a webhook, whose delivery is then marked `queued` in the same write.
    pub queue_webhook: bool,
    pub tally: Tally,
    pub output_csv_key: String,
    pub at: Timestamp,
}

/// Exact progress of a request, summed over its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub settled: i64,
    pub failed: i64,
}

impl Tally {
    pub fn succeeded(self) -> i64 {
        self.settled - self.failed
    }
}

/// One of a request's progress counters (`RequestProgress`): the images of the request are dealt round-robin over
/// `progress_shards` counters, so that each image's progress write goes to a small document shared by a fraction
/// of the workers instead of one document shared by all of them.
///
/// `done` counts settled images as reported by workers. It triggers the exact recount that finalises the
/// request, and can run ahead of the truth after a crash or a duplicate delivery, never behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressShard {
    #[serde(rename = "tenantId")]
    pub tenant: TenantId,
    pub request_id: RequestId,
    pub shard: i64,
    /// Images dealt to this counter.
    pub expected: i64,
    pub done: i64,
}

impl ProgressShard {
    pub fn is_complete(&self) -> bool {
        self.done >= self.expected
    }

    /// The `shards` counters of a request whose images are dealt to them as `jobs` are: each counter expects every
    /// position of the jobs dealt to it.
    pub fn for_jobs(key: &RequestKey, jobs: &[super::ImageJob], shards: i64) -> Vec<ProgressShard> {
        let mut expected = vec![0_i64; shards.max(1) as usize];
        for job in jobs {
            expected[job.shard as usize] += 1 + job.also.len() as i64;
        }
        (0..)
            .zip(expected)
            .map(|(shard, expected)| ProgressShard {
                tenant: key.tenant.clone(),
                request_id: key.id.clone(),
                shard,
                expected,
                done: 0,
            })
            .collect()
    }
}

/// Where a request's webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookState {
    /// The request is running.
    Waiting,
    /// The request is final and its delivery is on the webhook queue.
    Queued,
    Delivered,
    /// Every attempt within the retry horizon failed.
    Failed,
}

impl WebhookState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Waiting, Self::Queued, Self::Delivered, Self::Failed].into_iter().find(|state| state.as_str() == s)
    }

    pub fn is_done(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed)
    }
}

/// A webhook named at upload, called once the request is final.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub url: String,
    pub state: WebhookState,
    pub attempts: Vec<WebhookAttempt>,
    /// When the request became final and the delivery was queued.
    pub queued_at: Option<Timestamp>,
    /// The last sign of life of the delivery: when it was queued, or its last attempt. A queued delivery quiet
    /// for longer than the retry backoff has lost its message, and the sweeper queues it again.
    pub last_activity_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
}

impl Webhook {
    pub fn waiting(url: String) -> Self {
        Self {
            url,
            state: WebhookState::Waiting,
            attempts: Vec::new(),
            queued_at: None,
            last_activity_at: None,
            delivered_at: None,
        }
    }
}

/// One delivery attempt of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAttempt {
    pub at: Timestamp,
    /// HTTP status of the answer, if there was one.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Filters of the request list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<RequestStatus>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

/// Images finished on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyImages {
    pub day: String,
    pub processed: i64,
    pub failed: i64,
}

/// Which requests a report covers: one tenant's, or (the admin scope) every tenant's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    Tenant(TenantId),
    AllTenants,
}

/// A tenant's limits, each `None` where the deployment's default (`Config`) applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaOverrides {
    pub max_images_per_request: Option<i64>,
    pub max_open_requests: Option<i64>,
    pub max_queued_images: Option<i64>,
}

/// One tenant (`Tenants`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub created_at: Timestamp,
    pub quotas: QuotaOverrides,
}

/// What a tenant has running: the requests not final yet, and the images they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub open_requests: i64,
    pub queued_images: i64,
}
