//! Status (read-only): progress of a request, a page of its rows with their output URLs, and its output CSV.

use serde::Serialize;

use super::cursor;
use super::pages::escaped_json_len;
use super::urls::Urls;
use crate::csv_input::RowError;
use crate::domain::{ImageState, Request, RequestId, RequestKey, RequestStatus, Row, Tally, Timestamp};
use crate::error::{Error, Result};
use crate::failure::FailureReason;
use crate::ports::{RequestStore, RowStore};

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
    /// A URL the caller can download, once the image succeeded.
    pub output_url: Option<String>,
    /// When `output_url` stops working (RFC 3339): set for presigned URLs (the private mode), `null` for URLs
    /// under the output base URL, which do not expire.
    pub expires_at: Option<String>,
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

/// What `GET /requests/{id}/output.csv` answers, and when the presigned URLs in it expire (`None`: they don't).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvDownload {
    /// The CSV, at most [`super::pages::INLINE_CSV_BYTES`] as Lambda's response carries it.
    Inline { csv: String, expires_at: Option<Timestamp> },
    /// Where the stored CSV (written by the finaliser) is: a larger CSV.
    Redirect { url: String, expires_at: Option<Timestamp> },
}

impl CsvDownload {
    pub fn expires_at(&self) -> Option<Timestamp> {
        match self {
            Self::Inline { expires_at, .. } | Self::Redirect { expires_at, .. } => *expires_at,
        }
    }
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

    /// A row as the API shows it; `expires_at`: when the URLs presigned for it expire ([`Urls::expires_at`]).
    pub(super) async fn row_view(&self, row: Row, expires_at: Option<Timestamp>) -> Result<RowView> {
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
            let expires_at = expires_at.filter(|_| output_url.is_some()).map(Timestamp::rfc3339);
            images.push(ImageView {
                input_url: input.clone(),
                state: slot.state,
                output_url,
                expires_at,
                reason,
                error,
            });
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
        let output_csv_url = match (&request.output_csv_key, request.status.is_final()) {
            (Some(_), true) => Some(self.urls.api(&format!("/requests/{}/output.csv", id.id))),
            _ => None,
        };
        let rejection = request.rejection.unwrap_or_default();
        let mut view = StatusView {
            request_id: request.id,
            status: request.status,
            counts: counts(request.total_products, request.total_images, tally),
            percent_complete: percent(tally.settled, request.total_images),
            created_at: request.created_at.rfc3339(),
            completed_at: request.completed_at.map(|t| t.rfc3339()),
            output_csv_url,
            rows: Vec::new(),
            next_cursor: None,
            errors: rejection.errors,
            error_total: rejection.total,
        };
        (view.rows, view.next_cursor) = self.bounded_rows(id, after, limit, escaped_json_len(&view)?).await?;
        Ok(view)
    }

    /// The output CSV with downloadable image URLs (under the output base URL, or freshly presigned: URLs presigned
    /// by a Lambda role die with its session), built from the rows; `NotReady` while the request is running. One
    /// over the inline limit is a redirect to the stored CSV instead (the finaliser's, with the stored URLs: durable
    /// under a base URL, the objects' S3 URLs in the private mode), under the base URL or presigned. A GET writes
    /// nothing, so no fresh copy is stored.
    pub async fn output_csv(&self, id: &RequestKey) -> Result<CsvDownload> {
        let request = self.load(id).await?;
        let Some(key) = request.output_csv_key.as_deref().filter(|_| request.status.is_final()) else {
            return Err(Error::NotReady(id.id.clone()));
        };
        let expires_at = self.urls.expires_at();
        Ok(match self.inline_csv(id).await? {
            Some(csv) => CsvDownload::Inline { csv, expires_at },
            None => CsvDownload::Redirect { url: self.urls.download(key).await?, expires_at },
        })
    }
}

fn counts(products: i64, images: i64, tally: Tally) -> Counts {
    Counts { products, images, processed: tally.settled, succeeded: tally.succeeded(), failed: tally.failed }
}

fn percent(settled: i64, images: i64) -> f64 {
    if images == 0 { 100.0 } else { (settled as f64 * 1000.0 / images as f64).round() / 10.0 }
}
