//! `imgpipe-local`: run the three functions on the local stack.
//!
//! ```text
//! imgpipe-local serve        # HTTP API on IMGPIPE_LOCAL_ADDR (127.0.0.1:3000) + IMGPIPE_LOCAL_WORKERS worker loops
//! imgpipe-local provision    # create the buckets and queues named by the configuration
//! imgpipe-local samples DIR  # write the demo's sample images into DIR
//! imgpipe-local token --tenant T [--scope S[,S…]]   # an access token of tenant T (last line of stdout)
//! imgpipe-local client --tenant T [--scope S[,S…]]  # T's OAuth client: IMGPIPE_CLIENT_ID, _SECRET, IMGPIPE_TOKEN_URL
//! imgpipe-local bench-ingest [ROWS] [URLS]  # time the acceptance of a ROWS × URLS CSV (default 10000 × 3)
//! imgpipe-local bench-hotspot [IMAGES] [WORKERS] [SHARDS,…] [JSON]  # MongoDB ops per image under WORKERS
//!                                                                  # concurrent workers (default 2000 80 1,16)
//! ```
//!
//! Scopes are `upload`, `read` and `admin` (or `imgpipe/upload`…); the default is `upload,read`. `token` and `client`
//! register T (its client in `.stack/auth/clients/`, and the `Tenants` collection) if it is new.

use std::net::SocketAddr;
use std::sync::Arc;

use imgpipe_core::adapters::{aws_config, sqs::sqs_client};
use imgpipe_core::auth::{Scope, TenantId};
use imgpipe_core::{App, Config};
use imgpipe_local::issuer::LocalIssuer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}: invalid value `{v}`").into()),
        Err(_) => Ok(default),
    }
}

/// The local issuer: key and clients in `IMGPIPE_LOCAL_AUTH_DIR` (`.stack/auth`), identifier
/// `IMGPIPE_LOCAL_ISSUER` (the runner's URL), audience `IMGPIPE_LOCAL_AUDIENCE` (`imgpipe`).
fn local_issuer() -> Result<LocalIssuer, BoxError> {
    let dir: String = env_or("IMGPIPE_LOCAL_AUTH_DIR", ".stack/auth".to_string())?;
    let addr: String = env_or("IMGPIPE_LOCAL_ADDR", "127.0.0.1:3000".to_string())?;
    let issuer: String = env_or("IMGPIPE_LOCAL_ISSUER", format!("http://{addr}"))?;
    let audience: String = env_or("IMGPIPE_LOCAL_AUDIENCE", "imgpipe".to_string())?;
    LocalIssuer::open(std::path::Path::new(&dir), &issuer, &audience)
        .map_err(|e| format!("local issuer in {dir}: {e}").into())
}

