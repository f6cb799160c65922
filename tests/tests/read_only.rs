//! A GET never writes: every GET route of the status function, on requests in every state (running, all images
//! settled but not finalised, completed, failed at ingestion), leaves MongoDB, S3 and SQS exactly as they were.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use imgpipe_core::bson::{Document, doc};
use imgpipe_tests::{ImageServer, Stack, jpeg, photo, request_id};

/// Every document of every collection of the test's database, in a stable order.
async fn documents(stack: &Stack) -> Vec<(String, Vec<Document>)> {
    let mut names = stack.db.list_collection_names().await.unwrap();
    names.sort();
    let mut all = Vec::new();
    for name in names {
        let docs: Vec<Document> = stack
            .db
            .collection::<Document>(&name)
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        all.push((name, docs));
    }
    all
}

/// Every object (key and bytes) of both buckets.
async fn objects(stack: &Stack) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for bucket in [&stack.app.config.uploads_bucket, &stack.app.config.outputs_bucket] {
        let mut token = None;
        loop {
            let page = stack.s3.list_objects_v2().bucket(bucket).set_continuation_token(token).send().await.unwrap();
            for object in page.contents() {
                let key = object.key().unwrap().to_string();
                all.push((format!("{bucket}/{key}"), stack.object(bucket, &key).await.unwrap()));
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    all
}

/// The message counts of both queues (visible, in flight, delayed).
async fn queues(stack: &Stack) -> Vec<(String, Vec<(String, String)>)> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let mut all = Vec::new();
    for url in [stack.app.config.queue_url.clone(), stack.app.config.webhook_queue_url.clone().unwrap()] {
        let out = stack
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap();
        let mut attrs: Vec<(String, String)> =
            out.attributes().unwrap().iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect();
        attrs.sort();
        all.push((url, attrs));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_route_leaves_mongodb_s3_and_sqs_unchanged() {
    let stack = Stack::new("read-only").await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(40, 30, 1), 90));
    let csv = |n: usize| format!("S. No.,Product Name,Input Image Urls\n1,A{n},{a}?n={n}\n");

    // Completed.
    let (_, body) = stack.upload("text/csv", csv(1)).await;
    let completed = request_id(&body).to_string();
    stack.drain(Duration::from_secs(30)).await;
    // Every image settled, but its finaliser failed and its message was lost: a GET used to finalise it.
    let (_, body) = stack.upload("text/csv", csv(2)).await;
    let stuck = request_id(&body).to_string();
    stack.app.faults.arm("finalise.before_status");
    let start = Instant::now();
    let mut messages = Vec::new();
    while messages.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the upload's message never arrived");
        messages = stack.receive(1).await;
    }
    assert_eq!(stack.work(&messages).await.len(), 1, "the finaliser failed");
    stack.sqs.purge_queue().queue_url(&stack.app.config.queue_url).send().await.unwrap();
    // Running: its message waits on the queue.
    let (_, body) = stack.upload("text/csv", csv(3)).await;
    let running = request_id(&body).to_string();

    let before = (documents(&stack).await, objects(&stack).await, queues(&stack).await);
    let unknown = "0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b";
    let mut answers = Vec::new();
    for id in [&completed, &stuck, &running, &unknown.to_string()] {
        for path in [
            format!("/requests/{id}"),
            format!("/requests/{id}?limit=1"),
            format!("/status/{id}"),
            format!("/requests/{id}/output.csv"),
        ] {
            answers.push((path.clone(), stack.get(&path).await.0));
        }
    }
    for path in ["/requests", "/requests?status=processing&limit=1", "/stats", "/stats?days=2", "/requests/x"] {
        answers.push((path.to_string(), stack.get(path).await.0));
    }
    let after = (documents(&stack).await, objects(&stack).await, queues(&stack).await);
    assert!(before.0 == after.0, "a GET changed MongoDB");
    assert!(before.1 == after.1, "a GET changed S3");
    assert_eq!(before.2, after.2, "a GET changed SQS");

    let code = |path: String| answers.iter().find(|(p, _)| *p == path).unwrap().1;
    assert_eq!(code(format!("/requests/{completed}/output.csv")), 200);
    assert_eq!(code(format!("/requests/{stuck}/output.csv")), 409, "not final: nothing to download yet");
    assert_eq!(code(format!("/requests/{running}")), 200);
    assert_eq!(code(format!("/requests/{unknown}")), 404);
    let stuck_doc = stack.requests().find_one(doc! {"requestId": &stuck}).await.unwrap().unwrap();
    assert_eq!(stuck_doc.get_str("status").unwrap(), "processing", "left for the sweeper");
}
