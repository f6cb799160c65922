//! Upload: validate a CSV, store it, write the documents, enqueue one message per image.

use mongodb::bson::DateTime;
use serde::Serialize;
use tracing::Instrument;

use crate::App;
use crate::csv_input::{CsvLimits, parse_csv};
use crate::domain::{ImageJob, ProductRow, RequestId, RequestStatus, upload_csv_key};
use crate::error::{Error, Result};
use crate::model::{ImageSlot, RequestDoc, RowDoc};

/// What the upload API answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub total_products: usize,
    pub total_images: usize,
}

impl App {
    pub fn csv_limits(&self) -> CsvLimits {
        CsvLimits { max_rows: self.config.max_rows, max_urls_per_row: self.config.max_urls_per_row }
    }
}

/// Validates `csv` and, if every row is good, creates a request and enqueues its images.
/// A rejected CSV writes nothing anywhere.
pub async fn ingest_csv(app: &App, csv: &[u8]) -> Result<Accepted> {
    if csv.len() > app.config.max_csv_bytes {
        return Err(Error::PayloadTooLarge(format!(
            "the CSV is {} bytes; the limit is {} bytes",
            csv.len(),
            app.config.max_csv_bytes
        )));
    }
    let rows = parse_csv(csv, app.csv_limits())?;
    let id = RequestId::new();
    let span = tracing::info_span!("ingest", requestId = %id);
    create_request(app, id, csv, rows).instrument(span).await
}

async fn create_request(app: &App, id: RequestId, csv: &[u8], rows: Vec<ProductRow>) -> Result<Accepted> {
    let key = upload_csv_key(&id);
    app.blobs.put(&app.config.uploads_bucket, &key, csv.to_vec(), "text/csv").await?;

    let now = DateTime::now();
    let jobs: Vec<ImageJob> = rows
        .iter()
        .flat_map(|row| {
            row.input_image_urls.iter().enumerate().map(|(index, url)| ImageJob {
                request_id: id.clone(),
                serial_number: row.serial_number,
                index: index as u32,
                url: url.clone(),
            })
        })
        .collect();
    let docs: Vec<RowDoc> = rows
        .iter()
        .map(|row| RowDoc {
            request_id: id.clone(),
            serial_number: row.serial_number,
            product_name: row.product_name.clone(),
            input_image_urls: row.input_image_urls.iter().map(|u| u.as_str().to_string()).collect(),
            output_image_urls: Vec::new(),
            created_at: now,
            completed_at: None,
            images: (0..row.input_image_urls.len()).map(|i| (i.to_string(), ImageSlot::pending())).collect(),
            total_images: row.input_image_urls.len() as i64,
            settled_images: 0,
            failed_images: 0,
        })
        .collect();
    let request = RequestDoc {
        request_id: id.clone(),
        status: RequestStatus::Pending,
        created_at: now,
        completed_at: None,
        total_products: rows.len() as i64,
        total_images: jobs.len() as i64,
        progress_hint: 0,
        succeeded_images: 0,
        failed_images: 0,
        input_csv_bucket: app.config.uploads_bucket.clone(),
        input_csv_key: key,
        output_csv_key: None,
    };
    app.repo.create_request(&request, &docs).await?;
    app.queue.send_jobs(&jobs).await?;
    tracing::info!(products = rows.len(), images = jobs.len(), "request accepted");
    Ok(Accepted {
        request_id: id,
        status: RequestStatus::Pending,
        total_products: rows.len(),
        total_images: jobs.len(),
    })
}
