//! Domain types: what a request, a row and an image are, independent of how they are stored or carried.

mod ids;
mod job;
mod request;
mod row;
mod time;

pub use crate::auth::TenantId;
pub use ids::{ImageUrl, InvalidImageUrl, InvalidRequestId, ProductRow, RequestId};
pub use job::{
    INCOMING_PREFIX, ImageJob, Position, RequestKey, dropped_request_id, dropped_tenant, output_csv_key,
    presigned_upload_key, upload_csv_key,
};
pub use request::{
    DailyImages, Finalisation, ListFilter, ProgressShard, QuotaOverrides, Rejection, Request, RequestStatus, Source,
    StoredObject, Tally, Tenant, Usage, Visible, Webhook, WebhookAttempt, WebhookState,
};
pub use row::{ImageResult, ImageSlot, ImageState, Row};
pub use time::Timestamp;
