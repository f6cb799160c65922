//! The MongoDB documents: the seed design's `Requests` and `RequestData` (field names kept, in camelCase), with the
//! fields it lacked, and `RequestProgress`. BSON stays in this adapter: the services see the domain types.

use std::collections::BTreeMap;

use mongodb::bson::DateTime;
use serde::{Deserialize, Serialize};

use crate::csv_input::RowError;
use crate::domain::{
    ImageSlot, ImageState, QuotaOverrides, Rejection, Request, RequestId, RequestStatus, Row, Source, StoredObject,
    Tenant, TenantId, Timestamp, Webhook, WebhookAttempt, WebhookState,
};
use crate::error::{Error, Result};
use crate::failure::FailureReason;

pub const REQUESTS: &str = "Requests";
pub const REQUEST_DATA: &str = "RequestData";
pub const REQUEST_PROGRESS: &str = "RequestProgress";
pub const TENANTS: &str = "Tenants";
pub const IDEMPOTENCY_KEYS: &str = "IdempotencyKeys";

pub fn bson_date(t: Timestamp) -> DateTime {
    DateTime::from_millis(t.millis())
}

fn timestamp(d: DateTime) -> Timestamp {
    Timestamp::from_millis(d.timestamp_millis())
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Corrupt(format!("unknown {what} `{value}`"))
}

/// One document per upload in `Requests`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestDoc {
    #[serde(rename = "tenantId")]
    pub tenant: TenantId,
    pub request_id: RequestId,
    pub status: String,
    pub created_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime>,
    pub total_products: i64,
    pub total_images: i64,
    #[serde(default)]
    pub progress_shards: i64,
    #[serde(default)]
    pub succeeded_images: i64,
    #[serde(default)]
    pub failed_images: i64,
    pub input_csv_bucket: String,
    pub input_csv_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_csv_key: Option<String>,
    /// `api` or `s3`.
    pub source: String,
    pub content_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RowError>,
    #[serde(default)]
    pub error_total: i64,
    /// `completedAt`'s UTC day (`YYYY-MM-DD`): the bucket of the daily report (FerretDB has no date operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_day: Option<String>,
    /// The finalisation lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizing_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDoc {
    pub url: String,
    /// `waiting`, `queued`, `delivered` or `failed`.
    pub state: String,
    #[serde(default)]
    pub attempts: Vec<WebhookAttemptDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttemptDoc {
    pub at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&WebhookAttempt> for WebhookAttemptDoc {
    fn from(a: &WebhookAttempt) -> Self {
        Self { at: bson_date(a.at), status: a.status.map(i32::from), error: a.error.clone() }
    }
}

impl From<&Request> for RequestDoc {
    fn from(r: &Request) -> Self {
        let rejection = r.rejection.clone().unwrap_or_default();
        Self {
            tenant: r.tenant.clone(),
            request_id: r.id.clone(),
            status: r.status.as_str().into(),
            created_at: bson_date(r.created_at),
            completed_at: r.completed_at.map(bson_date),
            total_products: r.total_products,
            total_images: r.total_images,
            progress_shards: r.progress_shards,
            succeeded_images: r.succeeded_images,
            failed_images: r.failed_images,
            input_csv_bucket: r.input_csv.bucket.clone(),
            input_csv_key: r.input_csv.key.clone(),
            output_csv_key: r.output_csv_key.clone(),
            source: r.source.as_str().into(),
            content_sha256: r.content_sha256.clone(),
            enqueued_at: r.enqueued_at.map(bson_date),
            errors: rejection.errors,
            error_total: rejection.total,
            completed_day: r.completed_at.map(Timestamp::day),
            finalizing_at: r.finalising_since.map(bson_date),
            webhook: r.webhook.as_ref().map(|w| WebhookDoc {
                url: w.url.clone(),
                state: w.state.as_str().into(),
                attempts: w.attempts.iter().map(WebhookAttemptDoc::from).collect(),
                queued_at: w.queued_at.map(bson_date),
                last_activity_at: w.last_activity_at.map(bson_date),
                delivered_at: w.delivered_at.map(bson_date),
            }),
        }
    }
}

impl TryFrom<RequestDoc> for Request {
    type Error = Error;
    fn try_from(d: RequestDoc) -> Result<Self> {
        let webhook = match d.webhook {
            None => None,
            Some(w) => Some(Webhook {
                // `delivering` was written by versions that delivered inside the worker.
                state: match w.state.as_str() {
                    "delivering" => WebhookState::Queued,
                    s => WebhookState::parse(s).ok_or_else(|| corrupt("webhook state", s))?,
                },
                url: w.url,
                attempts: w
                    .attempts
                    .into_iter()
                    .map(|a| WebhookAttempt {
                        at: timestamp(a.at),
                        status: a.status.and_then(|s| u16::try_from(s).ok()),
                        error: a.error,
                    })
                    .collect(),
                queued_at: w.queued_at.map(timestamp),
                last_activity_at: w.last_activity_at.map(timestamp),
                delivered_at: w.delivered_at.map(timestamp),
            }),
        };
        Ok(Request {
            status: RequestStatus::parse(&d.status).ok_or_else(|| corrupt("request status", &d.status))?,
            source: Source::parse(&d.source).ok_or_else(|| corrupt("request source", &d.source))?,
            tenant: d.tenant,
            id: d.request_id,
            created_at: timestamp(d.created_at),
            completed_at: d.completed_at.map(timestamp),
            total_products: d.total_products,
            total_images: d.total_images,
            progress_shards: d.progress_shards,
            succeeded_images: d.succeeded_images,
            failed_images: d.failed_images,
            input_csv: StoredObject { bucket: d.input_csv_bucket, key: d.input_csv_key },
            output_csv_key: d.output_csv_key,
            content_sha256: d.content_sha256,
            enqueued_at: d.enqueued_at.map(timestamp),
            rejection: (d.error_total > 0 || !d.errors.is_empty())
                .then_some(Rejection { errors: d.errors, total: d.error_total }),
            finalising_since: d.finalizing_at.map(timestamp),
            webhook,
        })
    }
}

/// One image of a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotDoc {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    /// Why the image failed (a code of a closed set), and that reason's message in `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub counted: bool,
}

