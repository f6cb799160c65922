//! Ports: what the services need from the outside world, one small trait per role. Each has an adapter on the
//! real service (`adapters::mongo`, `adapters::s3`, `adapters::sqs`) and an in-memory twin (`adapters::memory`)
//! that the port contract tests (`ports::contract`) hold to the same behaviour.
//!
//! | port | role | MongoDB collection / AWS service |
//! |---|---|---|
//! | [`RequestStore`] | one request's lifecycle: insert, read, enqueued, processing, finalisation lease, final status | `Requests` |
//! | [`RowStore`] | a request's rows and the exactly-once settlement of each image | `RequestData` |
//! | [`ProgressStore`] | the request's progress counters | `RequestProgress` |
//! | [`WebhookLog`] | a request's webhook delivery record | `Requests.webhook` |
//! | [`ReportStore`] | reports across requests, of one tenant or of all | `Requests` |
//! | [`TenantStore`] | tenants, their quotas and upload lock, idempotency keys | `Tenants`, `IdempotencyKeys` |
//! | [`SweepStore`] | the sweeper's view across all requests (a system role) | `Requests` |
//! | [`BlobStore`] | objects | S3 |
//! | [`JobQueue`], [`DeliveryQueue`] | image jobs, webhook deliveries | SQS |
//! | [`Clock`] | the time | the system clock |

mod documents;
mod messaging;

#[cfg(any(test, feature = "testing"))]
pub mod contract;

pub use documents::{
    ProgressStore, ROW_BATCH, ReportStore, RequestStore, RowStore, RowStream, SweepStore, TenantStore, WebhookLog,
};
pub use messaging::{BlobStore, Bounded, DeliveryQueue, JobQueue, WebhookDelivery};

use crate::domain::Timestamp;

/// The time, as a port so that tests can move it (lease expiry, the sweeper's grace periods).
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
