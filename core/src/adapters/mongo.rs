use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};

use crate::domain::{ImageJob, RequestId, RequestStatus};
use crate::error::{Error, Result};
use crate::model::{
    DailyImages, ListFilter, ProgressShard, REQUEST_DATA, REQUEST_PROGRESS, REQUESTS, RequestDoc, RowDoc, Tally,
    WebhookAttempt, day_of,
};
use crate::ports::{ImageResult, Repository};

/// [`Repository`] on MongoDB (or a MongoDB wire-protocol server).
///
/// Only single-document atomic operations are used (no transactions), so it works on a standalone server,
/// a replica set or a sharded cluster; every filter carries `requestId`, the shard key.
#[derive(Clone)]
pub struct MongoRepository {
    db: Database,
    requests: Collection<RequestDoc>,
    rows: Collection<RowDoc>,
    progress: Collection<ProgressShard>,
}

/// Every index the queries of this module need, declared in one place.
pub fn indexes() -> Vec<(&'static str, IndexModel)> {
    let unique = |name: &str| IndexOptions::builder().unique(true).name(name.to_string()).build();
    let named = |name: &str| IndexOptions::builder().name(name.to_string()).build();
    vec![
        (REQUESTS, IndexModel::builder().keys(doc! {"requestId": 1}).options(unique("requestId_unique")).build()),
        // GET /requests: newest first, optionally by status; (createdAt, requestId) is the page cursor.
        (
            REQUESTS,
            IndexModel::builder()
                .keys(doc! {"createdAt": -1, "requestId": -1})
                .options(named("createdAt_requestId"))
                .build(),
        ),
        (
            REQUESTS,
            IndexModel::builder()
                .keys(doc! {"status": 1, "createdAt": -1, "requestId": -1})
                .options(named("status_createdAt_requestId"))
                .build(),
        ),
        // GET /stats: images per day.
        (REQUESTS, IndexModel::builder().keys(doc! {"completedDay": 1}).options(named("completedDay")).build()),
        (
            REQUEST_DATA,
            IndexModel::builder()
                .keys(doc! {"requestId": 1, "serialNumber": 1})
                .options(unique("requestId_serialNumber_unique"))
                .build(),
        ),
        (
            REQUEST_PROGRESS,
            IndexModel::builder()
                .keys(doc! {"requestId": 1, "shard": 1})
                .options(unique("requestId_shard_unique"))
                .build(),
        ),
    ]
}

impl MongoRepository {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            requests: db.collection(REQUESTS),
            rows: db.collection(REQUEST_DATA),
            progress: db.collection(REQUEST_PROGRESS),
        }
    }

    /// Connects with the driver's pool; the client is meant to live for the whole execution environment.
    pub async fn connect(uri: &str, database: &str) -> Result<(mongodb::Client, Self)> {
        let mut options = mongodb::options::ClientOptions::parse(uri).await?;
        options.app_name.get_or_insert_with(|| "imgpipe".to_string());
        let client = mongodb::Client::with_options(options)?;
        let repo = Self::new(&client.database(database));
        Ok((client, repo))
    }
}

/// Whether every failure in `e` is a duplicate-key error (code 11000), i.e. the documents already exist.
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors.as_ref().is_some_and(|w| !w.is_empty() && w.iter().all(|w| w.code == 11000))
        }
        _ => false,
    }
}

