//! Reliability: duplicate delivery of a whole request, a worker killed between its S3 write and its MongoDB
//! update, MongoDB and S3 outages in the middle of a request, and poison messages. Each case asserts the final
//! state exactly.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use imgpipe_core::bson::{Document, doc};
use imgpipe_tests::{ImageServer, Outage, Stack, jpeg, photo, png, request_id, socket_of};

fn csv_for(server: &ImageServer, tag: &str) -> String {
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for r in 1..=3u32 {
        let urls: Vec<String> = (0..2u32)
            .map(|i| {
                let img = photo(60 + 10 * r, 40 + 10 * i, r * 10 + i);
                if i == 0 {
                    server.serve(&format!("/{tag}/{r}-{i}.jpg"), "image/jpeg", jpeg(&img, 95))
                } else {
                    server.serve(&format!("/{tag}/{r}-{i}.png"), "image/png", png(&image::DynamicImage::ImageRgb8(img)))
                }
            })
            .collect();
        csv.push_str(&format!("{r},Product {r},\"{}\"\n", urls.join(",")));
    }
    csv
}

fn record(body: &str, id: String) -> aws_lambda_events::event::sqs::SqsMessage {
    let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
    m.message_id = Some(id);
    m.body = Some(body.to_string());
    m
}

/// The parts of a request's final state that must not depend on how its messages were delivered.
async fn final_state(stack: &Stack, id: &str) -> serde_json::Value {
    let request = stack.requests().find_one(doc! {"requestId": id}).await.unwrap().unwrap();
    let rows: Vec<Document> = stack
        .request_data()
        .find(doc! {"requestId": id})
        .sort(doc! {"serialNumber": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let csv = stack.object(&stack.app.config.outputs_bucket, &format!("outputs/tests/{id}/output.csv")).await;
    let mut keys = stack.keys(&stack.app.config.outputs_bucket, &format!("outputs/tests/{id}/")).await;
    keys.sort();
    let strip =
        |s: String| s.replace(id, "<id>").replace(&format!("/{}/", stack.app.config.outputs_bucket), "/<bucket>/");
    serde_json::json!({
        "status": request.get_str("status").unwrap(),
        "succeeded": request.get_i64("succeededImages").unwrap(),
        "failed": request.get_i64("failedImages").unwrap(),
        "rows": rows.iter().map(|r| serde_json::json!({
            "serial": r.get_i64("serialNumber").unwrap(),
            "settled": r.get_i64("settledImages").unwrap(),
            "failed": r.get_i64("failedImages").unwrap(),
            "outputs": r.get_array("outputImageUrls").unwrap().iter().map(|u| strip(u.as_str().unwrap().to_string())).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "csv": csv.map(|c| strip(String::from_utf8(c).unwrap())),
        "objects": keys.into_iter().map(strip).collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_delivered_twice_in_parallel_gives_the_single_delivery_state() {
    let stack = Stack::new("dup-all").await;
    let server = ImageServer::start().await;
    // Reference: single delivery.
    let (_, once) = stack.upload("text/csv", csv_for(&server, "once")).await;
    let once = request_id(&once).to_string();
    stack.drain(Duration::from_secs(30)).await;
    // Same CSV shape, every message delivered twice, all at the same time.
    let (_, twice) = stack.upload("text/csv", csv_for(&server, "twice")).await;
    let twice = request_id(&twice).to_string();
    let messages = stack.take_messages(6).await;
    // No copy gets its image before all twelve have asked for theirs: every pair really ran in parallel.
    let paths: Vec<String> = (1..=3).flat_map(|r| [format!("/twice/{r}-0.jpg"), format!("/twice/{r}-1.png")]).collect();
    server.hold_until(12, &paths.iter().map(String::as_str).collect::<Vec<_>>());
    let handles: Vec<_> = messages
        .iter()
        .flat_map(|m| [0, 1].map(|copy| (m.body().unwrap().to_string(), format!("{}-{copy}", m.message_id().unwrap()))))
        .map(|(body, mid)| {
            // Each copy in an execution environment of its own (its own decode budget and fetch slots), as two
            // deliveries of one message reach two Lambda instances.
            let mut app = stack.app.clone();
            app.decode_budget =
                std::sync::Arc::new(imgpipe_core::decode_budget::DecodeBudget::new(app.config.decode_budget()));
            tokio::spawn(async move {
                imgpipe_worker::handle(&app, imgpipe_local::sqs_event(vec![record(&body, mid)])).await
            })
        })
        .collect();
    for h in handles {
        assert!(h.await.unwrap().batch_item_failures.is_empty());
    }
    for path in &paths {
        assert_eq!(server.hits_of(path), 2, "{path}: both copies found the image pending and fetched it");
    }
    // Read from MongoDB and S3 directly, before any status call.
    let mut a = final_state(&stack, &once).await;
    let mut b = final_state(&stack, &twice).await;
    for state in [&mut a, &mut b] {
        let csv = state["csv"].as_str().unwrap().replace("/once/", "/x/").replace("/twice/", "/x/");
        state["csv"] = csv.into();
    }
    assert_eq!(a["status"], "completed");
    assert_eq!(a, b);
    assert_eq!(stack.puts_of(&format!("outputs/tests/{twice}/output.csv")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_the_s3_put_and_the_mongodb_update_is_counted_once_after_redelivery() {
    let stack = Stack::new("kill-after-put").await;
    let server = ImageServer::start().await;
    let (_, body) = stack.upload("text/csv", csv_for(&server, "k")).await;
    let id = request_id(&body).to_string();
    stack.app.faults.arm("worker.after_put");
    let messages = stack.take_messages(6).await;
    let failed = stack.work(&messages).await;
    assert_eq!(failed.len(), 1, "exactly the killed delivery is retried");
    let request = stack.stored_request(&id).await;
    assert_eq!(request.get_str("status").unwrap(), "processing");
    let rows: Vec<Document> =
        stack.request_data().find(doc! {"requestId": &id}).await.unwrap().try_collect().await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.get_i64("settledImages").unwrap()).sum::<i64>(),
        5,
        "the killed image is not counted"
    );
    stack.drain(Duration::from_secs(30)).await; // the message comes back after the visibility timeout
    // Read from MongoDB and S3 directly, before any status call.
    let request = stack.stored_request(&id).await;
    assert_eq!(request.get_str("status").unwrap(), "completed", "{request:?}");
    assert_eq!((request.get_i64("succeededImages").unwrap(), request.get_i64("failedImages").unwrap()), (6, 0));
    let objects = stack.keys(&stack.app.config.outputs_bucket, &format!("outputs/tests/{id}/")).await;
    let mut want: Vec<String> =
        (1..=3).flat_map(|r| [0, 1].map(|i| format!("outputs/tests/{id}/{r}-{i}.jpg"))).collect();
    want.push(format!("outputs/tests/{id}/output.csv"));
    assert_eq!(objects, want, "one object per image and the output CSV, none missing or extra");
    for key in &want[..6] {
        let jpeg = stack.object(&stack.app.config.outputs_bucket, key).await.unwrap();
        assert_eq!(image::guess_format(&jpeg).unwrap(), image::ImageFormat::Jpeg, "{key}");
    }
    let (_, status) = stack.status(&id).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(
        status["counts"],
        serde_json::json!({"products": 3, "images": 6, "processed": 6, "succeeded": 6, "failed": 0})
    );
}

async fn outage_case(kind: &str) {
    let s3_up = socket_of(&std::env::var("IMGPIPE_S3_ENDPOINT").unwrap());
    let mongo_up = socket_of(&std::env::var("IMGPIPE_MONGODB_URI").unwrap());
    let proxy = Outage::start(if kind == "s3" { s3_up } else { mongo_up }).await;
    let port = proxy.port;
    let stack = Stack::with(&format!("outage-{kind}"), |c| {
        if kind == "s3" {
            c.s3_endpoint = Some(format!("http://127.0.0.1:{port}"));
        } else {
            c.mongodb_uri = imgpipe_core::config::Secret::new(format!(
                "mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=1500&connectTimeoutMS=1000"
            ));
        }
    })
    .await;
    let server = ImageServer::start().await;
    let (code, body) = stack.upload("text/csv", csv_for(&server, kind)).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body).to_string();
    let messages = stack.take_messages(6).await;
    assert!(stack.work(&messages[..2]).await.is_empty());

    proxy.down();
    let failed = stack.work(&messages[2..]).await;
    assert_eq!(failed.len(), 4, "{kind} down: every remaining image is handed back to SQS, none lost");
    proxy.up().await;

    stack.drain(Duration::from_secs(60)).await;
    let request = stack.stored_request(&id).await;
    assert_eq!(request.get_str("status").unwrap(), "completed", "{kind}: {request:?}");
    assert_eq!((request.get_i64("succeededImages").unwrap(), request.get_i64("failedImages").unwrap()), (6, 0));
    let (code, status) = stack.status(&id).await;
    assert_eq!(code, 200);
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(
        status["counts"],
        serde_json::json!({"products": 3, "images": 6, "processed": 6, "succeeded": 6, "failed": 0})
    );
    let objects = stack.keys(&stack.app.config.outputs_bucket, &format!("outputs/tests/{id}/")).await;
    assert_eq!(objects.len(), 7, "{objects:?}");
    assert_eq!(stack.dlq_depth().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_going_down_mid_request_loses_nothing() {
    outage_case("mongo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_going_down_mid_request_loses_nothing() {
    outage_case("s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_end_in_the_dead_letter_queue_without_blocking_their_batch() {
    let stack = Stack::new("poison").await;
    let server = ImageServer::start().await;
    let good = server.serve("/g.jpg", "image/jpeg", jpeg(&photo(20, 20, 1), 90));
    let (_, body) = stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,A,{good}\n")).await;
    let id = request_id(&body).to_string();
    let q = &stack.app.config.queue_url;
    stack.sqs.send_message().queue_url(q).message_body("{not json").send().await.unwrap();
    let unknown = serde_json::json!({"requestId": "0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b", "serialNumber": 1, "index": 0, "url": good});
    stack.sqs.send_message().queue_url(q).message_body(unknown.to_string()).send().await.unwrap();
    let start = Instant::now();
    while stack.dlq_depth().await < 2 {
        assert!(start.elapsed() < Duration::from_secs(40), "poison messages not dead-lettered");
        let messages = stack.receive(1).await;
        stack.work(&messages).await;
    }
    let request = stack.stored_request(&id).await;
    assert_eq!(request.get_str("status").unwrap(), "completed", "the good image in the same batches was processed");
    assert_eq!(stack.queue_depth().await, 0);
}

/// Load: one big request and seven of a tenth of its size, uploaded concurrently, worked by four worker loops of the
/// local runner. Nothing may be lost or double-counted; throughput and completion times are printed
/// (`make bench-pipeline` shows them), never asserted. `IMGPIPE_LOAD_IMAGES` sets the big request's size
/// (default 2,000; the seven others are a tenth of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_run_loses_and_duplicates_nothing() {
    let stack = Stack::new("load").await;
    let server = ImageServer::start().await;
    let url = server.serve("/p.jpg", "image/jpeg", jpeg(&photo(64, 48, 9), 90));
    let csv = |rows: usize, per_row: usize, tag: usize| {
        let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
        for r in 1..=rows {
            let urls: Vec<String> = (0..per_row).map(|i| format!("{url}?t={tag}&r={r}&i={i}")).collect();
            csv.push_str(&format!("{r},P{r},\"{}\"\n", urls.join(",")));
        }
        csv
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(imgpipe_local::run_worker(stack.app.clone(), stack.sqs.clone(), shutdown.clone())))
        .collect();
    let start = Instant::now();
    let big: usize = std::env::var("IMGPIPE_LOAD_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let uploads = (0..8).map(|tag| {
        let body = if tag == 0 { csv(big / 5, 5, tag) } else { csv((big / 50).max(1), 5, tag) };
        let stack = &stack;
        async move {
            let t0 = Instant::now();
            let (code, body) = stack.upload("text/csv", body).await;
            assert_eq!(code, 202, "{body}");
            (request_id(&body).to_string(), body["totalImages"].as_u64().unwrap(), t0)
        }
    });
    let requests = futures::future::join_all(uploads).await;
    let total: u64 = requests.iter().map(|r| r.1).sum();
    assert_eq!(total as usize, big / 5 * 5 + 7 * (big / 50).max(1) * 5);
    // Completion as the workers stored it (MongoDB, not the status API, which must not be what finishes a
    // request).
    let mut done: Vec<(String, u64, Duration)> = Vec::new();
    while done.len() < requests.len() {
        assert!(start.elapsed() < Duration::from_secs(600), "load run did not finish in 10 minutes");
        // Polling interval of this loop (bounded by the deadline above).
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (id, images, t0) in &requests {
            if done.iter().any(|d| &d.0 == id) {
                continue;
            }
            let request = stack.stored_request(id).await;
            let state = request.get_str("status").unwrap();
            if state == "completed" || state == "failed" {
                assert_eq!(state, "completed", "{id}");
                let counts = (request.get_i64("succeededImages").unwrap(), request.get_i64("failedImages").unwrap());
                assert_eq!(counts, (*images as i64, 0), "{id}");
                done.push((id.clone(), *images, t0.elapsed()));
            }
        }
    }
    let elapsed = start.elapsed();
    stop.send(true).unwrap();
    for w in workers {
        w.await.unwrap();
    }
    for (id, images, _) in &done {
        let objects = stack.keys(&stack.app.config.outputs_bucket, &format!("outputs/tests/{id}/")).await;
        assert_eq!(objects.len() as u64, images + 1, "{id}: one object per image and the output CSV");
        assert!(objects.contains(&format!("outputs/tests/{id}/output.csv")), "{id}");
        let rows: Vec<Document> =
            stack.request_data().find(doc! {"requestId": id}).await.unwrap().try_collect().await.unwrap();
        let settled: i64 = rows.iter().map(|r| r.get_i64("settledImages").unwrap()).sum();
        assert_eq!(settled as u64, *images, "{id}: every image settled exactly once");
    }
    let mut times: Vec<f64> = done.iter().map(|d| d.2.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "load: {total} images in {} requests, 4 worker loops: {:.1} s, {:.0} images/s; upload→completed p50 {:.1} s, p95 {:.1} s; {} fetches ({} redelivered)",
        done.len(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.95),
        server.hits(),
        server.hits() as u64 - total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_finaliser_died_is_finalised_by_the_sweeper_not_by_a_status_poll() {
    let stack = Stack::with("heal", |c| c.sweep_grace_secs = 0).await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(30, 20, 1), 90));
    let (_, body) = stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,A,{a}\n")).await;
    let id = request_id(&body).to_string();
    stack.app.faults.arm("finalise.before_status");
    let messages = stack.take_messages(1).await;
    assert_eq!(stack.work(&messages).await.len(), 1, "the finaliser failed, so its message is retried");
    // ...but the message is lost (dead-lettered, say): nothing will redeliver it.
    stack.sqs.purge_queue().queue_url(&stack.app.config.queue_url).send().await.unwrap();
    let request = stack.requests().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    assert_eq!(request.get_str("status").unwrap(), "processing");
    assert!(request.get("finalizingAt").is_none(), "the failed finaliser released its lease");

    // A status poll reports what is stored and repairs nothing.
    let (_, status) = stack.status(&id).await;
    assert_eq!((status["status"].as_str(), status["counts"]["processed"].as_i64()), (Some("processing"), Some(1)));
    let request = stack.requests().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    assert_eq!(request.get_str("status").unwrap(), "processing", "a GET never finalises");

    let report = imgpipe_sweeper::handle(&stack.app).await.unwrap();
    assert_eq!(report.finalised, 1, "{report:?}");
    let request = stack.requests().find_one(doc! {"requestId": &id}).await.unwrap().unwrap();
    assert_eq!(request.get_str("status").unwrap(), "completed");
    let csv_key = format!("outputs/tests/{id}/output.csv");
    let stored = stack.object(&stack.app.config.outputs_bucket, &csv_key).await.expect("the output CSV is stored");
    assert_eq!(csv::Reader::from_reader(stored.as_slice()).records().count(), 1, "one product row");
    let writes = stack.puts_of(&csv_key);
    let again = imgpipe_sweeper::handle(&stack.app).await.unwrap();
    assert_eq!(again.finalised, 0, "a second sweep changes nothing: {again:?}");
    assert_eq!(stack.puts_of(&csv_key), writes, "a finalised request is not finalised again");
    let (_, status) = stack.status(&id).await;
    assert_eq!((status["status"].as_str(), status["counts"]["succeeded"].as_i64()), (Some("completed"), Some(1)));
}
