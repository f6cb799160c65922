//! Reports across requests, computed by MongoDB: the request list and the daily statistics.

use mongodb::bson::DateTime;
use serde::Serialize;

use crate::App;
use crate::domain::{RequestId, RequestStatus};
use crate::error::{Error, Result};
use crate::model::{DailyImages, ListFilter, day_of, rfc3339};

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestSummary {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub total_products: i64,
    pub total_images: i64,
    /// Exact once the request is final; `null` while it runs (see its status for live counts).
    pub succeeded_images: Option<i64>,
    pub failed_images: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestList {
    pub requests: Vec<RequestSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Requests per status (every status present, zero included).
    pub requests_by_status: std::collections::BTreeMap<String, i64>,
    /// Images of requests finalised on each day, oldest first.
    pub daily: Vec<DailyImages>,
    pub since: String,
}

fn parse_time(name: &str, value: &str) -> Result<DateTime> {
    DateTime::parse_rfc3339_str(value)
        .map_err(|_| Error::BadRequest(format!("{name} must be an RFC 3339 date-time such as 2026-11-25T00:00:00Z")))
}

fn encode_cursor(at: DateTime, id: &RequestId) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_millis()))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime, RequestId)> {
    use base64::Engine;
    let bad = || Error::BadRequest(format!("invalid cursor `{cursor}`"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (ms, id) = raw.split_once('|').ok_or_else(bad)?;
    Ok((DateTime::from_millis(ms.parse().map_err(|_| bad())?), RequestId::parse(id).map_err(|_| bad())?))
}

/// Query parameters of `GET /requests`.
#[derive(Debug, Default)]
pub struct ListQuery<'a> {
    pub status: Option<&'a str>,
    pub created_after: Option<&'a str>,
    pub created_before: Option<&'a str>,
    pub limit: Option<i64>,
    pub cursor: Option<&'a str>,
}

/// `GET /requests`: newest first, filtered by status and creation time, paginated by an opaque cursor.
pub async fn list_requests(app: &App, query: ListQuery<'_>) -> Result<RequestList> {
    let status = query
        .status
        .map(|s| {
            serde_json::from_value::<RequestStatus>(serde_json::Value::String(s.to_string())).map_err(|_| {
                Error::BadRequest(format!("status must be one of pending, processing, completed, failed (got `{s}`)"))
            })
        })
        .transpose()?;
    let filter = ListFilter {
        status,
        created_after: query.created_after.map(|v| parse_time("createdAfter", v)).transpose()?,
        created_before: query.created_before.map(|v| parse_time("createdBefore", v)).transpose()?,
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::BadRequest("limit must be between 1 and 500".into()));
    }
    let after = query.cursor.map(decode_cursor).transpose()?;
    let mut docs = app.repo.list_requests(&filter, after, limit + 1).await?;
    let next_cursor = if docs.len() as i64 > limit {
        docs.truncate(limit as usize);
        docs.last().map(|d| encode_cursor(d.created_at, &d.request_id))
    } else {
        None
    };
    let requests = docs
        .into_iter()
        .map(|d| {
            let fin = d.status.is_final();
            RequestSummary {
                status: d.status,
                created_at: rfc3339(d.created_at),
                completed_at: d.completed_at.map(rfc3339),
                total_products: d.total_products,
                total_images: d.total_images,
                succeeded_images: fin.then_some(d.succeeded_images),
                failed_images: fin.then_some(d.failed_images),
                request_id: d.request_id,
            }
        })
        .collect();
    Ok(RequestList { requests, next_cursor })
}

/// `GET /stats`: requests per status and images finished per day over the last `days` days (UTC).
pub async fn stats(app: &App, days: Option<i64>) -> Result<Stats> {
    let days = days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(Error::BadRequest("days must be between 1 and 366".into()));
    }
    let since = day_of(DateTime::from_millis(DateTime::now().timestamp_millis() - (days - 1) * 86_400_000));
    let mut requests_by_status: std::collections::BTreeMap<String, i64> =
        ["pending", "processing", "completed", "failed"].iter().map(|s| (s.to_string(), 0)).collect();
    for (status, n) in app.repo.count_by_status().await? {
        *requests_by_status.entry(status).or_default() += n;
    }
    let daily = app.repo.daily_images(&since).await?;
    Ok(Stats { requests_by_status, daily, since })
}
