//! Reports across requests, computed by MongoDB: the request list and the daily statistics.

use serde::Serialize;

use super::cursor;
use crate::domain::{DailyImages, ListFilter, RequestId, RequestStatus, TenantId, Timestamp, Visible};
use crate::error::{Error, Result};
use crate::ports::{Clock, ReportStore};

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestSummary {
    pub request_id: RequestId,
    /// Whose request it is (an admin's list holds several tenants').
    pub tenant: TenantId,
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

fn parse_time(name: &str, value: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(value)
        .ok_or_else(|| Error::BadRequest(format!("{name} must be an RFC 3339 date-time such as 2026-11-25T00:00:00Z")))
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

/// The ports the reports read.
pub struct Reports<'a> {
    pub reports: &'a dyn ReportStore,
    pub clock: &'a dyn Clock,
}

impl Reports<'_> {
    /// `GET /requests`: newest first, filtered by status and creation time, paginated by an opaque cursor.
    pub async fn list_requests(&self, visible: &Visible, query: ListQuery<'_>) -> Result<RequestList> {
        let status = query
            .status
            .map(|s| {
                RequestStatus::parse(s).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "status must be one of pending, processing, completed, failed (got `{s}`)"
                    ))
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
        let after = query.cursor.map(cursor::parse_requests).transpose()?;
        let mut found = self.reports.list_requests(visible, &filter, after, limit + 1).await?;
        let next_cursor = if found.len() as i64 > limit {
            found.truncate(limit as usize);
            found.last().map(|r| cursor::requests_after(r.created_at, &r.id))
        } else {
            None
        };
        let requests = found
            .into_iter()
            .map(|r| {
                let tally = r.final_tally();
                RequestSummary {
                    status: r.status,
                    created_at: r.created_at.rfc3339(),
                    completed_at: r.completed_at.map(|t| t.rfc3339()),
                    total_products: r.total_products,
                    total_images: r.total_images,
                    succeeded_images: tally.map(|t| t.succeeded()),
                    failed_images: tally.map(|t| t.failed),
                    request_id: r.id,
                    tenant: r.tenant,
                }
            })
            .collect();
        Ok(RequestList { requests, next_cursor })
    }

    /// `GET /stats`: requests per status and images finished per day over the last `days` days (UTC).
    pub async fn stats(&self, visible: &Visible, days: Option<i64>) -> Result<Stats> {
        let days = days.unwrap_or(30);
        if !(1..=366).contains(&days) {
            return Err(Error::BadRequest("days must be between 1 and 366".into()));
        }
        let since = self.clock.now().minus(std::time::Duration::from_secs((days as u64 - 1) * 86_400)).day();
        let mut requests_by_status: std::collections::BTreeMap<String, i64> =
            RequestStatus::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
        for (status, n) in self.reports.count_by_status(visible).await? {
            *requests_by_status.entry(status.as_str().to_string()).or_default() += n;
        }
        let daily = self.reports.daily_images(visible, &since).await?;
        Ok(Stats { requests_by_status, daily, since })
    }
}
