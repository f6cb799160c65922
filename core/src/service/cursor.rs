//! The one codec of the opaque pagination cursors: a position, base64url-encoded, that the caller hands back.

use base64::Engine;

use crate::domain::{RequestId, Timestamp};
use crate::error::{Error, Result};

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn decode(cursor: &str) -> Option<String> {
    String::from_utf8(ENGINE.decode(cursor).ok()?).ok()
}

fn invalid(cursor: &str) -> Error {
    Error::BadRequest(format!("invalid cursor `{cursor}`"))
}

/// The cursor after row `serial_number` of a request's rows.
pub fn rows_after(serial_number: i64) -> String {
    ENGINE.encode(format!("after:{serial_number}"))
}

pub fn parse_rows(cursor: &str) -> Result<i64> {
    decode(cursor).and_then(|s| s.strip_prefix("after:")?.parse().ok()).ok_or_else(|| invalid(cursor))
}

/// The cursor after request `id`, created at `at`, in the newest-first request list.
pub fn requests_after(at: Timestamp, id: &RequestId) -> String {
    ENGINE.encode(format!("{}|{id}", at.millis()))
}

pub fn parse_requests(cursor: &str) -> Result<(Timestamp, RequestId)> {
    let parsed = decode(cursor).and_then(|raw| {
        let (ms, id) = raw.split_once('|')?;
        Some((Timestamp::from_millis(ms.parse().ok()?), RequestId::parse(id).ok()?))
    });
    parsed.ok_or_else(|| invalid(cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_rows(&rows_after(42)).unwrap(), 42);
        let id = RequestId::new();
        let at = Timestamp::from_millis(1_700_000_000_000);
        assert_eq!(parse_requests(&requests_after(at, &id)).unwrap(), (at, id.clone()));
        for bad in ["", "!!", &ENGINE.encode("before:1"), &ENGINE.encode("x|y"), &rows_after(1)] {
            assert!(parse_requests(bad).is_err(), "{bad}");
        }
        assert!(parse_rows(&requests_after(at, &id)).is_err());
    }
}
