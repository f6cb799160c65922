//! Library errors. They are mapped once to HTTP statuses ([`crate::api::classify`]) and once to queue retry
//! decisions ([`crate::retry::disposition`]).

use crate::csv_input::CsvRejection;
use crate::domain::{InvalidRequestId, RequestId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidCsv(#[from] CsvRejection),
    #[error(transparent)]
    InvalidRequestId(#[from] InvalidRequestId),
    #[error("{0}")]
    BadRequest(String),
    /// The caller is authenticated but may not do this (e.g. name another tenant without `imgpipe/admin`).
    #[error("{0}")]
    Forbidden(String),
    /// The route exists but this deployment has the feature off (e.g. webhooks without a secret).
    #[error("{0}")]
    Disabled(String),
    #[error("request {0} was not found")]
    NotFound(RequestId),
    #[error("no route for {0}")]
    NoRoute(String),
    /// The path exists but not with this method; the value lists the allowed ones.
    #[error("method not allowed here; use {0}")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An `Idempotency-Key` reused with a different body.
    #[error("{0}")]
    IdempotencyMismatch(String),
    #[error("request {0} is still running")]
    NotReady(RequestId),
    /// S3 failed; worth retrying.
    #[error("object storage error: {0}")]
    Storage(String),
    /// SQS failed; worth retrying.
    #[error("queue error: {0}")]
    Queue(String),
    /// MongoDB failed; worth retrying.
    #[error("database error: {0}")]
    Database(String),
    /// The image source failed in a way a retry may fix (timeout, 5xx, 429).
    #[error("image source unavailable: {0}")]
    Upstream(String),
    /// A fault armed by a test ([`crate::fault::Faults`]) fired: the function "dies" here.
    #[error("injected fault at {0}")]
    Injected(&'static str),
    /// A tenant's quota (`limit`, e.g. `max-open-requests`) would be exceeded: nothing was written.
    #[error("{message}")]
    QuotaExceeded { limit: &'static str, message: String, retry_after_secs: u64 },
    /// A stored document does not have the shape this code writes.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The configuration is invalid or incomplete.
    #[error("configuration: {0}")]
    Config(String),
    /// A client could not be built at start-up.
    #[error("start-up: {0}")]
    Startup(String),
}

impl From<mongodb::error::Error> for Error {
    fn from(e: mongodb::error::Error) -> Self {
        Error::Database(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
