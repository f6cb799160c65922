//! A neutral point in time: milliseconds since the Unix epoch, UTC. Adapters convert it to their own types
//! (BSON dates in MongoDB); the API shows it as RFC 3339.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(since.as_millis() as i64)
    }

    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_millis() as i64))
    }

    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d.as_millis() as i64))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    fn offset(self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }

    /// RFC 3339 with milliseconds (`2026-11-25T12:00:00.123Z`); the milliseconds as a number outside its range.
    pub fn rfc3339(self) -> String {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        self.offset().and_then(|t| t.format(&format).ok()).unwrap_or_else(|| self.0.to_string())
    }

    /// Parses an RFC 3339 date-time (any offset).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Self((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    /// The UTC day, `YYYY-MM-DD`.
    pub fn day(self) -> String {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        self.offset().and_then(|t| t.format(&format).ok()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        let t = Timestamp::from_millis(1_764_072_000_123);
        assert_eq!(t.rfc3339(), "2025-11-25T12:00:00.123Z");
        assert_eq!(t.day(), "2025-11-25");
        assert_eq!(Timestamp::parse_rfc3339("2025-11-25T12:00:00.123Z"), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("2025-11-25T13:00:00.123+01:00"), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        assert_eq!(Timestamp::from_millis(0).day(), "1970-01-01");
    }

    #[test]
    fn arithmetic() {
        let t = Timestamp::from_millis(10_000);
        assert_eq!(t.plus(Duration::from_secs(2)).millis(), 12_000);
        assert_eq!(t.minus(Duration::from_secs(2)).millis(), 8_000);
        assert_eq!(t.plus(Duration::from_secs(2)).since(t), Duration::from_secs(2));
        assert_eq!(t.since(t.plus(Duration::from_secs(2))), Duration::ZERO);
    }
}
