//! The HTTP edge's single mapping from [`Error`] to a status code and the one JSON error shape:
//! `{"error": {"code", "message", "details"?, "total"?}}`.

use http::StatusCode;
use serde_json::{Value, json};

use crate::error::Error;

/// Status code and machine-readable code of an error.
pub fn classify(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::InvalidCsv(_) => (StatusCode::BAD_REQUEST, "invalid_csv"),
        Error::InvalidRequestId(_) => (StatusCode::BAD_REQUEST, "invalid_request_id"),
        Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        Error::Disabled(_) => (StatusCode::NOT_FOUND, "disabled"),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        Error::NoRoute(_) => (StatusCode::NOT_FOUND, "no_route"),
        Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Error::NotReady(_) => (StatusCode::CONFLICT, "not_ready"),
        Error::IdempotencyMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        Error::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
        Error::Storage(_) | Error::Queue(_) | Error::Database(_) | Error::Upstream(_) | Error::Injected(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        Error::Corrupt(_) | Error::Config(_) | Error::Startup(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The JSON body of an error response. Internal details of server-side failures are logged, not returned.
pub fn error_body(e: &Error) -> (StatusCode, Value) {
    let (status, code) = classify(e);
    let message = if status.is_server_error() {
        "the service is temporarily unavailable; retry later".to_string()
    } else {
        e.to_string()
    };
    let mut error = json!({"code": code, "message": message});
    if let Error::InvalidCsv(rejection) = e {
        error["details"] = json!(rejection.errors);
        error["total"] = json!(rejection.total);
    }
    (status, json!({ "error": error }))
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> http::Response<String> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .expect("static headers are valid")
}

/// The response for an error, logged once here.
pub fn error_response(e: &Error) -> http::Response<String> {
    let (status, body) = error_body(e);
    if status.is_server_error() {
        tracing::error!(error = %e, "request failed");
    } else {
        tracing::info!(error = %e, status = status.as_u16(), "request rejected");
    }
    let mut response = json_response(status, &body);
    if let Error::QuotaExceeded { retry_after_secs, limit, .. } = e {
        let headers = response.headers_mut();
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(*retry_after_secs));
        headers.insert("imgpipe-quota", http::HeaderValue::from_static(limit));
    }
    if let Error::MethodNotAllowed(allowed) = e {
        response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
    }
    response
}
