//! Every index the queries need, declared once, and `migrate`: the explicit, idempotent step that creates them
//! (run by `imgpipe-admin migrate`, the local stack and the deploy instructions; no function creates indexes at
//! start). A changed definition is replaced: creating an index whose name or keys exist with other options
//! fails with code 85/86, so the old one is dropped first.

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};

use super::docs::{REQUEST_DATA, REQUEST_PROGRESS, REQUESTS};
use crate::error::Result;

/// What `migrate` did to one index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexChange {
    Created {
        collection: &'static str,
        name: String,
    },
    /// An index of that name or those keys had another definition: dropped, then created.
    Replaced {
        collection: &'static str,
        name: String,
        old: String,
    },
    Unchanged {
        collection: &'static str,
        name: String,
    },
    /// An index no query needs any more (a former definition under another name).
    Dropped {
        collection: &'static str,
        name: String,
    },
}

fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    let options = IndexOptions::builder().name(name.to_string()).unique(unique.then_some(true)).build();
    IndexModel::builder().keys(keys).options(options).build()
}

/// Every index of every collection. Every per-request index leads with `tenantId`, so that each tenant's queries
/// are served by it (and a shard key can lead with the tenant); the report indexes across tenants serve the
/// admin's views and the sweeper.
pub fn indexes() -> Vec<(&'static str, IndexModel)> {
    vec![
        (REQUESTS, index(doc! {"tenantId": 1, "requestId": 1}, "tenantId_requestId_unique", true)),
        // GET /requests: newest first, optionally by status; (createdAt, requestId) is the page cursor.
        (
            REQUESTS,
            index(doc! {"tenantId": 1, "createdAt": -1, "requestId": -1}, "tenantId_createdAt_requestId", false),
        ),
        (
            REQUESTS,
            index(
                doc! {"tenantId": 1, "status": 1, "createdAt": -1, "requestId": -1},
                "tenantId_status_createdAt_requestId",
                false,
            ),
        ),
        // GET /stats: images per day.
        (REQUESTS, index(doc! {"tenantId": 1, "completedDay": 1}, "tenantId_completedDay", false)),
        // The admin's views across tenants, and the sweeper's unfinished requests.
        (REQUESTS, index(doc! {"createdAt": -1, "requestId": -1}, "createdAt_requestId", false)),
        (REQUESTS, index(doc! {"status": 1, "createdAt": -1, "requestId": -1}, "status_createdAt_requestId", false)),
        (REQUESTS, index(doc! {"completedDay": 1}, "completedDay", false)),
        // The sweeper: queued webhook deliveries gone quiet.
        (REQUESTS, index(doc! {"webhook.state": 1, "webhook.lastActivityAt": 1}, "webhookState_lastActivityAt", false)),
        (
            REQUEST_DATA,
            index(
                doc! {"tenantId": 1, "requestId": 1, "serialNumber": 1},
                "tenantId_requestId_serialNumber_unique",
                true,
            ),
        ),
        (
            REQUEST_PROGRESS,
            index(doc! {"tenantId": 1, "requestId": 1, "shard": 1}, "tenantId_requestId_shard_unique", true),
        ),
    ]
}

fn name_of(model: &IndexModel) -> String {
    model.options.as_ref().and_then(|o| o.name.clone()).unwrap_or_default()
}

fn is_unique(model: &IndexModel) -> bool {
    model.options.as_ref().and_then(|o| o.unique).unwrap_or(false)
}

async fn listed(coll: &mongodb::Collection<Document>) -> Result<Vec<IndexModel>> {
    match coll.list_indexes().await {
        Ok(cursor) => Ok(cursor.try_collect().await?),
        // A collection that does not exist yet has no indexes (code 26, NamespaceNotFound).
        Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Creates every declared index that is missing, replaces those whose definition changed, and drops those no
/// longer declared (but `_id`'s). Idempotent.
pub async fn migrate(db: &Database) -> Result<Vec<IndexChange>> {
    let mut changes = Vec::new();
    let declared = indexes();
    for (collection, wanted) in declared.iter().cloned() {
        let coll = db.collection::<Document>(collection);
        let existing = listed(&coll).await?;
        let name = name_of(&wanted);
        let clash = existing.iter().find(|e| name_of(e) == name || e.keys == wanted.keys);
        match clash {
            Some(e) if name_of(e) == name && e.keys == wanted.keys && is_unique(e) == is_unique(&wanted) => {
                changes.push(IndexChange::Unchanged { collection, name });
            }
            Some(e) => {
                let old = name_of(e);
                tracing::warn!(collection, index = %old, "index definition changed; replacing it");
                coll.drop_index(&old).await?;
                coll.create_index(wanted).await?;
                changes.push(IndexChange::Replaced { collection, name, old });
            }
            None => {
                coll.create_index(wanted).await?;
                changes.push(IndexChange::Created { collection, name });
            }
        }
    }
    let mut collections: Vec<&'static str> = declared.iter().map(|(c, _)| *c).collect();
    collections.dedup();
    for collection in collections {
        let coll = db.collection::<Document>(collection);
        for index in listed(&coll).await? {
            let name = name_of(&index);
            if name != "_id_" && !declared.iter().any(|(c, d)| *c == collection && name_of(d) == name) {
                tracing::warn!(collection, index = %name, "index no longer declared; dropping it");
                coll.drop_index(&name).await?;
                changes.push(IndexChange::Dropped { collection, name });
            }
        }
    }
    Ok(changes)
}

/// Gives every document of the per-request collections that has no `tenantId` (written before tenancy) to
/// `tenant`; returns how many documents of each collection it changed. Idempotent.
pub async fn assign_tenant(db: &Database, tenant: &crate::domain::TenantId) -> Result<Vec<(&'static str, u64)>> {
    let mut changed = Vec::new();
    for collection in [REQUESTS, REQUEST_DATA, REQUEST_PROGRESS] {
        let result = db
            .collection::<Document>(collection)
            .update_many(doc! {"tenantId": {"$exists": false}}, doc! {"$set": {"tenantId": tenant.as_str()}})
            .await?;
        changed.push((collection, result.modified_count));
    }
    Ok(changed)
}
