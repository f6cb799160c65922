use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ports::{BlobStore, Bounded};

/// [`BlobStore`] on Amazon S3 or an S3-compatible server (path-style when an endpoint is configured).
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    endpoint: Option<String>,
    region: String,
}

fn storage_error<E: std::error::Error + Send + Sync + 'static>(op: &str, e: SdkError<E>) -> Error {
    Error::Storage(format!("{op}: {}", DisplayErrorContext(e)))
}

impl S3Store {
    pub fn new(sdk: &aws_config::SdkConfig, config: &Config) -> Self {
        let mut builder = aws_sdk_s3::config::Builder::from(sdk);
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            endpoint: config.s3_endpoint.as_ref().map(|e| e.trim_end_matches('/').to_string()),
            region: config.region.clone(),
        }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Creates the bucket if it does not exist (local stack and tests; on AWS the template creates buckets).
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<()> {
        if self.client.head_bucket().bucket(bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => Ok(()),
            Err(e) => Err(storage_error("CreateBucket", e)),
        }
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| storage_error("PutObject", e))?;
        Ok(())
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => {
                let bytes = out.body.collect().await.map_err(|e| Error::Storage(format!("GetObject body: {e}")))?;
                Ok(Some(bytes.to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(storage_error("GetObject", e)),
        }
    }

    async fn get_bounded(&self, bucket: &str, key: &str, max_bytes: u64, etag: Option<&str>) -> Result<Bounded> {
        let mut request = self.client.get_object().bucket(bucket).key(key);
        if let Some(etag) = etag.filter(|e| !e.is_empty()) {
            // Event ETags come unquoted; If-Match wants the quoted form.
            request = request.if_match(format!("\"{}\"", etag.trim_matches('"')));
        }
        let mut out = match request.send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(Bounded::Missing),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => return Ok(Bounded::Replaced),
            Err(e) => return Err(storage_error("GetObject", e)),
        };
        if let Some(len) = out.content_length().filter(|&n| n as u64 > max_bytes) {
            return Ok(Bounded::TooLarge(len as u64));
        }
        let mut body = Vec::new();
        while let Some(chunk) = out.body.next().await {
            let chunk = chunk.map_err(|e| Error::Storage(format!("GetObject body: {e}")))?;
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Ok(Bounded::TooLarge((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bounded::Body(body))
    }

    async fn presign_put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        content_length: u64,
        expires_in: Duration,
    ) -> Result<String> {
        let presigning = PresigningConfig::expires_in(expires_in).map_err(|e| Error::Storage(e.to_string()))?;
        let request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .content_length(content_length as i64)
            .presigned(presigning)
            .await
            .map_err(|e| storage_error("presign PutObject", e))?;
        Ok(request.uri().to_string())
    }

    async fn presign_get(&self, bucket: &str, key: &str, expires_in: Duration) -> Result<String> {
        let presigning = PresigningConfig::expires_in(expires_in).map_err(|e| Error::Storage(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| storage_error("presign GetObject", e))?;
        Ok(request.uri().to_string())
    }

    fn object_url(&self, bucket: &str, key: &str) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{endpoint}/{bucket}/{key}"),
            None => format!("https://{bucket}.s3.{}.amazonaws.com/{key}", self.region),
        }
    }
}
