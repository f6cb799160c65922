//! The MongoDB documents: the seed design's `Requests` and `RequestData`, with the fields it lacked
//! (progress counters, per-image state and errors). Field names are the seed's, in camelCase.

use std::collections::BTreeMap;

use mongodb::bson::DateTime;
use serde::{Deserialize, Serialize};

use crate::csv_input::RowError;
use crate::domain::{ImageState, RequestId, RequestStatus};
use crate::failure::FailureReason;

pub const REQUESTS: &str = "Requests";
pub const REQUEST_DATA: &str = "RequestData";
pub const REQUEST_PROGRESS: &str = "RequestProgress";

/// One document per upload in `Requests`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestDoc {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub created_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime>,
    pub total_products: i64,
    pub total_images: i64,
    /// How many `RequestProgress` counters the request's images are spread over.
    #[serde(default)]
    pub progress_shards: i64,
    /// Exact counts, written when the request is finalised (while running they are summed from `RequestData`).
    #[serde(default)]
    pub succeeded_images: i64,
    #[serde(default)]
    pub failed_images: i64,
    /// Where the input CSV is stored.
    pub input_csv_bucket: String,
    pub input_csv_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_csv_key: Option<String>,
    /// Where the request came from: `api` or `s3`.
    pub source: String,
    /// SHA-256 of the CSV: a retried upload with the same `Idempotency-Key` must carry the same file.
    pub content_sha256: String,
    /// Set once every image message is on the queue. A retried upload or S3 event finding it unset finishes the
    /// enqueueing (the function died between writing the documents and sending the messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<DateTime>,
    /// Why ingestion failed (an invalid CSV dropped into the bucket), the first rows listed, all counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RowError>,
    #[serde(default)]
    pub error_total: i64,
    /// `completedAt`'s UTC day (`YYYY-MM-DD`): the bucket of the daily report (no date operators needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_day: Option<String>,
    /// Set by the worker that finalises the request (a lease: see `IMGPIPE_FINALISE_LEASE_SECS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizing_at: Option<DateTime>,
    /// The caller's webhook and its delivery record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// A webhook named at upload, called once when the request is finalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub url: String,
    /// `waiting` (request running), `delivering`, `delivered` or `failed` (every attempt failed).
    pub state: String,
    #[serde(default)]
    pub attempts: Vec<WebhookAttempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttempt {
    pub at: DateTime,
    /// HTTP status of the answer, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One image of a row: its state and, once settled, its output or its error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSlot {
    pub state: ImageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    /// Why the image failed (one of a closed set), and that reason's message in `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether this image's settlement was added to its `RequestProgress` counter.
    #[serde(default)]
    pub counted: bool,
}

impl ImageSlot {
    pub fn pending() -> Self {
        Self {
            state: ImageState::Pending,
            output_key: None,
            output_url: None,
            reason: None,
            error: None,
            counted: false,
        }
    }
}

/// One document per CSV row in `RequestData`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowDoc {
    pub request_id: RequestId,
    pub serial_number: i64,
    pub product_name: String,
    pub input_image_urls: Vec<String>,
    /// Aligned with `inputImageUrls`; written when every image of the row is settled
    /// (a failed image leaves an empty string at its position).
    pub output_image_urls: Vec<String>,
    pub created_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime>,
    /// Per-image state, keyed by the image's index in `inputImageUrls` ("0", "1", …).
    pub images: BTreeMap<String, ImageSlot>,
    pub total_images: i64,
    pub settled_images: i64,
    pub failed_images: i64,
}

impl RowDoc {
    /// The image slots in input order.
    pub fn slots(&self) -> Vec<Option<&ImageSlot>> {
        (0..self.input_image_urls.len()).map(|i| self.images.get(&i.to_string())).collect()
    }

    pub fn is_settled(&self) -> bool {
        self.settled_images >= self.total_images
    }
}

/// One of a request's progress counters in `RequestProgress`: the images of the request are dealt round-robin
/// over `Requests.progressShards` counters, so that each image's progress write goes to a small document shared
/// by a fraction of the workers instead of the one `Requests` document shared by all of them.
///
/// `done` counts settled images as reported by workers. It triggers the exact recount that finalises the
/// request, and can run ahead of the truth after a crash or a duplicate delivery, never behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressShard {
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
}

/// A date as RFC 3339 (milliseconds since the epoch for a date outside RFC 3339's range).
pub fn rfc3339(at: DateTime) -> String {
    at.try_to_rfc3339_string().unwrap_or_else(|_| at.timestamp_millis().to_string())
}

/// The UTC day of a date, `YYYY-MM-DD`.
pub fn day_of(at: DateTime) -> String {
    at.try_to_rfc3339_string().map(|s| s[..10].to_string()).unwrap_or_default()
}

/// Filters of the request list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<RequestStatus>,
    pub created_after: Option<DateTime>,
    pub created_before: Option<DateTime>,
}

/// Images finished on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyImages {
    pub day: String,
    pub processed: i64,
    pub failed: i64,
}

/// Exact progress of a request, summed over its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub settled: i64,
    pub failed: i64,
}
