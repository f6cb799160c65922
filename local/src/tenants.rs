//! Local tenants: `imgpipe-local token` and `imgpipe-local client` register theirs on first use (on AWS an
//! operator runs `imgpipe-admin tenant add`, or the tenant's first upload registers it).

use imgpipe_core::Config;
use imgpipe_core::adapters::mongo::MongoStore;
use imgpipe_core::auth::TenantId;
use imgpipe_core::domain::Timestamp;
use imgpipe_core::ports::TenantStore;

/// Adds `tenant` to `Tenants` unless it is there; returns whether it was new.
pub async fn register_tenant(config: &Config, tenant: &TenantId) -> imgpipe_core::Result<bool> {
    let (_client, store) = MongoStore::connect(config.mongodb_uri.expose(), &config.mongodb_database).await?;
    store.register_tenant(tenant, Timestamp::now()).await
}
