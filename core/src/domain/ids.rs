//! Identifiers and URLs: each newtype can only hold a valid value, built at the edge ("parse, don't validate").

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifier of one upload: a UUID in canonical lowercase, hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a request id (expected a UUID such as 0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b)")]
pub struct InvalidRequestId(pub String);

impl RequestId {
    /// A new, time-ordered id (UUID v7), so ids of recent requests sort together in indexes.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// A deterministic id derived from a name (UUID v5): the same name always gives the same id.
    pub fn derived_from(name: &str) -> Self {
        const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f1c_2d4e_8b3a_4f5e_9a7c_1e2d_3c4b_5a69);
        Self(uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string())
    }

    pub fn parse(s: &str) -> Result<Self, InvalidRequestId> {
        let uuid = uuid::Uuid::try_parse(s.trim()).map_err(|_| InvalidRequestId(s.to_string()))?;
        Ok(Self(uuid.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl TryFrom<String> for RequestId {
    type Error = InvalidRequestId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RequestId> for String {
    fn from(id: RequestId) -> Self {
        id.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute `http` or `https` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageUrl(url::Url);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidImageUrl {
    #[error("not an absolute URL: {0}")]
    NotAUrl(String),
    #[error("scheme `{0}` is not allowed (only http and https)")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("URL carries credentials")]
    Credentials,
}

impl ImageUrl {
    pub fn parse(s: &str) -> Result<Self, InvalidImageUrl> {
        let url = url::Url::parse(s.trim()).map_err(|e| InvalidImageUrl::NotAUrl(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(InvalidImageUrl::Scheme(other.to_string())),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidImageUrl::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidImageUrl::Credentials);
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl TryFrom<String> for ImageUrl {
    type Error = InvalidImageUrl;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ImageUrl> for String {
    fn from(u: ImageUrl) -> Self {
        u.0.into()
    }
}

impl fmt::Display for ImageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// One product row of an uploaded CSV, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    /// 1-based line of the row in the CSV file (for error reports).
    pub line: u64,
    pub serial_number: i64,
    pub product_name: String,
    pub input_image_urls: Vec<ImageUrl>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_round_trips_and_rejects_garbage() {
        let id = RequestId::new();
        assert_eq!(RequestId::parse(id.as_str()).unwrap(), id);
        assert_eq!(
            RequestId::parse("0192F5E4-7A39-7C1E-9F55-2B1D0C3E4A5B").unwrap().as_str(),
            "0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b"
        );
        assert!(RequestId::parse("../../etc/passwd").is_err());
        assert!(RequestId::parse("").is_err());
    }

    #[test]
    fn derived_request_ids_are_stable_and_distinct() {
        assert_eq!(RequestId::derived_from("a"), RequestId::derived_from("a"));
        assert_ne!(RequestId::derived_from("a"), RequestId::derived_from("b"));
    }

    #[test]
    fn image_url_accepts_http_only() {
        assert!(ImageUrl::parse("https://example.com/a.jpg").is_ok());
        assert!(ImageUrl::parse(" http://127.0.0.1:8080/a.png ").is_ok());
        assert_eq!(ImageUrl::parse("ftp://x/a.jpg"), Err(InvalidImageUrl::Scheme("ftp".into())));
        assert!(matches!(ImageUrl::parse("file:///etc/passwd"), Err(InvalidImageUrl::Scheme(_))));
        assert!(matches!(ImageUrl::parse("example.com/a.jpg"), Err(InvalidImageUrl::NotAUrl(_))));
        assert_eq!(ImageUrl::parse("http://u:p@example.com/a.jpg"), Err(InvalidImageUrl::Credentials));
    }
}
