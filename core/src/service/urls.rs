//! The URLs the API hands out: of the API itself, and of output objects. With an output base URL (the stack's
//! CloudFront distribution, your own CDN, or the local runner's `/cdn`) output URLs are `<base>/<key>`, stored as
//! they are and never expire; without one (the private mode) the stored URLs are the objects' S3 URLs, which open
//! for nobody, and the API hands out presigned URLs labelled with when they expire.

use std::time::Duration;

use crate::config::Config;
use crate::domain::Timestamp;
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

    /// When the URLs [`Urls::download`] presigns from now on stop working; `None` when they do not expire (public
    /// base URL). Ask before presigning: a signature's date is the signing second (`X-Amz-Date`), so a URL signed
    /// after this call expires at this instant or later, never earlier.
    pub fn expires_at(&self) -> Option<Timestamp> {
        match &self.config.output_base_url {
            Some(_) => None,
            None => Some(Timestamp::from_millis(Timestamp::now().millis() / 1000 * 1000).plus(self.expiry())),
        }
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
