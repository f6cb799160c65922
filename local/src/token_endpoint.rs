//! `POST /oauth2/token` of the local issuer: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4), as Cognito's
//! token endpoint serves it. The client authenticates with HTTP Basic (`client_id:client_secret`) or with
//! `client_id` and `client_secret` form fields; `scope` (space-separated) may narrow what it is granted.
//! Errors are RFC 6749 §5.2's `{"error": …, "error_description": …}`.

use http::{HeaderMap, HeaderValue, StatusCode, header};
use imgpipe_core::auth::Scope;
use serde_json::{Value, json};

use crate::issuer::{LocalIssuer, TOKEN_LIFETIME_SECS};

/// Largest request body read: a grant is a few short form fields.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    basic_challenge: bool,
}

fn bad(error: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError { status: StatusCode::BAD_REQUEST, error, description: description.into(), basic_challenge: false }
}

fn invalid_client(basic: bool) -> OAuthError {
    OAuthError {
        status: StatusCode::UNAUTHORIZED,
        error: "invalid_client",
        description: "unknown client or wrong secret".into(),
        basic_challenge: basic,
    }
}

fn response(status: StatusCode, body: &Value) -> http::Response<String> {
    let mut response = imgpipe_core::api::json_response(status, body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Answers one token request.
pub fn grant(issuer: &LocalIssuer, headers: &HeaderMap, body: &[u8]) -> http::Response<String> {
    match try_grant(issuer, headers, body) {
        Ok(body) => response(StatusCode::OK, &body),
        Err(e) => {
            tracing::info!(error = e.error, description = %e.description, "token request refused");
            let mut r = response(e.status, &json!({"error": e.error, "error_description": e.description}));
            if e.basic_challenge {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"imgpipe\""));
            }
            r
        }
    }
}

/// The client id and secret of an `Authorization: Basic …` header (each form-urlencoded, RFC 6749 §2.3.1).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    let unescape = |s: &str| form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((unescape(id)?, unescape(secret)?))
}

fn try_grant(issuer: &LocalIssuer, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return Err(bad("invalid_request", "send the grant as application/x-www-form-urlencoded"));
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| -> Result<Option<&str>, OAuthError> {
        let mut values = form.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(bad("invalid_request", format!("`{name}` given more than once")));
        }
        Ok(first)
    };
    match field("grant_type")? {
        Some("client_credentials") => {}
        Some(other) => return Err(bad("unsupported_grant_type", format!("`{other}`: only client_credentials"))),
        None => return Err(bad("invalid_request", "`grant_type` is missing")),
    }
    let basic = headers.get(header::AUTHORIZATION);
    let (client_id, secret) = match (basic, field("client_id")?, field("client_secret")?) {
        (Some(value), None, None) => basic_credentials(value).ok_or_else(|| invalid_client(true))?,
        (None, Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
        (Some(_), _, _) => return Err(bad("invalid_request", "authenticate with Basic or with form fields, not both")),
        (None, _, _) => return Err(invalid_client(false)),
    };
    let client = issuer
        .client(&client_id)
        .map_err(|e| OAuthError { status: StatusCode::INTERNAL_SERVER_ERROR, ..bad("server_error", e.to_string()) })?
        .filter(|c| {
            aws_lc_rs::constant_time::verify_slices_are_equal(c.client_secret.as_bytes(), secret.as_bytes()).is_ok()
        })
        .ok_or_else(|| invalid_client(basic.is_some()))?;
    let requested: Vec<&str> = match field("scope")? {
        Some(scope) => scope.split_whitespace().collect(),
        None => client.scopes.iter().map(String::as_str).collect(),
    };
    let mut scopes = Vec::new();
    for name in requested {
        match Scope::parse(name).filter(|_| client.scopes.iter().any(|s| s == name)) {
            Some(scope) => scopes.push(scope),
            None => return Err(bad("invalid_scope", format!("`{name}` is not granted to client `{client_id}`"))),
        }
    }
    Ok(json!({
        "access_token": issuer.access_token(&client.client_id, &scopes),
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
    }))
}
