//! The queue edge's single mapping from [`Error`] to what happens to the message, like [`crate::api::classify`]
//! for HTTP: retried (left on the queue: it comes back after its visibility timeout, and reaches the dead-letter
//! queue after `maxReceiveCount` receives) or done (deleted).

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A later attempt may succeed: the message stays.
    Retry,
    /// The message asked for something invalid that no attempt will change: it is deleted.
    Drop,
}

pub fn disposition(e: &Error) -> Disposition {
    match e {
        // Infrastructure that may come back, an image source that may answer, a test's injected crash; and what
        // a person must look at (a message for an unknown request, corrupt data, a configuration error), which
        // retries until it lands in the dead-letter queue and raises its alarm.
        Error::Storage(_)
        | Error::Queue(_)
        | Error::Database(_)
        | Error::Upstream(_)
        | Error::Injected(_)
        | Error::NotFound(_)
        | Error::Corrupt(_)
        | Error::Config(_)
        | Error::Disabled(_)
        | Error::Startup(_) => Disposition::Retry,
        Error::InvalidCsv(_)
        | Error::InvalidRequestId(_)
        | Error::BadRequest(_)
        | Error::Forbidden(_)
        | Error::NoRoute(_)
        | Error::MethodNotAllowed(_)
        | Error::PayloadTooLarge(_)
        | Error::UnsupportedMediaType(_)
        | Error::IdempotencyMismatch(_)
        | Error::QuotaExceeded { .. }
        | Error::NotReady(_) => Disposition::Drop,
    }
}