/// Inserts `docs`, skipping those already present (a retried ingestion: the unique indexes say which).
async fn insert_missing<T: serde::Serialize + Send + Sync>(collection: &Collection<T>, docs: &[T]) -> Result<()> {
    if docs.is_empty() {
        return Ok(());
    }
    match collection.insert_many(docs).ordered(false).await {
        Ok(_) => Ok(()),
        Err(e) if is_duplicate_key(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn slot(job: &ImageJob, field: &str) -> String {
    format!("images.{}.{field}", job.index)
}

fn as_i64(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

#[async_trait]
impl Repository for MongoRepository {
    async fn ensure_indexes(&self) -> Result<()> {
        for (collection, index) in indexes() {
            self.db.collection::<Document>(collection).create_index(index).await?;
        }
        Ok(())
    }

    async fn insert_request(&self, request: &RequestDoc) -> Result<Option<RequestDoc>> {
        match self.requests.insert_one(request).await {
            Ok(_) => Ok(None),
            Err(e) if is_duplicate_key(&e) => {
                let existing = self.get_request(&request.request_id).await?;
                existing.map(Some).ok_or_else(|| Error::Database(format!("duplicate key but no document: {e}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn insert_rows(&self, rows: &[RowDoc]) -> Result<()> {
        insert_missing(&self.rows, rows).await
    }

    async fn insert_progress(&self, shards: &[ProgressShard]) -> Result<()> {
        insert_missing(&self.progress, shards).await
    }

    async fn mark_enqueued(&self, id: &RequestId, at: DateTime) -> Result<()> {
        self.requests
            .update_one(
                doc! {"requestId": id.as_str(), "enqueuedAt": {"$exists": false}},
                doc! {"$set": {"enqueuedAt": at}},
            )
            .await?;
        Ok(())
    }

    async fn get_request(&self, id: &RequestId) -> Result<Option<RequestDoc>> {
        Ok(self.requests.find_one(doc! {"requestId": id.as_str()}).await?)
    }

    async fn get_row(&self, id: &RequestId, serial_number: i64) -> Result<Option<RowDoc>> {
        Ok(self.rows.find_one(doc! {"requestId": id.as_str(), "serialNumber": serial_number}).await?)
    }

    async fn rows_page(&self, id: &RequestId, after: Option<i64>, limit: i64) -> Result<Vec<RowDoc>> {
        let filter = match after {
            Some(after) => doc! {"requestId": id.as_str(), "serialNumber": {"$gt": after}},
            None => doc! {"requestId": id.as_str()},
        };
        let cursor = self.rows.find(filter).sort(doc! {"serialNumber": 1}).limit(limit).await?;
        Ok(cursor.try_collect().await?)
    }

    async fn all_rows(&self, id: &RequestId) -> Result<Vec<RowDoc>> {
        let cursor = self.rows.find(doc! {"requestId": id.as_str()}).sort(doc! {"serialNumber": 1}).await?;
        Ok(cursor.try_collect().await?)
    }

    async fn settle_image(&self, job: &ImageJob, result: &ImageResult) -> Result<Option<RowDoc>> {
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
            "requestId": job.request_id.as_str(),
            "serialNumber": job.serial_number,
            slot(job, "state"): "pending",
        };
        let update = doc! {"$set": set, "$inc": {"settledImages": 1_i64, "failedImages": failed as i64}};
        Ok(self.rows.find_one_and_update(filter, update).return_document(ReturnDocument::After).await?)
    }

    async fn complete_row(
        &self,
        id: &RequestId,
        serial_number: i64,
        output_urls: &[String],
        at: DateTime,
    ) -> Result<()> {
        self.rows
            .update_one(
                doc! {"requestId": id.as_str(), "serialNumber": serial_number, "completedAt": {"$exists": false}},
                doc! {"$set": {"outputImageUrls": output_urls, "completedAt": at}},
            )
            .await?;
        Ok(())
    }

    async fn count_image(&self, job: &ImageJob) -> Result<Option<ProgressShard>> {
        let shard = self
            .progress
            .find_one_and_update(
                doc! {"requestId": job.request_id.as_str(), "shard": i64::from(job.shard)},
                doc! {"$inc": {"done": 1_i64}},
            )
            .return_document(ReturnDocument::After)
            .await?;
        self.rows
            .update_one(
                doc! {"requestId": job.request_id.as_str(), "serialNumber": job.serial_number},
                doc! {"$set": {slot(job, "counted"): true}},
            )
            .await?;
        Ok(shard)
    }

    async fn get_progress(&self, id: &RequestId, shard: u32) -> Result<Option<ProgressShard>> {
        Ok(self.progress.find_one(doc! {"requestId": id.as_str(), "shard": i64::from(shard)}).await?)
    }

    async fn all_progress(&self, id: &RequestId) -> Result<Vec<ProgressShard>> {
        Ok(self.progress.find(doc! {"requestId": id.as_str()}).await?.try_collect().await?)
    }

    async fn mark_processing(&self, id: &RequestId) -> Result<()> {
        self.requests
            .update_one(
                doc! {"requestId": id.as_str(), "status": RequestStatus::Pending.as_str()},
                doc! {"$set": {"status": RequestStatus::Processing.as_str()}},
            )
            .await?;
        Ok(())
    }

    async fn tally(&self, id: &RequestId) -> Result<Tally> {
        // One pipeline, so that both sums come from the same read of each row: summed by two pipelines, an image
        // failing in between is counted as failed but not as settled (and "succeeded" goes negative). The rows
        // are grouped by their (settled, failed) pair with a count, and summed here: FerretDB 1.x silently returns 0
        // for every accumulator after the first (pinned by a test), so the pipeline has one.
        let pipeline = [
            doc! {"$match": {"requestId": id.as_str()}},
            doc! {"$group": {"_id": {"s": "$settledImages", "f": "$failedImages"}, "n": {"$sum": 1}}},
        ];
        let groups: Vec<Document> = self.rows.aggregate(pipeline).await?.try_collect().await?;
        let mut tally = Tally::default();
        for group in groups {
            let key = group.get_document("_id").map_err(|e| Error::Corrupt(format!("tally group: {e}")))?;
            let n = as_i64(group.get("n"));
            tally.settled += as_i64(key.get("s")) * n;
            tally.failed += as_i64(key.get("f")) * n;
        }
        Ok(tally)
    }

    async fn claim_finalisation(&self, id: &RequestId, now: DateTime, lease: std::time::Duration) -> Result<bool> {
        let expired = DateTime::from_millis(now.timestamp_millis() - lease.as_millis() as i64);
        let filter = doc! {
            "requestId": id.as_str(),
            "status": {"$in": [RequestStatus::Pending.as_str(), RequestStatus::Processing.as_str()]},
            "$or": [{"finalizingAt": {"$exists": false}}, {"finalizingAt": {"$lt": expired}}],
        };
        let result = self.requests.update_one(filter, doc! {"$set": {"finalizingAt": now}}).await?;
        Ok(result.modified_count == 1)
    }

    async fn release_finalisation(&self, id: &RequestId) -> Result<()> {
        self.requests.update_one(doc! {"requestId": id.as_str()}, doc! {"$unset": {"finalizingAt": ""}}).await?;
        Ok(())
    }

    async fn record_webhook_attempt(&self, id: &RequestId, attempt: &WebhookAttempt) -> Result<()> {
        let attempt = mongodb::bson::to_document(attempt).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.requests
            .update_one(doc! {"requestId": id.as_str()}, doc! {"$push": {"webhook.attempts": attempt}})
            .await?;
        Ok(())
    }

    async fn set_webhook_state(&self, id: &RequestId, state: &str, delivered_at: Option<DateTime>) -> Result<()> {
        let mut set = doc! {"webhook.state": state};
        if let Some(at) = delivered_at {
            set.insert("webhook.deliveredAt", at);
        }
        self.requests.update_one(doc! {"requestId": id.as_str()}, doc! {"$set": set}).await?;
        Ok(())
    }

    async fn list_requests(
        &self,
        filter: &ListFilter,
        after: Option<(DateTime, RequestId)>,
        limit: i64,
    ) -> Result<Vec<RequestDoc>> {
        let mut query = Document::new();
        if let Some(status) = filter.status {
            query.insert("status", status.as_str());
        }
        let mut created = Document::new();
        if let Some(after) = filter.created_after {
            created.insert("$gte", after);
        }
        if let Some(before) = filter.created_before {
            created.insert("$lt", before);
        }
        if !created.is_empty() {
            query.insert("createdAt", created);
        }
        if let Some((at, id)) = after {
            query.insert(
                "$or",
                vec![doc! {"createdAt": {"$lt": at}}, doc! {"createdAt": at, "requestId": {"$lt": id.as_str()}}],
            );
        }
        let cursor = self.requests.find(query).sort(doc! {"createdAt": -1, "requestId": -1}).limit(limit).await?;
        Ok(cursor.try_collect().await?)
    }

    async fn count_by_status(&self) -> Result<Vec<(String, i64)>> {
        // The `$match` on every status lets the planner walk the status index instead of the collection.
        let statuses = ["pending", "processing", "completed", "failed"];
        let pipeline = [
            doc! {"$match": {"status": {"$in": statuses.to_vec()}}},
            doc! {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ];
        let docs: Vec<Document> = self.requests.aggregate(pipeline).await?.try_collect().await?;
        Ok(docs.iter().filter_map(|d| Some((d.get_str("_id").ok()?.to_string(), as_i64(d.get("n"))))).collect())
    }

    async fn daily_images(&self, since_day: &str) -> Result<Vec<DailyImages>> {
        // One accumulator per pipeline (see `tally`).
        let sum = |field: &str| {
            [
                doc! {"$match": {"completedDay": {"$gte": since_day}}},
                doc! {"$group": {"_id": "$completedDay", "n": {"$sum": field}}},
            ]
        };
        let succeeded: Vec<Document> = self.requests.aggregate(sum("$succeededImages")).await?.try_collect().await?;
        let failed: Vec<Document> = self.requests.aggregate(sum("$failedImages")).await?.try_collect().await?;
        let mut days: std::collections::BTreeMap<String, DailyImages> = std::collections::BTreeMap::new();
        for (docs, is_failed) in [(&succeeded, false), (&failed, true)] {
            for d in docs {
                let Ok(day) = d.get_str("_id") else { continue };
                let entry = days.entry(day.to_string()).or_insert_with(|| DailyImages {
                    day: day.to_string(),
                    processed: 0,
                    failed: 0,
                });
                let n = as_i64(d.get("n"));
                entry.processed += n;
                if is_failed {
                    entry.failed += n;
                }
            }
        }
        Ok(days.into_values().collect())
    }

    async fn finalise(
        &self,
        id: &RequestId,
        status: RequestStatus,
        tally: Tally,
        output_csv_key: &str,
        at: DateTime,
    ) -> Result<bool> {
        if !status.is_final() {
            return Err(Error::Corrupt(format!("finalise with non-final status {status:?}")));
        }
        let filter = doc! {
            "requestId": id.as_str(),
            "status": {"$in": [RequestStatus::Pending.as_str(), RequestStatus::Processing.as_str()]},
        };
        let update = doc! {"$set": {
            "status": status.as_str(),
            "completedAt": at,
            "succeededImages": tally.settled - tally.failed,
            "failedImages": tally.failed,
            "outputCsvKey": output_csv_key,
            "completedDay": day_of(at),
        }};
        Ok(self.requests.update_one(filter, update).await?.modified_count == 1)
    }
}
