//! The image job (one SQS message per image) and the object keys derived from request ids.

use serde::{Deserialize, Serialize};

use super::{ImageUrl, RequestId, TenantId};

/// One request of one tenant: what every per-request port operation is keyed by, so that no query can leave the
/// tenant out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub tenant: TenantId,
    pub id: RequestId,
}

impl RequestKey {
    pub fn new(tenant: &TenantId, id: &RequestId) -> Self {
        Self { tenant: tenant.clone(), id: id.clone() }
    }
}

impl std::fmt::Display for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.id)
    }
}

/// Where an image sits in a request: its row and its index in the row's `inputImageUrls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub serial_number: i64,
    pub index: u32,
}

/// The body of one SQS message: one image to compress, for one or more positions of the request (the same URL in
/// several rows is fetched and compressed once, and its output fills every position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageJob {
    /// Version of this message's shape ([`ImageJob::SCHEMA`]); messages of another version are refused as unreadable.
    pub schema: u32,
    pub tenant: TenantId,
    pub request_id: RequestId,
    pub serial_number: i64,
    /// Position of the image in the row's `inputImageUrls`.
    pub index: u32,
    pub url: ImageUrl,
    /// The `RequestProgress` counter this image (every position of it) is counted on.
    #[serde(default)]
    pub shard: u32,
    /// Further positions with the same URL, which get the same output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<Position>,
}

impl ImageJob {
    /// 2: the tenant and the further positions (1 had neither).
    pub const SCHEMA: u32 = 2;

    pub fn key(&self) -> RequestKey {
        RequestKey::new(&self.tenant, &self.request_id)
    }

    /// Every position this job fills, the first one first.
    pub fn positions(&self) -> Vec<Position> {
        let first = Position { serial_number: self.serial_number, index: self.index };
        std::iter::once(first).chain(self.also.iter().copied()).collect()
    }

    /// This job for one of its positions alone.
    pub fn at(&self, position: Position) -> ImageJob {
        ImageJob { serial_number: position.serial_number, index: position.index, also: Vec::new(), ..self.clone() }
    }

    /// S3 key of the compressed image: stable for a given job, so a redelivery overwrites, never duplicates.
    pub fn output_key(&self) -> String {
        format!("outputs/{}/{}/{}-{}.jpg", self.tenant, self.request_id, self.serial_number, self.index)
    }
}

/// S3 key of a request's output CSV.
pub fn output_csv_key(key: &RequestKey) -> String {
    format!("outputs/{}/{}/output.csv", key.tenant, key.id)
}

/// Prefix of the uploads bucket whose new `.csv` objects are ingested (S3 `ObjectCreated` trigger).
pub const INCOMING_PREFIX: &str = "incoming/";

/// Key of a presigned upload: the tenant and the request id are in the key, so the drop is the tenant's and its id
/// is known before the file arrives.
pub fn presigned_upload_key(key: &RequestKey) -> String {
    format!("{INCOMING_PREFIX}{}/{}.csv", key.tenant, key.id)
}

/// The tenant a CSV dropped at `key` belongs to: the first segment under `incoming/` (`incoming/{tenant}/…`), if it
/// is a valid tenant id and the key goes on below it.
pub fn dropped_tenant(key: &str) -> Option<TenantId> {
    let (tenant, rest) = key.strip_prefix(INCOMING_PREFIX)?.split_once('/')?;
    (!rest.is_empty()).then(|| TenantId::parse(tenant).ok()).flatten()
}

/// The request id of a CSV dropped at `bucket`/`key` by `tenant`: the id in a presigned upload's key, or one
/// derived from the tenant and the object's identity (bucket, key and version or ETag), so a duplicated or retried
/// event maps to the same request.
pub fn dropped_request_id(tenant: &TenantId, bucket: &str, key: &str, version: &str) -> RequestId {
    key.strip_prefix(&format!("{INCOMING_PREFIX}{tenant}/"))
        .and_then(|rest| rest.strip_suffix(".csv"))
        .and_then(|id| RequestId::parse(id).ok().filter(|parsed| parsed.as_str() == id))
        .unwrap_or_else(|| RequestId::derived_from(&format!("s3://{tenant}@{bucket}/{key}#{version}")))
}

/// S3 key under which an API-uploaded CSV is kept.
pub fn upload_csv_key(key: &RequestKey) -> String {
    format!("uploads/{}/{}.csv", key.tenant, key.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn dropped_ids_come_from_presigned_keys_or_the_tenant_and_object_identity() {
        let acme = tenant("acme");
        let id = RequestId::new();
        let key = presigned_upload_key(&RequestKey::new(&acme, &id));
        assert_eq!(key, format!("incoming/acme/{id}.csv"));
        assert_eq!(dropped_tenant(&key), Some(acme.clone()));
        assert_eq!(dropped_request_id(&acme, "b", &key, "etag1"), id);
        // another tenant's prefix does not take the id
        assert_ne!(dropped_request_id(&tenant("other"), "b", &key, "etag1"), id);
        let a = dropped_request_id(&acme, "b", "incoming/acme/products.csv", "etag1");
        assert_eq!(a, dropped_request_id(&acme, "b", "incoming/acme/products.csv", "etag1"));
        assert_ne!(a, dropped_request_id(&acme, "b", "incoming/acme/products.csv", "etag2"));
        assert_ne!(a, dropped_request_id(&acme, "c", "incoming/acme/products.csv", "etag1"));
        assert_ne!(a, dropped_request_id(&tenant("other"), "b", "incoming/acme/products.csv", "etag1"));
        // an upper-case id in a key is not the canonical form: derived, not taken
        let upper = format!("incoming/acme/{}.csv", id.as_str().to_uppercase());
        assert_ne!(dropped_request_id(&acme, "b", &upper, "e"), id);
    }

    #[test]
    fn the_tenant_of_a_drop_is_its_first_segment() {
        assert_eq!(dropped_tenant("incoming/acme/2026/list.csv"), Some(tenant("acme")));
        assert_eq!(dropped_tenant("incoming/list.csv"), None);
        assert_eq!(dropped_tenant("incoming/acme/"), None);
        assert_eq!(dropped_tenant("incoming/Acme/list.csv"), None);
        assert_eq!(dropped_tenant("uploads/acme/list.csv"), None);
    }

    #[test]
    fn output_keys_are_stable_and_jobs_round_trip() {
        let job = ImageJob {
            schema: ImageJob::SCHEMA,
            tenant: tenant("acme"),
            request_id: RequestId::parse("0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b").unwrap(),
            serial_number: 7,
            index: 2,
            url: ImageUrl::parse("http://127.0.0.1/a.jpg").unwrap(),
            shard: 3,
            also: vec![Position { serial_number: 9, index: 0 }],
        };
        assert_eq!(job.output_key(), "outputs/acme/0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b/7-2.jpg");
        assert_eq!(job.positions(), [Position { serial_number: 7, index: 2 }, Position { serial_number: 9, index: 0 }]);
        assert_eq!(
            job.at(job.positions()[1]).output_key(),
            "outputs/acme/0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b/9-0.jpg"
        );
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<ImageJob>(&json).unwrap(), job);
        // a version-1 message (no tenant) does not read as a job
        assert!(serde_json::from_str::<ImageJob>(r#"{"requestId":"0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b","serialNumber":1,"index":0,"url":"http://a/b.jpg"}"#).is_err());
    }
}
