//! The URLs the API hands out: of the API itself, and of output objects (public under a base URL, or presigned).

use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::ports::BlobStore;

#[derive(Clone, Copy)]
pub struct Urls<'a> {
    pub config: &'a Config,
    pub blobs: &'a dyn BlobStore,
}

impl Urls<'_> {
    /// Lifetime of the presigned URLs handed out.
    pub fn expiry(&self) -> Duration {
        Duration::from_secs(self.config.url_expiry_secs)
    }

    /// The API's URL of `path` (`/requests/…`): under `IMGPIPE_API_BASE_URL`, else the path alone.
    pub fn api(&self, path: &str) -> String {
        match &self.config.api_base_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => path.to_string(),
        }
    }

    /// The stored URL of an output object: under the public base URL, else the object's S3 URL.
    pub fn stored(&self, key: &str) -> String {
        match &self.config.output_base_url {
            Some(base) => format!("{}/{key}", base.trim_end_matches('/')),
            None => self.blobs.object_url(&self.config.outputs_bucket, key),
        }
    }

    /// A URL the caller can download an output object from: public, or presigned.
    pub async fn download(&self, key: &str) -> Result<String> {
        match &self.config.output_base_url {
            Some(_) => Ok(self.stored(key)),
            None => self.blobs.presign_get(&self.config.outputs_bucket, key, self.expiry()).await,
        }
    }
}
