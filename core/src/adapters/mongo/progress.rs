//! `RequestProgress`: a request's progress counters.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::options::ReturnDocument;

use super::{MongoStore, insert_missing};
use crate::domain::{ProgressShard, RequestKey};
use crate::error::Result;
use crate::ports::ProgressStore;

#[async_trait]
impl ProgressStore for MongoStore {
    async fn insert_progress(&self, shards: &[ProgressShard]) -> Result<()> {
        insert_missing(&self.progress, shards).await
    }

    async fn increment(&self, key: &RequestKey, shard: u32) -> Result<Option<ProgressShard>> {
        Ok(self
            .progress
            .find_one_and_update(
                doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "shard": i64::from(shard)},
                doc! {"$inc": {"done": 1_i64}},
            )
            .return_document(ReturnDocument::After)
            .await?)
    }

    async fn get_progress(&self, key: &RequestKey, shard: u32) -> Result<Option<ProgressShard>> {
        Ok(self
            .progress
            .find_one(doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str(), "shard": i64::from(shard)})
            .await?)
    }

    async fn all_progress(&self, key: &RequestKey) -> Result<Vec<ProgressShard>> {
        let cursor = self
            .progress
            .find(doc! {"tenantId": key.tenant.as_str(), "requestId": key.id.as_str()})
            .sort(doc! {"shard": 1})
            .await?;
        Ok(cursor.try_collect().await?)
    }
}
