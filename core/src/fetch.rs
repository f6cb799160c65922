//! Fetching an image over HTTP(S), safe against server-side request forgery: only public addresses (plus the
//! configured allow-list, see [`crate::net_guard`]) are reached, redirects are bounded and re-checked, and
//! timeouts and a byte cap (enforced while streaming) bound the work.
//!
//! Where each address is checked:
//! - a domain name is resolved by [`GuardedResolver`], which hands the connector only the addresses the policy
//!   allows, so the connection goes to a vetted address without a second DNS lookup;
//! - an IP-literal host never reaches the resolver, so it is checked before the request is sent and, for each
//!   redirect, by the redirect policy.
//!
//! Ports: the resolver does not see the port, so a URL on a port outside `IMGPIPE_FETCH_ALLOW_PORTS` goes through
//! a second client whose resolver keeps only allow-listed addresses (which may use any port); a redirect to such a
//! port is followed only to an allow-listed IP literal.
//!
//! Every failure carries a [`FailureReason`] for the caller and the precise cause for the logs.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

use crate::config::Config;
use crate::domain::ImageUrl;
use crate::failure::{Failure, FailureReason};
use crate::net_guard::{self, Policy};

/// Most redirects followed for one image.
pub const MAX_REDIRECTS: usize = 5;

/// The longest a webhook attempt may take, whatever the configuration says.
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed, split by whether a retry can help.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Timeouts, connection failures, 5xx, 408 and 429: retried through SQS.
    #[error("{0}")]
    Transient(Failure),
    /// Other 4xx, refused addresses and ports, oversize bodies, bad redirects: recorded on the image, not retried.
    #[error("{0}")]
    Permanent(Failure),
}

impl FetchError {
    pub fn failure(&self) -> &Failure {
        match self {
            FetchError::Transient(f) | FetchError::Permanent(f) => f,
        }
    }

    fn permanent(reason: FailureReason, detail: impl Into<String>) -> Self {
        FetchError::Permanent(Failure::new(reason, detail))
    }

    fn transient(reason: FailureReason, detail: impl Into<String>) -> Self {
        FetchError::Transient(Failure::new(reason, detail))
    }
}

/// Why a [`Fetcher`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error("invalid fetch allow-list (IMGPIPE_FETCH_ALLOW_CIDRS): {0}")]
    AllowList(String),
    #[error("invalid fetch ports (IMGPIPE_FETCH_ALLOW_PORTS): {0}")]
    Ports(String),
    #[error("{0}")]
    Client(#[from] reqwest::Error),
}

/// An HTTP client built once per execution environment and reused by every invocation.
#[derive(Clone)]
pub struct Fetcher {
    /// For URLs on an allowed port: public and allow-listed addresses.
    client: reqwest::Client,
    /// For URLs on any other port: allow-listed addresses only.
    other_ports: reqwest::Client,
    /// Webhook calls (on an allowed port, and on any other): never redirected (the body and its signature would
    /// go wherever the receiver names), and bounded by the webhook timeout.
    webhook: reqwest::Client,
    webhook_other_ports: reqwest::Client,
    policy: Arc<Policy>,
    max_bytes: u64,
}

fn client(config: &Config, policy: &Arc<Policy>, allow_listed_only: bool) -> reqwest::Result<reqwest::Client> {
    let redirect_policy = {
        let policy = policy.clone();
        redirect::Policy::custom(move |attempt| {
            // `previous` holds the initial URL and every URL already redirected from.
            if attempt.previous().len() > MAX_REDIRECTS {
                let detail = format!("too many redirects (more than {MAX_REDIRECTS})");
                return attempt.error(Refused(Failure::new(FailureReason::BadRedirect, detail)));
            }
            match refuse_redirect(&policy, attempt.url(), allow_listed_only) {
                Some(failure) => attempt.error(Refused(failure)),
                None => attempt.follow(),
            }
        })
    };
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .timeout(Duration::from_millis(config.fetch_timeout_ms))
        .redirect(redirect_policy)
        .dns_resolver(GuardedResolver { policy: policy.clone(), allow_listed_only })
        .user_agent(concat!("imgpipe/", env!("CARGO_PKG_VERSION")))
        // A proxy would connect on our behalf to addresses this code never sees.
        .no_proxy()
        .build()
}

