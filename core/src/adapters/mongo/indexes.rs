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
}

fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    let options = IndexOptions::builder().name(name.to_string()).unique(unique.then_some(true)).build();
    IndexModel::builder().keys(keys).options(options).build()
}

/// Every index of every collection.
pub fn indexes() -> Vec<(&'static str, IndexModel)> {
    vec![
        (REQUESTS, index(doc! {"requestId": 1}, "requestId_unique", true)),
        // GET /requests: newest first, optionally by status; (createdAt, requestId) is the page cursor.
        (REQUESTS, index(doc! {"createdAt": -1, "requestId": -1}, "createdAt_requestId", false)),
        // ... by status; also the per-status counts of GET /stats and the sweeper's unfinished requests.
        (REQUESTS, index(doc! {"status": 1, "createdAt": -1, "requestId": -1}, "status_createdAt_requestId", false)),
        // GET /stats: images per day.
        (REQUESTS, index(doc! {"completedDay": 1}, "completedDay", false)),
        // The sweeper: queued webhook deliveries gone quiet.
        (REQUESTS, index(doc! {"webhook.state": 1, "webhook.lastActivityAt": 1}, "webhookState_lastActivityAt", false)),
        (REQUEST_DATA, index(doc! {"requestId": 1, "serialNumber": 1}, "requestId_serialNumber_unique", true)),
        (REQUEST_PROGRESS, index(doc! {"requestId": 1, "shard": 1}, "requestId_shard_unique", true)),
    ]
}

fn name_of(model: &IndexModel) -> String {
    model.options.as_ref().and_then(|o| o.name.clone()).unwrap_or_default()
}

fn is_unique(model: &IndexModel) -> bool {
    model.options.as_ref().and_then(|o| o.unique).unwrap_or(false)
}

/// Creates every declared index that is missing and replaces those whose definition changed. Idempotent.
pub async fn migrate(db: &Database) -> Result<Vec<IndexChange>> {
    let mut changes = Vec::new();
    for (collection, wanted) in indexes() {
        let coll = db.collection::<Document>(collection);
        let existing: Vec<IndexModel> = match coll.list_indexes().await {
            Ok(cursor) => cursor.try_collect().await?,
            // A collection that does not exist yet has no indexes (code 26, NamespaceNotFound).
            Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
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
    Ok(changes)
}
