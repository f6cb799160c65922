//! Status function: `GET /requests/{requestId}` (alias `/status/{requestId}`),
//! `GET /requests/{requestId}/output.csv`, the reports `GET /requests` and `GET /stats`, and `GET /webhook-key`.
//!
//! Everything is scoped to the caller's tenant: a request of another tenant is looked up under the caller's
//! tenant, so it answers exactly as an unknown id does. A caller with `imgpipe/admin` sees every tenant's reports,
//! or one tenant's with `?tenant=`, and reads one tenant's request with `?tenant=`.

use imgpipe_core::api::{error_response, json_response};
use imgpipe_core::auth::{Identity, Scope, TenantId};
use imgpipe_core::domain::{RequestId, RequestKey, Visible};
use imgpipe_core::service::reports::ListQuery;
use imgpipe_core::service::status::CsvDownload;
use imgpipe_core::{App, Error};
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};

enum Route {
    Status(RequestId),
    OutputCsv(RequestId),
    List,
    Stats,
    WebhookKey,
}

/// Finds the route from the path's last segments, so a stage prefix (`/prod/requests/…`) is harmless.
fn route(req: &Request) -> Result<Route, Error> {
    let no_route = || Error::NoRoute(format!("{} {}", req.method(), req.uri().path()));
    let segments: Vec<&str> = req.uri().path().trim_end_matches('/').split('/').collect();
    let (id, csv) = match segments.as_slice() {
        [.., "requests", id, "output.csv"] => (id, true),
        [.., "requests" | "status", id] if !id.is_empty() => (id, false),
        [.., last @ ("requests" | "stats" | "webhook-key")] => {
            if req.method() != Method::GET {
                return Err(Error::MethodNotAllowed("GET"));
            }
            return Ok(match *last {
                "stats" => Route::Stats,
                "webhook-key" => Route::WebhookKey,
                _ => Route::List,
            });
        }
        _ => return Err(no_route()),
    };
    if req.method() != Method::GET {
        return Err(Error::MethodNotAllowed("GET"));
    }
    let id = RequestId::parse(id)?;
    Ok(if csv { Route::OutputCsv(id) } else { Route::Status(id) })
}

fn query_param<'a>(req: &'a Request, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let query = req.uri().query()?;
    url_form_pairs(query).find(|(k, _)| k == name).map(|(_, v)| v)
}

fn url_form_pairs(query: &str) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    form_urlencoded::parse(query.as_bytes())
}

/// Whose data a call reads: an admin names a tenant with `?tenant=` (or, for reports, sees all without it); anyone
/// else reads their own, and naming another tenant is refused.
fn scope(req: &Request, identity: &Identity) -> Result<Visible, Error> {
    let named = query_param(req, "tenant")
        .map(|t| TenantId::parse(&t).map_err(|e| Error::BadRequest(format!("tenant: {e}"))))
        .transpose()?;
    let admin = identity.scopes.contains(&Scope::Admin);
    match named {
        Some(tenant) if admin || tenant == identity.tenant => Ok(Visible::Tenant(tenant)),
        Some(_) => Err(Error::Forbidden("?tenant= names another tenant: that needs the imgpipe/admin scope".into())),
        None if admin => Ok(Visible::AllTenants),
        None => Ok(Visible::Tenant(identity.tenant.clone())),
    }
}

/// The request `id` of the tenant a call reads (the caller's own, or the admin's `?tenant=`).
fn request_key(req: &Request, identity: &Identity, id: &RequestId) -> Result<RequestKey, Error> {
    Ok(match scope(req, identity)? {
        Visible::Tenant(tenant) => RequestKey::new(&tenant, id),
        Visible::AllTenants => RequestKey::new(&identity.tenant, id),
    })
}

async fn respond(app: &App, req: &Request, identity: &Identity) -> Result<Response<Body>, Error> {
    let int_param = |name: &str| {
        query_param(req, name)
            .map(|l| l.parse::<i64>().map_err(|_| Error::BadRequest(format!("invalid {name} `{l}`"))))
            .transpose()
    };
    match route(req)? {
        Route::List => {
            let (status, after, before, cursor) = (
                query_param(req, "status"),
                query_param(req, "createdAfter"),
                query_param(req, "createdBefore"),
                query_param(req, "cursor"),
            );
            let query = ListQuery {
                status: status.as_deref(),
                created_after: after.as_deref(),
                created_before: before.as_deref(),
                limit: int_param("limit")?,
                cursor: cursor.as_deref(),
            };
            let list = app.reports().list_requests(&scope(req, identity)?, query).await?;
            let body = serde_json::to_value(&list).map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok(json_response(StatusCode::OK, &body).map(Body::from))
        }
        Route::Stats => {
            let stats = app.reports().stats(&scope(req, identity)?, int_param("days")?).await?;
            let body = serde_json::to_value(&stats).map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok(json_response(StatusCode::OK, &body).map(Body::from))
        }
        Route::Status(id) => {
            let limit = query_param(req, "limit")
                .map(|l| l.parse::<i64>().map_err(|_| Error::BadRequest(format!("invalid limit `{l}`"))))
                .transpose()?;
            let cursor = query_param(req, "cursor");
            let view = app.status().request_status(&request_key(req, identity, &id)?, cursor.as_deref(), limit).await?;
            let body = serde_json::to_value(&view).map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok(json_response(StatusCode::OK, &body).map(Body::from))
        }
        Route::OutputCsv(id) => {
            let download = app.status().output_csv(&request_key(req, identity, &id)?).await?;
            let expires_at = download.expires_at();
            let mut response = match download {
                // Text, not bytes: lambda_http sends bytes base64-encoded (a third larger) in Lambda's response.
                CsvDownload::Inline { csv, .. } => Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
                    .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{id}.csv\""))
                    .body(Body::Text(csv)),
                CsvDownload::Redirect { url, .. } => {
                    Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, url).body(Body::Empty)
                }
            }
            .expect("static headers are valid");
            if let Some(at) = expires_at {
                let value = header::HeaderValue::from_str(&at.rfc3339()).expect("an RFC 3339 date is a valid header");
                response.headers_mut().insert(URLS_EXPIRE_AT, value);
            }
            Ok(response)
        }
        Route::WebhookKey => {
            let body = serde_json::to_value(imgpipe_core::webhook::key_view(&app.config, &identity.tenant)?)
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok(json_response(StatusCode::OK, &body).map(Body::from))
        }
    }
}

/// The header of an output CSV answer whose URLs (in the CSV, or the redirect's `Location`) are presigned: when
/// they stop working (RFC 3339). Absent when they do not expire.
pub const URLS_EXPIRE_AT: &str = "imgpipe-urls-expire-at";

/// Handles one API Gateway request. Every outcome, including errors, is an HTTP response.
pub async fn handle(app: &App, req: Request) -> Response<Body> {
    let identity = match imgpipe_identity::authorize(&req, &app.config.tenant_claim) {
        Ok(identity) => identity,
        Err(denied) => return denied.response().map(Body::from),
    };
    respond(app, &req, &identity).await.unwrap_or_else(|e| error_response(&e).map(Body::from))
}
