//! Image compression: bytes of any supported format in, a JPEG of the same (oriented) dimensions out.
//!
//! 1. The format comes from the bytes (never the URL or the Content-Type); non-images are named (SVG, HTML, XML,
//!    JSON, text, PDF, HEIC…) so that the recorded failure reason says what the URL really served.
//! 2. Only the header is read before the limits are checked: an image over the side or pixel limit is refused
//!    without allocating its pixels, and the decoder gets an allocation budget derived from the checked size.
//! 3. JPEG input is decoded by libjpeg-turbo (inside `mozjpeg-sys`, with its SIMD code) row by row, straight into
//!    the encoder when no EXIF rotation is needed (no full-size buffer at all), else into one buffer read back in
//!    the oriented order. CMYK/YCCK JPEGs, and streams libjpeg refuses, go the `image` crate's way. (Requantising
//!    in the DCT domain, `compress_in_dct_domain`, was measured and is slower: it holds every coefficient of the
//!    image, where the pixel path streams 16 rows through the cache.)
//! 4. Other formats are decoded by the `image` crate into one buffer, and the encoder is fed from it 16 rows at a
//!    time, oriented, with alpha flattened onto white and 16-bit and float samples reduced to 8 bits: no second
//!    full-size image is allocated, whatever the colour type or orientation.
//! 5. The JPEG is encoded by libjpeg-turbo with its standard settings (baseline, standard quantisation tables scaled
//!    by the quality, 4:2:0 chroma subsampling, JFIF header) and no other metadata (no EXIF, ICC, XMP or comment is
//!    copied from the input). The choices were made with `make bench-codec` (README, "Codec benchmark").

mod libjpeg;

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use libjpeg::{Colour, EncodeOptions};

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

/// Decoder allocations allowed beyond the decoded image itself (tables, row buffers, a frame, a compressed strip).
const DECODER_SCRATCH: u64 = 16 << 20;

/// Huffman tables optimised per image cost a second pass over the coefficients; see the README's codec benchmark.
const OPTIMIZE_CODING: bool = false;

/// Rows handed to the encoder at a time (one 4:2:0 MCU row).
const ROWS: usize = 16;

/// Decodes `input` (format detected from its bytes), applies EXIF orientation, flattens transparency onto white,
/// and encodes a baseline JPEG at `quality` (clamped to 1–100) with no metadata.
pub fn compress(input: &[u8], quality: u8, limits: CompressLimits) -> Result<Compressed, CompressError> {
    compress_with(input, quality, limits, false)
}

/// [`compress`], but a 4:2:0 or grey JPEG needing no rotation is requantised in the DCT domain
/// (`libjpeg::transcode`) instead of being decoded to pixels and re-encoded. Not used by the worker: the codec
/// benchmark measured it slower than the streaming pixel path (README, "Codec benchmark"), and keeps measuring it.
#[doc(hidden)]
pub fn compress_in_dct_domain(input: &[u8], quality: u8, limits: CompressLimits) -> Result<Compressed, CompressError> {
    compress_with(input, quality, limits, true)
}