/// `--tenant T [--scope S,…]` of the `token` and `client` commands.
fn tenant_and_scopes(args: &[String]) -> Result<(TenantId, Vec<Scope>), BoxError> {
    let usage = "usage: imgpipe-local token|client --tenant T [--scope upload,read,admin]";
    let value = |flag: &str| args.iter().position(|a| a == flag).map(|i| args.get(i + 1).ok_or(usage)).transpose();
    let tenant = TenantId::parse(value("--tenant")?.ok_or(usage)?)?;
    let scopes = value("--scope")?.map_or("upload,read", String::as_str);
    let scopes = scopes
        .split(',')
        .map(|s| {
            let s = s.trim();
            Scope::ALL
                .into_iter()
                .find(|scope| scope.name() == s || scope.as_str() == s)
                .ok_or_else(|| format!("unknown scope `{s}` (expected upload, read or admin)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tenant, scopes))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    imgpipe_core::telemetry::init();
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if command == "samples" {
        let dir = std::env::args().nth(2).ok_or("usage: imgpipe-local samples DIR")?;
        for name in imgpipe_local::samples::write_demo_images(std::path::Path::new(&dir))? {
            println!("{dir}/{name}");
        }
        return Ok(());
    }
    let config = Config::from_env()?;
    let max_receive: u32 = env_or("IMGPIPE_MAX_RECEIVE_COUNT", 5)?;
    let visibility: u32 = env_or("IMGPIPE_LOCAL_VISIBILITY_TIMEOUT", 30)?;
    match command.as_str() {
        "provision" => {
            imgpipe_local::provision(&config, max_receive, visibility).await?;
            println!(
                "provisioned buckets {} and {}, queue {}",
                config.uploads_bucket, config.outputs_bucket, config.queue_url
            );
            Ok(())
        }
        "serve" => serve(config, max_receive, visibility).await,
        "token" | "client" => {
            let (tenant, scopes) = tenant_and_scopes(&std::env::args().skip(2).collect::<Vec<_>>())?;
            let issuer = local_issuer()?;
            let client = issuer.register(&tenant, &scopes)?;
            if imgpipe_local::tenants::register_tenant(&config, &tenant).await? {
                eprintln!("registered the new tenant {tenant}");
            }
            if command == "client" {
                let addr: String = env_or("IMGPIPE_LOCAL_ADDR", "127.0.0.1:3000".to_string())?;
                println!("IMGPIPE_CLIENT_ID={}", client.client_id);
                println!("IMGPIPE_CLIENT_SECRET={}", client.client_secret);
                println!("IMGPIPE_TOKEN_URL=http://{addr}/oauth2/token");
            } else {
                eprintln!("access token of tenant {tenant}, scopes {:?}, valid for {} s:", client.scopes, imgpipe_local::issuer::TOKEN_LIFETIME_SECS);
                println!("{}", issuer.access_token(&client.client_id, &scopes));
            }
            Ok(())
        }
        "bench-ingest" => {
            let rows: usize = std::env::args().nth(2).map_or(Ok(10_000), |v| v.parse())?;
            let urls: usize = std::env::args().nth(3).map_or(Ok(3), |v| v.parse())?;
            bench_ingest(config, rows, urls).await
        }
        "bench-hotspot" => {
            let arg = |i: usize| std::env::args().nth(i);
            let images: usize = arg(2).map_or(Ok(2_000), |v| v.parse())?;
            let workers: usize = arg(3).map_or(Ok(80), |v| v.parse())?;
            let shards: Vec<u32> =
                arg(4).unwrap_or_else(|| "1,16".into()).split(',').map(str::parse).collect::<Result<_, _>>()?;
            let json = imgpipe_local::hotspot::run(config, images, workers, &shards).await?;
            if let Some(path) = arg(5) {
                std::fs::write(&path, json)?;
                println!("\nfigures written to {path}");
            }
            Ok(())
        }
        other => Err(format!(
            "unknown command `{other}` (expected serve, provision, token, client, samples, bench-ingest or bench-hotspot)"
        )
        .into()),
    }
}

/// Times the acceptance of a `rows` × `urls` CSV through the real upload handler on the configured stack, in a
/// fresh database and queue that are removed afterwards.
async fn bench_ingest(mut config: Config, rows: usize, urls: usize) -> Result<(), BoxError> {
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    config.mongodb_database = format!("bench_ingest_{run}");
    config.queue_url = format!("{}-bench-{run}", config.queue_url);
    config.max_rows = config.max_rows.max(rows);
    config.max_csv_bytes = config.max_csv_bytes.max(rows * urls * 64 + 1024);
    config.queue_url = imgpipe_local::provision(&config, 5, 30).await?;
    let app = App::new(config.clone()).await?;
    let client = mongodb::Client::with_uri_str(config.mongodb_uri.expose()).await?;
    imgpipe_core::adapters::mongo::migrate(&client.database(&config.mongodb_database)).await?;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for r in 1..=rows {
        let list: Vec<String> = (0..urls).map(|i| format!("https://images.example.com/p/{r}/{i}.jpg")).collect();
        csv.push_str(&format!("{r},Product {r},\"{}\"\n", list.join(",")));
    }
    let bytes = csv.len();
    let request = imgpipe_local::bench_upload(&app.config, csv);
    let start = std::time::Instant::now();
    let response = imgpipe_upload::handle(&app, request).await;
    let elapsed = start.elapsed();
    let status = response.status();
    let sqs = sqs_client(&aws_config(&config).await, &config);
    let depth = sqs
        .get_queue_attributes()
        .queue_url(&config.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages).cloned())
        .unwrap_or_default();
    sqs.delete_queue().queue_url(&config.queue_url).send().await?;
    mongodb::Client::with_uri_str(config.mongodb_uri.expose()).await?.database(&config.mongodb_database).drop().await?;
    if status != http::StatusCode::ACCEPTED {
        return Err(format!("upload answered {status}: {:?}", response.body()).into());
    }
    println!(
        "ingest: {rows} rows, {} image URLs, {:.1} MB CSV accepted in {:.2} s ({:.0} images/s); {depth} messages queued; \
         peak RSS of this process {}",
        rows * urls,
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        (rows * urls) as f64 / elapsed.as_secs_f64(),
        imgpipe_core::telemetry::peak_rss_kib().map_or("unknown".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0)),
    );
    Ok(())
}

async fn serve(config: Config, max_receive: u32, visibility: u32) -> Result<(), BoxError> {
    let addr: SocketAddr = env_or("IMGPIPE_LOCAL_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?;
    let workers: usize = env_or("IMGPIPE_LOCAL_WORKERS", 2)?;
    imgpipe_local::provision(&config, max_receive, visibility).await?;
    // Without the drops queue (e.g. an S3 server that cannot notify ElasticMQ) the API and workers still run.
    let drops = imgpipe_local::drops::provision(&config, visibility)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "S3 drops off: the uploads bucket's notification could not be set"))
        .ok();
    let sqs = sqs_client(&aws_config(&config).await, &config);
    let sweep_every = std::time::Duration::from_secs(env_or("IMGPIPE_LOCAL_SWEEP_SECS", 60)?);
    let app = App::new(config).await?;
    let issuer = Arc::new(local_issuer()?);

    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let listener = imgpipe_local::bind(addr).await?;
    tracing::info!(%addr, workers, issuer = issuer.issuer(), "local runner listening");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(imgpipe_local::run_worker(app.clone(), sqs.clone(), shutdown.clone()));
    }
    if workers > 0 {
        tasks.spawn(imgpipe_local::run_webhooks(app.clone(), sqs.clone(), shutdown.clone()));
        if let Some(drops) = drops {
            tasks.spawn(imgpipe_local::drops::run(app.clone(), sqs.clone(), drops, shutdown.clone()));
        }
        let sweeper = imgpipe_local::run_sweeper(app.clone(), sweep_every, shutdown.clone());
        tasks.spawn(async move {
            sweeper.await;
            0
        });
    }
    let api = tokio::spawn(imgpipe_local::serve_api(app, issuer, listener, shutdown));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    stop.send(true)?;
    api.await??;
    while tasks.join_next().await.is_some() {}
    Ok(())
}
