//! Image compression: bytes of any supported format in, a JPEG of the same (oriented) dimensions out.
//!
//! 1. `sniff`: the format comes from the bytes; non-images are refused and named.
//! 2. Only the header is read before the limits are checked: an image over the side or pixel limit is refused
//!    without allocating its pixels, and the decoder gets a memory budget derived from the checked size.
//! 3. Two decoding backends: `libjpeg` (libjpeg-turbo, for JPEG input; it says which JPEGs it leaves to the other
//!    backend, and counts its fallbacks) and `image_crate` (every other format, into one buffer).
//! 4. `colour` converts pixels stored in another colour space (ICC profile, PNG cICP or gAMA+cHRM) to sRGB, on
//!    the decoded rows or buffer: what comes out is plain sRGB.
//! 5. `orient` applies the EXIF orientation while rows are written, and `pixels` converts whatever the decoder
//!    produced (alpha, 16-bit, float) to the 8-bit grey or RGB rows `encode` takes: no second full-size image.
//! 6. `encode`: libjpeg-turbo with its standard settings (baseline, standard quantisation tables scaled by the
//!    quality, 4:2:0 chroma subsampling, JFIF header) and no other metadata (no EXIF, ICC, XMP or comment is copied
//!    from the input) unless [`OutputOptions`] ask for an sRGB profile or the copyright and artist (`metadata`).
//!    The choices were made with `make bench-codec` (README, "Codec benchmark"); `jpeglib` holds the error
//!    handling both libjpeg wrappers share.

mod budget;
mod colour;
mod encode;
mod image_crate;
pub mod jpeglib;
mod libjpeg;
mod metadata;
mod orient;
mod palette;
mod pixels;
mod sniff;

use image::ImageFormat;

pub use libjpeg::fallbacks as libjpeg_fallbacks;
pub use metadata::OutputOptions;

/// Limits checked against the image header before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressLimits {
    pub max_pixels: u64,
    pub max_dimension: u32,
    /// The most memory decoding one image may hold (its decode budget, `plan`).
    pub max_decode_bytes: u64,
}

impl CompressLimits {
    /// The production defaults (`IMGPIPE_MAX_PIXELS`, `IMGPIPE_MAX_DIMENSION`, `IMGPIPE_MAX_DECODE_BYTES`).
    pub const DEFAULT: CompressLimits =
        CompressLimits { max_pixels: 50_000_000, max_dimension: 20_000, max_decode_bytes: 1 << 30 };
}

impl Default for CompressLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What compressing an image will hold, known from its header alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    /// The decode budget: what decoding, converting and encoding hold at their peak, in bytes (the input bytes
    /// aside). Never over `CompressLimits::max_decode_bytes`: such an image is refused.
    pub decode_bytes: u64,
}

/// A compressed image.
#[derive(Debug, Clone)]
pub struct Compressed {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub source_format: ImageFormat,
}

/// Why an image cannot be compressed. All of these are permanent: retrying gives the same answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressError {
    #[error("not an image: {0}")]
    NotAnImage(String),
    #[error("unsupported image format {0}")]
    Unsupported(String),
    #[error("image is {width}×{height}, over the limit of {limit}")]
    TooLarge { width: u32, height: u32, limit: String },
    #[error("image could not be decoded: {0}")]
    Decode(String),
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
}

/// Decodes `input` (format detected from its bytes), applies EXIF orientation, flattens transparency onto white,
/// and encodes a baseline JPEG at `quality` (clamped to 1–100) with no metadata ([`compress_with`] adds some).
pub fn compress(input: &[u8], quality: u8, limits: CompressLimits) -> Result<Compressed, CompressError> {
    compress_with(input, quality, limits, OutputOptions::default())
}

/// [`compress`], with the metadata `output` asks for (an sRGB profile, the EXIF copyright and artist).
pub fn compress_with(
    input: &[u8],
    quality: u8,
    limits: CompressLimits,
    output: OutputOptions,
) -> Result<Compressed, CompressError> {
    let options = encode::EncodeOptions::new(quality, output);
    let format = sniff::sniff(input)?;
    if format == ImageFormat::Jpeg
        && let libjpeg::Outcome::Done(result) = libjpeg::compress(input, options, limits)
    {
        return result;
    }
    image_crate::compress(input, format, options, limits)
}

/// Reads `input`'s header and says what compressing it will hold, or why it will be refused (the same reasons as
/// [`compress`] gives from the header: not an image, over a limit, over the decode budget). No pixel is decoded.
pub fn plan(input: &[u8], limits: CompressLimits) -> Result<Plan, CompressError> {
    let format = sniff::sniff(input)?;
    let jpeg = if format == ImageFormat::Jpeg { libjpeg::plan(input, limits)? } else { None };
    let estimate = match jpeg {
        Some(planned) => planned,
        None => image_crate::plan(input, format, limits)?,
    };
    estimate.check(limits.max_decode_bytes)?;
    let (width, height) = estimate.size;
    Ok(Plan { format, width, height, decode_bytes: estimate.total })
}

fn check_dimensions(width: u32, height: u32, limits: CompressLimits) -> Result<(), CompressError> {
    if width > limits.max_dimension || height > limits.max_dimension {
        return Err(CompressError::TooLarge { width, height, limit: format!("{} px per side", limits.max_dimension) });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(CompressError::TooLarge { width, height, limit: format!("{} pixels", limits.max_pixels) });
    }
    if width == 0 || height == 0 {
        return Err(CompressError::Decode(format!("the image declares no pixels ({width}×{height})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