fn compress_with(
    input: &[u8],
    quality: u8,
    limits: CompressLimits,
    transcode: bool,
) -> Result<Compressed, CompressError> {
    let options = EncodeOptions { quality: quality.clamp(1, 100), optimize_coding: OPTIMIZE_CODING };
    let reader =
        ImageReader::new(Cursor::new(input)).with_guessed_format().map_err(|e| CompressError::Decode(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(identify_non_image(input));
    };
    if !SUPPORTED.contains(&format) {
        return Err(CompressError::Unsupported(format!("{format:?}").to_uppercase()));
    }
    if format == ImageFormat::Jpeg
        && let Some(result) = compress_jpeg(input, options, limits, transcode)
    {
        return result;
    }
    let mut decoder = match reader.into_decoder() {
        Ok(decoder) => decoder,
        // Some decoders refuse large headers themselves (BMP over 65535 px, a WebP canvas over u32::MAX pixels):
        // report those as too large too.
        Err(e) => {
            return Err(match declared_dimensions(format, input) {
                Some((width, height)) => check_dimensions(width, height, limits).err(),
                None => None,
            }
            .unwrap_or_else(|| from_image_error(e, None)));
        }
    };
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;

    // The pixel check bounds the decoded size; the decoder may use about as much again (CMYK TIFF strips, the
    // first GIF frame, …), and those that honour `max_alloc` refuse a frame or buffer declared larger than that.
    let budget = decoder.total_bytes().saturating_mul(2).saturating_add(input.len() as u64 + DECODER_SCRATCH);
    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(limits.max_dimension);
    decode_limits.max_image_height = Some(limits.max_dimension);
    decode_limits.max_alloc = Some(budget);
    let too_large = Some((width, height, budget));
    decoder.set_limits(decode_limits).map_err(|e| from_image_error(e, too_large))?;
    let orientation = orientation(&mut decoder, format);
    let image = DynamicImage::from_decoder(decoder).map_err(|e| from_image_error(e, too_large))?;

    let (width, height) = oriented_dimensions(image.width(), image.height(), orientation);
    let jpeg =
        encode_image(&image, orientation, options, input.len() / 2).map_err(|e| CompressError::Encode(e.message))?;
    Ok(Compressed { jpeg, width, height, source_format: format })
}

/// JPEG input through libjpeg-turbo. `None` leaves the image to the `image` crate: CMYK and YCCK JPEGs (whose Adobe
/// conventions it handles), and streams libjpeg refuses (so that the recorded reason is the same whichever decoder
/// would have failed, and a stream only one of them can read is still compressed).
fn compress_jpeg(
    input: &[u8],
    options: EncodeOptions,
    limits: CompressLimits,
    transcode: bool,
) -> Option<Result<Compressed, CompressError>> {
    let mut decoder = libjpeg::Decoder::new(input).ok()?;
    let (width, height) = decoder.dimensions();
    if let Err(e) = check_dimensions(width, height, limits) {
        return Some(Err(e));
    }
    let colour = decoder.colour();
    if colour == Colour::Other {
        return None;
    }
    // A broken EXIF block is ignored: the image is still worth compressing.
    let orientation = decoder.exif().and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
    let channels: usize = if colour == Colour::Grey { 1 } else { 3 };
    let decoded = u64::from(width) * u64::from(height) * channels as u64;
    // A progressive JPEG keeps all its coefficients (2 bytes each; up to twice the decoded size at 4:4:4).
    let budget = decoded.saturating_mul(2).saturating_add(DECODER_SCRATCH);
    decoder.set_memory_limit(budget);
    let too_large = || CompressError::TooLarge { width, height, limit: format!("{budget} bytes of decoding memory") };

    if transcode && orientation == Orientation::NoTransforms && decoder.transcodable() {
        match libjpeg::transcode(decoder, options, input.len() / 2) {
            Ok(jpeg) => return Some(Ok(Compressed { jpeg, width, height, source_format: ImageFormat::Jpeg })),
            Err(e) if e.out_of_memory => return Some(Err(too_large())),
            // Whatever the DCT-domain path could not do, the pixel path may.
            Err(_) => {
                decoder = libjpeg::Decoder::new(input).ok()?;
                decoder.set_memory_limit(budget);
            }
        }
    }

    let (out_width, out_height) = oriented_dimensions(width, height, orientation);
    let result = (|| {
        decoder.start()?;
        let mut encoder =
            libjpeg::Encoder::new(out_width, out_height, colour == Colour::Grey, options, input.len() / 2)?;
        let row_bytes = decoder.row_bytes();
        if orientation == Orientation::NoTransforms {
            // Row by row from the decoder into the encoder: no image-sized buffer.
            let mut rows = vec![0u8; row_bytes * ROWS];
            for y in (0..height as usize).step_by(ROWS) {
                let rows = &mut rows[..row_bytes * ROWS.min(height as usize - y)];
                decoder.read_rows(rows)?;
                encoder.write_rows(rows)?;
            }
            decoder.finish()?;
            return encoder.finish();
        }
        let mut pixels = Vec::new();
        pixels
            .try_reserve_exact(decoded as usize)
            .map_err(|_| libjpeg::Error { message: format!("cannot allocate {decoded} bytes"), out_of_memory: true })?;
        pixels.resize(decoded as usize, 0);
        decoder.read_rows(&mut pixels)?;
        decoder.finish()?;
        drop(decoder);
        if channels == 1 {
            write_oriented::<u8, 1, 1>(encoder, &pixels, (width, height), orientation, |p| [p[0]])
        } else {
            write_oriented::<u8, 3, 3>(encoder, &pixels, (width, height), orientation, |p| [p[0], p[1], p[2]])
        }
    })();
    match result {
        Ok(jpeg) => {
            Some(Ok(Compressed { jpeg, width: out_width, height: out_height, source_format: ImageFormat::Jpeg }))
        }
        Err(e) if e.out_of_memory => {
            Some(Err(CompressError::TooLarge { width, height, limit: format!("{budget} bytes of decoding memory") }))
        }
        Err(_) => None,
    }
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

/// `too_large`: the image's size and the decoder's allocation budget, once known.
fn from_image_error(e: ImageError, too_large: Option<(u32, u32, u64)>) -> CompressError {
    match (e, too_large) {
        (ImageError::Limits(_), Some((width, height, budget))) => {
            CompressError::TooLarge { width, height, limit: format!("{budget} bytes of decoding memory") }
        }
        (ImageError::Unsupported(e), _) => CompressError::Unsupported(e.to_string()),
        (e, _) => CompressError::Decode(e.to_string()),
    }
}

/// The dimensions a header declares, for formats whose decoder refuses some large ones before reporting them.
fn declared_dimensions(format: ImageFormat, input: &[u8]) -> Option<(u32, u32)> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(input.get(at..at + 4)?.try_into().ok()?));
    let u16_at = |at: usize| Some(u16::from_le_bytes(input.get(at..at + 2)?.try_into().ok()?));
    match format {
        // BITMAPCOREHEADER (12 bytes) has 16-bit sides; the later headers signed 32-bit ones (negative height:
        // top-down rows).
        ImageFormat::Bmp if u32_at(14)? == 12 => Some((u32::from(u16_at(18)?), u32::from(u16_at(20)?))),
        ImageFormat::Bmp => Some(((u32_at(18)? as i32).unsigned_abs(), (u32_at(22)? as i32).unsigned_abs())),
        // An extended WebP whose canvas (24-bit sides) has more than u32::MAX pixels.
        ImageFormat::WebP if input.get(12..16)? == b"VP8X" => {
            let side = |at: usize| Some((u32_at(at)? & 0x00ff_ffff) + 1);
            Some((side(24)?, side(27)?))
        }
        _ => None,
    }
}

