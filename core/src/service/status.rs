//! Status: progress of a request, a page of its rows with their output URLs, and its output CSV.

use std::time::Duration;

use serde::Serialize;

use crate::App;
use crate::csv_input::RowError;
use crate::csv_output::{failure_message, image_errors, write_csv_with};
use crate::domain::{ImageState, RequestId, RequestStatus};
use crate::error::{Error, Result};
use crate::failure::FailureReason;
use crate::model::{RequestDoc, RowDoc, Tally, rfc3339};

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
    /// Why the image failed: a code from a closed set (`source_not_public`, `http_status`, …).
    pub reason: Option<FailureReason>,
    /// The reason's message.
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

/// Largest output CSV the API returns in its body; larger ones are a redirect (Lambda responses are capped at 6 MB).
pub const INLINE_CSV_LIMIT: usize = 5 * 1024 * 1024;

/// What `GET /requests/{id}/output.csv` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvDownload {
    Inline(Vec<u8>),
    Redirect(String),
}

impl App {
    fn expiry(&self) -> Duration {
        Duration::from_secs(self.config.url_expiry_secs)
    }

    /// The API's URL of `path` (`/requests/…`): under `IMGPIPE_API_BASE_URL`, else the path alone.
    pub fn api_url(&self, path: &str) -> String {
        match &self.config.api_base_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => path.to_string(),
        }
    }

    /// The stored URL of an output object: under the public base URL, else the object's S3 URL.
    pub fn output_url(&self, key: &str) -> String {
        match &self.config.output_base_url {
            Some(base) => format!("{}/{key}", base.trim_end_matches('/')),
            None => self.blobs.object_url(&self.config.outputs_bucket, key),
        }
    }

    /// A URL the caller can download an output object from: public, or presigned.
    pub async fn download_url(&self, key: &str) -> Result<String> {
        match &self.config.output_base_url {
            Some(_) => Ok(self.output_url(key)),
            None => self.blobs.presign_get(&self.config.outputs_bucket, key, self.expiry()).await,
        }
    }

    async fn row_view(&self, row: RowDoc) -> Result<RowView> {
        let mut images = Vec::with_capacity(row.input_image_urls.len());
        for (input, slot) in row.input_image_urls.iter().zip(row.slots()) {
            let (state, key, reason, error) = match slot {
                Some(s) if s.state == ImageState::Failed => {
                    (s.state, None, s.reason, Some(failure_message(s).to_string()))
                }
                Some(s) => (s.state, s.output_key.as_deref(), None, None),
                None => (ImageState::Pending, None, None, None),
            };
            let output_url = match (state, key) {
                (ImageState::Succeeded, Some(key)) => Some(self.download_url(key).await?),
                _ => None,
            };
            images.push(ImageView { input_url: input.clone(), state, output_url, reason, error });
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

/// The opaque row cursor handed out as `nextCursor`: the last serial number of the page, base64url-encoded.
pub fn make_cursor(last_serial: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{last_serial}"))
}

/// Parses a cursor made by [`make_cursor`].
pub fn parse_cursor(cursor: &str) -> Result<i64> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("after:").and_then(|n| n.parse::<i64>().ok()))
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
    // Every image is settled but the request is not final: the worker that should have finalised it failed
    // after settling (its message may even have been dead-lettered). Finalising is idempotent and guarded by
    // the lease, so the poll that notices it finishes the job.
    let request = if !request.status.is_final() && request.total_images > 0 && tally.settled >= request.total_images {
        tracing::warn!(requestId = %id, "all images settled but not finalised; finalising now");
        crate::service::process::finalise_if_done(app, &request).await?;
        load(app, id).await?
    } else {
        request
    };
    let mut rows = app.repo.rows_page(id, after, limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| make_cursor(r.serial_number))
    } else {
        None
    };
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(app.row_view(row).await?);
    }
    let output_csv_url = match (&request.output_csv_key, request.status.is_final()) {
        (Some(_), true) => Some(app.api_url(&format!("/requests/{id}/output.csv"))),
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

/// The output CSV with downloadable image URLs; `NotReady` while the request is running. With a public base URL
/// the stored CSV already has them; otherwise it is rebuilt with fresh presigned URLs (stored URLs of a private
/// bucket cannot be opened, and URLs presigned by a Lambda role expire with its session).
pub async fn output_csv(app: &App, id: &RequestId) -> Result<CsvDownload> {
    let request = load(app, id).await?;
    let Some(key) = request.output_csv_key.as_deref().filter(|_| request.status.is_final()) else {
        return Err(Error::NotReady(id.clone()));
    };
    let csv = if app.config.output_base_url.is_some() {
        app.blobs
            .get(&app.config.outputs_bucket, key)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("output CSV {key} is missing")))?
    } else {
        let rows = app.repo.all_rows(id).await?;
        let mut urls = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut row_urls = Vec::with_capacity(row.input_image_urls.len());
            for slot in row.slots() {
                row_urls.push(match slot.and_then(|s| s.output_key.as_deref()) {
                    Some(k) => app.download_url(k).await?,
                    None => String::new(),
                });
            }
            urls.push(row_urls);
        }
        let mut next = urls.into_iter();
        write_csv_with(&rows, |_| next.next().unwrap_or_default())
            .map_err(|e| Error::Corrupt(format!("output CSV: {e}")))?
    };
    if csv.len() <= INLINE_CSV_LIMIT {
        return Ok(CsvDownload::Inline(csv));
    }
    let download_key = format!("outputs/{id}/output-download.csv");
    app.blobs.put(&app.config.outputs_bucket, &download_key, csv, "text/csv").await?;
    Ok(CsvDownload::Redirect(app.blobs.presign_get(&app.config.outputs_bucket, &download_key, app.expiry()).await?))
}
