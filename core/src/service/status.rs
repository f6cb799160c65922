//! Status (read-only): progress of a request, a page of its rows with their output URLs, and its output CSV.

use serde::Serialize;

use super::cursor;
use super::finalise::all_rows;
use super::urls::Urls;
use crate::csv_input::RowError;
use crate::csv_output::write_csv_with;
use crate::domain::{ImageState, Request, RequestId, RequestKey, RequestStatus, Row, Tally};
use crate::error::{Error, Result};
use crate::failure::FailureReason;
use crate::ports::{RequestStore, RowStore};

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

/// Largest output CSV the API returns in its body; larger ones are a redirect (Lambda responses are capped at 6 MB).
pub const INLINE_CSV_LIMIT: usize = 5 * 1024 * 1024;

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
    /// The API URL of the output CSV once the request is final.
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

/// What `GET /requests/{id}/output.csv` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvDownload {
    Inline(Vec<u8>),
    Redirect(String),
}

/// The ports the status API reads (it writes nothing).
pub struct StatusReader<'a> {
    pub requests: &'a dyn RequestStore,
    pub rows: &'a dyn RowStore,
    pub urls: Urls<'a>,
}

impl StatusReader<'_> {
    async fn load(&self, id: &RequestKey) -> Result<Request> {
        self.requests.get_request(id).await?.ok_or_else(|| Error::NotFound(id.id.clone()))
    }

    async fn row_view(&self, row: Row) -> Result<RowView> {
        let mut images = Vec::with_capacity(row.input_image_urls.len());
        for (input, slot) in row.input_image_urls.iter().zip(&row.images) {
            let output_url = match (slot.state, slot.output_key.as_deref()) {
                (ImageState::Succeeded, Some(key)) => Some(self.urls.download(key).await?),
                _ => None,
            };
            let (reason, error) = match slot.state {
                ImageState::Failed => (slot.reason, Some(slot.failure_message().to_string())),
                _ => (None, None),
            };
            images.push(ImageView { input_url: input.clone(), state: slot.state, output_url, reason, error });
        }
        Ok(RowView {
            serial_number: row.serial_number,
            errors: row.image_errors(),
            output_image_urls: images.iter().map(|i| i.output_url.clone()).collect(),
            product_name: row.product_name,
            input_image_urls: row.input_image_urls,
            images,
        })
    }

    /// The status of a request with one page of its rows.
    pub async fn request_status(
        &self,
        id: &RequestKey,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<StatusView> {
        let after = cursor.map(cursor::parse_rows).transpose()?;
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::BadRequest(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        let request = self.load(id).await?;
        let tally = match request.final_tally() {
            Some(tally) => tally,
            None => self.rows.tally(id).await?,
        };
        let mut rows = self.rows.rows_page(id, after, limit + 1).await?;
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| cursor::rows_after(r.serial_number))
        } else {
            None
        };
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.row_view(row).await?);
        }
        let output_csv_url = match (&request.output_csv_key, request.status.is_final()) {
            (Some(_), true) => Some(self.urls.api(&format!("/requests/{}/output.csv", id.id))),
            _ => None,
        };
        let rejection = request.rejection.unwrap_or_default();
        Ok(StatusView {
            request_id: request.id,
            status: request.status,
            counts: counts(request.total_products, request.total_images, tally),
            percent_complete: percent(tally.settled, request.total_images),
            created_at: request.created_at.rfc3339(),
            completed_at: request.completed_at.map(|t| t.rfc3339()),
            output_csv_url,
            rows: views,
            next_cursor,
            errors: rejection.errors,
            error_total: rejection.total,
        })
    }

    /// The output CSV with downloadable image URLs; `NotReady` while the request is running. With a public base
    /// URL the stored CSV already has them; otherwise it is rebuilt with fresh presigned URLs (stored URLs of a
    /// private bucket cannot be opened, and URLs presigned by a Lambda role expire with its session). Over the
    /// inline limit it is a redirect to the stored CSV, presigned.
    pub async fn output_csv(&self, id: &RequestKey) -> Result<CsvDownload> {
        let request = self.load(id).await?;
        let Some(key) = request.output_csv_key.as_deref().filter(|_| request.status.is_final()) else {
            return Err(Error::NotReady(id.id.clone()));
        };
        let bucket = &self.urls.config.outputs_bucket;
        let csv = if self.urls.config.output_base_url.is_some() {
            self.urls
                .blobs
                .get(bucket, key)
                .await?
                .ok_or_else(|| Error::Corrupt(format!("output CSV {key} is missing")))?
        } else {
            let rows = all_rows(self.rows, id).await?;
            let mut urls = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut row_urls = Vec::with_capacity(row.images.len());
                for slot in &row.images {
                    row_urls.push(match slot.output_key.as_deref() {
                        Some(k) => self.urls.download(k).await?,
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
        Ok(CsvDownload::Redirect(self.urls.blobs.presign_get(bucket, key, self.urls.expiry()).await?))
    }
}

fn counts(products: i64, images: i64, tally: Tally) -> Counts {
    Counts { products, images, processed: tally.settled, succeeded: tally.succeeded(), failed: tally.failed }
}

fn percent(settled: i64, images: i64) -> f64 {
    if images == 0 { 100.0 } else { (settled as f64 * 1000.0 / images as f64).round() / 10.0 }
}