/// A client for webhook calls: no redirects, the webhook timeout.
fn webhook_client(config: &Config, policy: &Arc<Policy>, allow_listed_only: bool) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .timeout(Duration::from_millis(config.webhook_timeout_ms).min(MAX_WEBHOOK_TIMEOUT))
        .redirect(redirect::Policy::none())
        .dns_resolver(GuardedResolver { policy: policy.clone(), allow_listed_only })
        .user_agent(concat!("imgpipe/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .build()
}

impl Fetcher {
    pub fn new(config: &Config) -> Result<Self, FetcherError> {
        let ports = net_guard::parse_ports(config.fetch_allow_ports.as_deref()).map_err(FetcherError::Ports)?;
        let policy = Policy::parse(config.fetch_allow_cidrs.as_deref()).map_err(FetcherError::AllowList)?;
        let policy = Arc::new(policy.with_ports(ports));
        Ok(Self {
            client: client(config, &policy, false)?,
            other_ports: client(config, &policy, true)?,
            webhook: webhook_client(config, &policy, false)?,
            webhook_other_ports: webhook_client(config, &policy, true)?,
            policy,
            max_bytes: config.max_image_bytes,
        })
    }

    /// Refuses a URL whose host is an IP literal the address and port rules forbid (host names are checked on
    /// connect).
    pub fn check_literal(&self, url: &ImageUrl) -> Result<(), Failure> {
        match net_guard::literal_ip(url.url()) {
            Some(ip) => self
                .policy
                .check_target(ip, url.url().port_or_known_default().unwrap_or(0))
                .map_err(|detail| Failure::new(FailureReason::SourceNotPublic, detail)),
            None => Ok(()),
        }
    }

    /// The client for `url`'s port, after the checks of [`Fetcher::check_literal`].
    fn client_for<'a>(
        &self,
        url: &ImageUrl,
        (allowed, other): (&'a reqwest::Client, &'a reqwest::Client),
    ) -> Result<&'a reqwest::Client, FetchError> {
        self.check_literal(url).map_err(FetchError::Permanent)?;
        let port = url.url().port_or_known_default().unwrap_or(0);
        Ok(if self.policy.port_allowed(port) { allowed } else { other })
    }

    /// POSTs a JSON body under the same address and port rules as image fetches, without following redirects
    /// (a `3xx` is an answer like any other); returns the answer's status code.
    pub async fn post_json(
        &self,
        url: &ImageUrl,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<u16, FetchError> {
        let client = self.client_for(url, (&self.webhook, &self.webhook_other_ports))?;
        let mut request = client.post(url.url().clone()).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.map_err(classify)?;
        Ok(response.status().as_u16())
    }

    /// Downloads the body of `url`, refusing it as soon as it exceeds the byte cap.
    pub async fn fetch(&self, url: &ImageUrl) -> Result<Vec<u8>, FetchError> {
        let client = self.client_for(url, (&self.client, &self.other_ports))?;
        let mut response = client.get(url.url().clone()).send().await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            let detail = format!("HTTP {status} from {}", url.url().host_str().unwrap_or(""));
            return Err(if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                FetchError::transient(FailureReason::HttpStatus, detail)
            } else {
                FetchError::permanent(FailureReason::HttpStatus, detail)
            });
        }
        if response.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(too_large(self.max_bytes));
        }
        let mut body = Vec::with_capacity(response.content_length().unwrap_or(64 * 1024).min(self.max_bytes) as usize);
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(too_large(self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Why a redirect to `url` must not be followed, if it must not. Domain names are checked by the resolver when
/// the connection opens; IP literals never reach it, so they are checked here, with their port. A domain name on
/// a port outside the allowed ones is refused by a client that may reach public addresses (its resolver cannot
/// see the port); the client for other ports reaches allow-listed addresses only, so it may follow it.
fn refuse_redirect(policy: &Policy, url: &url::Url, allow_listed_only: bool) -> Option<Failure> {
    if !matches!(url.scheme(), "http" | "https") {
        let detail = format!("redirect to a `{}` URL is not allowed", url.scheme());
        return Some(Failure::new(FailureReason::BadRedirect, detail));
    }
    let port = url.port_or_known_default().unwrap_or(0);
    let refused = match net_guard::literal_ip(url) {
        Some(ip) => policy.check_target(ip, port).err(),
        None if !allow_listed_only && !policy.port_allowed(port) => {
            Some(format!("port {port} of a host name (only allow-listed IP literals may use other ports)"))
        }
        None => None,
    };
    refused.map(|detail| Failure::new(FailureReason::SourceNotPublic, format!("redirect to {url}: {detail}")))
}

/// A fetch refused by this module's rules (address, port, redirect); found again in reqwest's error chain so that
/// it is reported as permanent, with its reason.
#[derive(Debug)]
struct Refused(Failure);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.detail)
    }
}

