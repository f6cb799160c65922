//! `imgpipe-local`: run the three functions on the local stack.
//!
//! ```text
//! imgpipe-local serve        # HTTP API on IMGPIPE_LOCAL_ADDR (127.0.0.1:3000) + IMGPIPE_LOCAL_WORKERS worker loops
//! imgpipe-local provision    # create the buckets and queues named by the configuration
//! imgpipe-local samples DIR  # write the demo's sample images into DIR
//! ```

use std::net::SocketAddr;

use imgpipe_core::adapters::{aws_config, sqs::sqs_client};
use imgpipe_core::{App, Config};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}: invalid value `{v}`").into()),
        Err(_) => Ok(default),
    }
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
        other => Err(format!("unknown command `{other}` (expected `serve` or `provision`)").into()),
    }
}

async fn serve(config: Config, max_receive: u32, visibility: u32) -> Result<(), BoxError> {
    let addr: SocketAddr = env_or("IMGPIPE_LOCAL_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?;
    let workers: usize = env_or("IMGPIPE_LOCAL_WORKERS", 2)?;
    imgpipe_local::provision(&config, max_receive, visibility).await?;
    let sqs = sqs_client(&aws_config(&config).await, &config);
    let app = App::new(config).await?;
    app.repo.ensure_indexes().await?;

    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let listener = imgpipe_local::bind(addr).await?;
    tracing::info!(%addr, workers, "local runner listening");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(imgpipe_local::run_worker(app.clone(), sqs.clone(), shutdown.clone()));
    }
    let api = tokio::spawn(imgpipe_local::serve_api(app, listener, shutdown));
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
