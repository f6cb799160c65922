//! The local runner: what API Gateway (with its JWT authorizer), Cognito's token endpoint and the SQS event source
//! mapping do on AWS, done on 127.0.0.1 with the same handler functions and the same event types.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use axum::extract::State;
use axum::response::IntoResponse;
use imgpipe_core::adapters::s3::S3Store;
use imgpipe_core::adapters::{aws_config, sqs::sqs_client};
use imgpipe_core::api::error_response;
use imgpipe_core::{App, Config, Error};
use tokio::sync::watch;

pub mod authorizer;
pub mod cdn;
pub mod drops;
pub mod hotspot;
pub mod issuer;
pub mod samples;
pub mod tenants;
pub mod token_endpoint;

use authorizer::Authorizer;
use issuer::LocalIssuer;

/// Largest request body the local API accepts: API Gateway's payload limit.
pub const API_PAYLOAD_LIMIT: usize = 10 * 1024 * 1024;

/// Largest request line plus headers the local API accepts: API Gateway HTTP API's "total combined size of request
/// line and header values" (10,240 bytes), counted here as the request line plus every header's name and value.
/// (The HTTP server itself refuses more than 100 headers, or about 400 KiB of them, with an empty `431`.)
pub const API_HEADER_LIMIT: usize = 10 * 1024;

/// Routes a request to the function API Gateway would invoke for it.
pub async fn invoke_api(app: &App, req: lambda_http::Request) -> http::Response<lambda_http::Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    if path.ends_with("/uploads") || path.ends_with("/uploads/presign") {
        imgpipe_upload::handle(app, req).await
    } else if path.starts_with("/requests/")
        || path.starts_with("/status/")
        || ["/requests", "/stats", "/webhook-key"].contains(&path.as_str())
    {
        imgpipe_status::handle(app, req).await
    } else {
        error_response(&Error::NoRoute(format!("{} {}", req.method(), req.uri().path()))).map(lambda_http::Body::from)
    }
}

/// A `POST /uploads` of `csv` by the benchmarks' tenant (`bench`, upload scope), as API Gateway passes it on.
/// The tenant benchmarks upload as.
pub fn bench_tenant() -> imgpipe_core::auth::TenantId {
    imgpipe_core::auth::TenantId::parse("bench").expect("a valid tenant id")
}

pub fn bench_upload(config: &Config, csv: String) -> lambda_http::Request {
    let request = http::Request::builder()
        .method("POST")
        .uri("/uploads")
        .header("content-type", "text/csv")
        .body(lambda_http::Body::from(csv))
        .expect("static request parts are valid");
    imgpipe_identity::as_caller(request, &config.tenant_claim, &bench_tenant(), &[imgpipe_core::auth::Scope::Upload])
}

/// The size API Gateway limits: the request line and the headers.
fn head_size(parts: &http::request::Parts) -> usize {
    let request_line = parts.method.as_str().len() + parts.uri.to_string().len() + "  HTTP/1.1".len();
    request_line + parts.headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum::<usize>()
}

fn payload_too_large(limit: usize) -> axum::response::Response {
    let hint = if limit == API_PAYLOAD_LIMIT { " (use POST /uploads/presign for larger files)" } else { "" };
    let e = Error::PayloadTooLarge(format!("request bodies are limited to {limit} bytes{hint}"));
    error_response(&e).into_response()
}

