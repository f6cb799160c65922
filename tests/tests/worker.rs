//! The worker under redelivery and concurrency, its retry decisions, and the webhook.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgpipe_core::bson::doc;
use imgpipe_tests::{ImageServer, Stack, jpeg, photo, request_id};

fn record(body: &str, id: &str) -> aws_lambda_events::event::sqs::SqsMessage {
    let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
    m.message_id = Some(id.to_string());
    m.body = Some(body.to_string());
    m
}

/// Uploads a CSV and returns the request id and the message bodies (received and deleted from the queue).
async fn upload_and_take_messages(stack: &Stack, csv: String, expected: usize) -> (String, Vec<String>) {
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    (request_id(&body).to_string(), take_bodies(stack, expected).await)
}

/// Receives `n` messages and deletes them, returning their bodies (to deliver them by hand).
async fn take_bodies(stack: &Stack, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    while bodies.len() < n {
        for m in stack.receive(1).await {
            stack
                .sqs
                .delete_message()
                .queue_url(&stack.app.config.queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            bodies.push(m.body().unwrap().to_string());
        }
    }
    bodies
}

/// One webhook call: signature header, request-id header, body.
type Call = (Option<String>, Option<String>, Vec<u8>);

/// A local webhook receiver that answers 500 to the first `failures` calls, then 200; records each call.
struct Receiver {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn receiver(failures: usize) -> Receiver {
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let c = calls.clone();
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap, body: axum::body::Bytes| {
        let c = c.clone();
        async move {
            let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            let mut calls = c.lock().unwrap();
            calls.push((header("imgpipe-signature"), header("imgpipe-request-id"), body.to_vec()));
            if calls.len() <= failures { http::StatusCode::INTERNAL_SERVER_ERROR } else { http::StatusCode::OK }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Receiver { url, calls, _stop: stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_message_delivered_twice_in_parallel_counts_once() {
    let stack = Stack::new("parallel-dup").await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(300, 200, 1), 95));
    let (id, bodies) =
        upload_and_take_messages(&stack, format!("S. No.,Product Name,Input Image Urls\n1,A,{a}\n"), 1).await;
    let event = imgpipe_local::sqs_event(vec![record(&bodies[0], "m1")]);
    let twin = imgpipe_local::sqs_event(vec![record(&bodies[0], "m1-again")]);
    let (r1, r2) = tokio::join!(imgpipe_worker::handle(&stack.app, event), imgpipe_worker::handle(&stack.app, twin));
    assert!(r1.batch_item_failures.is_empty() && r2.batch_item_failures.is_empty());

    let (_, status) = stack.status(&id).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["counts"]["processed"], 1);
    assert_eq!(status["counts"]["succeeded"], 1);
    let row = stack.request_data().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    assert_eq!(row.get_i64("settledImages").unwrap(), 1);
    assert_eq!(stack.puts_of(&format!("outputs/{id}/output.csv")), 1, "output CSV written once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_two_images_finishing_together_finalise_once_with_one_webhook() {
    let stack = Stack::new("last-two").await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(400, 300, 1), 95));
    let b = server.serve("/b.jpg", "image/jpeg", jpeg(&photo(300, 400, 2), 95));
    for round in 0..5 {
        let hook = receiver(0).await;
        let csv = format!("S. No.,Product Name,Input Image Urls\n1,A,{a}\n2,B,{b}\n");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("/uploads?webhook={}", hook.url))
            .header("content-type", "text/csv")
            .body(lambda_http::Body::from(csv))
            .unwrap();
        let (code, body) = imgpipe_tests::json_of(imgpipe_upload::handle(&stack.app, req).await);
        assert_eq!(code, 202, "{body}");
        let id = request_id(&body).to_string();
        let bodies = take_bodies(&stack, 2).await;
        let (r1, r2) = tokio::join!(
            imgpipe_worker::handle(&stack.app, imgpipe_local::sqs_event(vec![record(&bodies[0], "x")])),
            imgpipe_worker::handle(&stack.app, imgpipe_local::sqs_event(vec![record(&bodies[1], "y")])),
        );
        assert!(r1.batch_item_failures.is_empty() && r2.batch_item_failures.is_empty(), "round {round}");
        let (_, status) = stack.status(&id).await;
        assert_eq!(status["status"], "completed", "round {round}");
        assert_eq!(status["counts"]["succeeded"], 2, "round {round}");
        assert_eq!(stack.puts_of(&format!("outputs/{id}/output.csv")), 1, "round {round}: output CSV written once");
        assert_eq!(hook.calls.lock().unwrap().len(), 1, "round {round}: one webhook call");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_twice_is_retried_signed_and_recorded() {
    let stack = Stack::new("webhook").await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(64, 64, 3), 95));
    let hook = receiver(2).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("/uploads?webhook={}", hook.url))
        .header("content-type", "text/csv")
        .body(lambda_http::Body::from(format!("S. No.,Product Name,Input Image Urls\n1,A,{a}\n")))
        .unwrap();
    let (code, body) = imgpipe_tests::json_of(imgpipe_upload::handle(&stack.app, req).await);
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body).to_string();
    stack.drain(Duration::from_secs(30)).await;

    let calls = hook.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "two failures, then success");
    for (signature, request_header, body) in &calls {
        let signature = signature.as_deref().expect("signed");
        assert!(imgpipe_core::webhook::verify(b"test-webhook-secret", signature, body), "{signature}");
        assert!(!imgpipe_core::webhook::verify(b"wrong-secret", signature, body));
        assert_eq!(request_header.as_deref(), Some(id.as_str()));
        let summary: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(summary["event"], "request.completed");
        assert_eq!(summary["requestId"], id.as_str());
        assert_eq!(summary["counts"]["succeeded"], 1);
        assert!(summary["outputCsvUrl"].as_str().unwrap().starts_with("http://127.0.0.1"));
    }
    let request = stack.requests().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    let webhook = request.get_document("webhook").unwrap();
    assert_eq!(webhook.get_str("state").unwrap(), "delivered");
    assert!(webhook.get_datetime("deliveredAt").is_ok());
    let statuses: Vec<i32> = webhook
        .get_array("attempts")
        .unwrap()
        .iter()
        .map(|a| a.as_document().unwrap().get_i32("status").unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_to_a_refused_address_is_rejected_at_upload() {
    let stack = Stack::new("webhook-refused").await;
    let req = http::Request::builder()
        .method("POST")
        .uri("/uploads?webhook=http://169.254.169.254/latest/meta-data")
        .header("content-type", "text/csv")
        .body(lambda_http::Body::from("S. No.,Product Name,Input Image Urls\n1,A,http://127.0.0.1:9/a.jpg\n"))
        .unwrap();
    let (code, body) = imgpipe_tests::json_of(imgpipe_upload::handle(&stack.app, req).await);
    assert_eq!(code, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("link-local"), "{body}");
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_then_dead_lettered() {
    // The stack's queue redrives after 3 receives, with a 2 s visibility timeout.
    let stack = Stack::new("dlq").await;
    let server = ImageServer::start().await;
    let flaky = server.serve_status("/busy.jpg", 503, "text/plain", b"busy".to_vec());
    let (code, body) = stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,A,{flaky}\n")).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body).to_string();
    let start = Instant::now();
    let mut failures = 0;
    while stack.dlq_depth().await == 0 {
        assert!(start.elapsed() < Duration::from_secs(40), "not dead-lettered after {failures} failures");
        let messages = stack.receive(1).await;
        failures += stack.work(&messages).await.len();
    }
    assert_eq!(failures, 3, "one failure per receive, up to maxReceiveCount");
    assert_eq!(server.hits(), 3);
    let (_, status) = stack.status(&id).await;
    assert_eq!(status["counts"]["processed"], 0, "a transient failure is not recorded as the image's outcome");
    assert_eq!(status["rows"][0]["images"][0]["state"], "pending");
    // A poison message (not JSON) is reported failed, without blocking the good record in its batch.
    let good = server.serve("/ok.jpg", "image/jpeg", jpeg(&photo(10, 10, 1), 90));
    let (_, body) = stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,B,{good}\n")).await;
    let messages = stack.receive(1).await;
    assert_eq!(messages.len(), 1);
    let response = imgpipe_worker::handle(
        &stack.app,
        imgpipe_local::sqs_event(vec![record("{not json", "poison"), record(messages[0].body().unwrap(), "good")]),
    )
    .await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["poison"]);
    let (_, status) = stack.status(request_id(&body).as_str()).await;
    assert_eq!(status["status"], "completed");
}

/// The progress counters: a request's images are dealt round-robin over `IMGPIPE_PROGRESS_SHARDS` documents, each
/// ends at exactly its share, and the `Requests` document takes a few writes per request, not one per image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_counted_on_several_documents_and_the_request_document_is_not_written_per_image() {
    let mut stack = Stack::with("shards", |c| c.progress_shards = 4).await;
    let writes: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut options = mongodb::options::ClientOptions::parse(&stack.app.config.mongodb_uri).await.unwrap();
    let seen = writes.clone();
    options.command_event_handler =
        Some(mongodb::event::EventHandler::callback(move |e: mongodb::event::command::CommandEvent| {
            if let mongodb::event::command::CommandEvent::Started(s) = e
                && matches!(s.command_name.as_str(), "update" | "findAndModify")
            {
                let collection = s.command.get_str(&s.command_name).unwrap_or_default().to_string();
                seen.lock().unwrap().push(collection);
            }
        }));
    let client = mongodb::Client::with_options(options).unwrap();
    stack.app.repo = Arc::new(imgpipe_core::adapters::mongo::MongoRepository::new(
        &client.database(&stack.app.config.mongodb_database),
    ));

    let server = ImageServer::start().await;
    let url = server.serve("/p.jpg", "image/jpeg", jpeg(&photo(24, 16, 3), 90));
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    // 42 images over 4 counters: shares 11, 11, 10, 10.
    for row in 1..=14 {
        let urls: Vec<String> = (0..3).map(|i| format!("{url}?r={row}&i={i}")).collect();
        csv.push_str(&format!("{row},P{row},\"{}\"\n", urls.join(",")));
    }
    let (id, bodies) = upload_and_take_messages(&stack, csv, 42).await;
    let mut dealt = [0; 4];
    for body in &bodies {
        let job: serde_json::Value = serde_json::from_str(body).unwrap();
        dealt[job["shard"].as_u64().unwrap() as usize] += 1;
    }
    assert_eq!(dealt, [11, 11, 10, 10], "images are dealt round-robin over the counters");

    writes.lock().unwrap().clear();
    let records: Vec<_> = bodies.iter().enumerate().map(|(i, b)| record(b, &i.to_string())).collect();
    let response = imgpipe_worker::handle(&stack.app, imgpipe_local::sqs_event(records)).await;
    assert!(response.batch_item_failures.is_empty());

    let request = stack.requests().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    assert_eq!(request.get_str("status").unwrap(), "completed");
    assert_eq!(request.get_i64("succeededImages").unwrap(), 42);
    assert_eq!(request.get_i64("progressShards").unwrap(), 4);
    let counters: Vec<imgpipe_core::bson::Document> = futures::TryStreamExt::try_collect(
        stack.db.collection("RequestProgress").find(doc! {"requestId": &id}).sort(doc! {"shard": 1}).await.unwrap(),
    )
    .await
    .unwrap();
    let ends: Vec<(i64, i64)> =
        counters.iter().map(|c| (c.get_i64("expected").unwrap(), c.get_i64("done").unwrap())).collect();
    assert_eq!(ends, vec![(11, 11), (11, 11), (10, 10), (10, 10)]);

    let writes = writes.lock().unwrap().clone();
    let on = |c: &str| writes.iter().filter(|w| *w == c).count();
    assert_eq!(on("RequestProgress"), 42, "one counter write per image");
    // One `pending → processing` per counter, a lease claim by each worker that saw every counter complete (at most
    // the batch's 4 at once), the final status: a bound set by the counters and the concurrency, not the images.
    assert!(on("Requests") <= 4 + 4 + 1, "{} writes to the Requests document for 42 images", on("Requests"));
}