/// The EXIF orientation (JPEG APP1, PNG eXIf, WebP EXIF) or TIFF Orientation tag. A broken one is ignored: the
/// image is still worth compressing.
fn orientation(decoder: &mut impl ImageDecoder, format: ImageFormat) -> Orientation {
    let found = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if found != Orientation::NoTransforms || !matches!(format, ImageFormat::Png | ImageFormat::WebP) {
        return found;
    }
    // Some writers put the JPEG-style "Exif\0\0" header in front of the TIFF structure of a PNG eXIf or WebP EXIF
    // chunk, where `image` expects the TIFF structure itself.
    decoder
        .exif_metadata()
        .ok()
        .flatten()
        .and_then(|exif| exif.strip_prefix(b"Exif\0\0").and_then(Orientation::from_exif_chunk))
        .unwrap_or(Orientation::NoTransforms)
}

fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

fn oriented_dimensions(width: u32, height: u32, orientation: Orientation) -> (u32, u32) {
    if swaps_sides(orientation) { (height, width) } else { (width, height) }
}

/// The source pixel shown at (x, y) of the oriented image, for a `w`×`h` source.
#[inline]
fn source_position(orientation: Orientation, w: u32, h: u32, x: u32, y: u32) -> (u32, u32) {
    match orientation {
        Orientation::NoTransforms => (x, y),
        Orientation::FlipHorizontal => (w - 1 - x, y),
        Orientation::Rotate180 => (w - 1 - x, h - 1 - y),
        Orientation::FlipVertical => (x, h - 1 - y),
        Orientation::Rotate90 => (y, h - 1 - x),
        Orientation::Rotate270 => (w - 1 - y, x),
        Orientation::Rotate90FlipH => (y, x),
        Orientation::Rotate270FlipH => (w - 1 - y, h - 1 - x),
    }
}

