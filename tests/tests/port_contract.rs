//! The port contract (`imgpipe_core::ports::contract`) against the MongoDB adapter on the stack's server: the same
//! suite the in-memory twin passes in `cargo test -p imgpipe-core`, each behaviour in a fresh database.

use std::sync::Arc;

use imgpipe_core::adapters::mongo::{MongoStore, migrate};

async fn fresh(test: &str) -> Arc<MongoStore> {
    let uri = std::env::var("IMGPIPE_MONGODB_URI")
        .expect("IMGPIPE_MONGODB_URI is not set: run the tests with `make test`, which starts the local stack");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let (_client, store) = MongoStore::connect(&uri, &format!("c_{test}_{suffix}")).await.expect("connect");
    migrate(store.database()).await.expect("indexes");
    Arc::new(store)
}

imgpipe_core::port_contract_tests!(fresh);
