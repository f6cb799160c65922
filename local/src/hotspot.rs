//! `imgpipe-local bench-hotspot`: the MongoDB side of the worker under many concurrent workers.
//!
//! One request of `images` images is ingested through the real upload handler; its messages are taken off the
//! queue; then `workers` concurrent tasks record every image as the worker does after storing its output
//! ([`imgpipe_core::service::process::Worker::record`]: settle, count, finalise), with no fetch or compression in the
//! way, so the database is the only bottleneck. The driver's command monitoring gives every operation's
//! collection and latency: the run prints operations per image, their latency, and how many writes went to the
//! one `Requests` document (the hot spot), for each progress-counter setting given.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgpipe_core::adapters::mongo::{MongoStore, migrate};
use imgpipe_core::adapters::{aws_config, sqs::sqs_client};
use imgpipe_core::domain::{ImageJob, ImageResult, RequestId, RequestKey, RequestStatus};
use imgpipe_core::{App, Config};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Per (collection, command): latencies of the successful calls, and failures.
#[derive(Default)]
struct Ops {
    started: HashMap<i32, (String, String)>,
    done: BTreeMap<(String, String), Vec<Duration>>,
    failed: usize,
    /// Writes per document, the document named by its filter (collection, requestId, serialNumber or shard).
    doc_writes: HashMap<String, usize>,
}

fn is_write(command: &str) -> bool {
    matches!(command, "update" | "findAndModify" | "insert" | "delete")
}

/// The document a write's filter names: collection, `requestId`, and `serialNumber` or `shard` if present.
fn target(collection: &str, command: &mongodb::bson::Document, name: &str) -> Option<String> {
    let filter = match name {
        "findAndModify" => command.get_document("query").ok()?,
        "update" => command.get_array("updates").ok()?.first()?.as_document()?.get_document("q").ok()?,
        _ => return None,
    };
    let part = |k: &str| filter.get(k).map(|v| v.to_string()).unwrap_or_default();
    Some(format!("{collection} {} {}{}", part("requestId"), part("serialNumber"), part("shard")))
}

