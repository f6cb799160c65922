//! Who the caller is: the tenant and the scopes of a validated access token, and the scopes each route needs.
//!
//! The token is checked before a handler runs (API Gateway's JWT authorizer on AWS, the local runner here) and
//! reaches the handlers as claims and scopes (`requestContext.authorizer.jwt`). This module turns those into an
//! [`Identity`] and holds the one table of routes and scopes ([`ROUTES`]) that `template.yaml`, `openapi.yaml`, the
//! local runner and the handlers all follow. It knows no Lambda type.
//!
//! Refusals have API Gateway's own bodies (`{"message":"Unauthorized"}`, `{"message":"Forbidden"}`), not the
//! project's `{"error":{…}}` shape: on AWS, API Gateway answers them before any function runs.

use std::collections::HashMap;
use std::fmt;

use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// One customer's slice of the data. It goes into S3 keys and MongoDB keys, so it is `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a tenant id: 1 to 63 characters of a-z, 0-9 and `-`, not starting with `-`")]
pub struct InvalidTenant(pub String);

impl TenantId {
    /// Longest tenant id, in bytes (all ASCII).
    pub const MAX_LEN: usize = 63;

    pub fn parse(s: &str) -> Result<Self, InvalidTenant> {
        let lower_or_digit = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = match s.as_bytes() {
            [first, rest @ ..] => {
                lower_or_digit(*first)
                    && rest.len() < Self::MAX_LEN
                    && rest.iter().all(|&b| lower_or_digit(b) || b == b'-')
            }
            [] => false,
        };
        if valid { Ok(Self(s.to_string())) } else { Err(InvalidTenant(s.to_string())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenant;
    fn try_from(s: String) -> Result<Self, InvalidTenant> {
        Self::parse(&s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OAuth scope of the `imgpipe` resource server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// State-changing routes (uploads).
    Upload,
    /// The GET routes, for the caller's own requests.
    Read,
    /// The GET routes, across tenants.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Upload, Scope::Read, Scope::Admin];
    /// The resource server's identifier: every scope is `imgpipe/<name>`.
    pub const RESOURCE_SERVER: &'static str = "imgpipe";

    /// The scope as tokens carry it, e.g. `imgpipe/upload`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Upload => "imgpipe/upload",
            Scope::Read => "imgpipe/read",
            Scope::Admin => "imgpipe/admin",
        }
    }

    /// The part after `imgpipe/`.
    pub fn name(self) -> &'static str {
        &self.as_str()[Self::RESOURCE_SERVER.len() + 1..]
    }

    /// A scope by its full name (`imgpipe/read`); any other scope a token carries is not ours.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of one request: its tenant and the scopes its token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
}

impl Identity {
    /// From the claims and scopes of a validated token. `tenant_claim` names the claim holding the tenant
    /// (`IMGPIPE_TENANT_CLAIM`); a token without a valid one is refused with 403, as a token lacking a scope.
    pub fn from_claims(
        claims: &HashMap<String, String>,
        scopes: &[String],
        tenant_claim: &str,
    ) -> Result<Self, Denied> {
        let value = claims
            .get(tenant_claim)
            .ok_or_else(|| Denied::forbidden(format!("the token has no `{tenant_claim}` claim (the tenant)")))?;
        let tenant = TenantId::parse(value).map_err(|e| Denied::forbidden(format!("claim `{tenant_claim}`: {e}")))?;
        Ok(Self { tenant, scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect() })
    }

    /// Refuses with 403 unless the token may call `route`.
    pub fn authorize(&self, route: &Route) -> Result<(), Denied> {
        route.admits(&self.scopes)
    }
}

/// A route of the HTTP API and the scopes that may call it (any one of them), as API Gateway's
/// `AuthorizationScopes` list them.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// API Gateway's path template, e.g. `/requests/{requestId}`.
    pub path: &'static str,
    pub scopes: &'static [Scope],
}

impl Route {
    /// API Gateway's rule for `AuthorizationScopes`: the token must grant at least one of the route's scopes.
    pub fn admits(&self, granted: &[Scope]) -> Result<(), Denied> {
        if self.scopes.iter().any(|s| granted.contains(s)) { Ok(()) } else { Err(Denied::insufficient_scope(self)) }
    }
}

const UPLOAD: &[Scope] = &[Scope::Upload];
const READ: &[Scope] = &[Scope::Read, Scope::Admin];

/// Every route and its scopes: state-changing routes need `imgpipe/upload`, GETs `imgpipe/read` (or
/// `imgpipe/admin`). `template.yaml` and `openapi.yaml` declare exactly this (tests/tests/auth.rs compares them).
pub const ROUTES: &[Route] = &[
    Route { method: "POST", path: "/uploads", scopes: UPLOAD },
    Route { method: "POST", path: "/uploads/presign", scopes: UPLOAD },
    Route { method: "GET", path: "/requests", scopes: READ },
    Route { method: "GET", path: "/requests/{requestId}", scopes: READ },
    Route { method: "GET", path: "/status/{requestId}", scopes: READ },
    Route { method: "GET", path: "/requests/{requestId}/output.csv", scopes: READ },
    Route { method: "GET", path: "/stats", scopes: READ },
    // Read scope: the receiver that verifies deliveries is typically a read-only client.
    Route { method: "GET", path: "/webhook-key", scopes: READ },
];

/// Whether `path` ends with the segments of `template` (`{name}` matches one non-empty segment), so that a stage
/// prefix (`/prod/requests/…`) is harmless, as in the handlers' own routing.
fn path_matches(template: &str, path: &str) -> bool {
    let want: Vec<&str> = template.trim_matches('/').split('/').collect();
    let have: Vec<&str> = path.trim_end_matches('/').trim_start_matches('/').split('/').collect();
    have.len() >= want.len()
        && want
            .iter()
            .zip(&have[have.len() - want.len()..])
            .all(|(w, h)| if w.starts_with('{') { !h.is_empty() } else { w == h })
}

/// The route a request calls: the longest template its path ends with, among those of its method.
pub fn route(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .filter(|r| r.method.eq_ignore_ascii_case(method) && path_matches(r.path, path))
        .max_by_key(|r| r.path.len())
}

/// Whether `path` is the path of some route, whatever the method (the handler answers a wrong method with 405,
/// after authentication).
pub fn is_api_path(path: &str) -> bool {
    ROUTES.iter().any(|r| path_matches(r.path, path))
}

/// A request refused before any handler logic, answered as API Gateway answers it: `401 {"message":"Unauthorized"}`
/// or `403 {"message":"Forbidden"}`, with the reason in a `WWW-Authenticate` challenge (RFC 6750) and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct Denied {
    pub status: StatusCode,
    pub reason: String,
    challenge: String,
}

