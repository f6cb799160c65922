//! `imgpipe`: the command-line client of the imgpipe HTTP API (see `openapi.yaml` and `docs/cli.md`).
//!
//! ```text
//! imgpipe submit products.csv [--webhook URL] [--wait] [--out result.csv] [--idempotency-key K]
//! imgpipe status <requestId> [--json]
//! imgpipe download <requestId> [-o file]
//! ```
//!
//! Every call carries an access token: `--token` / `IMGPIPE_TOKEN`, or one fetched (and cached) with the
//! client-credentials grant from `--token-url` for `--client-id`, the secret in `IMGPIPE_CLIENT_SECRET`.
//!
//! Exit codes: 0 success (with `--wait`: the request completed), 1 the request failed (some image failed, or its
//! CSV was rejected at ingestion), 2 usage error, rejected call (4xx/5xx), no connection or `--wait` timeout,
//! 130 interrupted while waiting.

mod api;
mod progress;
mod token;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use api::{Api, CliError, Status};
use progress::Progress;

/// API Gateway's payload limit: larger files go through `POST /uploads/presign`.
const API_PAYLOAD_LIMIT: u64 = 10 * 1024 * 1024;
/// Consecutive failed polls (no connection, 5xx) tolerated while waiting.
const MAX_POLL_RETRIES: u32 = 5;

