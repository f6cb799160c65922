//! The HTTP API as the CLI sees it (see `openapi.yaml`): typed answers, and every failure turned into a
//! [`CliError`] whose message says what went wrong and what to do about it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

/// How long one API call (not an upload) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an upload (`POST /uploads` or the presigned PUT) may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Everything that makes the CLI exit with code 2: a usage error, a rejected call, no connection, a timeout.
#[derive(Debug)]
pub enum CliError {
    /// The API answered with an error status.
    Api(Box<ApiError>),
    /// No answer: connection refused, DNS, TLS, timeout.
    Connection { url: String, detail: String, timeout: bool, api: bool },
    /// Anything else (a file that cannot be read, a bad flag value, a wait that timed out).
    Other(String),
}

impl CliError {
    pub fn other(message: impl Into<String>) -> Self {
        CliError::Other(message.into())
    }

    /// Whether polling again may succeed: no connection, or a server-side error.
    pub fn is_transient(&self) -> bool {
        match self {
            CliError::Connection { .. } => true,
            CliError::Api(e) => e.status >= 500 || e.status == 429,
            CliError::Other(_) => false,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            CliError::Api(e) => Some(e.status),
            _ => None,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Api(e) => e.fmt(f),
            CliError::Connection { url, detail, timeout: true, .. } => {
                write!(f, "no answer from {url} in time: {detail}")
            }
            CliError::Connection { url, detail, api: false, .. } => write!(f, "cannot reach {url}: {detail}"),
            CliError::Connection { url, detail, .. } => write!(
                f,
                "cannot reach the API at {url}: {detail}\n\
                 hint: is the API running (`make local` serves it on http://127.0.0.1:3000)? \
                 Set its address with --api-url or IMGPIPE_API_URL."
            ),
            CliError::Other(message) => f.write_str(message),
        }
    }
}

/// One located CSV defect, as the API reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RowError {
    pub line: u64,
    pub column: String,
    pub value: String,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {:?}, value {:?}: {}", self.line, self.column, self.value, self.message)
    }
}

/// Writes `errors`, one per line and indented, and how many more there are when `total` counts more.
pub fn write_row_errors(f: &mut dyn fmt::Write, errors: &[RowError], total: Option<u64>) -> fmt::Result {
    for e in errors {
        writeln!(f, "  {e}")?;
    }
    let total = total.unwrap_or(errors.len() as u64);
    if total > errors.len() as u64 {
        writeln!(f, "  … and {} more ({total} errors in all)", total - errors.len() as u64)?;
    }
    Ok(())
}

/// An error answer of the API: `{"error": {"code", "message", "details"?, "total"?}}`.
#[derive(Debug)]
pub struct ApiError {
    /// What the CLI was doing, e.g. "the upload was rejected".
    pub context: String,
    pub status: u16,
    pub code: Option<String>,
    pub message: String,
    pub details: Vec<RowError>,
    pub total: Option<u64>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
        write!(f, "{}: {} (HTTP {}{code})", self.context, self.message, self.status)?;
        if !self.details.is_empty() {
            f.write_str("\n")?;
            let mut lines = String::new();
            write_row_errors(&mut lines, &self.details, self.total)?;
            f.write_str(lines.trim_end())?;
        }
        let hint = match (self.status, self.code.as_deref()) {
            (401, _) => Some(
                "the API wants a valid access token: --token (or IMGPIPE_TOKEN), or --token-url and --client-id with \
                 the secret in IMGPIPE_CLIENT_SECRET; locally, `imgpipe-local token --tenant T` prints one",
            ),
            (403, _) => Some("the token lacks the scope this needs: imgpipe/upload to submit, imgpipe/read to read"),
            (413, _) => Some("the API refused the body as too large; retry with a lower --presign-over (e.g. 0)"),
            (404, Some("not_found")) => Some("check the request id and that --api-url points at the API that took it"),
            (404, _) => Some("is --api-url the API's base URL?"),
            (409, _) => {
                Some("the request is still running: follow it with `imgpipe status` or `imgpipe submit --wait`")
            }
            (422, _) => Some("this Idempotency-Key was used for a different file: use a new key"),
            _ => None,
        };
        if let Some(hint) = hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// The API's error shape, or API Gateway's own (`{"message": …}` of a 401, 403 or 429).
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorEnvelope {
    Api { error: ErrorBody },
    Gateway { message: String },
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
    #[serde(default)]
    details: Vec<RowError>,
    total: Option<u64>,
}

/// `202` of `POST /uploads`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub request_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub total_products: u64,
    #[serde(default)]
    pub total_images: u64,
}

