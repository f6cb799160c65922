//! Image compression: bytes of any supported format in, a JPEG of the same (oriented) dimensions out.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// Limits checked against the image header before any pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct CompressLimits {
    pub max_pixels: u64,
    pub max_dimension: u32,
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

const SUPPORTED: [ImageFormat; 6] =
    [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Gif, ImageFormat::Bmp, ImageFormat::Tiff];

fn sniff_text(input: &[u8]) -> Option<&'static str> {
    let head = String::from_utf8_lossy(&input[..input.len().min(512)]).to_ascii_lowercase();
    let head = head.trim_start();
    if head.starts_with("<svg") || (head.starts_with("<?xml") && head.contains("<svg")) {
        Some("SVG documents are not accepted")
    } else if head.starts_with("<!doctype html") || head.starts_with("<html") {
        Some("the URL returned an HTML page")
    } else {
        None
    }
}

/// Decodes `input` (format detected from its bytes), applies EXIF orientation, flattens transparency onto white,
/// and encodes a baseline JPEG at `quality` with no metadata.
pub fn compress(input: &[u8], quality: u8, limits: CompressLimits) -> Result<Compressed, CompressError> {
    let reader =
        ImageReader::new(Cursor::new(input)).with_guessed_format().map_err(|e| CompressError::Decode(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(CompressError::NotAnImage(sniff_text(input).unwrap_or("unknown data").to_string()));
    };
    if !SUPPORTED.contains(&format) {
        return Err(CompressError::Unsupported(format!("{format:?}")));
    }
    let mut decoder = reader.into_decoder().map_err(|e| CompressError::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_dimension || height > limits.max_dimension {
        return Err(CompressError::TooLarge { width, height, limit: format!("{} px per side", limits.max_dimension) });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(CompressError::TooLarge { width, height, limit: format!("{} pixels", limits.max_pixels) });
    }
    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(limits.max_dimension);
    decode_limits.max_image_height = Some(limits.max_dimension);
    // Room for the decoded pixels at up to 16 bits per channel with alpha, plus codec scratch space.
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(decode_limits).map_err(|e| CompressError::Decode(e.to_string()))?;
    let orientation = decoder.orientation().map_err(|e| CompressError::Decode(e.to_string()))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| CompressError::Decode(e.to_string()))?;
    image.apply_orientation(orientation);

    let mut jpeg = Vec::with_capacity(input.len() / 2);
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality.clamp(1, 100));
    let (width, height) = (image.width(), image.height());
    let result = if image.color().has_alpha() {
        encoder.encode_image(&flatten_onto_white(&image))
    } else if matches!(image, DynamicImage::ImageLuma8(_)) {
        encoder.encode_image(&image)
    } else {
        encoder.encode_image(&image.into_rgb8())
    };
    result.map_err(|e| CompressError::Encode(e.to_string()))?;
    Ok(Compressed { jpeg, width, height, source_format: format })
}

/// Composites an image with transparency onto a white background (JPEG has no alpha channel).
fn flatten_onto_white(image: &DynamicImage) -> RgbImage {
    let rgba = image.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u16::from(src[3]);
        for c in 0..3 {
            let v = (u16::from(src[c]) * a + 255 * (255 - a) + 127) / 255;
            dst[c] = v as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgba};

    const LIMITS: CompressLimits = CompressLimits { max_pixels: 10_000_000, max_dimension: 10_000 };

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])))
    }

    #[test]
    fn png_becomes_jpeg_of_same_size() {
        let out = compress(&encode(&gradient(64, 48), ImageFormat::Png), 50, LIMITS).unwrap();
        assert_eq!((out.width, out.height, out.source_format), (64, 48, ImageFormat::Png));
        let back = image::load_from_memory_with_format(&out.jpeg, ImageFormat::Jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (64, 48));
    }

    #[test]
    fn transparent_pixels_become_white_not_black() {
        let img = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(16, 16, Rgba([0, 0, 0, 0])));
        let out = compress(&encode(&img, ImageFormat::Png), 90, LIMITS).unwrap();
        let back = image::load_from_memory(&out.jpeg).unwrap().to_rgb8();
        assert!(back.pixels().all(|p| p.0.iter().all(|&c| c > 245)), "{:?}", back.get_pixel(0, 0));
    }

    #[test]
    fn refuses_non_images_and_oversize() {
        assert!(
            matches!(compress(b"<html><body>hi</body></html>", 50, LIMITS), Err(CompressError::NotAnImage(m)) if m.contains("HTML"))
        );
        assert!(
            matches!(compress(b"<svg xmlns='http://www.w3.org/2000/svg'/>", 50, LIMITS), Err(CompressError::NotAnImage(m)) if m.contains("SVG"))
        );
        assert!(matches!(compress(b"hello", 50, LIMITS), Err(CompressError::NotAnImage(_))));
        let small = CompressLimits { max_pixels: 100, max_dimension: 10_000 };
        assert!(matches!(
            compress(&encode(&gradient(20, 20), ImageFormat::Png), 50, small),
            Err(CompressError::TooLarge { .. })
        ));
    }
}