const EXIT_COMPLETED: u8 = 0;
const EXIT_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(name = "imgpipe", version, about = "Submit product CSVs to imgpipe, follow them and download the results")]
#[command(
    after_help = "Exit codes: 0 success (completed with --wait), 1 request failed, 2 usage, API or connection error."
)]
struct Cli {
    /// Base URL of the imgpipe HTTP API.
    #[arg(
        long,
        global = true,
        env = "IMGPIPE_API_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:3000",
        value_name = "URL"
    )]
    api_url: String,
    /// Access token sent as `Authorization: Bearer …` (or fetch one with --token-url and --client-id).
    #[arg(
        long,
        global = true,
        env = "IMGPIPE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "token_url"
    )]
    token: Option<String>,
    /// OAuth token endpoint to fetch a token from with the client-credentials grant (the secret is read from
    /// IMGPIPE_CLIENT_SECRET, never from a flag); tokens are cached until they expire.
    #[arg(long, global = true, env = "IMGPIPE_TOKEN_URL", value_name = "URL", requires = "client_id")]
    token_url: Option<String>,
    /// OAuth client id for --token-url.
    #[arg(long, global = true, env = "IMGPIPE_CLIENT_ID", value_name = "ID", requires = "token_url")]
    client_id: Option<String>,
    /// Scopes to ask --token-url for, comma- or space-separated [default: all the client may have].
    #[arg(long, global = true, env = "IMGPIPE_SCOPE", value_name = "SCOPES", requires = "token_url")]
    scope: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload a CSV (S. No., Product Name, Input Image Urls) and print its request id.
    Submit(SubmitArgs),
    /// Show a request's progress: status, counts, dates and errors.
    Status {
        /// The request id printed by `submit`.
        request_id: String,
        /// Print the API's JSON answer (first page of rows) instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Download a finished request's output CSV.
    Download {
        /// The request id printed by `submit`.
        request_id: String,
        /// Where to write it (`-` for stdout) [default: <requestId>.csv].
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct SubmitArgs {
    /// The CSV file to upload.
    file: PathBuf,
    /// URL the service POSTs a signed summary to when the request finishes.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// Follow the request with a progress display until it finishes, then download the output CSV.
    #[arg(long)]
    wait: bool,
    /// Where --wait writes the output CSV (`-` for stdout) [default: <requestId>.csv].
    #[arg(short, long, value_name = "FILE", requires = "wait")]
    out: Option<PathBuf>,
    /// Idempotency-Key header: a retried submit with the same key and file returns the same request.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Files larger than this go through a presigned upload URL instead of the API body.
    #[arg(long, value_name = "BYTES", default_value_t = API_PAYLOAD_LIMIT)]
    presign_over: u64,
    /// How often --wait polls the request.
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    interval_ms: u64,
    /// Give up waiting after this many seconds (exit code 2; the request keeps running) [default: no limit].
    #[arg(long, value_name = "SECS", requires = "wait")]
    timeout_secs: Option<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's code); --help and --version with 0.
    let cli = Cli::parse();
    let result = match connect(&cli).await {
        Ok(api) => run(&api, cli.command).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The API client, with the token its calls carry.
async fn connect(cli: &Cli) -> Result<Api, CliError> {
    let mut api = Api::new(&cli.api_url)?;
    let token = match (&cli.token, &cli.token_url, &cli.client_id) {
        (Some(token), _, _) => Some(token.clone()),
        (None, Some(token_url), Some(client_id)) => {
            let secret = std::env::var("IMGPIPE_CLIENT_SECRET").ok().filter(|s| !s.is_empty()).ok_or_else(|| {
                CliError::other("--client-id: set the client's secret in IMGPIPE_CLIENT_SECRET (it is never a flag)")
            })?;
            let credentials = token::ClientCredentials {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                secret,
                scope: cli
                    .scope
                    .as_ref()
                    .map(|s| s.split([',', ' ']).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")),
            };
            Some(credentials.token(api.http()).await?)
        }
        _ => None,
    };
    api.set_token(token);
    Ok(api)
}

async fn run(api: &Api, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Submit(args) => submit(api, args).await,
        Command::Status { request_id, json } => status(api, &request_id, json).await,
        Command::Download { request_id, out } => {
            let out = out.unwrap_or_else(|| default_out(&request_id));
            download(api, &request_id, &out).await?;
            Ok(EXIT_COMPLETED)
        }
    }
}

fn default_out(request_id: &str) -> PathBuf {
    PathBuf::from(format!("{request_id}.csv"))
}

async fn submit(api: &Api, args: SubmitArgs) -> Result<u8, CliError> {
    let path = args.file.display().to_string();
    let csv = std::fs::read(&args.file).map_err(|e| CliError::other(format!("cannot read {path}: {e}")))?;
    let size = csv.len() as u64;
    let (request_id, presigned) = if size > args.presign_over {
        let presigned = api.presign(size).await?;
        if let Some(max) = presigned.max_bytes
            && size > max
        {
            return Err(CliError::other(format!(
                "{path} is {size} bytes; the API ingests files of at most {max} bytes"
            )));
        }
        if args.webhook.is_some() || args.idempotency_key.is_some() {
            eprintln!(
                "warning: {path} is over {} bytes and goes through a presigned upload, which takes no \
                 --webhook or --idempotency-key; they are ignored",
                args.presign_over
            );
        }
        api.put_presigned(&presigned, csv).await?;
        eprintln!(
            "uploaded {size} bytes through a presigned URL ({}); processing starts once the file is ingested",
            presigned.key
        );
        (presigned.request_id, true)
    } else {
        let accepted = api.upload(csv, args.webhook.as_deref(), args.idempotency_key.as_deref()).await?;
        eprintln!(
            "accepted: {} products, {} images ({})",
            accepted.total_products, accepted.total_images, accepted.status
        );
        (accepted.request_id, false)
    };
    println!("{request_id}");
    if !args.wait {
        eprintln!("follow it with: imgpipe status {request_id}");
        return Ok(EXIT_COMPLETED);
    }

    let interval = Duration::from_millis(args.interval_ms);
    let timeout = args.timeout_secs.map(Duration::from_secs);
    let status = tokio::select! {
        status = wait(api, &request_id, presigned, interval, timeout) => status?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted; request {request_id} keeps running: imgpipe status {request_id}");
            return Ok(EXIT_INTERRUPTED);
        }
    };

    if status.output_csv_url.is_some() {
        let out = args.out.unwrap_or_else(|| default_out(&request_id));
        download(api, &request_id, &out).await?;
    }
    if status.status == "completed" {
        return Ok(EXIT_COMPLETED);
    }
    if !status.errors.is_empty() {
        let mut text = String::new();
        let _ = api::write_row_errors(&mut text, &status.errors, status.error_total);
        eprintln!("error: request {request_id} failed: its CSV was rejected at ingestion\n{}", text.trim_end());
    } else {
        eprintln!(
            "error: request {request_id} failed: {} of {} images failed (see the Errors column of the output CSV, \
             or `imgpipe status {request_id}`)",
            status.counts.failed, status.counts.images
        );
    }
    Ok(EXIT_FAILED)
}

/// Polls `GET /requests/{id}?limit=1` until the request is final, showing progress. A presigned upload's request
/// does not exist until the file is ingested, so its `404`s mean "not yet".
async fn wait(
    api: &Api,
    request_id: &str,
    presigned: bool,
    interval: Duration,
    timeout: Option<Duration>,
) -> Result<Status, CliError> {
    let mut progress = Progress::new(std::io::stdout().is_terminal());
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut failures = 0;
    let mut last: Option<Status> = None;
    loop {
        match api.status(request_id, Some(1)).await {
            Ok(status) => {
                failures = 0;
                progress.update(&status);
                if status.is_final() {
                    progress.finish(&status);
                    return Ok(status);
                }
                last = Some(status);
            }
            Err(e) if presigned && last.is_none() && e.status() == Some(404) => {
                progress.note("waiting for the uploaded file to be ingested");
            }
            Err(e) if e.is_transient() && failures < MAX_POLL_RETRIES => {
                failures += 1;
                progress.note(&format!("retrying ({failures}/{MAX_POLL_RETRIES}): {}", first_line(&e.to_string())));
            }
            Err(e) => {
                progress.clear();
                return Err(e);
            }
        }
        let pause = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    progress.clear();
                    let state = last
                        .map(|s| format!("{} {}/{} images", s.status, s.counts.processed, s.counts.images))
                        .unwrap_or_else(|| "not started".into());
                    return Err(CliError::other(format!(
                        "timed out after {}s waiting for request {request_id} (last seen: {state}); it keeps \
                         running: imgpipe status {request_id}",
                        timeout.unwrap_or_default().as_secs()
                    )));
                }
                interval.min(left)
            }
            None => interval,
        };
        tokio::time::sleep(pause).await;
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

async fn status(api: &Api, request_id: &str, json: bool) -> Result<u8, CliError> {
    let value = api.status_json(request_id, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string()));
        return Ok(EXIT_COMPLETED);
    }
    let s: Status = serde_json::from_value(value)
        .map_err(|e| CliError::other(format!("GET /requests/{request_id}: unexpected answer from the API: {e}")))?;
    print!("{}", summary(&s));
    Ok(EXIT_COMPLETED)
}

