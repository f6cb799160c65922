//! The decode budget: the bytes decoding an image holds at its peak, computed from its header before any pixel
//! memory is allocated: width × height × channels × bytes per sample × the decoder's copies, plus what the streaming
//! paths really hold (libjpeg's coefficient buffer when the JPEG has several scans, 16 rows otherwise), the colour
//! profile and the output. An image over `CompressLimits::max_decode_bytes` is refused with the reason; the decoders
//! get their part as their own allocation limit; the worker weighs each image by it (`compress::plan`).

use image::{ExtendedColorType, ImageFormat};

use super::CompressError;
use super::orient::ROWS;

/// Decoder allocations allowed beyond its image-sized buffers and the input-sized ones (tables, colour transforms;
/// measured under 1 MiB for every format in tests/tests/decode.rs).
pub(super) const DECODER_SCRATCH: u64 = 4 << 20;

/// image-webp's Huffman tables: 65,536 groups of five one-symbol codes take 18 MB (found by the property tests
/// in tests/tests/decode_props.rs); codes of real size take 4 KiB each but cost input bits to declare.
const WEBP_HUFFMAN_TABLES: u64 = 32 << 20;

/// What decoding one image holds, in bytes.
#[derive(Debug, Clone)]
pub(super) struct Estimate {
    /// The image's width and height, as stored.
    pub size: (u32, u32),
    /// What the decoder itself allocates: the limit it is given (libjpeg's `max_memory_to_use`, `image`'s
    /// `max_alloc`).
    pub decoder: u64,
    /// All of it: the decoder's part, the buffer we decode into, row buffers and the output JPEG.
    pub total: u64,
    /// The kind of image, for a refusal: "a 32-bit float RGBA TIFF".
    pub what: String,
}

impl Estimate {
    /// Refuses an image whose budget is over `max` bytes.
    pub fn check(&self, max: u64) -> Result<(), CompressError> {
        let (width, height) = self.size;
        if self.total <= max {
            return Ok(());
        }
        Err(CompressError::TooLarge {
            width,
            height,
            limit: format!("{max} bytes of decoding memory ({} of this size needs {})", self.what, self.total),
        })
    }
}

/// The encoder: its fixed state (libjpeg's structures, a 64 KiB output buffer; under 1 MiB) and the output JPEG,
/// which grows while it is written: one byte a pixel covers photos at any quality up to about 90 and noise at 50
/// (measured: 0.1–0.4 bytes a pixel for photos at 50).
fn output(pixels: u64) -> u64 {
    pixels + (1 << 20)
}

/// A JPEG of `input_bytes` decoded by libjpeg into `out_channels`-byte pixels (1 grey, 3 RGB, 4 CMYK before
/// conversion), with the coefficient buffer it allocates (`Decoder::coefficient_bytes`), the segments it keeps
/// (EXIF, ICC: at most the input) and the colour profile assembled from them; `rotated`: the decoded image is held
/// whole, as RGB or grey, to be read back in the oriented order.
pub(super) fn libjpeg(
    (width, height): (u32, u32),
    out_channels: u64,
    coefficient_bytes: u64,
    input_bytes: u64,
    icc_bytes: u64,
    rotated: bool,
) -> Estimate {
    let pixels = u64::from(width) * u64::from(height);
    // libjpeg's MCU-row buffers (up to 4 components, 2 × 16 rows of context for upsampling) and the encoder's.
    let mcu_rows = u64::from(width) * 4 * 64;
    let decoder = coefficient_bytes.saturating_add(mcu_rows + input_bytes + icc_bytes + DECODER_SCRATCH);
    let rows = u64::from(width) * out_channels * ROWS as u64;
    let held = if rotated { pixels * out_channels.min(3) } else { rows };
    let scans = if coefficient_bytes > 0 { "progressive " } else { "" };
    Estimate {
        size: (width, height),
        decoder,
        total: decoder.saturating_add(held).saturating_add(rows + mcu_rows).saturating_add(output(pixels)),
        what: format!("a {scans}JPEG{}", if rotated { " needing rotation" } else { "" }),
    }
}

/// An image of `input_bytes` decoded by the `image` crate into one buffer of `decoded` bytes
/// (`ImageDecoder::total_bytes`), from a file whose pixels are `original` (what the decoder holds before
/// converting, for TIFF). Input-sized buffers (a compressed TIFF strip, zune-jpeg's copy of the file, inflated
/// chunks) are at most the input.
pub(super) fn image_crate(
    format: ImageFormat,
    (width, height): (u32, u32),
    decoded: u64,
    original: ExtendedColorType,
    input_bytes: u64,
    icc_bytes: u64,
) -> Estimate {
    let pixels = u64::from(width) * u64::from(height);
    let original_bytes = pixels.saturating_mul(u64::from(original.bits_per_pixel())).div_ceil(8);
    // What each decoder holds besides the buffer it fills (read from their code, checked by the decode tests):
    let beside = match format {
        // The whole image as stored (then converted or copied into the buffer).
        ImageFormat::Tiff => original_bytes,
        // A frame buffer, or a canvas and a frame.
        ImageFormat::Gif => decoded.max(pixels * 4),
        // The same, or the YUV planes of a lossy frame; and the Huffman tables of a lossless bitstream (or of
        // lossless alpha), which a header can make up to 65,536 groups of five whatever the image's size.
        ImageFormat::WebP => decoded.max(pixels * 4) + WEBP_HUFFMAN_TABLES,
        // zune-jpeg (CMYK and YCCK JPEGs): the components of an MCU row, or every coefficient of a progressive
        // file (2 bytes, up to 4 components).
        ImageFormat::Jpeg => pixels * 8,
        // PNG and BMP decode rows straight into the buffer.
        _ => 0,
    };
    let decoder = decoded.saturating_add(beside).saturating_add(input_bytes + icc_bytes + DECODER_SCRATCH);
    Estimate {
        size: (width, height),
        decoder,
        total: decoder.saturating_add(output(pixels)),
        what: format!("a {} {}", describe(original), name(format)),
    }
}

fn name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

/// "32-bit float RGBA", "16-bit RGB", "8-bit grey".
fn describe(colour: ExtendedColorType) -> String {
    use ExtendedColorType::*;
    let (bits, float, model) = match colour {
        L1 | L2 | L4 | L8 | L16 => (colour.bits_per_pixel(), false, "grey"),
        La1 | La2 | La4 | La8 | La16 => (colour.bits_per_pixel() / 2, false, "grey with alpha"),
        Rgb1 | Rgb2 | Rgb4 | Rgb8 | Rgb16 => (colour.bits_per_pixel() / 3, false, "RGB"),
        Rgba1 | Rgba2 | Rgba4 | Rgba8 | Rgba16 => (colour.bits_per_pixel() / 4, false, "RGBA"),
        Rgb32F => (32, true, "RGB"),
        Rgba32F => (32, true, "RGBA"),
        Cmyk8 | Cmyk16 => (colour.bits_per_pixel() / 4, false, "CMYK"),
        other => return format!("{other:?}"),
    };
    format!("{bits}-bit {}{model}", if float { "float " } else { "" })
}
