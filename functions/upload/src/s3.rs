//! The bucket trigger: CSVs created under `incoming/{tenant}/` are ingested as that tenant's, and the Lambda event
//! envelope is dispatched. The prefix is trusted because only two kinds of writer reach it: presigned PUTs, whose
//! key the API signed with the caller's tenant, and the deployer's own IAM principals. A tenant must be known
//! (registered by `imgpipe-admin tenant`, or by its first upload or presign) so a mistyped prefix is not a new
//! tenant.

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use imgpipe_core::domain::{INCOMING_PREFIX, dropped_tenant};
use imgpipe_core::ports::Bounded;
use imgpipe_core::{App, Error};
use lambda_http::request::LambdaRequest;
use lambda_http::{Service, service_fn};
use serde_json::Value;

/// Decodes an S3 event key: URL-encoded, with `+` for a space.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Ingests every `ObjectCreated` record for `incoming/{tenant}/*.csv`; others are logged and skipped. An `Err` makes
/// Lambda retry the event, which is safe: a repeated record maps to the same request id and creates nothing twice.
pub async fn handle_s3(app: &App, event: S3Event) -> Result<usize, Error> {
    let mut ingested = 0;
    for record in &event.records {
        if ingest_record(app, record).await? {
            ingested += 1;
        }
    }
    Ok(ingested)
}

async fn ingest_record(app: &App, record: &S3EventRecord) -> Result<bool, Error> {
    let created = record.event_name.as_deref().is_some_and(|n| n.starts_with("ObjectCreated"));
    let (Some(bucket), Some(raw_key)) = (record.s3.bucket.name.as_deref(), record.s3.object.key.as_deref()) else {
        tracing::warn!("S3 record without bucket or key; skipped");
        return Ok(false);
    };
    let key = decode_key(raw_key);
    if !created || !key.starts_with(INCOMING_PREFIX) || !key.to_ascii_lowercase().ends_with(".csv") {
        tracing::info!(bucket, key, event = record.event_name.as_deref(), "not a new incoming CSV; skipped");
        return Ok(false);
    }
    let Some(tenant) = dropped_tenant(&key) else {
        tracing::warn!(bucket, key, "dropped CSV outside incoming/{{tenant}}/; skipped (nobody to bill it to)");
        return Ok(false);
    };
    if app.tenants.get_tenant(&tenant).await?.is_none() {
        tracing::warn!(bucket, key, tenant = %tenant, "dropped CSV of an unknown tenant; skipped");
        return Ok(false);
    }
    let version = record
        .s3
        .object
        .version_id
        .as_deref()
        .filter(|v| !v.is_empty())
        .or(record.s3.object.e_tag.as_deref())
        .unwrap_or_default()
        .to_string();
    // Checked before reading: the size the event gives, then the size S3 reports, then the bytes as they stream
    // (and only while the object is still the one of this event). A refusal is a failed request with its reason,
    // never an error: a retried event would fail the same way and end dead-lettered.
    let max = app.config.max_dropped_csv_bytes as u64;
    let declared = record.s3.object.size.map(|n| n.max(0) as u64);
    let read = match declared {
        Some(size) if size > max => Bounded::TooLarge(size),
        _ => app.blobs.get_bounded(bucket, &key, max, record.s3.object.e_tag.as_deref()).await?,
    };
    let accepted = match read {
        Bounded::Body(csv) => app.ingest().dropped(&tenant, bucket, &key, &version, &csv).await?,
        Bounded::TooLarge(size) => {
            app.ingest().reject_dropped(&tenant, bucket, &key, &version, app.ingest().dropped_too_large(size)).await?
        }
        Bounded::Replaced => {
            let reason = "the object was replaced after this event (its ETag changed); the new file has its own event";
            app.ingest().reject_dropped(&tenant, bucket, &key, &version, reason.into()).await?
        }
        Bounded::Missing => {
            let reason = "the object was deleted before it could be read";
            app.ingest().reject_dropped(&tenant, bucket, &key, &version, reason.into()).await?
        }
    };
    tracing::info!(requestId = %accepted.request_id, status = accepted.status.as_str(), bucket, key, "dropped CSV ingested");
    Ok(true)
}

/// Whether a raw Lambda payload is an S3 notification.
pub fn is_s3_event(payload: &Value) -> bool {
    payload["Records"].as_array().is_some_and(|r| r.iter().any(|rec| rec["eventSource"] == "aws:s3"))
}

/// The function's entry point: an S3 event is ingested; anything else is an API Gateway request.
pub async fn handle_event(app: &App, payload: Value, context: lambda_http::Context) -> Result<Value, Error> {
    if is_s3_event(&payload) {
        let event: S3Event =
            serde_json::from_value(payload).map_err(|e| Error::BadRequest(format!("S3 event: {e}")))?;
        let ingested = handle_s3(app, event).await?;
        return Ok(serde_json::json!({ "ingested": ingested }));
    }
    let request: LambdaRequest =
        serde_json::from_value(payload).map_err(|e| Error::BadRequest(format!("unrecognised event: {e}")))?;
    let mut adapter = lambda_http::Adapter::from(service_fn(|req| async move {
        Ok::<_, std::convert::Infallible>(crate::handle(app, req).await)
    }));
    let response = adapter
        .call(lambda_http::LambdaEvent::new(request, context))
        .await
        .map_err(|e| Error::Corrupt(format!("HTTP adapter: {e}")))?;
    serde_json::to_value(response).map_err(|e| Error::Corrupt(e.to_string()))
}