fn observe(ops: &Mutex<Ops>, event: CommandEvent) {
    let mut ops = ops.lock().unwrap();
    match event {
        CommandEvent::Started(e) => {
            let name = e.command_name.clone();
            let collection = e.command.get_str(&name).unwrap_or_default().to_string();
            if let Some(doc) = target(&collection, &e.command, &name) {
                *ops.doc_writes.entry(doc).or_default() += 1;
            }
            ops.started.insert(e.request_id, (collection, name));
        }
        CommandEvent::Succeeded(e) => {
            if let Some((collection, name)) = ops.started.remove(&e.request_id) {
                ops.done.entry((collection, name)).or_default().push(e.duration);
            }
        }
        CommandEvent::Failed(e) => {
            ops.started.remove(&e.request_id);
            ops.failed += 1;
        }
        _ => {}
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

pub async fn run(config: Config, images: usize, workers: usize, shard_settings: &[u32]) -> Result<String, BoxError> {
    let mut all = Vec::new();
    for &shards in shard_settings {
        all.push(run_one(config.clone(), images, workers, shards).await?);
    }
    Ok(serde_json::to_string_pretty(&all)?)
}

async fn run_one(
    mut config: Config,
    images: usize,
    workers: usize,
    shards: u32,
) -> Result<serde_json::Value, BoxError> {
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    config.mongodb_database = format!("bench_hotspot_{run}");
    config.queue_url = format!("{}-hotspot-{run}", config.queue_url);
    // No webhooks here; and the shared webhook queue may exist with the local runner's attributes.
    config.webhook_queue_url = None;
    config.progress_shards = shards;
    let per_row = 3;
    let rows = images.div_ceil(per_row);
    config.max_rows = config.max_rows.max(rows);
    config.max_csv_bytes = config.max_csv_bytes.max(images * 64 + 1024);
    config.queue_url = crate::provision(&config, 5, 300).await?;
    let sqs = sqs_client(&aws_config(&config).await, &config);

    let ops: Arc<Mutex<Ops>> = Arc::default();
    let mut options = mongodb::options::ClientOptions::parse(config.mongodb_uri.expose()).await?;
    options.max_pool_size = Some(workers as u32 + 4);
    let seen = ops.clone();
    options.command_event_handler = Some(EventHandler::callback(move |e| observe(&seen, e)));
    let client = mongodb::Client::with_options(options)?;
    let mut app = App::new(config.clone()).await?;
    let store = MongoStore::new(&client, &config.mongodb_database);
    migrate(store.database()).await?;
    app.set_documents(Arc::new(store));

    // The request, through the real upload handler (the URLs are never fetched).
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    let mut left = images;
    for r in 1..=rows {
        let n = left.min(per_row);
        left -= n;
        let list: Vec<String> = (0..n).map(|i| format!("http://127.0.0.1:9/p/{r}/{i}.jpg")).collect();
        csv.push_str(&format!("{r},Product {r},\"{}\"\n", list.join(",")));
    }
    let request = crate::bench_upload(&app.config, csv);
    let response = imgpipe_upload::handle(&app, request).await;
    if response.status() != http::StatusCode::ACCEPTED {
        return Err(format!("upload answered {}: {:?}", response.status(), response.body()).into());
    }
    let body: serde_json::Value = match response.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t)?,
        lambda_http::Body::Binary(b) => serde_json::from_slice(b)?,
        lambda_http::Body::Empty => serde_json::Value::Null,
        _ => serde_json::Value::Null,
    };
    let id = RequestId::parse(body["requestId"].as_str().unwrap_or_default())?;

    // The messages the upload sent: the real jobs, with their progress counters.
    let mut jobs: Vec<ImageJob> = Vec::with_capacity(images);
    while jobs.len() < images {
        let out = sqs
            .receive_message()
            .queue_url(&config.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Err(format!("only {} of {images} messages on the queue", jobs.len()).into());
        }
        for m in messages {
            jobs.push(serde_json::from_str(m.body().unwrap_or_default())?);
        }
    }
    sqs.delete_queue().queue_url(&config.queue_url).send().await?;
    *ops.lock().unwrap() = Ops::default();

    // The workers.
    let queue = Arc::new(Mutex::new(jobs));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(images)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (app, queue, latencies) = (app.clone(), queue.clone(), latencies.clone());
        tasks.spawn(async move {
            loop {
                let Some(job) = queue.lock().unwrap().pop() else { return Ok::<(), BoxError>(()) };
                let key = job.output_key();
                let result = ImageResult::Succeeded { output_url: app.urls().stored(&key), output_key: key };
                let t = Instant::now();
                app.worker().record(&job, &result).await?;
                latencies.lock().unwrap().push(t.elapsed());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let seconds = started.elapsed().as_secs_f64();

    // Nothing lost, nothing counted twice.
    let request =
        app.requests.get_request(&RequestKey::new(&crate::bench_tenant(), &id)).await?.ok_or("request vanished")?;
    if request.status != RequestStatus::Completed || request.succeeded_images != images as i64 {
        return Err(format!(
            "request ended {:?} with {} of {images} images succeeded",
            request.status, request.succeeded_images
        )
        .into());
    }
    client.database(&config.mongodb_database).drop().await?;

    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let ops = ops.lock().unwrap();
    let total: usize = ops.done.values().map(Vec::len).sum();
    let writes: usize = ops.done.iter().filter(|((_, name), _)| is_write(name)).map(|(_, v)| v.len()).sum();
    // Writes to the request's `Requests` document: the collection holds only this request.
    let request_doc_writes: usize = ops
        .done
        .iter()
        .filter(|((collection, name), _)| collection == imgpipe_core::adapters::mongo::REQUESTS && is_write(name))
        .map(|(_, v)| v.len())
        .sum();
    println!(
        "\n{images} images, {workers} concurrent workers, {shards} progress counter(s): {seconds:.1} s, \
         {:.0} images/s; record() p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; {} failed commands",
        images as f64 / seconds,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        ops.failed
    );
    println!("| collection | command | per image | p50 ms | p95 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut rows_json = Vec::new();
    for ((collection, name), durations) in &ops.done {
        let mut d = durations.clone();
        d.sort();
        let per_image = d.len() as f64 / images as f64;
        println!(
            "| {collection} | {name} | {per_image:.3} | {:.1} | {:.1} | {:.1} |",
            percentile(&d, 0.5),
            percentile(&d, 0.95),
            percentile(&d, 0.99)
        );
        rows_json.push(serde_json::json!({
            "collection": collection, "command": name, "perImage": per_image,
            "p50Ms": percentile(&d, 0.5), "p95Ms": percentile(&d, 0.95), "p99Ms": percentile(&d, 0.99),
        }));
    }
    let (busiest, busiest_writes) =
        ops.doc_writes.iter().max_by_key(|(_, n)| **n).map(|(d, n)| (d.clone(), *n)).unwrap_or_default();
    let busiest_collection = busiest.split(' ').next().unwrap_or_default().to_string();
    println!(
        "writes to the request's `Requests` document: {} for {images} images ({:.3} per image); busiest document: \
         {busiest_collection}, {busiest_writes} writes ({:.3} per image)",
        request_doc_writes,
        request_doc_writes as f64 / images as f64,
        busiest_writes as f64 / images as f64
    );
    Ok(serde_json::json!({
        "images": images,
        "workers": workers,
        "shards": shards,
        "seconds": seconds,
        "imagesPerSecond": images as f64 / seconds,
        "recordMsP50": percentile(&latencies, 0.5),
        "recordMsP95": percentile(&latencies, 0.95),
        "recordMsP99": percentile(&latencies, 0.99),
        "mongoOpsPerImage": total as f64 / images as f64,
        "mongoWritesPerImage": writes as f64 / images as f64,
        "requestDocumentWrites": request_doc_writes,
        "busiestDocument": busiest_collection,
        "busiestDocumentWritesPerImage": busiest_writes as f64 / images as f64,
        "ops": rows_json,
    }))
}