/// `200` of `POST /uploads/presign`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presigned {
    pub request_id: String,
    pub upload_url: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub key: String,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub products: u64,
    pub images: u64,
    pub processed: u64,
    pub succeeded: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Image {
    pub input_url: String,
    pub state: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Row {
    pub serial_number: u64,
    pub product_name: String,
    pub images: Vec<Image>,
}

/// `200` of `GET /requests/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Status {
    pub request_id: String,
    pub status: String,
    pub counts: Counts,
    pub percent_complete: f64,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub output_csv_url: Option<String>,
    pub rows: Vec<Row>,
    pub next_cursor: Option<String>,
    /// Why ingestion failed (a rejected CSV that came in through the bucket).
    pub errors: Vec<RowError>,
    pub error_total: Option<u64>,
}

impl Status {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed")
    }
}

/// A client of one API base URL.
pub struct Api {
    base: Url,
    http: reqwest::Client,
    /// Sent to the API only: never to presigned URLs.
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str) -> Result<Self, CliError> {
        let base = Url::parse(base.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| CliError::other(format!("--api-url: `{base}` is not an http:// or https:// URL")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("imgpipe-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { base, http, token: None })
    }

    /// The HTTP client (also for the token endpoint).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The access token API calls carry as `Authorization: Bearer …`.
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// `<base>/<segments…>`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends `request`; an error status becomes a [`CliError::Api`] described by `context`.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        context: impl FnOnce() -> String,
    ) -> Result<reqwest::Response, CliError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let request = request.build().map_err(|e| CliError::other(format!("invalid request: {e}")))?;
        let url = request.url().to_string();
        let response = self.http.execute(request).await.map_err(|e| connection_error(&url, &e, true))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(api_error(context(), response).await)
    }

    /// `POST /uploads` with a `text/csv` body.
    pub async fn upload(
        &self,
        csv: Vec<u8>,
        webhook: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, CliError> {
        let mut url = self.url(&["uploads"]);
        if let Some(webhook) = webhook {
            url.query_pairs_mut().append_pair("webhook", webhook);
        }
        let mut request = self
            .http
            .request(Method::POST, url)
            .timeout(UPLOAD_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .body(csv);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = self.send(request, || "the upload was rejected".into()).await?;
        json(response, "POST /uploads").await
    }

    /// `POST /uploads/presign`.
    /// A presigned upload URL for a file of `size` bytes (the size is signed into the URL).
    pub async fn presign(&self, size: u64) -> Result<Presigned, CliError> {
        let request = self
            .http
            .post(self.url(&["uploads", "presign"]))
            .json(&serde_json::json!({ "size": size }))
            .timeout(CALL_TIMEOUT);
        let response = self.send(request, || "the API refused a presigned upload URL".into()).await?;
        json(response, "POST /uploads/presign").await
    }

    /// PUTs `csv` to a presigned URL with the headers the API named.
    pub async fn put_presigned(&self, presigned: &Presigned, csv: Vec<u8>) -> Result<(), CliError> {
        let method = match presigned.method.as_str() {
            "" => Method::PUT,
            m => Method::from_bytes(m.as_bytes())
                .map_err(|_| CliError::other(format!("the API asked for an invalid upload method `{m}`")))?,
        };
        let url = Url::parse(&presigned.upload_url)
            .or_else(|_| self.base.join(&presigned.upload_url))
            .map_err(|e| CliError::other(format!("the API gave an invalid upload URL: {e}")))?;
        let mut request = self.http.request(method, url.clone()).timeout(UPLOAD_TIMEOUT).body(csv);
        // Content-Length comes from the body itself (the signed size is the file's).
        for (name, value) in presigned.headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("content-length")) {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request.build().map_err(|e| CliError::other(format!("invalid upload request: {e}")))?;
        let response = self.http.execute(request).await.map_err(|e| connection_error(url.as_str(), &e, false))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(CliError::other(format!(
            "the upload to the presigned URL failed: HTTP {status}{}",
            excerpt(&body).map(|b| format!(": {b}")).unwrap_or_default()
        )))
    }

    /// `GET /requests/{id}` with at most `limit` rows.
    pub async fn status_json(&self, id: &str, limit: Option<u32>) -> Result<serde_json::Value, CliError> {
        let mut url = self.url(&["requests", id]);
        if let Some(limit) = limit {
            url.query_pairs_mut().append_pair("limit", &limit.to_string());
        }
        let request = self.http.get(url).timeout(CALL_TIMEOUT);
        let response = self.send(request, || format!("cannot get request {id}")).await?;
        json(response, "GET /requests/{id}").await
    }

    /// `GET /requests/{id}`, typed.
    pub async fn status(&self, id: &str, limit: Option<u32>) -> Result<Status, CliError> {
        let value = self.status_json(id, limit).await?;
        serde_json::from_value(value)
            .map_err(|e| CliError::other(format!("GET /requests/{id}: unexpected answer from the API: {e}")))
    }

    /// `GET /requests/{id}/output.csv`, following a `303` to the presigned URL of a large CSV.
    pub async fn output_csv(&self, id: &str) -> Result<Vec<u8>, CliError> {
        let request = self.http.get(self.url(&["requests", id, "output.csv"])).timeout(UPLOAD_TIMEOUT);
        let response = self.send(request, || format!("cannot download the output CSV of request {id}")).await?;
        let url = response.url().to_string();
        let bytes = response.bytes().await.map_err(|e| connection_error(&url, &e, false))?;
        Ok(bytes.to_vec())
    }
}

async fn json<T: serde::de::DeserializeOwned>(response: reqwest::Response, what: &str) -> Result<T, CliError> {
    let url = response.url().to_string();
    let bytes = response.bytes().await.map_err(|e| connection_error(&url, &e, false))?;
    serde_json::from_slice(&bytes).map_err(|e| CliError::other(format!("{what}: unexpected answer from the API: {e}")))
}

/// The API's error JSON, or what the body says when it is not that shape (a proxy's HTML page…).
async fn api_error(context: String, response: reqwest::Response) -> CliError {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let error = match serde_json::from_slice::<ErrorEnvelope>(&body) {
        Ok(ErrorEnvelope::Gateway { message }) => {
            ApiError { context, status: status.as_u16(), code: None, message, details: Vec::new(), total: None }
        }
        Ok(ErrorEnvelope::Api { error }) => ApiError {
            context,
            status: status.as_u16(),
            code: error.code,
            message: error.message.unwrap_or_else(|| reason(status)),
            details: error.details,
            total: error.total,
        },
        Err(_) => ApiError {
            context,
            status: status.as_u16(),
            code: None,
            message: excerpt(&String::from_utf8_lossy(&body)).unwrap_or_else(|| reason(status)),
            details: Vec::new(),
            total: None,
        },
    };
    CliError::Api(Box::new(error))
}

fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("error").to_lowercase()
}

/// The first 300 characters of a body, on one line; `None` when empty.
fn excerpt(body: &str) -> Option<String> {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return None;
    }
    let mut cut: String = one_line.chars().take(300).collect();
    if cut.len() < one_line.len() {
        cut.push('…');
    }
    Some(cut)
}

fn connection_error(url: &str, e: &reqwest::Error, api: bool) -> CliError {
    // reqwest's own message repeats the URL; its sources say what happened.
    let mut source = std::error::Error::source(e);
    let mut detail = match source {
        Some(s) => {
            source = s.source();
            s.to_string()
        }
        None => e.to_string(),
    };
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    let mut url = url.to_string();
    if let Ok(mut parsed) = Url::parse(&url) {
        // Never print a presigned URL's signature.
        parsed.set_query(None);
        url = parsed.to_string();
    }
    CliError::Connection { url, detail, timeout: e.is_timeout(), api }
}
