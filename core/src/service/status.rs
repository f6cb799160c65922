//! Status: progress of a request, a page of its rows with their output URLs, and its output CSV.

use std::time::Duration;

use serde::Serialize;

use crate::App;
use crate::csv_input::RowError;
use crate::csv_output::image_errors;
use crate::domain::{ImageState, RequestId, RequestStatus};
use crate::error::{Error, Result};
use crate::model::{RequestDoc, RowDoc, Tally};

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub products: i64,
    pub images: i64,
    pub processed: i64,
    pub succeeded: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    pub input_url: String,
    pub state: ImageState,
    /// A URL the caller can download (presigned), once the image succeeded.
    pub output_url: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RowView {
    pub serial_number: i64,
    pub product_name: String,
    pub input_image_urls: Vec<String>,
    /// Aligned with `inputImageUrls`: downloadable URLs, `null` while pending or when the image failed.
    pub output_image_urls: Vec<Option<String>>,
    pub errors: Vec<String>,
    pub images: Vec<ImageView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub counts: Counts,
    pub percent_complete: f64,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// Presigned URL of the output CSV once the request is final.
    pub output_csv_url: Option<String>,
    pub rows: Vec<RowView>,
    /// Pass as `cursor` to get the next page of rows; absent on the last page.
    pub next_cursor: Option<String>,
    /// Why ingestion failed (a rejected CSV dropped into the bucket): the first rows, and how many in all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RowError>,
    #[serde(skip_serializing_if = "is_zero")]
    pub error_total: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn rfc3339(d: mongodb::bson::DateTime) -> String {
    d.try_to_rfc3339_string().unwrap_or_else(|_| d.timestamp_millis().to_string())
}

impl App {
    fn expiry(&self) -> Duration {
        Duration::from_secs(self.config.url_expiry_secs)
    }

    async fn row_view(&self, row: RowDoc) -> Result<RowView> {
        let mut images = Vec::with_capacity(row.input_image_urls.len());
        for (input, slot) in row.input_image_urls.iter().zip(row.slots()) {
            let (state, key, error) = match slot {
                Some(s) => (s.state, s.output_key.as_deref(), s.error.clone()),
                None => (ImageState::Pending, None, None),
            };
            let output_url = match (state, key) {
                (ImageState::Succeeded, Some(key)) => {
                    Some(self.blobs.presign_get(&self.config.outputs_bucket, key, self.expiry()).await?)
                }
                _ => None,
            };
            images.push(ImageView { input_url: input.clone(), state, output_url, error });
        }
        Ok(RowView {
            serial_number: row.serial_number,
            errors: image_errors(&row),
            output_image_urls: images.iter().map(|i| i.output_url.clone()).collect(),
            product_name: row.product_name,
            input_image_urls: row.input_image_urls,
            images,
        })
    }
}

/// Parses the opaque row cursor handed out as `nextCursor`.
pub fn parse_cursor(cursor: &str) -> Result<i64> {
    cursor
        .strip_prefix("s")
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| Error::BadRequest(format!("invalid cursor `{cursor}`")))
}

async fn load(app: &App, id: &RequestId) -> Result<RequestDoc> {
    app.repo.get_request(id).await?.ok_or_else(|| Error::NotFound(id.clone()))
}

/// The status of a request with one page of its rows.
pub async fn request_status(app: &App, id: &RequestId, cursor: Option<&str>, limit: Option<i64>) -> Result<StatusView> {
    let after = cursor.map(parse_cursor).transpose()?;
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::BadRequest(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let request = load(app, id).await?;
    let tally = if request.status.is_final() {
        Tally { settled: request.succeeded_images + request.failed_images, failed: request.failed_images }
    } else {
        app.repo.tally(id).await?
    };
    let mut rows = app.repo.rows_page(id, after, limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| format!("s{}", r.serial_number))
    } else {
        None
    };
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(app.row_view(row).await?);
    }
    let output_csv_url = match (&request.output_csv_key, request.status.is_final()) {
        (Some(key), true) => Some(app.blobs.presign_get(&app.config.outputs_bucket, key, app.expiry()).await?),
        _ => None,
    };
    let percent_complete = if request.total_images == 0 {
        100.0
    } else {
        (tally.settled as f64 * 1000.0 / request.total_images as f64).round() / 10.0
    };
    Ok(StatusView {
        request_id: request.request_id,
        status: request.status,
        counts: Counts {
            products: request.total_products,
            images: request.total_images,
            processed: tally.settled,
            succeeded: tally.settled - tally.failed,
            failed: tally.failed,
        },
        percent_complete,
        created_at: rfc3339(request.created_at),
        completed_at: request.completed_at.map(rfc3339),
        output_csv_url,
        rows: views,
        next_cursor,
        errors: request.errors,
        error_total: request.error_total,
    })
}

/// The output CSV's bytes; `NotReady` while the request is running.
pub async fn output_csv(app: &App, id: &RequestId) -> Result<Vec<u8>> {
    let request = load(app, id).await?;
    match (&request.output_csv_key, request.status.is_final()) {
        (Some(key), true) => app
            .blobs
            .get(&app.config.outputs_bucket, key)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("output CSV {key} is missing"))),
        _ => Err(Error::NotReady(id.clone())),
    }
}
