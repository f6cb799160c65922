//! Local tenants in the `Tenants` collection. On AWS an operator provisions tenants; locally
//! `imgpipe-local token` and `imgpipe-local client` register theirs on first use. (Written here, with the driver,
//! because core has no tenants port yet.)

use imgpipe_core::Config;
use imgpipe_core::auth::TenantId;
use mongodb::bson::{DateTime, doc};

/// Adds `tenant` to `Tenants` unless it is there; returns whether it was new.
pub async fn register_tenant(config: &Config, tenant: &TenantId) -> Result<bool, mongodb::error::Error> {
    let db = mongodb::Client::with_uri_str(config.mongodb_uri.expose()).await?.database(&config.mongodb_database);
    let result = db
        .collection::<mongodb::bson::Document>("Tenants")
        .update_one(doc! {"_id": tenant.as_str()}, doc! {"$setOnInsert": {"createdAt": DateTime::now()}})
        .upsert(true)
        .await?;
    Ok(result.upserted_id.is_some())
}
