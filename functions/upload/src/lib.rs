//! Upload function:
//! - `POST /uploads` with a CSV body (`text/csv`) or a multipart form field `file`, optional `Idempotency-Key`;
//! - `POST /uploads/presign` with `{"size": N}` (bytes): a presigned PUT URL for exactly N bytes into the uploads
//!   bucket's `incoming/{tenant}/` prefix, for large files;
//! - S3 `ObjectCreated` events for `incoming/{tenant}/*.csv`.
//!
//! One Lambda function serves the API and the bucket trigger: [`handle_event`] tells the two payloads apart.
//! API requests carry the caller's identity (`imgpipe_identity`); bucket events have none.

pub mod s3;

use bytes::Bytes;
use imgpipe_core::api::{error_response, json_response};
use imgpipe_core::auth::Identity;
use imgpipe_core::domain::{ImageUrl, RequestId, RequestKey};
use imgpipe_core::service::ingest::Accepted;
use imgpipe_core::{App, Error};
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// The URL of a request's status.
fn status_url(app: &App, id: &imgpipe_core::domain::RequestId) -> String {
    app.urls().api(&format!("/requests/{id}"))
}

/// Handles one API Gateway request. Every outcome, including errors, is an HTTP response.
pub async fn handle(app: &App, req: Request) -> Response<Body> {
    let identity = match imgpipe_identity::authorize(&req, &app.config.tenant_claim) {
        Ok(identity) => identity,
        Err(denied) => return denied.response().map(Body::from),
    };
    let path = req.uri().path().trim_end_matches('/');
    if path.ends_with("/uploads/presign") {
        return match presign(app, &req, &identity).await {
            Ok(body) => json_response(StatusCode::OK, &body).map(Body::from),
            Err(e) => error_response(&e).map(Body::from),
        };
    }
    match upload(app, &req, &identity).await {
        Ok(accepted) => {
            let status_url = status_url(app, &accepted.request_id);
            let body = json!({
                "requestId": accepted.request_id,
                "status": accepted.status,
                "statusUrl": status_url,
                "totalProducts": accepted.total_products,
                "totalImages": accepted.total_images,
            });
            let mut response = json_response(StatusCode::ACCEPTED, &body);
            response.headers_mut().insert(header::LOCATION, status_url.parse().expect("ASCII URL"));
            response.map(Body::from)
        }
        Err(e) => error_response(&e).map(Body::from),
    }
}

async fn upload(app: &App, req: &Request, identity: &Identity) -> Result<Accepted, Error> {
    if !req.uri().path().trim_end_matches('/').ends_with("/uploads") {
        return Err(Error::NoRoute(format!("{} {}", req.method(), req.uri().path())));
    }
    if req.method() != Method::POST {
        return Err(Error::MethodNotAllowed("POST"));
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let body: &[u8] = req.body().as_ref();
    if body.len() > app.config.max_csv_bytes.saturating_add(64 * 1024) {
        return Err(too_large(body.len(), app.config.max_csv_bytes));
    }
    // API Gateway does not decode request bodies: a compressed CSV would be read as garbage.
    if let Some(encoding) = req.headers().get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("?").trim();
        if !encoding.is_empty() && !encoding.eq_ignore_ascii_case("identity") {
            return Err(Error::UnsupportedMediaType(format!(
                "Content-Encoding `{encoding}` is not accepted: send the CSV uncompressed"
            )));
        }
    }
    let csv = match mime.as_str() {
        "text/csv" | "application/csv" | "text/plain" => Bytes::copy_from_slice(body),
        "multipart/form-data" => multipart_file(content_type, body, app.config.max_csv_bytes).await?,
        _ => {
            return Err(Error::UnsupportedMediaType(format!(
                "Content-Type `{content_type}` is not accepted: send text/csv or multipart/form-data with a `file` field"
            )));
        }
    };
    let idempotency_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().map_err(|_| Error::BadRequest("Idempotency-Key must be visible ASCII".into()))?.trim();
            if key.is_empty() || key.len() > 255 {
                return Err(Error::BadRequest("Idempotency-Key must be 1 to 255 characters".into()));
            }
            Some(key.to_string())
        }
    };
    let webhook = query_param(req, "webhook")
        .map(|w| ImageUrl::parse(&w).map_err(|e| Error::BadRequest(format!("webhook: {e}"))))
        .transpose()?;
    app.ingest().upload(&identity.tenant, &csv, idempotency_key.as_deref(), webhook).await
}

/// The body of `POST /uploads/presign`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PresignRequest {
    /// The file's size in bytes: signed into the URL, so S3 refuses a PUT of any other size.
    size: u64,
}

/// `POST /uploads/presign`: where to PUT a CSV too large for the API; it is ingested when it lands. The size is
/// declared first and refused over `IMGPIPE_MAX_DROPPED_CSV_BYTES`, before any byte is uploaded.
async fn presign(app: &App, req: &Request, identity: &Identity) -> Result<serde_json::Value, Error> {
    if req.method() != Method::POST {
        return Err(Error::MethodNotAllowed("POST"));
    }
    let body: PresignRequest = serde_json::from_slice(req.body().as_ref())
        .map_err(|e| Error::BadRequest(format!("expected a JSON body {{\"size\": <bytes of the CSV>}}: {e}")))?;
    let max = app.config.max_dropped_csv_bytes as u64;
    if body.size == 0 {
        return Err(Error::BadRequest("size must be at least 1 byte".into()));
    }
    if body.size > max {
        return Err(Error::PayloadTooLarge(format!("the file is {} bytes; the limit is {max} bytes", body.size)));
    }
    app.ingest().check_presign(&identity.tenant).await?;
    let request = RequestKey::new(&identity.tenant, &RequestId::new());
    let key = imgpipe_core::domain::presigned_upload_key(&request);
    let id = request.id;
    let expires_in = app.config.url_expiry_secs;
    let url = app
        .blobs
        .presign_put(
            &app.config.uploads_bucket,
            &key,
            "text/csv",
            body.size,
            std::time::Duration::from_secs(expires_in),
        )
        .await?;
    Ok(json!({
        "requestId": id,
        "uploadUrl": url,
        "method": "PUT",
        "headers": {"Content-Type": "text/csv", "Content-Length": body.size.to_string()},
        "key": key,
        "expiresIn": expires_in,
        "maxBytes": app.config.max_dropped_csv_bytes,
        "statusUrl": status_url(app, &id),
    }))
}

fn query_param(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn too_large(len: usize, max: usize) -> Error {
    Error::PayloadTooLarge(format!(
        "the body is {len} bytes; the limit is {max} bytes (use POST /uploads/presign for larger files)"
    ))
}

/// The bytes of the form field `file`.
async fn multipart_file(content_type: &str, body: &[u8], max: usize) -> Result<Bytes, Error> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| Error::BadRequest(format!("invalid multipart Content-Type: {e}")))?;
    let stream =
        futures::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(body))));
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("file", max as u64));
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => {
                return field.bytes().await.map_err(|e| match e {
                    multer::Error::FieldSizeExceeded { .. } => too_large(body.len(), max),
                    e => Error::BadRequest(format!("invalid multipart body: {e}")),
                });
            }
            Ok(Some(_)) => continue,
            Ok(None) => {
                return Err(Error::BadRequest("the multipart form has no `file` field".into()));
            }
            Err(e) => return Err(Error::BadRequest(format!("invalid multipart body: {e}"))),
        }
    }
}
