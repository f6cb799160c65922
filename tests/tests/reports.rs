//! Reports (GET /requests, GET /stats) and the index guard: every query the code makes is served by an index the
//! server has, and carries the shard key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use imgpipe_core::adapters::mongo::{MongoStore, REQUEST_DATA, REQUEST_PROGRESS, REQUESTS};
use imgpipe_core::bson::{Bson, Document};
use imgpipe_tests::{ImageServer, Stack, jpeg, photo, request_id};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;

/// Filter (and sort) of every query-like command, per collection.
type Seen = Arc<Mutex<Vec<(String, String, Document, Option<Document>)>>>;

fn record(seen: &Seen, event: CommandEvent) {
    let CommandEvent::Started(started) = event else { return };
    let c = &started.command;
    let name = started.command_name.as_str();
    let collection = c.get_str(name).unwrap_or_default().to_string();
    let doc_of = |b: Option<&Bson>| b.and_then(Bson::as_document).cloned().unwrap_or_default();
    let push = |filter: Document, sort: Option<Document>| {
        seen.lock().unwrap().push((name.to_string(), collection.clone(), filter, sort));
    };
    match name {
        "find" => push(doc_of(c.get("filter")), c.get_document("sort").ok().cloned()),
        "count" => push(doc_of(c.get("query")), None),
        "findAndModify" => push(doc_of(c.get("query")), None),
        "update" | "delete" => {
            let list = if name == "update" { "updates" } else { "deletes" };
            for u in c.get_array(list).map(|a| a.to_vec()).unwrap_or_default() {
                push(doc_of(u.as_document().and_then(|d| d.get("q"))), None);
            }
        }
        "aggregate" => {
            let stages = c.get_array("pipeline").map(|a| a.to_vec()).unwrap_or_default();
            let first = stages.first().and_then(Bson::as_document).cloned().unwrap_or_default();
            push(doc_of(first.get("$match")), None);
        }
        _ => {}
    }
}

/// Keys a filter constrains, including those every `$or` branch constrains.
fn keys(filter: &Document) -> Vec<String> {
    let mut found: Vec<String> = filter.keys().filter(|k| !k.starts_with('$')).cloned().collect();
    if let Ok(branches) = filter.get_array("$or") {
        let sets: Vec<Vec<String>> = branches.iter().filter_map(Bson::as_document).map(keys).collect();
        if let Some(first) = sets.first() {
            found.extend(first.iter().filter(|k| sets.iter().all(|s| s.contains(k))).cloned());
        }
    }
    found
}