/// Reads the whole body, as API Gateway does before invoking a function, but never more than `limit` bytes:
/// a declared `Content-Length` over it is refused before any byte is read, a longer body as soon as it passes it.
/// A body that ends early (connection closed, broken chunked encoding) is refused, never handed on truncated.
async fn read_body(
    headers: &http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Vec<u8>, axum::response::Response> {
    let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(payload_too_large(limit));
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| {
            let e = Error::BadRequest(format!("the request body could not be read completely: {e}"));
            error_response(&e).into_response()
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(payload_too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// What the local API serves: the functions' app, and the issuer whose tokens it accepts.
#[derive(Clone)]
struct LocalApi {
    app: App,
    issuer: Arc<LocalIssuer>,
    authorizer: Arc<Authorizer>,
    /// The stand-in for the outputs distribution, when the configuration has an output base URL.
    cdn: Option<cdn::Cdn>,
}

/// The issuer's own endpoints (on AWS, Cognito's): its keys, its discovery document and its token endpoint.
async fn issuer_endpoint(
    issuer: &LocalIssuer,
    parts: &http::request::Parts,
    body: axum::body::Body,
) -> axum::response::Response {
    let json = |value: &serde_json::Value| imgpipe_core::api::json_response(http::StatusCode::OK, value);
    let response = match (parts.method.as_str(), parts.uri.path()) {
        ("GET", "/.well-known/jwks.json") => json(&serde_json::to_value(issuer.jwks()).unwrap_or_default()),
        ("GET", "/.well-known/openid-configuration") => {
            let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
            json(&issuer.discovery(&format!("http://{host}")))
        }
        ("POST", "/oauth2/token") => match read_body(&parts.headers, body, token_endpoint::MAX_BODY_BYTES).await {
            Ok(bytes) => token_endpoint::grant(issuer, &parts.headers, &bytes),
            Err(response) => return response,
        },
        (_, path) => error_response(&Error::MethodNotAllowed(if path == "/oauth2/token" { "POST" } else { "GET" })),
    };
    response.into_response()
}

async fn dispatch(State(api): State<LocalApi>, req: axum::extract::Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    if head_size(&parts) > API_HEADER_LIMIT {
        let body = serde_json::json!({"error": {
            "code": "headers_too_large",
            "message": format!("the request line and headers are limited to {API_HEADER_LIMIT} bytes"),
        }});
        let mut response = imgpipe_core::api::json_response(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &body);
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        return response.into_response();
    }
    if matches!(parts.uri.path(), "/oauth2/token" | "/.well-known/jwks.json" | "/.well-known/openid-configuration") {
        return issuer_endpoint(&api.issuer, &parts, body).await;
    }
    if let Some(cdn) = api.cdn.as_ref().filter(|_| parts.uri.path().starts_with(cdn::PREFIX)) {
        return cdn.serve(&parts.method, parts.uri.path()).await;
    }
    // API Gateway runs the authorizer before it reads on: a refused request's body is never read.
    let authorization = parts.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    let jwt = match api.authorizer.authorize(parts.method.as_str(), parts.uri.path(), authorization) {
        Ok(jwt) => jwt,
        Err(denied) => return denied.response().into_response(),
    };
    let bytes = match read_body(&parts.headers, body, API_PAYLOAD_LIMIT).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let mut request = http::Request::from_parts(parts, lambda_http::Body::from(bytes));
    if let Some(jwt) = jwt {
        request = imgpipe_identity::with_jwt(request, jwt.claims, jwt.scopes);
    }
    let response = invoke_api(&api.app, request).await;
    let (parts, body) = response.into_parts();
    let body = match body {
        lambda_http::Body::Empty => axum::body::Body::empty(),
        lambda_http::Body::Text(t) => axum::body::Body::from(t),
        lambda_http::Body::Binary(b) => axum::body::Body::from(b),
        _ => axum::body::Body::empty(),
    };
    axum::response::Response::from_parts(parts, body)
}

/// Serves the HTTP API on `listener` until `shutdown` turns true, accepting the tokens of `issuer` (and serving
/// its endpoints), and with an output base URL configured the outputs bucket under `/cdn/` ([`cdn`]).
pub async fn serve_api(
    app: App,
    issuer: Arc<LocalIssuer>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let authorizer = Arc::new(issuer.authorizer());
    let cdn = match app.config.output_base_url {
        Some(_) => Some(cdn::Cdn::new(&app.config).await),
        None => None,
    };
    let router = axum::Router::new().fallback(dispatch).with_state(LocalApi { app, issuer, authorizer, cdn });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// Binds `addr` (loopback only unless told otherwise).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// The event record of a received message, as the event source mapping builds it.
pub fn to_event_message(m: &aws_sdk_sqs::types::Message, queue_arn: &str) -> SqsMessage {
    let attributes: HashMap<String, String> = m
        .attributes()
        .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
        .unwrap_or_default();
    let mut message = SqsMessage::default();
    message.message_id = m.message_id().map(str::to_string);
    message.receipt_handle = m.receipt_handle().map(str::to_string);
    message.body = m.body().map(str::to_string);
    message.md5_of_body = m.md5_of_body().map(str::to_string);
    message.attributes = attributes;
    message.event_source = Some("aws:sqs".into());
    message.event_source_arn = Some(queue_arn.to_string());
    message
}

/// An `SqsEvent` carrying `records`, as the event source mapping builds it.
pub fn sqs_event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// A function invoked by an SQS event source mapping.
pub type SqsHandler =
    for<'a> fn(&'a App, SqsEvent) -> futures::future::BoxFuture<'a, aws_lambda_events::event::sqs::SqsBatchResponse>;

/// The worker function, as the image queue's event source mapping invokes it.
pub fn worker_handler<'a>(
    app: &'a App,
    event: SqsEvent,
) -> futures::future::BoxFuture<'a, aws_lambda_events::event::sqs::SqsBatchResponse> {
    Box::pin(imgpipe_worker::handle(app, event))
}

/// The webhook delivery function, as the webhook queue's event source mapping invokes it.
pub fn webhook_handler<'a>(
    app: &'a App,
    event: SqsEvent,
) -> futures::future::BoxFuture<'a, aws_lambda_events::event::sqs::SqsBatchResponse> {
    Box::pin(imgpipe_webhook::handle(app, event))
}

