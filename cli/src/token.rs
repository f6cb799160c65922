//! The access token the CLI sends: given (`--token`, `IMGPIPE_TOKEN`), or fetched with the OAuth 2.0
//! client-credentials grant from `--token-url` for `--client-id`, the secret read from `IMGPIPE_CLIENT_SECRET` only
//! (a flag would show in `ps` and in shell history). A fetched token is cached until shortly before it expires, in
//! `$XDG_CACHE_HOME/imgpipe/tokens.json` (else `~/.cache/…`), readable by its owner only (0600).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::api::CliError;

/// A cached token is used only while it has at least this long to live.
const EXPIRY_MARGIN_SECS: u64 = 60;
/// How long the token endpoint may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a token comes from.
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub secret: String,
    /// Space-separated scopes to ask for; `None`: the client's own.
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    access_token: String,
    /// Unix seconds.
    expires_at: u64,
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Refused {
    error: String,
    error_description: Option<String>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The token cache file, if there is a cache directory.
fn cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("imgpipe").join("tokens.json"))
}

fn read_cache(path: &PathBuf) -> BTreeMap<String, Cached> {
    std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

/// Rewrites the cache through a private temporary file renamed into place: never world-readable, never half
/// written.
fn write_cache(path: &PathBuf, entries: &BTreeMap<String, Cached>) -> std::io::Result<()> {
    let dir = path.parent().expect("the cache file is in a directory");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".tokens.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(&serde_json::to_vec(entries).unwrap_or_default())?;
    drop(file);
    std::fs::rename(&tmp, path)
}

impl ClientCredentials {
    fn cache_key(&self) -> String {
        format!("{} {} {}", self.token_url, self.client_id, self.scope.as_deref().unwrap_or_default())
    }

    /// A token that is valid for at least another minute: the cached one, or a new one from the token endpoint.
    pub async fn token(&self, http: &reqwest::Client) -> Result<String, CliError> {
        let cache = cache_file();
        let key = self.cache_key();
        if let Some(path) = &cache
            && let Some(hit) = read_cache(path).get(&key)
            && hit.expires_at > now() + EXPIRY_MARGIN_SECS
        {
            return Ok(hit.access_token.clone());
        }
        let (token, lifetime) = self.fetch(http).await?;
        if let Some(path) = &cache {
            let mut entries = read_cache(path);
            entries.retain(|_, e| e.expires_at > now());
            entries.insert(key, Cached { access_token: token.clone(), expires_at: now() + lifetime });
            if let Err(e) = write_cache(path, &entries) {
                eprintln!("warning: cannot cache the access token in {}: {e}", path.display());
            }
        }
        Ok(token)
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<(String, u64), CliError> {
        let url = Url::parse(&self.token_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| CliError::other(format!("--token-url: `{}` is not an http(s) URL", self.token_url)))?;
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = &self.scope {
            form.append_pair("scope", scope);
        }
        // RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding.
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = http
            .post(url.clone())
            .timeout(TOKEN_TIMEOUT)
            .basic_auth(encode(&self.client_id), Some(encode(&self.secret)))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .await
            .map_err(|e| CliError::other(format!("cannot reach the token endpoint {url}: {e}")))?;
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let why = match serde_json::from_slice::<Refused>(&bytes) {
                Ok(r) => format!("{}{}", r.error, r.error_description.map(|d| format!(": {d}")).unwrap_or_default()),
                Err(_) => String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            };
            let hint = if status.as_u16() == 401 || why.starts_with("invalid_client") {
                "\nhint: check --client-id and IMGPIPE_CLIENT_SECRET"
            } else {
                ""
            };
            return Err(CliError::other(format!("the token endpoint refused a token: HTTP {status}: {why}{hint}")));
        }
        let granted: Granted = serde_json::from_slice(&bytes)
            .map_err(|e| CliError::other(format!("unexpected answer from the token endpoint {url}: {e}")))?;
        Ok((granted.access_token, granted.expires_in.unwrap_or(3600)))
    }
}