/// The key patterns of the indexes the server has on `collection`, as `listIndexes` reports them.
///
/// The server is asked, not the list the code declares: an index the code declares but never creates (or creates
/// with other keys) must fail this test. FerretDB 1.24 cannot say more: its `explain` reports `SCAN` for every
/// filter but `{_id: v}` (even those its SQLite indexes serve), and it has no `$indexStats`.
async fn server_indexes(db: &mongodb::Database, collection: &str) -> Vec<Document> {
    let listed: Vec<mongodb::IndexModel> =
        db.collection::<Document>(collection).list_indexes().await.unwrap().try_collect().await.unwrap();
    listed.into_iter().map(|i| i.keys).filter(|k| !(k.len() == 1 && k.contains_key("_id"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_is_served_by_an_index_on_the_server_and_carries_the_shard_key() {
    let mut stack = Stack::new("indexguard").await;
    let seen: Seen = Arc::default();
    let mut options = mongodb::options::ClientOptions::parse(stack.app.config.mongodb_uri.expose()).await.unwrap();
    let s = seen.clone();
    options.command_event_handler = Some(EventHandler::callback(move |e| record(&s, e)));
    let client = mongodb::Client::with_options(options).unwrap();
    stack.app.set_documents(Arc::new(MongoStore::new(&client, &stack.app.config.mongodb_database)));

    // Everything the functions do: upload, work (success, failure, redelivery), status pages, CSV, reports.
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(32, 32, 1), 90));
    let missing = server.serve_status("/missing.jpg", 404, "text/plain", b"no".to_vec());
    let csv = format!("S. No.,Product Name,Input Image Urls\n1,A,\"{a},{missing}\"\n2,B,{a}\n");
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    let bodies = stack.drain(Duration::from_secs(30)).await;
    stack.sqs.send_message().queue_url(&stack.app.config.queue_url).message_body(&bodies[0]).send().await.unwrap();
    stack.drain(Duration::from_secs(30)).await;
    assert_eq!(stack.status(id.as_str()).await.0, 200);
    assert_eq!(stack.get(&format!("/requests/{id}?limit=1")).await.0, 200);
    assert_eq!(stack.get(&format!("/requests/{id}/output.csv")).await.0, 200);
    assert_eq!(stack.get("/requests?status=failed&limit=1").await.0, 200);
    assert_eq!(stack.get("/requests?createdAfter=2020-01-01T00:00:00Z").await.0, 200);
    assert_eq!(stack.get("/stats").await.0, 200);

    let mut on_server = Vec::new();
    for collection in [REQUESTS, REQUEST_DATA, REQUEST_PROGRESS] {
        let keys = server_indexes(&stack.db, collection).await;
        assert!(!keys.is_empty(), "{collection} has no index but _id on the server");
        on_server.extend(keys.into_iter().map(|k| (collection.to_string(), k)));
    }
    let seen = seen.lock().unwrap().clone();
    let ours: Vec<_> =
        seen.iter().filter(|(_, c, _, _)| [REQUESTS, REQUEST_DATA, REQUEST_PROGRESS].contains(&c.as_str())).collect();
    assert!(ours.len() > 20, "too few queries seen: {ours:?}");
    for (command, collection, filter, sort) in ours {
        let filter_keys = keys(filter);
        let sort_first = sort.as_ref().and_then(|s| s.keys().next().cloned());
        let served = on_server.iter().filter(|(c, _)| c == collection).any(|(_, keys)| {
            let first = keys.keys().next().unwrap();
            filter_keys.contains(first) || (filter_keys.is_empty() && sort_first.as_ref() == Some(first))
        });
        assert!(served, "{command} on {collection} with filter {filter:?} sort {sort:?} scans the collection");
        // A tenant's calls (no admin scope here, no sweeper): every query is scoped to the tenant, and all but
        // the reports to one request.
        assert!(filter_keys.iter().any(|k| k == "tenantId"), "{command} on {collection}: {filter:?} lacks tenantId");
        let reports =
            collection == "Requests" && (command == "aggregate" || sort_first.as_deref() == Some("createdAt"));
        if !reports {
            assert!(
                filter_keys.iter().any(|k| k == "requestId"),
                "{command} on {collection}: {filter:?} lacks requestId"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_list_pages_newest_first_and_filters_and_stats_count_known_data() {
    let stack = Stack::new("reports").await;
    let server = ImageServer::start().await;
    let good = server.serve("/g.jpg", "image/jpeg", jpeg(&photo(16, 16, 1), 90));
    let missing = server.serve_status("/m.jpg", 404, "text/plain", b"no".to_vec());
    let mut ids: Vec<String> = Vec::new();
    let mut middle = None;
    for i in 0..6 {
        if i == 3 {
            // A mark strictly between the third and the fourth request's createdAt (milliseconds).
            let third = stack.stored_request(&ids[2]).await.get_datetime("createdAt").copied().unwrap();
            let mark = clock_after(third).await;
            middle = Some(mark);
            clock_after(mark).await;
        }
        let (code, body) = stack
            .upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,P{i},http://127.0.0.1:9/{i}.jpg\n"))
            .await;
        assert_eq!(code, 202);
        ids.push(request_id(&body).to_string());
    }
    // Those six stay pending (their messages are taken off the queue); one more completes, one fails.
    stack.take_bodies(6).await;
    let (_, done) =
        stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,D,\"{good},{good}\"\n")).await;
    let (_, bad) = stack
        .upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,F,\"{good},{missing},{missing}\"\n"))
        .await;
    let day_before = imgpipe_core::domain::Timestamp::now().day();
    stack.drain(Duration::from_secs(30)).await;
    ids.push(request_id(&done).to_string());
    ids.push(request_id(&bad).to_string());

    // Every request once, newest first, in pages of 3.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/requests?limit=3&cursor={c}"),
            None => "/requests?limit=3".to_string(),
        };
        let (code, body) = stack.get(&path).await;
        assert_eq!(code, 200);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        listed
            .extend(body["requests"].as_array().unwrap().iter().map(|r| r["requestId"].as_str().unwrap().to_string()));
        assert!(listed.len() <= ids.len(), "the pages repeat requests: {listed:?}");
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);

    let list = |q: String| {
        let stack = &stack;
        async move {
            let (code, body) = stack.get(&format!("/requests?{q}")).await;
            assert_eq!(code, 200, "{q}");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            body["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["requestId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("status=completed".into()).await, vec![ids[6].clone()]);
    assert_eq!(list("status=failed".into()).await, vec![ids[7].clone()]);
    assert_eq!(list("status=pending".into()).await.len(), 6);
    let middle = middle.unwrap().try_to_rfc3339_string().unwrap();
    let after: Vec<String> = list(format!("createdAfter={middle}")).await;
    assert_eq!(after, newest_first[..5].to_vec(), "3 pending + completed + failed created after the mark");
    let before: Vec<String> = list(format!("createdBefore={middle}")).await;
    assert_eq!(before, newest_first[5..].to_vec());
    let (_, body) = stack.get("/requests?status=failed").await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (body["requests"][0]["succeededImages"].as_i64(), body["requests"][0]["failedImages"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(stack.get("/requests?status=nope").await.0, 400);
    assert_eq!(stack.get("/requests?cursor=nope").await.0, 400);
    assert_eq!(stack.get("/requests?createdAfter=yesterday").await.0, 400);

    let (code, body) = stack.get("/stats?days=7").await;
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        stats["requestsByStatus"],
        serde_json::json!({"pending": 6, "processing": 0, "completed": 1, "failed": 1})
    );
    // The two requests were finalised between these two readings of the clock: on one day, or (across UTC
    // midnight) on two.
    let day_after = imgpipe_core::domain::Timestamp::now().day();
    let daily = stats["daily"].as_array().unwrap();
    assert!(daily.iter().all(|d| d["day"] == day_before || d["day"] == day_after), "{daily:?}");
    let sum = |k: &str| daily.iter().map(|d| d[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum("processed"), sum("failed")), (5, 2), "{daily:?}");
    if day_before == day_after {
        assert_eq!(stats["daily"], serde_json::json!([{"day": day_before, "processed": 5, "failed": 2}]));
    }
    assert_eq!(stack.get("/stats?days=0").await.0, 400);
}

/// Waits until the clock (milliseconds, as stored) has moved past `t`, and returns the first reading after it.
async fn clock_after(t: imgpipe_core::bson::DateTime) -> imgpipe_core::bson::DateTime {
    let start = std::time::Instant::now();
    loop {
        let now = imgpipe_core::bson::DateTime::now();
        if now > t {
            return now;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the clock did not move past {t}");
        // Polling the clock (bounded by the deadline above).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