/// What the image queue's event source mapping does (see [`run_queue`]). Returns how many batches it ran.
pub async fn run_worker(app: App, sqs: aws_sdk_sqs::Client, shutdown: watch::Receiver<bool>) -> usize {
    let queue_url = app.config.queue_url.clone();
    run_queue(app, sqs, queue_url, worker_handler, shutdown).await
}

/// What an SQS event source mapping does: long-poll a batch of `queue_url`, invoke `handler` with an `SqsEvent`,
/// and delete only the messages it did not report in `batchItemFailures`. Returns how many batches it ran.
pub async fn run_queue(
    app: App,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    handler: SqsHandler,
    mut shutdown: watch::Receiver<bool>,
) -> usize {
    let queue_arn = format!("arn:aws:sqs:{}:000000000000:{}", app.config.region, queue_name(&queue_url));
    let mut batches = 0;
    while !*shutdown.borrow() {
        let receive = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send();
        let out = tokio::select! {
            out = receive => out,
            _ = shutdown.changed() => break,
        };
        let messages = match out {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "ReceiveMessage failed");
                // Back off before polling a failing server again (a pause, not a wait for a condition).
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        batches += 1;
        let event = sqs_event(messages.iter().map(|m| to_event_message(m, &queue_arn)).collect());
        let response = handler(&app, event).await;
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !failed.contains(&m.message_id().unwrap_or_default()))
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty()
            && let Err(e) = sqs.delete_message_batch().queue_url(&queue_url).set_entries(Some(entries)).send().await
        {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "DeleteMessageBatch failed");
        }
    }
    batches
}

/// What the webhook queue's event source mapping does (see [`run_queue`]); nothing without a webhook queue.
pub async fn run_webhooks(app: App, sqs: aws_sdk_sqs::Client, shutdown: watch::Receiver<bool>) -> usize {
    match app.config.webhook_queue_url.clone() {
        Some(url) => run_queue(app, sqs, url, webhook_handler, shutdown).await,
        None => 0,
    }
}

/// What the sweeper's schedule does: one sweep every `every`, until `shutdown` turns true.
pub async fn run_sweeper(app: App, every: std::time::Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = imgpipe_sweeper::handle(&app).await {
            tracing::warn!(error = %e, "sweep failed");
        }
    }
}

/// The queue name: the last segment of its URL.
pub fn queue_name(queue_url: &str) -> &str {
    queue_url.trim_end_matches('/').rsplit('/').next().unwrap_or(queue_url)
}

/// Local provisioning of what `template.yaml` creates on AWS: both buckets, the image queue and its
/// dead-letter queue (redrive after `max_receive_count` receives), and the webhook queue with its own
/// dead-letter queue when one is configured. Idempotent. Returns the image queue's URL as the server reports it.
pub async fn provision(config: &Config, max_receive_count: u32, visibility_timeout_secs: u32) -> Result<String, Error> {
    let sdk = aws_config(config).await;
    let s3 = S3Store::new(&sdk, config);
    s3.ensure_bucket(&config.uploads_bucket).await?;
    s3.ensure_bucket(&config.outputs_bucket).await?;
    let sqs = sqs_client(&sdk, config);
    if let Some(url) = &config.webhook_queue_url {
        // Deliveries retry until the horizon, one receive per attempt: the dead-letter queue is for messages
        // that cannot be read, so its receive count is far above the attempts.
        create_queue_with_dlq(&sqs, queue_name(url), WEBHOOK_MAX_RECEIVE_COUNT, visibility_timeout_secs).await?;
    }
    create_queue_with_dlq(&sqs, queue_name(&config.queue_url), max_receive_count, visibility_timeout_secs).await
}

/// The webhook queue's receive count before its dead-letter queue (as in `template.yaml`).
pub const WEBHOOK_MAX_RECEIVE_COUNT: u32 = 100;

pub(crate) async fn create_queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
    visibility_timeout_secs: u32,
) -> Result<String, Error> {
    let q = |e: &dyn std::fmt::Display| Error::Queue(e.to_string());
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .map_err(|e| q(&aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    let dlq_url = dlq.queue_url().unwrap_or_default().to_string();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| q(&aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| Error::Queue("dead-letter queue has no ARN".into()))?;
    let redrive = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count.to_string()});
    let queue = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(QueueAttributeName::VisibilityTimeout, visibility_timeout_secs.to_string())
        .send()
        .await
        .map_err(|e| q(&aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    queue.queue_url().map(str::to_string).ok_or_else(|| Error::Queue(format!("queue {name} has no URL")))
}
