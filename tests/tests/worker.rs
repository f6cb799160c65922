//! The worker under redelivery and concurrency, its retry decisions, and the webhook.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgpipe_core::bson::doc;
use imgpipe_tests::{ImageServer, Stack, jpeg, photo, request_id, test_job, test_key};

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
    (request_id(&body).to_string(), stack.take_bodies(expected).await)
}

/// One webhook call: signature header, request-id header, webhook-id header, body.
type Call = (Option<String>, Option<String>, Option<String>, Vec<u8>);

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
            calls.push((
                header("imgpipe-signature"),
                header("imgpipe-request-id"),
                header("webhook-id"),
                body.to_vec(),
            ));
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
    // Neither delivery gets the image until both have asked for it: both found it pending, and both record it.
    server.hold_until(2, &["/a.jpg"]);
    let event = imgpipe_local::sqs_event(vec![record(&bodies[0], "m1")]);
    let twin = imgpipe_local::sqs_event(vec![record(&bodies[0], "m1-again")]);
    let (r1, r2) = tokio::join!(imgpipe_worker::handle(&stack.app, event), imgpipe_worker::handle(&stack.app, twin));
    assert!(r1.batch_item_failures.is_empty() && r2.batch_item_failures.is_empty());
    assert_eq!(server.hits_of("/a.jpg"), 2, "the race did not happen: both deliveries should have fetched the image");

    // What the workers stored, before any status call.
    let request = stack.stored_request(&id).await;
    assert_eq!(request.get_str("status").unwrap(), "completed", "{request:?}");
    assert_eq!((request.get_i64("succeededImages").unwrap(), request.get_i64("failedImages").unwrap()), (1, 0));
    let row = stack.request_data().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    assert_eq!(row.get_i64("settledImages").unwrap(), 1);
    let csv_key = format!("outputs/tests/{id}/output.csv");
    let keys = stack.keys(&stack.app.config.outputs_bucket, &format!("outputs/tests/{id}/")).await;
    assert_eq!(keys, [format!("outputs/tests/{id}/1-0.jpg"), csv_key.clone()]);
    assert_eq!(stack.puts_of(&csv_key), 1, "output CSV written once");

    let (_, status) = stack.status(&id).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["counts"]["processed"], 1);
    assert_eq!(status["counts"]["succeeded"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_two_images_finishing_together_finalise_once_with_one_webhook() {
    let stack = Stack::new("last-two").await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(400, 300, 1), 95));
    let b = server.serve("/b.jpg", "image/jpeg", jpeg(&photo(300, 400, 2), 95));
    // Whether both deliveries then reach the finaliser together is up to the scheduler (about two rounds in
    // three here): ten rounds make a missing finalisation guard show (tests/mutations/finalisation-without-lease).
    for round in 0..10 {
        let hook = receiver(0).await;
        let csv = format!("S. No.,Product Name,Input Image Urls\n1,A,{a}\n2,B,{b}\n");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("/uploads?webhook={}", hook.url))
            .header("content-type", "text/csv")
            .body(lambda_http::Body::from(csv))
            .unwrap();
        let (code, body) = imgpipe_tests::json_of(
            imgpipe_upload::handle(&stack.app, imgpipe_tests::authorized(&stack.app, req)).await,
        );
        assert_eq!(code, 202, "{body}");
        let id = request_id(&body).to_string();
        let bodies = stack.take_bodies(2).await;
        // Both images are fetched at the same time, so both are being compressed and recorded together.
        server.hold_until(2, &["/a.jpg", "/b.jpg"]);
        let (r1, r2) = tokio::join!(
            imgpipe_worker::handle(&stack.app, imgpipe_local::sqs_event(vec![record(&bodies[0], "x")])),
            imgpipe_worker::handle(&stack.app, imgpipe_local::sqs_event(vec![record(&bodies[1], "y")])),
        );
        assert!(r1.batch_item_failures.is_empty() && r2.batch_item_failures.is_empty(), "round {round}");
        assert_eq!((server.hits_of("/a.jpg"), server.hits_of("/b.jpg")), (round + 1, round + 1), "round {round}");

        // What the workers stored, before any status call.
        let request = stack.stored_request(&id).await;
        assert_eq!(request.get_str("status").unwrap(), "completed", "round {round}: {request:?}");
        assert_eq!(request.get_i64("succeededImages").unwrap(), 2, "round {round}");
        let csv_key = format!("outputs/tests/{id}/output.csv");
        assert!(stack.object(&stack.app.config.outputs_bucket, &csv_key).await.is_some(), "round {round}");
        assert_eq!(stack.puts_of(&csv_key), 1, "round {round}: output CSV written once");
        assert_eq!(request.get_document("webhook").unwrap().get_str("state").unwrap(), "queued", "round {round}");
        assert!(hook.calls.lock().unwrap().is_empty(), "round {round}: the worker queues the webhook, never calls it");
        assert_eq!(stack.deliver_webhooks(Duration::from_secs(30)).await, 1, "round {round}: one delivery queued");
        assert_eq!(hook.calls.lock().unwrap().len(), 1, "round {round}: one webhook call");
        let request = stack.stored_request(&id).await;
        let webhook = request.get_document("webhook").unwrap();
        assert_eq!(webhook.get_str("state").unwrap(), "delivered", "round {round}");
        assert_eq!(webhook.get_array("attempts").unwrap().len(), 1, "round {round}");

        let (_, status) = stack.status(&id).await;
        assert_eq!(status["status"], "completed", "round {round}");
        assert_eq!(status["counts"]["succeeded"], 2, "round {round}");
    }
}

