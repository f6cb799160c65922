//! One product row of a request and the state of each of its images.

use serde::{Deserialize, Serialize};

use super::{RequestId, RequestKey, TenantId, Timestamp};
use crate::failure::FailureReason;

/// State of one image of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    Pending,
    Succeeded,
    Failed,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Succeeded, Self::Failed].into_iter().find(|state| state.as_str() == s)
    }
}

/// How one image ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageResult {
    Succeeded { output_key: String, output_url: String },
    Failed { reason: FailureReason },
}

impl ImageResult {
    pub fn state(&self) -> ImageState {
        match self {
            ImageResult::Succeeded { .. } => ImageState::Succeeded,
            ImageResult::Failed { .. } => ImageState::Failed,
        }
    }
}

/// One image of a row: its state and, once settled, its output or its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSlot {
    pub state: ImageState,
    pub output_key: Option<String>,
    pub output_url: Option<String>,
    /// Why the image failed (one of a closed set), and that reason's message in `error`.
    pub reason: Option<FailureReason>,
    pub error: Option<String>,
    /// Whether this image's settlement was added to its progress counter.
    pub counted: bool,
}

impl ImageSlot {
    pub fn pending() -> Self {
        Self {
            state: ImageState::Pending,
            output_key: None,
            output_url: None,
            reason: None,
            error: None,
            counted: false,
        }
    }

    /// How the image ended, once it is settled (an image failed before reasons were stored counts as
    /// `processing_failed`).
    pub fn result(&self) -> Option<ImageResult> {
        match self.state {
            ImageState::Pending => None,
            ImageState::Succeeded => Some(ImageResult::Succeeded {
                output_key: self.output_key.clone().unwrap_or_default(),
                output_url: self.output_url.clone().unwrap_or_default(),
            }),
            ImageState::Failed => {
                Some(ImageResult::Failed { reason: self.reason.unwrap_or(FailureReason::ProcessingFailed) })
            }
        }
    }

    /// What a caller is told about a failed image: its reason's message (documents written before reasons
    /// existed keep their stored text).
    pub fn failure_message(&self) -> &str {
        match self.reason {
            Some(reason) => reason.message(),
            None => self.error.as_deref().unwrap_or("failed"),
        }
    }

    /// The slot after `result` settled it (not yet counted).
    pub fn settled(result: &ImageResult) -> Self {
        match result {
            ImageResult::Succeeded { output_key, output_url } => Self {
                state: ImageState::Succeeded,
                output_key: Some(output_key.clone()),
                output_url: Some(output_url.clone()),
                ..Self::pending()
            },
            ImageResult::Failed { reason } => Self {
                state: ImageState::Failed,
                reason: Some(*reason),
                error: Some(reason.message().to_string()),
                ..Self::pending()
            },
        }
    }
}

/// One CSV row (`RequestData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub tenant: TenantId,
    pub request_id: RequestId,
    pub serial_number: i64,
    pub product_name: String,
    pub input_image_urls: Vec<String>,
    /// Aligned with `input_image_urls`; written when every image of the row is settled (a failed image leaves an
    /// empty string at its position).
    pub output_image_urls: Vec<String>,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// One slot per input URL, in input order.
    pub images: Vec<ImageSlot>,
    pub settled_images: i64,
    pub failed_images: i64,
}

impl Row {
    /// A new row of `urls`, every image pending.
    pub fn new(key: &RequestKey, serial_number: i64, product_name: String, urls: Vec<String>, at: Timestamp) -> Self {
        Self {
            tenant: key.tenant.clone(),
            request_id: key.id.clone(),
            serial_number,
            product_name,
            images: urls.iter().map(|_| ImageSlot::pending()).collect(),
            input_image_urls: urls,
            output_image_urls: Vec::new(),
            created_at: at,
            completed_at: None,
            settled_images: 0,
            failed_images: 0,
        }
    }

    pub fn total_images(&self) -> i64 {
        self.images.len() as i64
    }

    pub fn is_settled(&self) -> bool {
        self.settled_images >= self.total_images()
    }

    /// The output URL of every image, in input order; an image without output gives an empty string.
    pub fn output_urls(&self) -> Vec<String> {
        self.images.iter().map(|s| s.output_url.clone().unwrap_or_default()).collect()
    }

    /// `"image <n>: <reason>"` for each failed image (image numbers are 1-based).
    pub fn image_errors(&self) -> Vec<String> {
        self.images
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.state == ImageState::Failed)
            .map(|(i, slot)| format!("image {}: {}", i + 1, slot.failure_message()))
            .collect()
    }
}