/// One document per CSV row in `RequestData`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowDoc {
    #[serde(rename = "tenantId")]
    pub tenant: TenantId,
    pub request_id: RequestId,
    pub serial_number: i64,
    pub product_name: String,
    pub input_image_urls: Vec<String>,
    pub output_image_urls: Vec<String>,
    pub created_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime>,
    /// Per-image state keyed by the image's index in `inputImageUrls` ("0", "1", …): a sub-document key can be
    /// updated by a guarded `$set` on every server the stack supports, an array element cannot (see the README).
    pub images: BTreeMap<String, SlotDoc>,
    pub total_images: i64,
    pub settled_images: i64,
    pub failed_images: i64,
}

impl From<&Row> for RowDoc {
    fn from(r: &Row) -> Self {
        Self {
            tenant: r.tenant.clone(),
            request_id: r.request_id.clone(),
            serial_number: r.serial_number,
            product_name: r.product_name.clone(),
            input_image_urls: r.input_image_urls.clone(),
            output_image_urls: r.output_image_urls.clone(),
            created_at: bson_date(r.created_at),
            completed_at: r.completed_at.map(bson_date),
            images: r
                .images
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let doc = SlotDoc {
                        state: s.state.as_str().into(),
                        output_key: s.output_key.clone(),
                        output_url: s.output_url.clone(),
                        reason: s.reason,
                        error: s.error.clone(),
                        counted: s.counted,
                    };
                    (i.to_string(), doc)
                })
                .collect(),
            total_images: r.total_images(),
            settled_images: r.settled_images,
            failed_images: r.failed_images,
        }
    }
}

impl TryFrom<RowDoc> for Row {
    type Error = Error;
    fn try_from(mut d: RowDoc) -> Result<Self> {
        let images = (0..d.input_image_urls.len())
            .map(|i| match d.images.remove(&i.to_string()) {
                None => Ok(ImageSlot::pending()),
                Some(s) => Ok(ImageSlot {
                    state: ImageState::parse(&s.state).ok_or_else(|| corrupt("image state", &s.state))?,
                    output_key: s.output_key,
                    output_url: s.output_url,
                    reason: s.reason,
                    error: s.error,
                    counted: s.counted,
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Row {
            tenant: d.tenant,
            request_id: d.request_id,
            serial_number: d.serial_number,
            product_name: d.product_name,
            input_image_urls: d.input_image_urls,
            output_image_urls: d.output_image_urls,
            created_at: timestamp(d.created_at),
            completed_at: d.completed_at.map(timestamp),
            images,
            settled_images: d.settled_images,
            failed_images: d.failed_images,
        })
    }
}

/// One tenant in `Tenants`, keyed by its id; its upload lock (`uploadLock`, `uploadLockUntil`) lives here too.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantDoc {
    #[serde(rename = "_id")]
    pub id: TenantId,
    #[serde(default)]
    pub created_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_images_per_request: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_images: Option<i64>,
}

impl From<TenantDoc> for Tenant {
    fn from(d: TenantDoc) -> Self {
        Tenant {
            id: d.id,
            created_at: d.created_at.map(timestamp).unwrap_or(Timestamp::from_millis(0)),
            quotas: QuotaOverrides {
                max_images_per_request: d.max_images_per_request,
                max_open_requests: d.max_open_requests,
                max_queued_images: d.max_queued_images,
            },
        }
    }
}
