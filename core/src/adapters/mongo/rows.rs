//! `RequestData`: a request's rows and the exactly-once settlement of each image.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::doc;
use mongodb::options::ReturnDocument;

use super::docs::{RowDoc, bson_date};
use super::{MongoStore, aggregate, as_i64, insert_missing};
use crate::domain::{ImageJob, ImageResult, RequestKey, Row, Tally, Timestamp};
use crate::error::{Error, Result};
use crate::ports::{ROW_BATCH, RowStore, RowStream};

fn slot(job: &ImageJob, field: &str) -> String {
    format!("images.{}.{field}", job.index)
}

#[async_trait]
impl RowStore for MongoStore {
    async fn insert_rows(&self, rows: &[Row]) -> Result<()> {
        let docs: Vec<RowDoc> = rows.iter().map(RowDoc::from).collect();
        insert_missing(&self.rows, &docs).await
    }

    async fn get_row(&self, key: &RequestKey, serial_number: i64) -> Result<Option<Row>> {
        let found = self
            .rows
            .find_one(
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "serialNumber": serial_number},
            )
            .await?;
        found.map(Row::try_from).transpose()
    }

    async fn rows_page(&self, key: &RequestKey, after: Option<i64>, limit: i64) -> Result<Vec<Row>> {
        let filter = match after {
            Some(after) => {
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "serialNumber": {"$gt": after}}
            }
            None => doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str()},
        };
        let cursor = self.rows.find(filter).sort(doc! {"serialNumber": 1}).limit(limit).await?;
        let docs: Vec<RowDoc> = cursor.try_collect().await?;
        docs.into_iter().map(Row::try_from).collect()
    }

    async fn rows_after(&self, key: &RequestKey, after: Option<i64>) -> Result<RowStream> {
        let mut filter = doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str()};
        if let Some(after) = after {
            filter.insert("serialNumber", doc! {"$gt": after});
        }
        let cursor = self.rows.find(filter).sort(doc! {"serialNumber": 1}).batch_size(ROW_BATCH).await?;
        Ok(cursor.map_err(Error::from).and_then(|doc| async move { Row::try_from(doc) }).boxed())
    }

    async fn settle_image(&self, job: &ImageJob, result: &ImageResult) -> Result<Option<Row>> {
        let mut set = doc! { slot(job, "state"): result.state().as_str() };
        let failed = match result {
            ImageResult::Succeeded { output_key, output_url } => {
                set.insert(slot(job, "outputKey"), output_key);
                set.insert(slot(job, "outputUrl"), output_url);
                0
            }
            ImageResult::Failed { reason } => {
                set.insert(slot(job, "reason"), reason.code());
                set.insert(slot(job, "error"), reason.message());
                1
            }
        };
        let filter = doc! {
            "tenantId": job.tenant.as_str(), "requestId": job.request_id.as_str(),
            "serialNumber": job.serial_number,
            slot(job, "state"): "pending",
        };
        let update = doc! {"$set": set, "$inc": {"settledImages": 1_i64, "failedImages": failed as i64}};
        let row = self.rows.find_one_and_update(filter, update).return_document(ReturnDocument::After).await?;
        row.map(Row::try_from).transpose()
    }

    async fn mark_counted(&self, job: &ImageJob) -> Result<()> {
        self.rows
            .update_one(
                doc! {"tenantId": job.tenant.as_str(), "requestId": job.request_id.as_str(), "serialNumber": job.serial_number},
                doc! {"$set": {slot(job, "counted"): true}},
            )
            .await?;
        Ok(())
    }

    async fn complete_row(&self, key: &RequestKey, serial_number: i64, urls: &[String], at: Timestamp) -> Result<()> {
        self.rows
            .update_one(
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "serialNumber": serial_number, "completedAt": {"$exists": false}},
                doc! {"$set": {"outputImageUrls": urls, "completedAt": bson_date(at)}},
            )
            .await?;
        Ok(())
    }

    async fn tally(&self, key: &RequestKey) -> Result<Tally> {
        // One pipeline, so that both sums come from the same read of each row: summed by two pipelines, an image
        // failing in between is counted as failed but not as settled (and "succeeded" goes negative). The rows
        // are grouped by their (settled, failed) pair with a count, and summed here: FerretDB 1.x silently returns 0
        // for every accumulator after the first (pinned by a test), so the pipeline has one.
        let pipeline = vec![
            doc! {"$match": {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str()}},
            doc! {"$group": {"_id": {"s": "$settledImages", "f": "$failedImages"}, "n": {"$sum": 1}}},
        ];
        let mut tally = Tally::default();
        for group in aggregate(&self.rows, pipeline).await? {
            let key = group.get_document("_id").map_err(|e| Error::Corrupt(format!("tally group: {e}")))?;
            let n = as_i64(group.get("n"));
            tally.settled += as_i64(key.get("s")) * n;
            tally.failed += as_i64(key.get("f")) * n;
        }
        Ok(tally)
    }
}