impl Denied {
    /// No token at all.
    pub fn missing_token() -> Self {
        Self { status: StatusCode::UNAUTHORIZED, reason: "no access token".into(), challenge: "Bearer".into() }
    }

    /// A token that is malformed, expired, wrongly signed, or not for this API.
    pub fn invalid_token(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let challenge = format!("Bearer scope=\"\" error=\"invalid_token\" error_description=\"{}\"", quoted(&reason));
        Self { status: StatusCode::UNAUTHORIZED, reason, challenge }
    }

    /// A valid token without any of the route's scopes.
    pub fn insufficient_scope(route: &Route) -> Self {
        let scopes: Vec<&str> = route.scopes.iter().map(|s| s.as_str()).collect();
        let reason = format!("expected scopes: [{}]", scopes.join(" "));
        let challenge = format!(
            "Bearer scope=\"{}\" error=\"insufficient_scope\" error_description=\"{reason}\"",
            scopes.join(" ")
        );
        Self { status: StatusCode::FORBIDDEN, reason, challenge }
    }

    /// A valid token that may not do this for another reason (no valid tenant claim).
    pub fn forbidden(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let challenge = format!("Bearer error=\"insufficient_scope\" error_description=\"{}\"", quoted(&reason));
        Self { status: StatusCode::FORBIDDEN, reason, challenge }
    }

    /// API Gateway's body for the status.
    pub fn body(&self) -> serde_json::Value {
        let message = if self.status == StatusCode::UNAUTHORIZED { "Unauthorized" } else { "Forbidden" };
        serde_json::json!({ "message": message })
    }

    /// The response, logged once here.
    pub fn response(&self) -> http::Response<String> {
        tracing::info!(status = self.status.as_u16(), reason = %self.reason, "request denied");
        let mut response = crate::api::json_response(self.status, &self.body());
        if let Ok(value) = HeaderValue::from_str(&self.challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// `text` made safe inside a quoted-string of a header value.
fn quoted(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).map(|c| if c == '"' { '\'' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_short_lower_case_names() {
        let longest = format!("a{}", "-".repeat(TenantId::MAX_LEN - 1));
        for ok in ["a", "0", "acme", "acme-eu-1", "1h57kf5cpq17m0eml12example", longest.as_str()] {
            assert_eq!(TenantId::parse(ok).map(|t| t.to_string()), Ok(ok.to_string()), "{ok}");
        }
        let too_long = format!("{longest}a");
        for bad in ["", "-acme", "Acme", "acme_eu", "acme/eu", "acme eu", "ac.me", "é", too_long.as_str()] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<TenantId>("\"../x\"").is_err(), "deserialising validates too");
    }

    #[test]
    fn routes_match_their_own_path_and_a_stage_prefix_only() {
        let at = |m: &str, p: &str| route(m, p).map(|r| r.path);
        assert_eq!(at("POST", "/uploads"), Some("/uploads"));
        assert_eq!(at("post", "/uploads/"), Some("/uploads"));
        assert_eq!(at("POST", "/uploads/presign"), Some("/uploads/presign"));
        assert_eq!(at("GET", "/requests/abc/output.csv"), Some("/requests/{requestId}/output.csv"));
        assert_eq!(at("GET", "/prod/requests/abc"), Some("/requests/{requestId}"));
        assert_eq!(at("GET", "/requests"), Some("/requests"));
        assert_eq!(at("GET", "/status/abc"), Some("/status/{requestId}"));
        assert_eq!(at("GET", "/uploads"), None, "no GET /uploads route");
        assert_eq!(at("GET", "/nowhere"), None);
        assert!(is_api_path("/uploads") && is_api_path("/requests/x/output.csv") && !is_api_path("/nowhere"));
    }

    #[test]
    fn identity_needs_a_valid_tenant_claim_and_keeps_only_our_scopes() {
        let claims = |v: &str| HashMap::from([("client_id".to_string(), v.to_string())]);
        let scopes = vec!["imgpipe/read".to_string(), "openid".to_string()];
        let id = Identity::from_claims(&claims("acme"), &scopes, "client_id").unwrap();
        assert_eq!((id.tenant.as_str(), id.scopes.as_slice()), ("acme", &[Scope::Read][..]));
        for denied in [
            Identity::from_claims(&claims("Acme!"), &scopes, "client_id"),
            Identity::from_claims(&claims("acme"), &scopes, "custom:tenant"),
        ] {
            assert_eq!(denied.unwrap_err().status, StatusCode::FORBIDDEN);
        }
        let upload = route("POST", "/uploads").unwrap();
        assert_eq!(id.authorize(upload).unwrap_err().body(), serde_json::json!({"message": "Forbidden"}));
        assert!(id.authorize(route("GET", "/stats").unwrap()).is_ok());
    }
}
