//! `Tenants` and `IdempotencyKeys`: tenants, their quota overrides and upload lock, and the first request each
//! `Idempotency-Key` of a tenant created.

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{Document, doc};

use super::docs::bson_date;
use super::{MongoStore, aggregate, as_i64, is_duplicate_key};
use crate::domain::{QuotaOverrides, RequestId, RequestStatus, Tenant, TenantId, Timestamp, Usage};
use crate::error::Result;
use crate::ports::TenantStore;

#[async_trait]
impl TenantStore for MongoStore {
    async fn get_tenant(&self, tenant: &TenantId) -> Result<Option<Tenant>> {
        Ok(self.tenants.find_one(doc! {"_id": tenant.as_str()}).await?.map(Tenant::from))
    }

    async fn register_tenant(&self, tenant: &TenantId, at: Timestamp) -> Result<bool> {
        let result = self
            .tenants
            .update_one(doc! {"_id": tenant.as_str()}, doc! {"$setOnInsert": {"createdAt": bson_date(at)}})
            .upsert(true)
            .await?;
        Ok(result.upserted_id.is_some())
    }

    async fn set_quotas(&self, tenant: &TenantId, quotas: &QuotaOverrides, at: Timestamp) -> Result<()> {
        let mut set = Document::new();
        let mut unset = Document::new();
        for (field, value) in [
            ("maxImagesPerRequest", quotas.max_images_per_request),
            ("maxOpenRequests", quotas.max_open_requests),
            ("maxQueuedImages", quotas.max_queued_images),
        ] {
            match value {
                Some(n) => set.insert(field, n),
                None => unset.insert(field, ""),
            };
        }
        let mut update = doc! {"$setOnInsert": {"createdAt": bson_date(at)}};
        if !set.is_empty() {
            update.insert("$set", set);
        }
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        self.tenants.update_one(doc! {"_id": tenant.as_str()}, update).upsert(true).await?;
        Ok(())
    }

    async fn lock_uploads(&self, tenant: &TenantId, now: Timestamp, lease: Duration) -> Result<Option<i64>> {
        // A token unique enough for one tenant's lock holders: the time in microseconds and a random part.
        let token = (now.millis() << 16) | i64::from(uuid::Uuid::new_v4().as_u128() as u16);
        let filter = doc! {
            "_id": tenant.as_str(),
            "$or": [{"uploadLockUntil": {"$exists": false}}, {"uploadLockUntil": {"$lt": bson_date(now)}}],
        };
        let update = doc! {
            "$set": {"uploadLock": token, "uploadLockUntil": bson_date(now.plus(lease))},
            "$setOnInsert": {"createdAt": bson_date(now)},
        };
        // An unregistered tenant gets its document here (upsert); a locked one matches nothing, and the upsert
        // then collides with its `_id`: both mean another upload holds the lock.
        match self.tenants.update_one(filter, update).upsert(true).await {
            Ok(r) if r.modified_count == 1 || r.upserted_id.is_some() => Ok(Some(token)),
            Ok(_) => Ok(None),
            Err(e) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn unlock_uploads(&self, tenant: &TenantId, token: i64) -> Result<()> {
        self.tenants
            .update_one(
                doc! {"_id": tenant.as_str(), "uploadLock": token},
                doc! {"$unset": {"uploadLock": "", "uploadLockUntil": ""}},
            )
            .await?;
        Ok(())
    }

    async fn usage(&self, tenant: &TenantId) -> Result<Usage> {
        let open: Vec<&str> = RequestStatus::ALL.iter().filter(|s| !s.is_final()).map(|s| s.as_str()).collect();
        // Grouped by the image count with one `$sum: 1` (FerretDB 1.x answers 0 for a second accumulator).
        let pipeline = vec![
            doc! {"$match": {"tenantId": tenant.as_str(), "status": {"$in": open}}},
            doc! {"$group": {"_id": "$totalImages", "n": {"$sum": 1}}},
        ];
        let mut usage = Usage::default();
        for group in aggregate(&self.requests, pipeline).await? {
            let n = as_i64(group.get("n"));
            usage.open_requests += n;
            usage.queued_images += as_i64(group.get("_id")) * n;
        }
        Ok(usage)
    }

    async fn find_idempotency_key(&self, tenant: &TenantId, key_hash: &str) -> Result<Option<RequestId>> {
        let keys = self.db.collection::<Document>(super::docs::IDEMPOTENCY_KEYS);
        let found = keys.find_one(doc! {"_id": format!("{tenant}:{key_hash}")}).await?;
        Ok(found.as_ref().and_then(|d| d.get_str("requestId").ok()).and_then(|s| RequestId::parse(s).ok()))
    }

    async fn claim_idempotency_key(
        &self,
        tenant: &TenantId,
        key_hash: &str,
        id: &RequestId,
    ) -> Result<Option<RequestId>> {
        let keys = self.db.collection::<Document>(super::docs::IDEMPOTENCY_KEYS);
        let key = format!("{tenant}:{key_hash}");
        match keys.insert_one(doc! {"_id": &key, "tenantId": tenant.as_str(), "requestId": id.as_str()}).await {
            Ok(_) => Ok(None),
            Err(e) if is_duplicate_key(&e) => {
                let first = self.find_idempotency_key(tenant, key_hash).await?;
                first.map(Some).ok_or_else(|| crate::Error::Corrupt(format!("idempotency key {key} without a request")))
            }
            Err(e) => Err(e.into()),
        }
    }
}
