//! The document ports on MongoDB (or a MongoDB wire-protocol server).
//!
//! Only single-document atomic operations are used (no transactions), so this works on a standalone server, a
//! replica set or a sharded cluster; every per-request filter carries `requestId`, the shard key.
//!
//! Consistency is pinned on the database handle, whatever the connection string says: reads go to the primary
//! (a secondary may lag, and a stale progress counter or tally means nobody finalises) and writes wait for a
//! majority (a `w:1` write can be rolled back by a failover after the image's SQS message was deleted, losing
//! the image). A connection string asking for something else is overridden, with a warning.

mod docs;
mod indexes;
mod progress;
mod reports;
mod requests;
mod rows;
mod tenants;

use mongodb::bson::{Bson, Document};
use mongodb::options::{DatabaseOptions, ReadPreference, SelectionCriteria, WriteConcern};
use mongodb::{Collection, Database};

pub use docs::{IDEMPOTENCY_KEYS, REQUEST_DATA, REQUEST_PROGRESS, REQUESTS, TENANTS};
pub use indexes::{IndexChange, assign_tenant, indexes, migrate};

use crate::domain::ProgressShard;
use crate::error::Result;
use docs::{RequestDoc, RowDoc, TenantDoc};

/// Every document port on one MongoDB database.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    requests: Collection<RequestDoc>,
    rows: Collection<RowDoc>,
    progress: Collection<ProgressShard>,
    tenants: Collection<TenantDoc>,
}

/// The consistency every handle of this adapter uses.
pub fn database_options() -> DatabaseOptions {
    DatabaseOptions::builder()
        .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        .write_concern(WriteConcern::majority())
        .build()
}

impl MongoStore {
    /// The store on `db`, with the adapter's read preference and write concern.
    pub fn new(client: &mongodb::Client, database: &str) -> Self {
        let db = client.database_with_options(database, database_options());
        Self {
            requests: db.collection(REQUESTS),
            rows: db.collection(REQUEST_DATA),
            progress: db.collection(REQUEST_PROGRESS),
            tenants: db.collection(TENANTS),
            db,
        }
    }

    /// Connects with the driver's pool; the client is meant to live for the whole execution environment.
    /// No network call is made here.
    pub async fn connect(uri: &str, database: &str) -> Result<(mongodb::Client, Self)> {
        let mut options = mongodb::options::ClientOptions::parse(uri).await?;
        options.app_name.get_or_insert_with(|| "imgpipe".to_string());
        if let Some(asked) = options.selection_criteria.as_ref().filter(|c| !is_primary(c)) {
            tracing::warn!(?asked, "the MongoDB URI asks for another read preference; imgpipe reads from the primary");
        }
        if let Some(asked) = options.write_concern.as_ref().filter(|w| **w != WriteConcern::majority()) {
            tracing::warn!(?asked, "the MongoDB URI asks for another write concern; imgpipe writes with w: majority");
        }
        let client = mongodb::Client::with_options(options)?;
        let store = Self::new(&client, database);
        Ok((client, store))
    }

    /// The database handle, with the adapter's consistency settings.
    pub fn database(&self) -> &Database {
        &self.db
    }
}

fn is_primary(criteria: &SelectionCriteria) -> bool {
    matches!(criteria, SelectionCriteria::ReadPreference(ReadPreference::Primary))
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

fn as_i64(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

/// The documents a pipeline returns.
async fn aggregate<T: Send + Sync>(collection: &Collection<T>, pipeline: Vec<Document>) -> Result<Vec<Document>> {
    use futures::TryStreamExt;
    Ok(collection.aggregate(pipeline).await?.try_collect().await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn consistency_is_primary_and_majority() {
        let options = super::database_options();
        assert!(super::is_primary(options.selection_criteria.as_ref().unwrap()));
        assert_eq!(options.write_concern, Some(mongodb::options::WriteConcern::majority()));
    }
}
