//! Pins the MongoDB semantics the code relies on, against whatever server the stack runs, so a change of
//! server (or of its version) that breaks one of them is noticed here first.

use futures::TryStreamExt;
use imgpipe_core::bson::{Bson, Document, doc};
use imgpipe_tests::Stack;
use mongodb::options::ReturnDocument;

async fn server_is_ferretdb(db: &mongodb::Database) -> bool {
    let info = db.run_command(doc! {"buildInfo": 1}).await.unwrap();
    info.get_str("ferretdb").is_ok()
        || info.get_document("ferretdb").is_ok()
        || format!("{info:?}").contains("ferretdb")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_document_updates_are_atomic_under_concurrency() {
    let stack = Stack::new("atomic").await;
    let col = stack.db.collection::<Document>("c");
    col.insert_one(doc! {"_id": 1, "n": 0_i64, "images": {"0": {"state": "pending"}, "1": {"state": "pending"}}})
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let col = col.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                col.update_one(doc! {"_id": 1}, doc! {"$inc": {"n": 1_i64}}).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let d = col.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(d.get_i64("n").unwrap(), 400, "lost $inc updates: the server is not atomic per document");

    // A guarded transition raced by 8 deliveries has exactly one winner, each time.
    for trial in 0..10 {
        let slot = format!("images.{}.state", trial % 2);
        col.update_one(doc! {"_id": 1}, doc! {"$set": {&slot: "pending"}}).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (col, slot) = (col.clone(), slot.clone());
            tasks.spawn(async move {
                col.find_one_and_update(doc! {"_id": 1, &slot: "pending"}, doc! {"$set": {&slot: "succeeded"}})
                    .return_document(ReturnDocument::After)
                    .await
                    .unwrap()
                    .is_some()
            });
        }
        let winners = tasks.join_all().await.into_iter().filter(|w| *w).count();
        assert_eq!(winners, 1, "trial {trial}: {winners} deliveries settled the same image");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_and_bools_set_by_update_keep_their_bson_types() {
    let stack = Stack::new("types").await;
    let col = stack.db.collection::<Document>("c");
    col.insert_one(doc! {"_id": 1, "images": {"0": {}}}).await.unwrap();
    let now = mongodb::bson::DateTime::now();
    col.update_one(doc! {"_id": 1}, doc! {"$set": {"completedAt": now, "images.0.counted": true, "arr": ["a", "b"]}})
        .await
        .unwrap();
    let d = col.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert!(matches!(d.get("completedAt"), Some(Bson::DateTime(_))), "{d:?}");
    assert_eq!(d.get_document("images").unwrap().get_document("0").unwrap().get("counted"), Some(&Bson::Boolean(true)));
    assert_eq!(d.get_array("arr").unwrap().len(), 2);
    // `completedAt: {$exists: false}` guards the row's one-time completion.
    let r = col.update_one(doc! {"_id": 1, "completedAt": {"$exists": false}}, doc! {"$set": {"x": 1}}).await.unwrap();
    assert_eq!(r.matched_count, 0);
}

/// FerretDB 1.x returns 0 for every `$group` accumulator after the first; the repository therefore sums with one
/// accumulator per pipeline. When this test starts failing on FerretDB, the divergence is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_with_two_accumulators_is_avoided_on_ferretdb() {
    let stack = Stack::new("group").await;
    let col = stack.db.collection::<Document>("c");
    col.insert_many([doc! {"k": 1, "a": 2_i64, "b": 3_i64}, doc! {"k": 1, "a": 4_i64, "b": 5_i64}]).await.unwrap();
    let pipeline =
        [doc! {"$match": {"k": 1}}, doc! {"$group": {"_id": Bson::Null, "a": {"$sum": "$a"}, "b": {"$sum": "$b"}}}];
    let got: Vec<Document> = col.aggregate(pipeline).await.unwrap().try_collect().await.unwrap();
    let b = got[0].get("b").and_then(Bson::as_i64).or_else(|| got[0].get("b").and_then(Bson::as_i32).map(i64::from));
    if server_is_ferretdb(&stack.db).await {
        assert_eq!(b, Some(0), "FerretDB now sums a second accumulator: the one-accumulator workaround can go");
    } else {
        assert_eq!(b, Some(8));
    }
}
