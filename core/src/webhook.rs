//! Webhook signatures: HMAC-SHA256 over `"<timestamp>.<body>"`, and the receiver's check.
//!
//! Headers of every delivery: `Webhook-Id: <id>` (the same for every attempt and copy of one delivery: receivers
//! de-duplicate on it), `Imgpipe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` and
//! `Imgpipe-Request-Id: <requestId>`. A receiver rejects a signature whose timestamp is more than a tolerance
//! away from its clock ([`DEFAULT_TOLERANCE`]), so a captured delivery cannot be replayed later.

use std::time::Duration;

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const WEBHOOK_ID: &str = "webhook-id";
pub const SIGNATURE: &str = "imgpipe-signature";
pub const REQUEST_ID: &str = "imgpipe-request-id";

/// How far a signature's timestamp may be from the receiver's clock.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The webhook key of `tenant`: HMAC-SHA256(master secret, tenant) in hex. Each tenant's deliveries are signed
/// with its own key (the hex string's bytes are the HMAC key), so one tenant's key verifies nothing of another's,
/// and none is stored anywhere: a database dump reveals none of them. `GET /webhook-key` shows a tenant its own.
pub fn tenant_key(master: &[u8], tenant: &crate::auth::TenantId) -> String {
    let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes keys of any length");
    mac.update(tenant.as_str().as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// What `GET /webhook-key` answers: the caller's tenant, its key and how deliveries are signed with it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub tenant: crate::auth::TenantId,
    /// The HMAC-SHA256 key: the bytes of this hex string.
    pub key: String,
    pub algorithm: &'static str,
    pub signature_header: &'static str,
    /// How far a delivery's timestamp may be from the receiver's clock before it should be refused (replays).
    pub tolerance_secs: u64,
}

/// The webhook key of `tenant` under this deployment's master secret, or [`Error::Disabled`] without one.
pub fn key_view(config: &crate::Config, tenant: &crate::auth::TenantId) -> crate::Result<KeyView> {
    let master = config.webhook_secret.as_ref().ok_or_else(|| {
        crate::Error::Disabled("webhooks are disabled here (IMGPIPE_WEBHOOK_SECRET is not set)".into())
    })?;
    Ok(KeyView {
        tenant: tenant.clone(),
        key: tenant_key(master.expose().as_bytes(), tenant),
        algorithm: "HMAC-SHA256",
        signature_header: SIGNATURE,
        tolerance_secs: DEFAULT_TOLERANCE.as_secs(),
    })
}

/// The signature header value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, body).finalize().into_bytes()))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Whether `header` is a valid signature of `body`, made within `tolerance` of `now` (unix seconds): what a
/// receiver checks. The comparison of the MAC is constant-time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance: Duration) -> bool {
    let part = |prefix: &str| header.split(',').find_map(|p| p.trim().strip_prefix(prefix));
    let Some(timestamp) = part("t=").and_then(|t| t.parse::<i64>().ok()) else { return false };
    if timestamp.abs_diff(now) > tolerance.as_secs() {
        return false;
    }
    let Some(given) = part("v1=").and_then(unhex) else { return false };
    mac(secret, timestamp, body).verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000;

    #[test]
    fn signatures_verify_and_tampering_is_detected() {
        let header = signature(b"s3cret", T, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(b"s3cret", &header, b"{\"a\":1}", T, DEFAULT_TOLERANCE));
        assert!(!verify(b"s3cret", &header, b"{\"a\":2}", T, DEFAULT_TOLERANCE));
        assert!(!verify(b"other", &header, b"{\"a\":1}", T, DEFAULT_TOLERANCE));
        assert!(!verify(
            b"s3cret",
            &header.replace("t=1700000000", "t=1700000001"),
            b"{\"a\":1}",
            T,
            DEFAULT_TOLERANCE
        ));
        assert!(!verify(b"s3cret", "garbage", b"{\"a\":1}", T, DEFAULT_TOLERANCE));
        assert!(!verify(b"s3cret", &format!("{header}0"), b"{\"a\":1}", T, DEFAULT_TOLERANCE));
    }

    #[test]
    fn a_replay_outside_the_tolerance_is_rejected() {
        let header = signature(b"s3cret", T, b"{}");
        let tolerance = DEFAULT_TOLERANCE.as_secs() as i64;
        assert!(verify(b"s3cret", &header, b"{}", T + tolerance, DEFAULT_TOLERANCE));
        assert!(verify(b"s3cret", &header, b"{}", T - tolerance, DEFAULT_TOLERANCE));
        assert!(!verify(b"s3cret", &header, b"{}", T + tolerance + 1, DEFAULT_TOLERANCE));
        assert!(!verify(b"s3cret", &header, b"{}", T - tolerance - 1, DEFAULT_TOLERANCE));
        assert!(!verify(b"s3cret", &header, b"{}", T + 86_400, DEFAULT_TOLERANCE));
    }

    #[test]
    fn each_tenant_has_its_own_key() {
        let a = crate::auth::TenantId::parse("tenant-a").unwrap();
        let b = crate::auth::TenantId::parse("tenant-b").unwrap();
        let (ka, kb) = (tenant_key(b"master", &a), tenant_key(b"master", &b));
        assert_eq!(ka.len(), 64);
        assert_ne!(ka, kb);
        assert_eq!(ka, tenant_key(b"master", &a), "derived, not random");
        assert_ne!(ka, tenant_key(b"other master", &a));
        let header = signature(ka.as_bytes(), T, b"{}");
        assert!(verify(ka.as_bytes(), &header, b"{}", T, DEFAULT_TOLERANCE));
        assert!(
            !verify(kb.as_bytes(), &header, b"{}", T, DEFAULT_TOLERANCE),
            "A's webhook does not verify with B's key"
        );
    }
}
