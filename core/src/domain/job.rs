//! The image job (one SQS message per image) and the object keys derived from request ids.

use serde::{Deserialize, Serialize};

use super::{ImageUrl, RequestId};

/// The body of one SQS message: one image to compress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageJob {
    pub request_id: RequestId,
    pub serial_number: i64,
    /// Position of the image in the row's `inputImageUrls`.
    pub index: u32,
    pub url: ImageUrl,
    /// The `RequestProgress` counter this image is counted on.
    #[serde(default)]
    pub shard: u32,
}

impl ImageJob {
    /// S3 key of the compressed image: stable for a given job, so a redelivery overwrites, never duplicates.
    pub fn output_key(&self) -> String {
        format!("outputs/{}/{}-{}.jpg", self.request_id, self.serial_number, self.index)
    }
}

/// S3 key of a request's output CSV.
pub fn output_csv_key(id: &RequestId) -> String {
    format!("outputs/{id}/output.csv")
}

/// Prefix of the uploads bucket whose new `.csv` objects are ingested (S3 `ObjectCreated` trigger).
pub const INCOMING_PREFIX: &str = "incoming/";

/// Key of a presigned upload: the request id is in the key, so it is known before the file arrives.
pub fn presigned_upload_key(id: &RequestId) -> String {
    format!("{INCOMING_PREFIX}{id}.csv")
}

/// The request id of a CSV dropped at `bucket`/`key`: the id in a presigned upload's key, or one derived from the
/// object's identity (bucket, key and version or ETag), so a duplicated or retried event maps to the same request.
pub fn dropped_request_id(bucket: &str, key: &str, version: &str) -> RequestId {
    key.strip_prefix(INCOMING_PREFIX)
        .and_then(|rest| rest.strip_suffix(".csv"))
        .and_then(|id| RequestId::parse(id).ok().filter(|parsed| parsed.as_str() == id))
        .unwrap_or_else(|| RequestId::derived_from(&format!("s3://{bucket}/{key}#{version}")))
}

/// S3 key under which an API-uploaded CSV is kept.
pub fn upload_csv_key(id: &RequestId) -> String {
    format!("uploads/{id}.csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_ids_come_from_presigned_keys_or_the_object_identity() {
        let id = RequestId::new();
        assert_eq!(dropped_request_id("b", &presigned_upload_key(&id), "etag1"), id);
        let a = dropped_request_id("b", "incoming/products.csv", "etag1");
        assert_eq!(a, dropped_request_id("b", "incoming/products.csv", "etag1"));
        assert_ne!(a, dropped_request_id("b", "incoming/products.csv", "etag2"));
        assert_ne!(a, dropped_request_id("c", "incoming/products.csv", "etag1"));
        // an upper-case id in a key is not the canonical form: derived, not taken
        let upper = format!("incoming/{}.csv", id.as_str().to_uppercase());
        assert_ne!(dropped_request_id("b", &upper, "e"), id);
    }

    #[test]
    fn output_keys_are_stable() {
        let job = ImageJob {
            request_id: RequestId::parse("0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b").unwrap(),
            serial_number: 7,
            index: 2,
            url: ImageUrl::parse("http://127.0.0.1/a.jpg").unwrap(),
            shard: 3,
        };
        assert_eq!(job.output_key(), "outputs/0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b/7-2.jpg");
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<ImageJob>(&json).unwrap(), job);
    }
}
