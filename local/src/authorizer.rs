//! What API Gateway's JWT authorizer does before it invokes a function, done the same way here: the bearer token
//! must be an RS256 JWT signed by a key of the issuer's JWKS (by `kid`), with `iss` equal to the issuer, `aud` (or
//! `client_id` when there is no `aud`) in the audience list, and `exp`, `nbf` and `iat` in order; the route's
//! scopes ([`imgpipe_core::auth::ROUTES`]) must include one the token carries. The handlers then get the claims
//! and scopes as API Gateway passes them (`requestContext.authorizer.jwt`).

use std::collections::HashMap;

use imgpipe_core::auth::{self, Denied, Scope};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The validated token as API Gateway hands it on: every claim as a string, and the scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt {
    pub claims: HashMap<String, String>,
    pub scopes: Vec<String>,
}

/// An authorizer trusting one issuer, its keys and an audience list.
pub struct Authorizer {
    issuer: String,
    audiences: Vec<String>,
    keys: HashMap<String, DecodingKey>,
}

impl Authorizer {
    /// Trusts the RSA keys of `jwks` that have a key id; others cannot be chosen by a token's `kid`.
    pub fn new(issuer: &str, audiences: &[String], jwks: &JwkSet) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        Self { issuer: issuer.to_string(), audiences: audiences.to_vec(), keys }
    }

    /// Authenticates a request to `method path` from its `Authorization` header. `Ok(None)`: the path is no API
    /// route (API Gateway answers those 404 without asking for a token).
    pub fn authorize(&self, method: &str, path: &str, authorization: Option<&[u8]>) -> Result<Option<Jwt>, Denied> {
        if !auth::is_api_path(path) {
            return Ok(None);
        }
        let jwt = self.validate(authorization)?;
        if let Some(route) = auth::route(method, path) {
            route.admits(&jwt.scopes.iter().filter_map(|s| Scope::parse(s)).collect::<Vec<_>>())?;
        }
        Ok(Some(jwt))
    }

    /// Validates the token of an `Authorization` header (`Bearer <jwt>`, or the bare token as API Gateway also
    /// takes it).
    pub fn validate(&self, authorization: Option<&[u8]>) -> Result<Jwt, Denied> {
        let header = authorization.ok_or_else(Denied::missing_token)?;
        let header = std::str::from_utf8(header).map_err(|_| Denied::invalid_token("the token is not valid"))?.trim();
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => header,
        };
        if token.is_empty() {
            return Err(Denied::missing_token());
        }
        let head = jsonwebtoken::decode_header(token).map_err(|_| Denied::invalid_token("the token is malformed"))?;
        if head.alg != Algorithm::RS256 {
            return Err(Denied::invalid_token("the token is not signed with RS256"));
        }
        let key = head
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or_else(|| Denied::invalid_token("the token's key id is not in the issuer's key set"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_aud = false; // `aud`, else `client_id`: checked below, as API Gateway does
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &validation)
            .map_err(|e| Denied::invalid_token(describe(e.kind())))?;
        let claims = data.claims;
        if claims
            .get("iat")
            .and_then(Value::as_i64)
            .is_some_and(|iat| iat > jsonwebtoken::get_current_timestamp() as i64)
        {
            return Err(Denied::invalid_token("the token was issued in the future"));
        }
        let audiences: Vec<&str> = match claims.get("aud").or_else(|| claims.get("client_id")) {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.iter().any(|a| self.audiences.iter().any(|want| want == a)) {
            return Err(Denied::invalid_token("the token does not have a valid audience"));
        }
        Ok(Jwt { scopes: scopes_of(&claims), claims: claims.iter().map(|(k, v)| (k.clone(), as_string(v))).collect() })
    }
}

/// API Gateway's wording for why a token is not valid.
fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token does not have a valid issuer",
        ErrorKind::InvalidSignature => "the token does not have a valid signature",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is malformed",
    }
}

/// The token's scopes: the space-separated `scope` claim, or `scp` (a list or a string).
fn scopes_of(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// A claim as API Gateway passes it to a function: strings as they are, lists as `[a b]`, anything else as JSON.
fn as_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(list) => format!("[{}]", list.iter().map(as_string).collect::<Vec<_>>().join(" ")),
        other => other.to_string(),
    }
}
