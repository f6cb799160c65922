//! Queries across requests: the reports, and the sweeper's system role.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::docs::{RequestDoc, bson_date};
use super::{MongoStore, aggregate, as_i64};
use crate::domain::{DailyImages, ListFilter, Request, RequestId, RequestStatus, Timestamp, Visible, WebhookState};
use crate::error::Result;
use crate::ports::{ReportStore, SweepStore};

/// The filter of what `visible` covers: one tenant's requests, or every tenant's.
fn scope(visible: &Visible) -> Document {
    match visible {
        Visible::Tenant(t) => doc! {"tenantId": t.as_str()},
        Visible::AllTenants => Document::new(),
    }
}

async fn collect(cursor: mongodb::Cursor<RequestDoc>) -> Result<Vec<Request>> {
    let docs: Vec<RequestDoc> = cursor.try_collect().await?;
    docs.into_iter().map(Request::try_from).collect()
}

#[async_trait]
impl ReportStore for MongoStore {
    async fn list_requests(
        &self,
        visible: &Visible,
        filter: &ListFilter,
        after: Option<(Timestamp, RequestId)>,
        limit: i64,
    ) -> Result<Vec<Request>> {
        let mut query = scope(visible);
        if let Some(status) = filter.status {
            query.insert("status", status.as_str());
        }
        let mut created = Document::new();
        if let Some(after) = filter.created_after {
            created.insert("$gte", bson_date(after));
        }
        if let Some(before) = filter.created_before {
            created.insert("$lt", bson_date(before));
        }
        if !created.is_empty() {
            query.insert("createdAt", created);
        }
        if let Some((at, id)) = after {
            let at = bson_date(at);
            query.insert(
                "$or",
                vec![doc! {"createdAt": {"$lt": at}}, doc! {"createdAt": at, "requestId": {"$lt": id.as_str()}}],
            );
        }
        let cursor = self.requests.find(query).sort(doc! {"createdAt": -1, "requestId": -1}).limit(limit).await?;
        collect(cursor).await
    }

    async fn count_by_status(&self, visible: &Visible) -> Result<Vec<(RequestStatus, i64)>> {
        // The `$match` on every status lets the planner walk the status index instead of the collection.
        let statuses: Vec<&str> = RequestStatus::ALL.iter().map(|s| s.as_str()).collect();
        let mut matched = scope(visible);
        matched.insert("status", doc! {"$in": statuses});
        let pipeline = vec![doc! {"$match": matched}, doc! {"$group": {"_id": "$status", "n": {"$sum": 1}}}];
        let docs = aggregate(&self.requests, pipeline).await?;
        Ok(docs
            .iter()
            .filter_map(|d| Some((RequestStatus::parse(d.get_str("_id").ok()?)?, as_i64(d.get("n")))))
            .collect())
    }

    async fn daily_images(&self, visible: &Visible, since_day: &str) -> Result<Vec<DailyImages>> {
        // One accumulator per pipeline (see `tally`).
        let mut matched = scope(visible);
        matched.insert("completedDay", doc! {"$gte": since_day});
        let sum = |field: &str| {
            vec![doc! {"$match": matched.clone()}, doc! {"$group": {"_id": "$completedDay", "n": {"$sum": field}}}]
        };
        let succeeded = aggregate(&self.requests, sum("$succeededImages")).await?;
        let failed = aggregate(&self.requests, sum("$failedImages")).await?;
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
}

#[async_trait]
impl SweepStore for MongoStore {
    async fn unfinished_requests(
        &self,
        created_before: Timestamp,
        after: Option<(Timestamp, RequestId)>,
        limit: i64,
    ) -> Result<Vec<Request>> {
        let running: Vec<&str> = RequestStatus::ALL.iter().filter(|s| !s.is_final()).map(|s| s.as_str()).collect();
        let mut filter = doc! {"status": {"$in": running}, "createdAt": {"$lt": bson_date(created_before)}};
        if let Some((at, id)) = after {
            let at = bson_date(at);
            filter.insert(
                "$or",
                vec![doc! {"createdAt": {"$gt": at}}, doc! {"createdAt": at, "requestId": {"$gt": id.as_str()}}],
            );
        }
        let sort = doc! {"createdAt": 1, "requestId": 1};
        collect(self.requests.find(filter).sort(sort).limit(limit).await?).await
    }

    async fn stalled_webhooks(&self, quiet_since: Timestamp, limit: i64) -> Result<Vec<Request>> {
        let filter = doc! {
            "webhook.state": WebhookState::Queued.as_str(),
            "webhook.lastActivityAt": {"$lt": bson_date(quiet_since)},
        };
        collect(self.requests.find(filter).sort(doc! {"webhook.lastActivityAt": 1}).limit(limit).await?).await
    }
}
