//! Why an image failed, as callers see it: a small closed set of reasons, each with one short message. The same
//! code is stored on the image (`RequestData.images.N.reason`), shown by the status API and the output CSV, and
//! logged as the `reason` field. The precise low-level cause (the refused address, the connect error, the HTTP
//! status) goes to the logs only, so the API cannot be used to scan hosts and ports.

use serde::{Deserialize, Serialize};

use crate::compress::CompressError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The URL's host is not a public address, or the port is not allowed (`IMGPIPE_FETCH_ALLOW_PORTS`).
    SourceNotPublic,
    /// No connection could be made, or it broke.
    SourceUnreachable,
    /// The source did not answer in time.
    SourceTimeout,
    /// The source answered with an HTTP error status.
    HttpStatus,
    /// Too many redirects, or a redirect to a URL that may not be fetched.
    BadRedirect,
    /// The body, or the decoded image, is over a limit.
    TooLarge,
    /// Not an image, or not in a supported format.
    UnsupportedFormat,
    /// An image that cannot be decoded.
    CorruptImage,
    /// The image was read but could not be written as JPEG.
    ProcessingFailed,
}

impl FailureReason {
    pub const ALL: [FailureReason; 9] = [
        Self::SourceNotPublic,
        Self::SourceUnreachable,
        Self::SourceTimeout,
        Self::HttpStatus,
        Self::BadRedirect,
        Self::TooLarge,
        Self::UnsupportedFormat,
        Self::CorruptImage,
        Self::ProcessingFailed,
    ];

    /// The stored and logged code, e.g. `source_not_public`.
    pub fn code(self) -> &'static str {
        match self {
            Self::SourceNotPublic => "source_not_public",
            Self::SourceUnreachable => "source_unreachable",
            Self::SourceTimeout => "source_timeout",
            Self::HttpStatus => "http_status",
            Self::BadRedirect => "bad_redirect",
            Self::TooLarge => "too_large",
            Self::UnsupportedFormat => "unsupported_format",
            Self::CorruptImage => "corrupt_image",
            Self::ProcessingFailed => "processing_failed",
        }
    }

    /// The short message shown to the caller.
    pub fn message(self) -> &'static str {
        match self {
            Self::SourceNotPublic => "the image URL does not point to a public web server on an allowed port",
            Self::SourceUnreachable => "the image server could not be reached",
            Self::SourceTimeout => "the image server did not answer in time",
            Self::HttpStatus => "the image server answered with an error status",
            Self::BadRedirect => "the image URL redirects too often or to a URL that may not be fetched",
            Self::TooLarge => "the image is over the size limit",
            Self::UnsupportedFormat => "the file is not an image in a supported format",
            Self::CorruptImage => "the image could not be decoded",
            Self::ProcessingFailed => "the image could not be converted to JPEG",
        }
    }

    /// The reason of an image that could not be compressed.
    pub fn of_compress(e: &CompressError) -> Self {
        match e {
            CompressError::NotAnImage(_) | CompressError::Unsupported(_) => Self::UnsupportedFormat,
            CompressError::TooLarge { .. } => Self::TooLarge,
            CompressError::Decode(_) => Self::CorruptImage,
            CompressError::Encode(_) => Self::ProcessingFailed,
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A failure: the reason callers see, and the detail only the logs get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailureReason,
    pub detail: String,
}

impl Failure {
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_serialised_form_and_distinct() {
        let mut codes = std::collections::HashSet::new();
        for reason in FailureReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.code());
            assert_eq!(serde_json::from_value::<FailureReason>(reason.code().into()).unwrap(), reason);
            assert!(codes.insert(reason.code()));
            assert!(!reason.message().is_empty());
        }
    }
}
