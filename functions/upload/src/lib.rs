//! Upload function: `POST /uploads` with a CSV body (`text/csv`) or a multipart form field `file`.

use bytes::Bytes;
use imgpipe_core::api::{error_response, json_response};
use imgpipe_core::service::ingest::{Accepted, ingest_csv};
use imgpipe_core::{App, Error};
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// Handles one API Gateway request. Every outcome, including errors, is an HTTP response.
pub async fn handle(app: &App, req: Request) -> Response<Body> {
    match upload(app, &req).await {
        Ok(accepted) => {
            let status_path = format!("/requests/{}", accepted.request_id);
            let status_url = match &app.config.api_base_url {
                Some(base) => format!("{}{status_path}", base.trim_end_matches('/')),
                None => status_path,
            };
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

async fn upload(app: &App, req: &Request) -> Result<Accepted, Error> {
    if req.method() != Method::POST || !req.uri().path().trim_end_matches('/').ends_with("/uploads") {
        return Err(Error::NoRoute(format!("{} {}", req.method(), req.uri().path())));
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let body: &[u8] = req.body().as_ref();
    if body.len() > app.config.max_csv_bytes.saturating_add(64 * 1024) {
        return Err(too_large(body.len(), app.config.max_csv_bytes));
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
    ingest_csv(app, &csv).await
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
