//! `Requests`: one request's lifecycle and its webhook record.

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::doc;

use super::docs::{RequestDoc, WebhookAttemptDoc, bson_date};
use super::{MongoStore, is_duplicate_key};
use crate::domain::{Finalisation, Request, RequestKey, RequestStatus, Timestamp, WebhookAttempt, WebhookState};
use crate::error::{Error, Result};
use crate::ports::{RequestStore, WebhookLog};

const RUNNING: [&str; 2] = ["pending", "processing"];

impl MongoStore {
    pub(super) async fn find_request(&self, filter: mongodb::bson::Document) -> Result<Option<Request>> {
        self.requests.find_one(filter).await?.map(Request::try_from).transpose()
    }
}

#[async_trait]
impl RequestStore for MongoStore {
    async fn insert_request(&self, request: &Request) -> Result<Option<Request>> {
        match self.requests.insert_one(RequestDoc::from(request)).await {
            Ok(_) => Ok(None),
            Err(e) if is_duplicate_key(&e) => {
                let existing = self.get_request(&request.key()).await?;
                existing.map(Some).ok_or_else(|| Error::Database(format!("duplicate key but no document: {e}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_request(&self, key: &RequestKey) -> Result<Option<Request>> {
        self.find_request(doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str()}).await
    }

    async fn mark_enqueued(&self, key: &RequestKey, at: Timestamp) -> Result<()> {
        self.requests
            .update_one(
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "enqueuedAt": {"$exists": false}},
                doc! {"$set": {"enqueuedAt": bson_date(at)}},
            )
            .await?;
        Ok(())
    }

    async fn mark_processing(&self, key: &RequestKey) -> Result<()> {
        self.requests
            .update_one(
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "status": RequestStatus::Pending.as_str()},
                doc! {"$set": {"status": RequestStatus::Processing.as_str()}},
            )
            .await?;
        Ok(())
    }

    async fn claim_finalisation(&self, key: &RequestKey, now: Timestamp, lease: Duration) -> Result<bool> {
        let filter = doc! {
            "tenantId": key.tenant.as_str(), "requestId": key.id.as_str(),
            "status": {"$in": RUNNING.to_vec()},
            "$or": [{"finalizingAt": {"$exists": false}}, {"finalizingAt": {"$lt": bson_date(now.minus(lease))}}],
        };
        let result = self.requests.update_one(filter, doc! {"$set": {"finalizingAt": bson_date(now)}}).await?;
        Ok(result.modified_count == 1)
    }

    async fn release_finalisation(&self, key: &RequestKey) -> Result<()> {
        self.requests
            .update_one(
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str()},
                doc! {"$unset": {"finalizingAt": ""}},
            )
            .await?;
        Ok(())
    }

    async fn finalise(&self, key: &RequestKey, fin: &Finalisation) -> Result<bool> {
        if !fin.status.is_final() {
            return Err(Error::Corrupt(format!("finalise with non-final status {:?}", fin.status)));
        }
        let at = bson_date(fin.at);
        let set = doc! {
            "status": fin.status.as_str(),
            "completedAt": at,
            "succeededImages": fin.tally.succeeded(),
            "failedImages": fin.tally.failed,
            "outputCsvKey": &fin.output_csv_key,
            "completedDay": fin.at.day(),
        };
        // The webhook's outbox mark goes in the same update as the status: one atomic write.
        let mut set = set;
        if fin.queue_webhook {
            set.insert("webhook.state", WebhookState::Queued.as_str());
            set.insert("webhook.queuedAt", at);
            set.insert("webhook.lastActivityAt", at);
        }
        let filter =
            doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "status": {"$in": RUNNING.to_vec()}};
        Ok(self.requests.update_one(filter, doc! {"$set": set}).await?.modified_count == 1)
    }
}

#[async_trait]
impl WebhookLog for MongoStore {
    async fn record_attempt(&self, key: &RequestKey, attempt: &WebhookAttempt) -> Result<()> {
        let at = bson_date(attempt.at);
        let attempt =
            mongodb::bson::to_document(&WebhookAttemptDoc::from(attempt)).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.requests
            .update_one(
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "webhook": {"$exists": true}},
                doc! {"$push": {"webhook.attempts": attempt}, "$set": {"webhook.lastActivityAt": at}},
            )
            .await?;
        Ok(())
    }

    async fn touch_delivery(&self, key: &RequestKey, at: Timestamp) -> Result<()> {
        self.requests
            .update_one(
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "webhook.state": WebhookState::Queued.as_str()},
                doc! {"$set": {"webhook.lastActivityAt": bson_date(at)}},
            )
            .await?;
        Ok(())
    }

    async fn settle_delivery(&self, key: &RequestKey, state: WebhookState, at: Timestamp) -> Result<bool> {
        let mut set = doc! {"webhook.state": state.as_str()};
        if state == WebhookState::Delivered {
            set.insert("webhook.deliveredAt", bson_date(at));
        }
        let filter = doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "webhook.state": WebhookState::Queued.as_str()};
        Ok(self.requests.update_one(filter, doc! {"$set": set}).await?.modified_count == 1)
    }
}