/// Encodes a decoded image: `samples` holds `w`×`h` pixels of `C` samples each, which `convert` turns into the
/// `N` (1: grey, 3: RGB) bytes the encoder takes. Rows are produced 16 at a time in the oriented order: each oriented
/// row walks the source along a line (an affine map), so its source index is `start + x·step`.
fn write_oriented<S: Copy, const C: usize, const N: usize>(
    mut encoder: libjpeg::Encoder,
    samples: &[S],
    (w, h): (u32, u32),
    orientation: Orientation,
    convert: impl Fn(&[S]) -> [u8; N],
) -> Result<Vec<u8>, libjpeg::Error> {
    let (out_w, out_h) = oriented_dimensions(w, h, orientation);
    let row_bytes = out_w as usize * N;
    let index = |(x, y): (u32, u32)| y as isize * w as isize + x as isize;
    let mut rows = vec![0u8; row_bytes * ROWS];
    for y0 in (0..out_h).step_by(ROWS) {
        let count = ROWS.min((out_h - y0) as usize);
        let start = |dy: usize| index(source_position(orientation, w, h, 0, y0 + dy as u32));
        let step = if out_w > 1 { index(source_position(orientation, w, h, 1, y0)) - start(0) } else { 1 };
        if step.abs() == 1 {
            // Oriented rows are source rows (possibly mirrored): read each sequentially.
            for (dy, out_row) in rows[..row_bytes * count].chunks_exact_mut(row_bytes).enumerate() {
                let start = start(dy);
                if step == 1 {
                    let source = &samples[start as usize * C..];
                    for (out, pixel) in out_row.chunks_exact_mut(N).zip(source.chunks_exact(C)) {
                        out.copy_from_slice(&convert(pixel));
                    }
                } else {
                    for (x, out) in out_row.chunks_exact_mut(N).enumerate() {
                        let i = (start - x as isize) as usize * C;
                        out.copy_from_slice(&convert(&samples[i..i + C]));
                    }
                }
            }
        } else {
            // Oriented rows are source columns (a rotation by 90°): the 16 rows of the chunk are 16 neighbouring
            // pixels of each source row, so walk the source rows once, in order, filling a column of the chunk from
            // each (reading one column per output row would touch every source row, and page, 16 times).
            let starts: [isize; ROWS] = std::array::from_fn(|dy| if dy < count { start(dy) } else { 0 });
            for x in 0..out_w as usize {
                let offset = x as isize * step;
                for (dy, &first) in starts[..count].iter().enumerate() {
                    let i = (first + offset) as usize * C;
                    let at = dy * row_bytes + x * N;
                    rows[at..at + N].copy_from_slice(&convert(&samples[i..i + C]));
                }
            }
        }
        encoder.write_rows(&rows[..row_bytes * count])?;
    }
    encoder.finish()
}

