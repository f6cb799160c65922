//! What the HTTP functions share: the caller's [`Identity`], read from the authorizer context API Gateway attaches
//! to every request it let through (`requestContext.authorizer.jwt`: the token's claims and scopes). The local
//! runner attaches the same context with [`with_jwt`], so handlers read identity one way everywhere.
//!
//! A request without that context did not pass an authorizer (`cargo lambda watch`, a function URL, `sam local`):
//! it is refused with 401, and a token without the route's scope with 403 (defence in depth behind API Gateway).

use std::collections::HashMap;

use imgpipe_core::auth::{self, Denied, Identity, Scope, TenantId};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

/// The claims and scopes API Gateway's JWT authorizer passed on, if any.
fn jwt(req: &Request) -> Option<&ApiGatewayRequestAuthorizerJwtDescription> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.authorizer.as_ref()?.jwt.as_ref(),
        _ => None,
    }
}

/// The caller of `req`, allowed to call its route, or why not ([`Denied::response`] answers it): 401 without an
/// authorizer context, 403 without a valid tenant claim (`tenant_claim`) or without one of the route's scopes
/// ([`auth::ROUTES`]). A path or method that is no route passes with its identity; the handler answers it (404 or
/// 405).
pub fn authorize(req: &Request, tenant_claim: &str) -> Result<Identity, Denied> {
    let jwt = jwt(req).ok_or_else(Denied::missing_token)?;
    let identity = Identity::from_claims(&jwt.claims, jwt.scopes.as_deref().unwrap_or_default(), tenant_claim)?;
    if let Some(route) = auth::route(req.method().as_str(), req.uri().path()) {
        identity.authorize(route)?;
    }
    Ok(identity)
}

/// `req` with the authorizer context API Gateway builds for a valid token: its claims (as strings) and scopes.
pub fn with_jwt(req: Request, claims: HashMap<String, String>, scopes: Vec<String>) -> Request {
    let mut description = ApiGatewayRequestAuthorizerJwtDescription::default();
    description.claims = claims;
    description.scopes = Some(scopes);
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.jwt = Some(description);
    let mut context = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.clone(),
        _ => ApiGatewayV2httpRequestContext::default(),
    };
    context.http.method = req.method().clone();
    context.http.path = Some(req.uri().path().to_string());
    context.authorizer = Some(authorizer);
    req.with_request_context(RequestContext::ApiGatewayV2(context))
}

/// `req` as API Gateway passes on a token of `tenant` (in the claim `tenant_claim`) with `scopes`: for callers that
/// invoke a handler directly, with no authorizer in front (benchmarks, tests).
pub fn as_caller(req: Request, tenant_claim: &str, tenant: &TenantId, scopes: &[Scope]) -> Request {
    let claims = HashMap::from([(tenant_claim.to_string(), tenant.to_string())]);
    with_jwt(req, claims, scopes.iter().map(|s| s.as_str().to_string()).collect())
}
