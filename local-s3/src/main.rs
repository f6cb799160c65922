//! `imgpipe-local-s3`: the local stack's S3 server (started by `scripts/stack/start.sh`).
//!
//! Objects are files under `--root` (s3s-fs). Every request must be signed with the one key pair it is given
//! (SigV4 in the `Authorization` header or a presigned URL): s3s verifies the signature over the signed headers
//! (so a PUT of another `Content-Length` than the presigned one is refused) and a presigned URL's expiry, as S3
//! does. Bucket notifications go to queues of the SQS server at `--sqs-endpoint` (the stack's ElasticMQ).
//!
//! ```text
//! imgpipe-local-s3 --addr 127.0.0.1:4566 --root .stack/data/s3 --sqs-endpoint http://127.0.0.1:9324
//! ```
//! The key pair is `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, the region `AWS_REGION` (as in `.stack/env`).

mod notify;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "The local stack's S3 server: s3s-fs with SigV4 verification and notifications to SQS")]
struct Args {
    /// Where to listen (loopback only).
    #[arg(long, default_value = "127.0.0.1:4566")]
    addr: SocketAddr,
    /// Directory of the buckets and objects.
    #[arg(long)]
    root: PathBuf,
    /// The SQS server that bucket notifications are sent to.
    #[arg(long, env = "IMGPIPE_SQS_ENDPOINT")]
    sqs_endpoint: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: String,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
}

async fn sqs_client(args: &Args) -> aws_sdk_sqs::Client {
    let credentials =
        aws_sdk_sqs::config::Credentials::new(&args.access_key, &args.secret_key, None, None, "imgpipe-local-s3");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(args.region.clone()))
        .endpoint_url(&args.sqs_endpoint)
        .credentials_provider(credentials)
        .load()
        .await;
    aws_sdk_sqs::Client::new(&sdk)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info,s3s=warn,s3s_fs=warn".into()))
        // Plain text in .stack/logs/local-s3.log; colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        return Err(format!("{}: the local S3 listens on loopback addresses only", args.addr).into());
    }
    std::fs::create_dir_all(&args.root)?;
    let s3 = store::LocalS3 {
        fs: s3s_fs::FileSystem::new(&args.root).map_err(|e| format!("{}: {e:?}", args.root.display()))?,
        notifier: notify::Notifier::new(sqs_client(&args).await, args.region.clone()),
    };
    let mut builder = S3ServiceBuilder::new(s3);
    builder.set_auth(SimpleAuth::from_single(args.access_key.as_str(), args.secret_key.as_str()));
    let service = builder.build();

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    tracing::info!(addr = %args.addr, root = %args.root.display(), sqs = args.sqs_endpoint, "local S3 listening");
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