/// The human summary of `imgpipe status`.
fn summary(s: &Status) -> String {
    use std::fmt::Write as _;
    let c = &s.counts;
    let mut out = String::new();
    let _ = writeln!(out, "request    {}", s.request_id);
    let _ = writeln!(out, "status     {}", s.status);
    let _ = writeln!(
        out,
        "images     {}/{} processed ({:.1}%): {} succeeded, {} failed",
        c.processed, c.images, s.percent_complete, c.succeeded, c.failed
    );
    let _ = writeln!(out, "products   {}", c.products);
    let _ = writeln!(out, "created    {}", s.created_at);
    let _ = writeln!(out, "completed  {}", s.completed_at.as_deref().unwrap_or("-"));
    if s.output_csv_url.is_some() {
        let _ = writeln!(out, "output     imgpipe download {}", s.request_id);
    }
    if !s.errors.is_empty() {
        let total = s.error_total.unwrap_or(s.errors.len() as u64);
        let _ = writeln!(out, "ingestion failed: the CSV has {total} error(s)");
        let _ = api::write_row_errors(&mut out, &s.errors, s.error_total);
    }
    const SHOWN: usize = 20;
    let failed: Vec<String> = s
        .rows
        .iter()
        .flat_map(|row| {
            row.images.iter().enumerate().filter(|(_, i)| i.state == "failed").map(move |(n, image)| {
                format!(
                    "  row {} ({}) image {} {}: {}",
                    row.serial_number,
                    row.product_name,
                    n + 1,
                    image.input_url,
                    image.error.as_deref().unwrap_or("failed")
                )
            })
        })
        .collect();
    if !failed.is_empty() {
        let scope = if s.next_cursor.is_some() { " (in the first page of rows)" } else { "" };
        let _ = writeln!(out, "failed images{scope}:");
        for line in failed.iter().take(SHOWN) {
            let _ = writeln!(out, "{line}");
        }
        if failed.len() > SHOWN {
            let _ = writeln!(out, "  … and {} more (see the output CSV's Errors column)", failed.len() - SHOWN);
        }
    }
    out
}

async fn download(api: &Api, request_id: &str, out: &Path) -> Result<(), CliError> {
    let csv = api.output_csv(request_id).await?;
    if out == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        return stdout
            .write_all(&csv)
            .and_then(|_| stdout.flush())
            .map_err(|e| CliError::other(format!("cannot write the output CSV to stdout: {e}")));
    }
    write_file(out, &csv)?;
    println!("output CSV written to {} ({} bytes)", out.display(), csv.len());
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, so a failed download leaves no half file.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    let fail = |e: std::io::Error| CliError::other(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}
