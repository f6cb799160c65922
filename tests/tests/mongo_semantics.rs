//! Pins the MongoDB semantics the code relies on, against whatever server the stack runs, so a change of
//! server (or of its version) that breaks one of them is noticed here first.

use futures::TryStreamExt;
use imgpipe_core::bson::{Bson, Document, doc};
use imgpipe_tests::{Stack, test_job, test_key};
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

/// FerretDB 1.x returns 0 for every `$group` accumulator after the first. This pins the divergence on the server
/// the stack runs (when it starts failing on FerretDB, the divergence is gone); the next test checks that the
/// code's own sums are right on it anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferretdb_zeroes_every_group_accumulator_after_the_first() {
    let stack = Stack::new("group").await;
    let col = stack.db.collection::<Document>("c");
    col.insert_many([doc! {"k": 1, "a": 2_i64, "b": 3_i64}, doc! {"k": 1, "a": 4_i64, "b": 5_i64}]).await.unwrap();
    let pipeline =
        [doc! {"$match": {"k": 1}}, doc! {"$group": {"_id": Bson::Null, "a": {"$sum": "$a"}, "b": {"$sum": "$b"}}}];
    let got: Vec<Document> = col.aggregate(pipeline).await.unwrap().try_collect().await.unwrap();
    let b = got[0].get("b").and_then(Bson::as_i64).or_else(|| got[0].get("b").and_then(Bson::as_i32).map(i64::from));
    if server_is_ferretdb(&stack.db).await {
        assert_eq!(b, Some(0), "FerretDB now sums a second accumulator: the divergence is gone");
    } else {
        assert_eq!(b, Some(8));
    }
}

/// The repository's exact counts (`Repository::tally`, what finalisation and the status API report) are right on
/// this server, whatever its `$group` does: rows with different numbers of images, some failed, some pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_sums_settled_and_failed_images_exactly_on_this_server() {
    use imgpipe_core::domain::ImageResult;
    use imgpipe_core::domain::{ImageUrl, RequestId};
    let stack = Stack::new("tally").await;
    // Rows of 1, 2, 3 and 4 images (URLs nothing fetches: the images are settled below, by hand).
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for r in 1..=4_i64 {
        let urls: Vec<String> = (0..r).map(|i| format!("http://127.0.0.1:9/{r}-{i}.jpg")).collect();
        csv.push_str(&format!("{r},P{r},\"{}\"\n", urls.join(",")));
    }
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    let id = RequestId::parse(body["requestId"].as_str().unwrap()).unwrap();
    // Settled: row 2 both (one failed), row 3 all three (two failed), row 4 one succeeded; row 1 stays pending.
    let outcomes = [(2, 0, true), (2, 1, false), (3, 0, false), (3, 1, true), (3, 2, false), (4, 3, true)];
    for (serial, index, ok) in outcomes {
        let url = ImageUrl::parse(&format!("http://127.0.0.1:9/{serial}-{index}.jpg")).unwrap();
        let job = test_job(&id, serial, index, url, 0);
        let result = if ok {
            let key = job.output_key();
            ImageResult::Succeeded { output_url: format!("http://127.0.0.1:9/{key}"), output_key: key }
        } else {
            ImageResult::Failed { reason: imgpipe_core::failure::FailureReason::HttpStatus }
        };
        assert!(stack.app.rows.settle_image(&job, &result).await.unwrap().is_some());
    }
    let tally = stack.app.rows.tally(&test_key(&id)).await.unwrap();
    assert_eq!((tally.settled, tally.failed), (6, 3), "{tally:?}");
}