/// The exact counts come from one read of each row: while images fail, a recount never sees an image as failed
/// without also seeing it as settled (two separate sums did, and the status API then reported -1 succeeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_read_while_images_fail_are_consistent() {
    use imgpipe_core::domain::{ImageJob, ImageUrl, RequestId};
    use imgpipe_core::ports::ImageResult;
    let stack = Stack::new("tally_race").await;
    let rows = 150;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for r in 1..=rows {
        csv.push_str(&format!("{r},P{r},http://127.0.0.1:9/{r}.jpg\n"));
    }
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    let id = RequestId::parse(body["requestId"].as_str().unwrap()).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failer = {
        let (repo, id, done) = (stack.app.repo.clone(), id.clone(), done.clone());
        tokio::spawn(async move {
            for r in 1..=rows {
                let job = ImageJob {
                    request_id: id.clone(),
                    serial_number: r,
                    index: 0,
                    url: ImageUrl::parse(&format!("http://127.0.0.1:9/{r}.jpg")).unwrap(),
                    shard: 0,
                };
                repo.settle_image(
                    &job,
                    &ImageResult::Failed { reason: imgpipe_core::failure::FailureReason::HttpStatus },
                )
                .await
                .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut reads = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let tally = stack.app.repo.tally(&id).await.unwrap();
        assert!(tally.failed <= tally.settled, "read {reads}: {tally:?}");
        reads += 1;
    }
    failer.await.unwrap();
    let tally = stack.app.repo.tally(&id).await.unwrap();
    assert_eq!((tally.settled, tally.failed), (rows, rows));
    assert!(reads > 1, "the counts were read while images were failing");
}
