//! Palette PNGs: decoded as indices (the `png` crate without expansion) and encoded through a table of their at most
//! 256 colours, each converted to sRGB (`colour`) and flattened onto white once, instead of expanding every pixel
//! to RGBA, converting it and flattening it (5× slower on a 2 MP palette with a profile: README, "Codec
//! benchmark"). The colours are the expanded path's, byte for byte: the same transform and the same rounding
//! applied to the same values (tests/tests/colour.rs compares the two).

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ImageError, ImageFormat};

use super::colour::{ToSrgb, ignored};
use super::encode::{EncodeOptions, Encoder};
use super::jpeglib::Error;
use super::orient::{oriented_dimensions, write_oriented};
use super::pixels::over_white_8;

/// Whether `input` is a PNG whose IHDR says colour type 3 (indexed).
pub(super) fn is_indexed(format: ImageFormat, input: &[u8]) -> bool {
    format == ImageFormat::Png && input.get(12..16) == Some(b"IHDR") && input.get(25) == Some(&3)
}

/// A decoded palette image: one index a pixel, and each index's colour as the encoder takes it.
pub(super) struct Indexed {
    size: (u32, u32),
    indices: Vec<u8>,
    colours: [[u8; 3]; 256],
}

/// Decodes the indices of a palette PNG, the decoder's own allocations held to `budget` bytes, and makes the
/// colour table: converted by `conversion` when the image is not in sRGB, then flattened onto white.
pub(super) fn decode(input: &[u8], budget: u64, conversion: Option<&ToSrgb>) -> Result<Indexed, ImageError> {
    let limits = png::Limits { bytes: usize::try_from(budget).unwrap_or(usize::MAX) };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(input), limits);
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(from_png)?;
    let bytes = reader.output_buffer_size().ok_or_else(|| from_png(png::DecodingError::LimitsExceeded))?;
    let mut packed = vec![0; bytes];
    let frame = reader.next_frame(&mut packed).map_err(from_png)?;
    let info = reader.info();
    let (size, bits) = ((frame.width, frame.height), frame.bit_depth as usize);
    let indices = unpack(packed, frame.width as usize, frame.height as usize, frame.line_size, bits);
    let colours = colours(info.palette.as_deref().unwrap_or_default(), info.trns.as_deref(), conversion);
    Ok(Indexed { size, indices, colours })
}

/// Encodes a decoded palette image in the oriented order.
pub(super) fn encode(
    image: &Indexed,
    orientation: Orientation,
    options: EncodeOptions,
    capacity: usize,
    exif: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    let (out_w, out_h) = oriented_dimensions(image.size.0, image.size.1, orientation);
    let encoder = Encoder::new(out_w, out_h, false, options, capacity, exif)?;
    let colours = &image.colours;
    write_oriented::<_, 1, 3>(encoder, &image.indices, image.size, orientation, |p| colours[usize::from(p[0])])
}

/// One byte an index: rows of 1, 2 or 4-bit indices (packed from the high bits, each row starting on a byte)
/// spread out; 8-bit ones are already so.
fn unpack(packed: Vec<u8>, width: usize, height: usize, line_size: usize, bits: usize) -> Vec<u8> {
    if bits == 8 {
        return packed;
    }
    let (per_byte, mask) = (8 / bits, (1u8 << bits) - 1);
    let mut indices = Vec::with_capacity(width * height);
    for row in packed.chunks(line_size).take(height) {
        indices.extend((0..width).map(|x| (row[x / per_byte] >> (8 - bits * (x % per_byte + 1))) & mask));
    }
    indices
}

/// The 256 colours indices can name, as the `png` crate expands them (entries past the palette opaque black, a
/// tRNS longer than the palette ignored), converted to sRGB and flattened onto white.
fn colours(palette: &[u8], trns: Option<&[u8]>, conversion: Option<&ToSrgb>) -> [[u8; 3]; 256] {
    let entries = palette.len() / 3;
    let alpha = trns.filter(|t| t.len() <= entries);
    let mut rgba = [[0, 0, 0, 255]; 256];
    for (i, entry) in rgba.iter_mut().enumerate().take(entries) {
        entry[..3].copy_from_slice(&palette[3 * i..3 * i + 3]);
        entry[3] = alpha.and_then(|a| a.get(i)).copied().unwrap_or(255);
    }
    if let Some(conversion) = conversion {
        // Converted in the layout the expanded path has (RGBA only when there is a tRNS), so the values are its own.
        let mut samples: Vec<u8> =
            rgba.iter().flat_map(|p| if alpha.is_some() { &p[..] } else { &p[..3] }).copied().collect();
        match conversion.rows_8(alpha.is_some()) {
            Ok(mut rows) => rows.convert(&mut samples),
            Err(reason) => {
                ignored(reason);
            }
        }
        let channels = if alpha.is_some() { 4 } else { 3 };
        for (entry, converted) in rgba.iter_mut().zip(samples.chunks_exact(channels)) {
            entry[..3].copy_from_slice(&converted[..3]);
        }
    }
    rgba.map(|[r, g, b, a]| [over_white_8(r, a), over_white_8(g, a), over_white_8(b, a)])
}

/// The `image` crate's error for a `png` one (so both PNG paths report alike).
fn from_png(e: png::DecodingError) -> ImageError {
    use image::error::{DecodingError, LimitError, LimitErrorKind, ParameterError, ParameterErrorKind};
    match e {
        png::DecodingError::IoError(e) => ImageError::IoError(e),
        e @ png::DecodingError::Format(_) => ImageError::Decoding(DecodingError::new(ImageFormat::Png.into(), e)),
        e @ png::DecodingError::Parameter(_) => {
            ImageError::Parameter(ParameterError::from_kind(ParameterErrorKind::Generic(e.to_string())))
        }
        png::DecodingError::LimitsExceeded => {
            ImageError::Limits(LimitError::from_kind(LimitErrorKind::InsufficientMemory))
        }
    }
}
