//! One `Config`, read once from the environment (prefix `IMGPIPE_`).
//!
//! Every setting here is listed in the README's configuration table and in `template.yaml`.

use serde::Deserialize;

fn default_database() -> String {
    "imgpipe".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_quality() -> u8 {
    50
}
fn default_fetch_timeout_ms() -> u64 {
    15_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_max_image_bytes() -> u64 {
    40 * 1024 * 1024
}
fn default_max_pixels() -> u64 {
    50_000_000
}
fn default_max_dimension() -> u32 {
    20_000
}
fn default_max_decode_bytes() -> u64 {
    1 << 30
}
fn default_memory_reserve_bytes() -> u64 {
    512 << 20
}
fn default_url_expiry_secs() -> u64 {
    3600
}
fn default_max_csv_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_max_dropped_csv_bytes() -> usize {
    200 * 1024 * 1024
}
fn default_webhook_timeout_ms() -> u64 {
    10_000
}
fn default_webhook_backoff_secs() -> u64 {
    30
}
fn default_webhook_max_backoff_secs() -> u64 {
    3_600
}
fn default_webhook_horizon_secs() -> u64 {
    86_400
}
fn default_webhook_stall_secs() -> u64 {
    7_200
}
fn default_sweep_grace_secs() -> u64 {
    900
}
fn default_sweep_max_requests() -> usize {
    1_000
}
fn default_finalise_lease_secs() -> u64 {
    300
}
fn default_max_rows() -> usize {
    100_000
}
fn default_max_urls_per_row() -> usize {
    50
}
fn default_max_url_chars() -> usize {
    2_048
}
fn default_max_product_name_bytes() -> usize {
    1_024
}
fn default_max_row_bytes() -> usize {
    128 * 1024
}
fn default_enqueue_concurrency() -> usize {
    32
}
fn default_max_images_per_request() -> i64 {
    100_000
}
fn default_max_open_requests() -> i64 {
    100
}
fn default_max_queued_images() -> i64 {
    1_000_000
}
fn default_progress_shards() -> u32 {
    16
}
fn default_tenant_claim() -> String {
    "client_id".into()
}

/// A secret setting: `Debug` and logs show `[redacted]`; [`Secret::expose`] is the one way to read it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Runtime settings of every function. Field `foo_bar` is read from `IMGPIPE_FOO_BAR`.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// MongoDB connection string (`mongodb://` or `mongodb+srv://`; it may hold a password).
    pub mongodb_uri: Secret,
    /// Database that holds `Requests` and `RequestData`.
    #[serde(default = "default_database")]
    pub mongodb_database: String,
    /// Bucket that receives uploaded CSVs (`uploads/…`) and dropped CSVs (`incoming/…`).
    pub uploads_bucket: String,
    /// Private bucket for compressed images and output CSVs.
    pub outputs_bucket: String,
    /// URL of the SQS queue with one message per image.
    pub queue_url: String,
    /// URL of the SQS queue of webhook deliveries; uploads asking for a webhook are refused while it is unset.
    #[serde(default)]
    pub webhook_queue_url: Option<String>,
    /// AWS region; also used for the local stack.
    #[serde(default = "default_region")]
    pub region: String,
    /// Custom S3 endpoint (local stack); path-style addressing is used when set.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// Custom SQS endpoint (local stack).
    #[serde(default)]
    pub sqs_endpoint: Option<String>,
    /// Base URL of the HTTP API, used to build `statusUrl` (else a relative path is returned).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// JPEG quality of the compressed images (1–100).
    #[serde(default = "default_quality")]
    pub jpeg_quality: u8,
    /// Total time allowed to fetch one image.
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
    /// Time allowed to open the connection of an image fetch.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Largest image body accepted, enforced while streaming.
    #[serde(default = "default_max_image_bytes")]
    pub max_image_bytes: u64,
    /// Largest decoded image, in pixels (width × height), refused before decoding.
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
    /// Largest width or height accepted.
    #[serde(default = "default_max_dimension")]
    pub max_dimension: u32,
    /// Most memory decoding one image may hold (its decode budget, from the header: pixels × channels × bytes per
    /// sample × the decoder's copies, plus rows and output); a larger image is refused before decoding.
    #[serde(default = "default_max_decode_bytes")]
    pub max_decode_bytes: u64,
    /// Memory all the images a worker process decodes at once may hold together (the sum of their decode budgets
    /// and input bytes). Unset: the function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, 1,769 MB when not on
    /// Lambda) minus `IMGPIPE_MEMORY_RESERVE_BYTES`.
    #[serde(default)]
    pub decode_budget_bytes: Option<u64>,
    /// What the worker keeps out of the decode budget: the runtime and clients, fetched bodies waiting for their
    /// turn, outputs being stored, and the finaliser's rows and output CSV.
    #[serde(default = "default_memory_reserve_bytes")]
    pub memory_reserve_bytes: u64,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (MB), set by Lambda.
    #[serde(skip)]
    pub function_memory_mb: Option<u64>,
    /// Embed a compact sRGB ICC profile (600 bytes) in every output, for viewers that do not assume sRGB. Off: plain
    /// sRGB JPEGs without a profile, which browsers show as sRGB.
    #[serde(default)]
    pub embed_srgb_profile: bool,
    /// Keep the input's EXIF Artist and Copyright fields in the output (a minimal EXIF with those two only); GPS,
    /// serial numbers, XMP, IPTC and comments are dropped either way. Off: no metadata at all.
    #[serde(default)]
    pub keep_copyright: bool,
    /// Comma-separated CIDRs that image fetches may reach even though they are private, loopback or link-local
    /// (for local development and tests, e.g. `127.0.0.0/8`). Empty by default: such addresses are refused.
    #[serde(default)]
    pub fetch_allow_cidrs: Option<String>,
    /// Comma-separated ports image fetches may use on public addresses (default `80,443`); addresses inside
    /// `fetch_allow_cidrs` may use any port.
    #[serde(default)]
    pub fetch_allow_ports: Option<String>,
    /// Public base URL of the outputs bucket (a CDN in front of it). When set, output URLs are
    /// `<base>/<key>` and are handed out as they are; when unset, the status API and the output CSV download hand
    /// out presigned URLs.
    #[serde(default)]
    pub output_base_url: Option<String>,
    /// Lifetime of presigned URLs handed out by the status API.
    #[serde(default = "default_url_expiry_secs")]
    pub url_expiry_secs: u64,
    /// Largest CSV accepted by the upload API.
    #[serde(default = "default_max_csv_bytes")]
    pub max_csv_bytes: usize,
    /// Largest CSV ingested from the uploads bucket (presigned uploads and dropped files).
    #[serde(default = "default_max_dropped_csv_bytes")]
    pub max_dropped_csv_bytes: usize,
    /// Most product rows in one CSV.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Most image URLs in one row.
    #[serde(default = "default_max_urls_per_row")]
    pub max_urls_per_row: usize,
    /// Longest image URL, in characters (at most 65,536: one image message must fit SQS's 256 KiB).
    #[serde(default = "default_max_url_chars")]
    pub max_url_chars: usize,
    /// Longest product name, in UTF-8 bytes.
    #[serde(default = "default_max_product_name_bytes")]
    pub max_product_name_bytes: usize,
    /// Largest CSV row, in bytes of its cells (bounds one `RequestData` document).
    #[serde(default = "default_max_row_bytes")]
    pub max_row_bytes: usize,
    /// Secret of the HMAC-SHA256 signature on webhook calls; webhooks are refused while it is unset.
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    /// Time allowed for one webhook attempt (at most 10 s are used).
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// Delay before the second webhook attempt; doubled for each further one, up to the maximum.
    #[serde(default = "default_webhook_backoff_secs")]
    pub webhook_backoff_secs: u64,
    #[serde(default = "default_webhook_max_backoff_secs")]
    pub webhook_max_backoff_secs: u64,
    /// How long after the request became final a webhook is retried before it is marked `failed`.
    #[serde(default = "default_webhook_horizon_secs")]
    pub webhook_horizon_secs: u64,
    /// A queued delivery quiet for this long (no attempt) has lost its message: the sweeper queues it again.
    /// Keep it above the maximum backoff.
    #[serde(default = "default_webhook_stall_secs")]
    pub webhook_stall_secs: u64,
    /// The sweeper looks only at requests older than this (younger ones are still in their owners' hands).
    #[serde(default = "default_sweep_grace_secs")]
    pub sweep_grace_secs: u64,
    /// Most unfinished requests one sweep examines.
    #[serde(default = "default_sweep_max_requests")]
    pub sweep_max_requests: usize,
    /// How long a worker that started finalising a request owns it; past that (the worker died), another may.
    #[serde(default = "default_finalise_lease_secs")]
    pub finalise_lease_secs: u64,
    /// `SendMessageBatch` calls in flight at once during an upload.
    #[serde(default = "default_enqueue_concurrency")]
    pub enqueue_concurrency: usize,
    /// Progress counters per request (`RequestProgress` documents), so that no single document takes one
    /// write per image; a request gets `min(this, images)` of them.
    #[serde(default = "default_progress_shards")]
    pub progress_shards: u32,
    /// Tenant quotas, defaults (a tenant's overrides in `Tenants`, set with `imgpipe-admin tenant set`, win):
    /// most images in one request,
    #[serde(default = "default_max_images_per_request")]
    pub max_images_per_request: i64,
    /// most requests not final at once,
    #[serde(default = "default_max_open_requests")]
    pub max_open_requests: i64,
    /// most images in the tenant's requests that are not final.
    #[serde(default = "default_max_queued_images")]
    pub max_queued_images: i64,
    /// The access-token claim that names the caller's tenant (`crate::auth::TenantId`). The default, `client_id`,
    /// is what Cognito's client-credentials tokens carry: one app client per tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
}

impl Config {
    /// The limits every image is checked against before it is decoded.
    pub fn compress_limits(&self) -> crate::compress::CompressLimits {
        crate::compress::CompressLimits {
            max_pixels: self.max_pixels,
            max_dimension: self.max_dimension,
            max_decode_bytes: self.max_decode_bytes.min(self.decode_budget()),
        }
    }

    /// The worker process's decode budget (`IMGPIPE_DECODE_BUDGET_BYTES`), in bytes.
    pub fn decode_budget(&self) -> u64 {
        self.decode_budget_bytes.unwrap_or_else(|| {
            (self.function_memory_mb.unwrap_or(1769) << 20).saturating_sub(self.memory_reserve_bytes)
        })
    }

    /// What outputs carry besides their pixels.
    pub fn output_options(&self) -> crate::compress::OutputOptions {
        crate::compress::OutputOptions {
            embed_srgb_profile: self.embed_srgb_profile,
            keep_copyright: self.keep_copyright,
        }
    }

    /// Reads `IMGPIPE_*` variables; `AWS_REGION` is used when `IMGPIPE_REGION` is not set.
    pub fn from_env() -> Result<Self, envy::Error> {
        // An empty variable means unset (`sam local` turns a template's conditionally unset variables into "").
        let vars = std::env::vars().filter(|(k, v)| !(k.starts_with("IMGPIPE_") && v.is_empty()));
        let mut config: Config = envy::prefixed("IMGPIPE_").from_iter(vars)?;
        config.function_memory_mb = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").ok().and_then(|v| v.parse().ok());
        if std::env::var_os("IMGPIPE_REGION").is_none()
            && let Ok(region) = std::env::var("AWS_REGION")
        {
            config.region = region;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::OutputOptions;

    /// The configuration read from `IMGPIPE_*` pairs as `from_env` reads the environment, with the required ones.
    fn read(extra: &[(&str, &str)]) -> Config {
        let required = [
            ("IMGPIPE_MONGODB_URI", "mongodb://unused"),
            ("IMGPIPE_UPLOADS_BUCKET", "uploads"),
            ("IMGPIPE_OUTPUTS_BUCKET", "outputs"),
            ("IMGPIPE_QUEUE_URL", "memory://images"),
        ];
        let vars = required.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string()));
        envy::prefixed("IMGPIPE_").from_iter(vars).unwrap()
    }

    /// Outputs carry nothing but pixels unless a variable asks; each variable turns on its own option only.
    #[test]
    fn output_options_are_off_unless_asked() {
        assert_eq!(read(&[]).output_options(), OutputOptions { embed_srgb_profile: false, keep_copyright: false });
        let profile = read(&[("IMGPIPE_EMBED_SRGB_PROFILE", "true")]).output_options();
        assert_eq!(profile, OutputOptions { embed_srgb_profile: true, keep_copyright: false });
        let copyright = read(&[("IMGPIPE_KEEP_COPYRIGHT", "true")]).output_options();
        assert_eq!(copyright, OutputOptions { embed_srgb_profile: false, keep_copyright: true });
    }
}