/// The webhook key `caller`'s tenant reads from `GET /webhook-key`.
async fn webhook_key(stack: &Stack, caller: &imgpipe_tests::Caller) -> String {
    let (code, body) = stack.get_as(caller, "/webhook-key").await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["tenant"], caller.tenant.as_str());
    body["key"].as_str().expect("key").to_string()
}

/// Uploads a one-image CSV with `webhook` and works its image; returns the request id.
async fn upload_with_webhook(stack: &Stack, webhook: &str) -> String {
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(64, 64, 3), 95));
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("/uploads?webhook={webhook}"))
        .header("content-type", "text/csv")
        .body(lambda_http::Body::from(format!("S. No.,Product Name,Input Image Urls\n1,A,{a}\n")))
        .unwrap();
    let (code, body) =
        imgpipe_tests::json_of(imgpipe_upload::handle(&stack.app, imgpipe_tests::authorized(&stack.app, req)).await);
    assert_eq!(code, 202, "{body}");
    stack.drain(Duration::from_secs(30)).await;
    request_id(&body).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_three_times_is_retried_through_its_queue_signed_with_one_webhook_id() {
    let stack = Stack::with("webhook", |c| c.api_base_url = Some("http://127.0.0.1:3000".into())).await;
    let hook = receiver(3).await;
    let id = upload_with_webhook(&stack, &hook.url).await;
    assert!(hook.calls.lock().unwrap().is_empty(), "the worker does not call the webhook itself");
    let request = stack.stored_request(&id).await;
    assert_eq!(request.get_document("webhook").unwrap().get_str("state").unwrap(), "queued");

    let own_key = webhook_key(&stack, &imgpipe_tests::Caller::test()).await;
    let other_key = webhook_key(&stack, &imgpipe_tests::Caller::new("someone-else", imgpipe_tests::TEST_SCOPES)).await;
    assert_ne!(own_key, other_key, "each tenant has its own key");
    let sent_after = unix_seconds();
    let handled = stack.deliver_webhooks(Duration::from_secs(60)).await;
    let sent_before = unix_seconds();
    assert_eq!(handled, 4, "one message receive per attempt");
    let calls = hook.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "three failures, then success");
    let webhook_ids: std::collections::BTreeSet<_> = calls.iter().map(|c| c.2.clone().expect("Webhook-Id")).collect();
    assert_eq!(webhook_ids.len(), 1, "every attempt carries the same Webhook-Id: {webhook_ids:?}");
    for (header, request_header, _, body) in &calls {
        // `t=<unix seconds>,v1=<hex>`: the signature of this body at that time (`signature` itself is checked
        // against an independent vector below), sent while the deliveries were being worked.
        let header = header.as_deref().expect("signed");
        let t: i64 = header.strip_prefix("t=").and_then(|h| h.split(',').next()).unwrap().parse().unwrap();
        assert!((sent_after..=sent_before).contains(&t), "{header}: timestamp outside {sent_after}..={sent_before}");
        // Signed with the tenant's own key, as GET /webhook-key shows it; not with another tenant's, nor with the
        // deployment's master secret itself.
        assert_eq!(header, imgpipe_core::webhook::signature(own_key.as_bytes(), t, body));
        assert_ne!(header, imgpipe_core::webhook::signature(other_key.as_bytes(), t, body));
        assert_ne!(header, imgpipe_core::webhook::signature(b"test-webhook-secret", t, body));
        assert_eq!(request_header.as_deref(), Some(id.as_str()));
        let summary: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(summary["event"], "request.completed");
        assert_eq!(summary["requestId"], id.as_str());
        assert_eq!(summary["counts"]["succeeded"], 1);
        assert_eq!(summary["statusUrl"], format!("http://127.0.0.1:3000/requests/{id}"), "the full API URL");
        assert_eq!(summary["outputCsvUrl"], format!("http://127.0.0.1:3000/requests/{id}/output.csv"));
    }
    let request = stack.stored_request(&id).await;
    let webhook = request.get_document("webhook").unwrap();
    assert_eq!(webhook.get_str("state").unwrap(), "delivered");
    assert!(webhook.get_datetime("deliveredAt").is_ok());
    let statuses: Vec<i32> = webhook
        .get_array("attempts")
        .unwrap()
        .iter()
        .map(|a| a.as_document().unwrap().get_i32("status").unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_that_redirects_gets_no_delivery_and_its_target_nothing() {
    let stack = Stack::with("webhook-redirect", |c| c.webhook_horizon_secs = 3).await;
    let target = receiver(0).await;
    let redirector = ImageServer::start().await;
    let hook = redirector.redirect("/hook", &target.url);
    let id = upload_with_webhook(&stack, &hook).await;
    stack.deliver_webhooks(Duration::from_secs(60)).await;
    assert!(redirector.hits_of("/hook") >= 2, "retried until the horizon");
    assert!(target.calls.lock().unwrap().is_empty(), "the redirect is never followed");
    let request = stack.stored_request(&id).await;
    let webhook = request.get_document("webhook").unwrap();
    assert_eq!(webhook.get_str("state").unwrap(), "failed", "given up after the horizon");
    let first = webhook.get_array("attempts").unwrap()[0].as_document().unwrap().clone();
    assert_eq!(first.get_i32("status").unwrap(), 302);
}

/// What a receiver checks, against a signature made with the same independent vector's inputs: a replay older
/// than the tolerance is refused.
#[test]
fn verify_refuses_a_replay_outside_the_tolerance() {
    use imgpipe_core::webhook::{DEFAULT_TOLERANCE, verify};
    let header = "t=1700000000,v1=92059a23c6ff3c9b45125240086d31eff0a82e8b44ec0aace740d2ef8a3b0a2d";
    let body = br#"{"event":"request.completed","requestId":"0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b"}"#;
    assert!(verify(b"test-webhook-secret", header, body, 1_700_000_000 + 300, DEFAULT_TOLERANCE));
    assert!(!verify(b"test-webhook-secret", header, body, 1_700_000_000 + 301, DEFAULT_TOLERANCE));
    assert!(!verify(b"test-webhook-secret", header, body, 1_700_000_000 + 86_400, DEFAULT_TOLERANCE));
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The signature against vectors computed outside this code base, with Python's standard library:
/// `hmac.new(secret, b"<t>." + body, hashlib.sha256).hexdigest()` (the body's bytes exactly as below, UTF-8).
#[test]
fn the_webhook_signature_matches_independently_computed_vectors() {
    use imgpipe_core::webhook::signature;
    let body = r#"{"event":"request.completed","productName":"Café, \"bleu\""}"#;
    assert_eq!(
        signature(b"test-webhook-secret", 1_700_000_000, body.as_bytes()),
        "t=1700000000,v1=b1c1a0d09757d61d35c84c1c9786f60af7c9cca6c9918a9a4ab03aa86d41d856"
    );
    let body = r#"{"event":"request.completed","requestId":"0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b"}"#;
    assert_eq!(
        signature(b"test-webhook-secret", 1_700_000_000, body.as_bytes()),
        "t=1700000000,v1=92059a23c6ff3c9b45125240086d31eff0a82e8b44ec0aace740d2ef8a3b0a2d"
    );
    // An empty secret and body: the HMAC of "0.".
    assert_eq!(signature(b"", 0, b""), "t=0,v1=b849d5a581847b281957065739df36df2463d1977ea8d6e1e4e6cf33fadc68c3");
    // A tenant's key: `hmac.new(master, tenant, sha256).hexdigest()`, whose hex string's bytes sign its deliveries.
    let key = imgpipe_core::webhook::tenant_key(b"test-webhook-secret", &imgpipe_tests::test_tenant());
    assert_eq!(key, "50659aad0b7f6944bb225e290319ee83112488efb2c490178573ed34091c1398");
    assert_eq!(
        signature(key.as_bytes(), 1_700_000_000, b"{}"),
        "t=1700000000,v1=aad20ff910c8a603ec82214db63e9339608bc306cec80f53c41600f1033a0853"
    );
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
    let (code, body) =
        imgpipe_tests::json_of(imgpipe_upload::handle(&stack.app, imgpipe_tests::authorized(&stack.app, req)).await);
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
    let messages = stack.take_messages(1).await;
    assert_eq!(messages.len(), 1);
    let response = imgpipe_worker::handle(
        &stack.app,
        imgpipe_local::sqs_event(vec![record("{not json", "poison"), record(messages[0].body().unwrap(), "good")]),
    )
    .await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["poison"]);
    assert_eq!(stack.stored_request(request_id(&body).as_str()).await.get_str("status").unwrap(), "completed");
}

/// The progress counters: a request's images are dealt round-robin over `IMGPIPE_PROGRESS_SHARDS` documents, each
/// ends at exactly its share, and no document is written once per image (the `Requests` document least of all).
/// How many writes each document takes is a benchmark figure (`make capacity`), not asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_counted_on_several_documents_and_no_document_is_written_per_image() {
    let mut stack = Stack::with("shards", |c| c.progress_shards = 4).await;
    // Every write, by the document it targets: collection and the filter's identifying fields.
    let writes: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut options = mongodb::options::ClientOptions::parse(stack.app.config.mongodb_uri.expose()).await.unwrap();
    let seen = writes.clone();
    options.command_event_handler =
        Some(mongodb::event::EventHandler::callback(move |e: mongodb::event::command::CommandEvent| {
            let mongodb::event::command::CommandEvent::Started(s) = e else { return };
            let c = &s.command;
            let filters: Vec<imgpipe_core::bson::Document> = match s.command_name.as_str() {
                "findAndModify" => c.get_document("query").ok().cloned().into_iter().collect(),
                "update" => c
                    .get_array("updates")
                    .map(|u| u.iter().filter_map(|u| u.as_document()?.get_document("q").ok().cloned()).collect())
                    .unwrap_or_default(),
                _ => return,
            };
            let collection = c.get_str(&s.command_name).unwrap_or_default();
            for f in filters {
                let id = ["requestId", "serialNumber", "shard"].map(|k| f.get(k).map(|v| v.to_string()));
                seen.lock().unwrap().push(format!("{collection} {id:?}"));
            }
        }));
    let client = mongodb::Client::with_options(options).unwrap();
    stack.app.set_documents(Arc::new(imgpipe_core::adapters::mongo::MongoStore::new(
        &client,
        &stack.app.config.mongodb_database,
    )));

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
    let mut per_document: std::collections::HashMap<&str, usize> = Default::default();
    for w in &writes {
        *per_document.entry(w.as_str()).or_default() += 1;
    }
    assert!(per_document.keys().any(|d| d.starts_with("Requests ")), "the Requests document's writes are seen");
    assert!(per_document.keys().filter(|d| d.starts_with("RequestProgress ")).count() >= 4, "{per_document:?}");
    let (busiest, most) = per_document.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(*most < 42, "{busiest} took {most} writes for 42 images: {per_document:?}");
}

/// The exact counts come from one read of each row: while images fail, a recount never sees an image as failed
/// without also seeing it as settled (two separate sums did, and the status API then reported -1 succeeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_read_while_images_fail_are_consistent() {
    use imgpipe_core::domain::ImageResult;
    use imgpipe_core::domain::{ImageUrl, RequestId};
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
        let (repo, id, done) = (stack.app.rows.clone(), id.clone(), done.clone());
        tokio::spawn(async move {
            for r in 1..=rows {
                let job = test_job(&id, r, 0, ImageUrl::parse(&format!("http://127.0.0.1:9/{r}.jpg")).unwrap(), 0);
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
        let tally = stack.app.rows.tally(&test_key(&id)).await.unwrap();
        assert!(tally.failed <= tally.settled, "read {reads}: {tally:?}");
        reads += 1;
    }
    failer.await.unwrap();
    let tally = stack.app.rows.tally(&test_key(&id)).await.unwrap();
    assert_eq!((tally.settled, tally.failed), (rows, rows));
    assert!(reads > 1, "the counts were read while images were failing");
}