impl StdError for Refused {}

/// Resolves with the system resolver (through tokio) and keeps only the addresses the policy allows (with
/// `allow_listed_only`, only those inside the allow-list: the client for ports outside the allowed ones).
struct GuardedResolver {
    policy: Arc<Policy>,
    allow_listed_only: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let allow_listed_only = self.allow_listed_only;
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: the connector puts the URL's port on the returned addresses.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused) = vet(&policy, resolved, allow_listed_only);
            if allowed.is_empty() {
                let reasons = if refused.is_empty() { "no address".to_string() } else { refused.join("; ") };
                let failure = Failure::new(FailureReason::SourceNotPublic, format!("host {host}: {reasons}"));
                return Err(Box::new(Refused(failure)) as Box<dyn StdError + Send + Sync>);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Splits resolved addresses into those the policy allows and the reasons for the others.
fn vet(policy: &Policy, resolved: Vec<SocketAddr>, allow_listed_only: bool) -> (Vec<SocketAddr>, Vec<String>) {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in resolved {
        let ip: IpAddr = addr.ip();
        let verdict = match policy.check(ip) {
            _ if !allow_listed_only || policy.is_allowed_explicitly(ip) => policy.check(ip),
            Ok(()) => Err(format!("refused address {ip} on a port outside {:?} (not allow-listed)", policy.ports)),
            Err(reason) => Err(format!("{reason}, and not allow-listed for a port outside {:?}", policy.ports)),
        };
        match verdict {
            Ok(()) => allowed.push(addr),
            Err(reason) => {
                if !refused.contains(&reason) {
                    refused.push(reason);
                }
            }
        }
    }
    (allowed, refused)
}

fn too_large(max: u64) -> FetchError {
    FetchError::permanent(FailureReason::TooLarge, format!("image is larger than the {max}-byte limit"))
}

fn classify(e: reqwest::Error) -> FetchError {
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return FetchError::Permanent(refused.0.clone());
        }
        source = cause.source();
    }
    if e.is_redirect() {
        FetchError::permanent(FailureReason::BadRedirect, format!("redirect refused: {}", chain(&e)))
    } else if e.is_builder() {
        FetchError::permanent(FailureReason::SourceUnreachable, format!("invalid request: {}", chain(&e)))
    } else if e.is_timeout() {
        FetchError::transient(FailureReason::SourceTimeout, format!("fetch timed out: {}", chain(&e)))
    } else {
        FetchError::transient(FailureReason::SourceUnreachable, format!("fetch failed: {}", chain(&e)))
    }
}

/// An error with its causes, `outer: inner: …` (reqwest's own message rarely says what went wrong).
fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn vet_keeps_only_allowed_addresses() {
        let policy = Policy::parse(None).unwrap();
        let (allowed, refused) = vet(&policy, addrs(&["127.0.0.1:0", "[::1]:0", "8.8.8.8:0", "10.0.0.1:0"]), false);
        assert_eq!(allowed, addrs(&["8.8.8.8:0"]));
        assert_eq!(
            refused,
            vec![
                "refused address 127.0.0.1 (loopback)",
                "refused address ::1 (loopback)",
                "refused address 10.0.0.1 (private)"
            ]
        );
        let policy = Policy::parse(Some("127.0.0.0/8")).unwrap();
        let (allowed, refused) = vet(&policy, addrs(&["127.0.0.1:0", "[::1]:0"]), false);
        assert_eq!(allowed, addrs(&["127.0.0.1:0"]));
        assert_eq!(refused, vec!["refused address ::1 (loopback)"]);
        // for a port outside the allowed ones, only allow-listed addresses are kept
        let (allowed, refused) = vet(&policy, addrs(&["127.0.0.1:0", "8.8.8.8:0"]), true);
        assert_eq!(allowed, addrs(&["127.0.0.1:0"]));
        assert_eq!(refused, vec!["refused address 8.8.8.8 on a port outside [80, 443] (not allow-listed)"]);
    }
}