/// Encodes an image decoded by the `image` crate, whatever its colour type.
fn encode_image(
    image: &DynamicImage,
    orientation: Orientation,
    options: EncodeOptions,
    capacity: usize,
) -> Result<Vec<u8>, libjpeg::Error> {
    let (w, h) = (image.width(), image.height());
    let (out_w, out_h) = oriented_dimensions(w, h, orientation);
    let encoder = |grey: bool| libjpeg::Encoder::new(out_w, out_h, grey, options, capacity);
    let o = orientation;
    match image {
        // 8-bit grey and RGB the right way up: the buffer is what the encoder takes.
        DynamicImage::ImageLuma8(b) if o == Orientation::NoTransforms => {
            let mut encoder = encoder(true)?;
            encoder.write_rows(b)?;
            encoder.finish()
        }
        DynamicImage::ImageRgb8(b) if o == Orientation::NoTransforms => {
            let mut encoder = encoder(false)?;
            encoder.write_rows(b)?;
            encoder.finish()
        }
        DynamicImage::ImageLuma8(b) => write_oriented::<_, 1, 1>(encoder(true)?, b, (w, h), o, |p| [p[0]]),
        DynamicImage::ImageLumaA8(b) => {
            write_oriented::<_, 2, 1>(encoder(true)?, b, (w, h), o, |p| [over_white_8(p[0], p[1])])
        }
        DynamicImage::ImageRgb8(b) => write_oriented::<_, 3, 3>(encoder(false)?, b, (w, h), o, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageRgba8(b) => write_oriented::<_, 4, 3>(encoder(false)?, b, (w, h), o, |p| {
            [over_white_8(p[0], p[3]), over_white_8(p[1], p[3]), over_white_8(p[2], p[3])]
        }),
        DynamicImage::ImageLuma16(b) => write_oriented::<_, 1, 1>(encoder(true)?, b, (w, h), o, |p| [to_8_bits(p[0])]),
        DynamicImage::ImageLumaA16(b) => {
            write_oriented::<_, 2, 1>(encoder(true)?, b, (w, h), o, |p| [over_white_16(p[0], p[1])])
        }
        DynamicImage::ImageRgb16(b) => write_oriented::<_, 3, 3>(encoder(false)?, b, (w, h), o, |p| {
            [to_8_bits(p[0]), to_8_bits(p[1]), to_8_bits(p[2])]
        }),
        DynamicImage::ImageRgba16(b) => write_oriented::<_, 4, 3>(encoder(false)?, b, (w, h), o, |p| {
            [over_white_16(p[0], p[3]), over_white_16(p[1], p[3]), over_white_16(p[2], p[3])]
        }),
        DynamicImage::ImageRgb32F(b) => write_oriented::<_, 3, 3>(encoder(false)?, b, (w, h), o, |p| {
            [over_white_f32(p[0], 1.0), over_white_f32(p[1], 1.0), over_white_f32(p[2], 1.0)]
        }),
        DynamicImage::ImageRgba32F(b) => write_oriented::<_, 4, 3>(encoder(false)?, b, (w, h), o, |p| {
            [over_white_f32(p[0], p[3]), over_white_f32(p[1], p[3]), over_white_f32(p[2], p[3])]
        }),
        // A colour type added to `image` later: one conversion copy.
        other => {
            let rgba = other.to_rgba8();
            write_oriented::<_, 4, 3>(encoder(false)?, &rgba, (w, h), o, |p| {
                [over_white_8(p[0], p[3]), over_white_8(p[1], p[3]), over_white_8(p[2], p[3])]
            })
        }
    }
}

/// `c` at opacity `a` over white, rounded: c·a/255 + 255·(1 − a/255).
#[inline]
fn over_white_8(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

/// The 16-bit `c` at 16-bit opacity `a` over white, reduced to 8 bits with a single rounding.
#[inline]
fn over_white_16(c: u16, a: u16) -> u8 {
    const MAX: u64 = 65_535;
    let (c, a) = (u64::from(c), u64::from(a));
    let scaled = (c * a + MAX * (MAX - a)) * 255;
    ((scaled + MAX * MAX / 2) / (MAX * MAX)) as u8
}

#[inline]
fn to_8_bits(c: u16) -> u8 {
    ((u32::from(c) * 255 + 32_767) / 65_535) as u8
}

/// Float samples are nominally 0–1; out-of-range and NaN values are clamped.
#[inline]
fn over_white_f32(c: f32, a: f32) -> u8 {
    let (c, a) = (c.clamp(0.0, 1.0), a.clamp(0.0, 1.0));
    let v = (c * a + (1.0 - a)) * 255.0 + 0.5;
    if v.is_nan() { 255 } else { v as u8 }
}

/// Names what a body without a supported image signature is, for the failure reason.
fn identify_non_image(input: &[u8]) -> CompressError {
    let not_an_image = |what: &str| CompressError::NotAnImage(what.to_string());
    if input.is_empty() {
        return not_an_image("the body is empty");
    }
    if input.starts_with(b"%PDF-") {
        return not_an_image("a PDF document");
    }
    if input.starts_with(&[0xff, 0x0a]) || input.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return CompressError::Unsupported("JPEG XL".to_string());
    }
    if input.get(4..8) == Some(b"ftyp") {
        // ISO base media: the major brand, then the compatible brands up to the end of the `ftyp` box.
        let end = input.len().min(u32::from_be_bytes(input[..4].try_into().unwrap_or_default()) as usize);
        let brands: Vec<&[u8]> = input.get(8..end).unwrap_or_default().chunks_exact(4).collect();
        return if brands.iter().any(|b| matches!(*b, b"avif" | b"avis")) {
            CompressError::Unsupported("AVIF".to_string())
        } else if brands
            .iter()
            .any(|b| matches!(*b, b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1"))
        {
            CompressError::Unsupported("HEIC/HEIF".to_string())
        } else {
            not_an_image("a video or other ISO media file")
        };
    }

    let text = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let text = text[..text.len().min(64 << 10)].trim_ascii_start();
    match text.first() {
        Some(b'<') => not_an_image(markup_kind(text)),
        Some(b'{' | b'[') => not_an_image("JSON data"),
        _ if looks_like_text(text) => not_an_image("plain text"),
        _ => not_an_image("unknown data (no image signature)"),
    }
}

/// Skips the XML declaration, processing instructions, comments and the doctype, and names the document by its
/// doctype or root element.
fn markup_kind(mut s: &[u8]) -> &'static str {
    const SVG: &str = "an SVG document (vector images are not accepted)";
    const HTML: &str = "an HTML page";
    const XML: &str = "an XML document";
    let skip_past = |s: &[u8], end: &[u8]| s.windows(end.len()).position(|w| w == end).map(|i| i + end.len());
    loop {
        s = s.trim_ascii_start();
        let skipped = if s.starts_with(b"<?") {
            skip_past(s, b"?>")
        } else if s.starts_with(b"<!--") {
            skip_past(s, b"-->")
        } else if s.len() >= 9 && s[..9].eq_ignore_ascii_case(b"<!doctype") {
            let name = s[9..].trim_ascii_start();
            if starts_with_ignore_case(name, b"svg") {
                return SVG;
            }
            if starts_with_ignore_case(name, b"html") {
                return HTML;
            }
            skip_past(s, b">")
        } else {
            break;
        };
        match skipped {
            Some(i) => s = &s[i..],
            // Cut inside a comment or declaration: look for the usual root elements anywhere.
            None => {
                let lower = s.to_ascii_lowercase();
                let contains = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
                return if contains(b"<svg") {
                    SVG
                } else if contains(b"<html") {
                    HTML
                } else {
                    XML
                };
            }
        }
    }
    let name: Vec<u8> = s
        .iter()
        .skip(1)
        .take_while(|b| !b.is_ascii_whitespace() && !matches!(b, b'>' | b'/'))
        .map(u8::to_ascii_lowercase)
        .collect();
    let local = name.rsplit(|&b| b == b':').next().unwrap_or_default();
    match local {
        b"svg" => SVG,
        b"html" | b"head" | b"body" | b"title" | b"meta" | b"link" | b"script" | b"style" | b"div" | b"p" => HTML,
        _ => XML,
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// UTF-8 without control characters other than whitespace, judged on the first 512 bytes.
fn looks_like_text(s: &[u8]) -> bool {
    let head = &s[..s.len().min(512)];
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A character cut by the 512-byte window is fine; an invalid sequence is not.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        Err(_) => return false,
    };
    valid.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, RgbImage, Rgba};

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

    /// The oriented rows are `DynamicImage::apply_orientation`'s, for every orientation and colour layout.
    #[test]
    fn oriented_rows_match_apply_orientation() {
        let source = RgbImage::from_fn(37, 21, |x, y| image::Rgb([(x * 6) as u8, (y * 12) as u8, 128]));
        for exif in 1..=8 {
            let orientation = Orientation::from_exif(exif).unwrap();
            let mut expected = DynamicImage::ImageRgb8(source.clone());
            expected.apply_orientation(orientation);
            let expected = expected.to_rgb8();
            let options = EncodeOptions { quality: 100, optimize_coding: false };
            let jpeg = encode_image(&DynamicImage::ImageRgb8(source.clone()), orientation, options, 0).unwrap();
            let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
            assert_eq!(back.dimensions(), expected.dimensions(), "orientation {exif}");
            for (x, y, p) in expected.enumerate_pixels() {
                let q = back.get_pixel(x, y);
                let close = p.0.iter().zip(q.0).all(|(&a, b)| a.abs_diff(b) <= 24);
                assert!(close, "orientation {exif} at {x},{y}: {p:?} vs {q:?}");
            }
        }
    }

    /// A 4:2:0 JPEG goes through the DCT domain; its output looks like the pixel path's, with the same tables.
    #[test]
    fn dct_domain_path_matches_the_pixel_path() {
        let source = RgbImage::from_fn(203, 117, |x, y| {
            image::Rgb([(x * 255 / 203) as u8, (y * 255 / 117) as u8, ((x * y) % 256) as u8])
        });
        for (grey, quality) in [(false, 92), (true, 90), (false, 30)] {
            let options = EncodeOptions { quality, optimize_coding: false };
            let input = if grey {
                let luma = DynamicImage::ImageRgb8(source.clone()).to_luma8();
                encode_image(&DynamicImage::ImageLuma8(luma), Orientation::NoTransforms, options, 0).unwrap()
            } else {
                encode_image(&DynamicImage::ImageRgb8(source.clone()), Orientation::NoTransforms, options, 0).unwrap()
            };
            let fast = compress_in_dct_domain(&input, 50, LIMITS).unwrap();
            let full = compress(&input, 50, LIMITS).unwrap();
            assert_ne!(fast.jpeg, full.jpeg, "grey {grey}: the DCT-domain path was not taken");
            assert_eq!((fast.width, fast.height), (203, 117));
            let reference = image::load_from_memory(&input).unwrap().to_rgb8();
            let error = |jpeg: &[u8]| {
                let out = image::load_from_memory(jpeg).unwrap().to_rgb8();
                let sum: f64 =
                    out.as_raw().iter().zip(reference.as_raw()).map(|(&p, &q)| f64::from(p.abs_diff(q))).sum();
                sum / out.as_raw().len() as f64
            };
            let (fast_error, full_error) = (error(&fast.jpeg), error(&full.jpeg));
            assert!(
                fast_error <= full_error * 1.1 + 0.2,
                "grey {grey}, source q{quality}: mean error {fast_error} (DCT domain) vs {full_error} (pixels)"
            );
            // Same DQT segment (standard tables at q50) and a baseline frame.
            let dqt = |jpeg: &[u8]| jpeg.windows(2).position(|w| w == [0xff, 0xdb]).map(|i| jpeg[i..i + 69].to_vec());
            assert_eq!(dqt(&fast.jpeg), dqt(&full.jpeg));
            assert!(fast.jpeg.windows(2).any(|w| w == [0xff, 0xc0]));
        }
    }

    /// Truncated and corrupted 4:2:0 JPEGs (the DCT-domain path's input): an error or an image, never a panic.
    #[test]
    fn dct_domain_path_survives_corruption() {
        let source = RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 4) as u8, ((x ^ y) * 3) as u8]));
        let options = EncodeOptions { quality: 90, optimize_coding: false };
        let input = encode_image(&DynamicImage::ImageRgb8(source), Orientation::NoTransforms, options, 0).unwrap();
        for len in (0..input.len()).step_by(7) {
            let _ = compress_in_dct_domain(&input[..len], 50, LIMITS);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for position in (2..input.len()).step_by(5) {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let mut corrupt = input.clone();
            corrupt[position] ^= (seed >> 56) as u8 | 1;
            let _ = compress_in_dct_domain(&corrupt, 50, LIMITS);
        }
    }

    #[test]
    fn blending_over_white_is_exact() {
        for a in 0..=255u8 {
            for c in [0u8, 1, 77, 128, 200, 254, 255] {
                let exact = (f64::from(c) * f64::from(a) / 255.0 + 255.0 - f64::from(a)).round();
                assert_eq!(f64::from(over_white_8(c, a)), exact, "8-bit c={c} a={a}");
            }
        }
        for a in (0..=65_535u16).step_by(257).chain([1, 128, 32_768, 65_534]) {
            for c in [0u16, 1, 300, 32_768, 51_400, 65_535] {
                let (cf, af) = (f64::from(c) / 65_535.0, f64::from(a) / 65_535.0);
                let exact = ((cf * af + 1.0 - af) * 255.0).round();
                assert_eq!(f64::from(over_white_16(c, a)), exact, "16-bit c={c} a={a}");
            }
        }
        assert_eq!((to_8_bits(0), to_8_bits(257), to_8_bits(65_535)), (0, 1, 255));
        assert_eq!(
            (over_white_f32(f32::NAN, 1.0), over_white_f32(2.0, 1.0), over_white_f32(0.5, 0.0)),
            (255, 255, 255)
        );
    }

    #[test]
    fn non_images_are_named() {
        let kind = |input: &[u8]| match identify_non_image(input) {
            CompressError::NotAnImage(m) | CompressError::Unsupported(m) => m,
            other => panic!("{other:?}"),
        };
        assert!(kind(b"<svg:svg xmlns:svg='http://www.w3.org/2000/svg'/>").contains("SVG"));
        assert!(kind(b"<?xml version='1.0'?><!-- unterminated").contains("XML"));
        assert!(kind(b"<!DOCTYPE note><note/>").contains("XML"));
        assert!(kind(b"caf\xc3\xa9 not found").contains("text"));
        assert!(kind(b"\x00\x01\x02\x03").contains("unknown"));
        assert!(kind(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom").contains("video"));
    }
}
