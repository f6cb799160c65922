//! JPEG input through libjpeg-turbo: decoded row by row, straight into the encoder when no EXIF rotation is needed
//! (no full-size buffer at all), else into one buffer read back in the oriented order.
//!
//! Rows are converted to sRGB on the way when the JPEG's ICC profile (APP2) says they are in another space
//! (`colour`); CMYK and YCCK JPEGs with a profile are decoded to CMYK and converted through it.
//!
//! What the `image` crate decodes instead, and why:
//! - CMYK and YCCK without a profile, and unusual component counts, chosen from the header: the `image` crate's
//!   default CMYK conversion (it knows the Adobe conventions). A route, not an error.
//! - Valid JPEG features this build of libjpeg does not decode ([`ErrorKind::Unsupported`]: arithmetic coding,
//!   12-bit samples, lossless or hierarchical frames): a **fallback**, logged with libjpeg's reason
//!   (`tracing::warn!`) and counted ([`fallbacks`]), so that an operator sees how often it happens.
//! - Nothing else. A malformed stream is a clear `Decode` failure with libjpeg's message (handing it to a second
//!   decoder would spend a second decode on hostile input, and the scan limit would not hold); over the memory
//!   budget is `TooLarge`.

mod decoder;

use std::sync::atomic::{AtomicU64, Ordering};

use image::ImageFormat;
use image::metadata::Orientation;

use super::budget::{self, Estimate};
use super::colour::{self, Described, Model, RowColour};
use super::encode::{EncodeOptions, Encoder};
use super::jpeglib::{Error, ErrorKind};
use super::metadata;
use super::orient::{self, ROWS, oriented_dimensions, write_oriented};
use super::{CompressError, CompressLimits, Compressed, check_dimensions};
use decoder::{Colour, Decoder};

static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// JPEGs handed to the `image` crate because libjpeg does not support one of their features, since the process
/// started.
pub fn fallbacks() -> u64 {
    FALLBACKS.load(Ordering::Relaxed)
}

/// What the libjpeg backend did with a JPEG.
pub(super) enum Outcome {
    Done(Result<Compressed, CompressError>),
    /// Left to the `image` crate (see the module documentation).
    ImageCrate,
}

/// Compresses a JPEG, or says that the `image` crate should.
pub(super) fn compress(input: &[u8], options: EncodeOptions, limits: CompressLimits) -> Outcome {
    match try_compress(input, options, limits) {
        Ok(Some(compressed)) => Outcome::Done(Ok(compressed)),
        Ok(None) => Outcome::ImageCrate,
        Err(Failure::Refused(e)) => Outcome::Done(Err(e)),
        Err(Failure::Encode(e)) => Outcome::Done(Err(CompressError::Encode(e.message))),
        Err(Failure::Decode(e, size)) => match e.kind {
            ErrorKind::Unsupported => {
                FALLBACKS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    reason = %e.message,
                    fallbacks = fallbacks(),
                    "libjpeg does not decode this JPEG; falling back to the image crate"
                );
                Outcome::ImageCrate
            }
            ErrorKind::OutOfMemory => Outcome::Done(Err(match size {
                Some((width, height, budget)) => {
                    CompressError::TooLarge { width, height, limit: format!("{budget} bytes of decoding memory") }
                }
                None => CompressError::Decode(e.message),
            })),
            ErrorKind::Corrupt => Outcome::Done(Err(CompressError::Decode(e.message))),
        },
    }
}

enum Failure {
    /// Refused by a check of ours (dimensions).
    Refused(CompressError),
    /// libjpeg's decoder failed; with the image's size and memory budget once known.
    Decode(Error, Option<(u32, u32, u64)>),
    Encode(Error),
}

fn try_compress(input: &[u8], options: EncodeOptions, limits: CompressLimits) -> Result<Option<Compressed>, Failure> {
    let mut decoder = Decoder::new(input).map_err(|e| Failure::Decode(e, None))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits).map_err(Failure::Refused)?;
    let colour = decoder.colour();
    if colour == Colour::Other {
        return Ok(None);
    }
    let icc = decoder.icc_profile();
    let Some(mut row_colour) = row_colour(&decoder, colour, &icc) else {
        return Ok(None); // CMYK without a usable profile: the image crate's default conversion
    };
    let icc_bytes = icc.as_ref().map_or(0, |p| p.as_ref().map_or(0, Vec::len)) as u64;
    let orientation = orient::from_exif(decoder.exif());
    let exif = if options.output.keep_copyright { metadata::copyright_exif(decoder.exif()) } else { None };
    let channels: usize = if colour == Colour::Grey { 1 } else { 3 };
    let decoded = u64::from(width) * u64::from(height) * channels as u64;
    let estimate = estimate(&decoder, colour, input, icc_bytes, orientation);
    estimate.check(limits.max_decode_bytes).map_err(Failure::Refused)?;
    let budget = estimate.decoder;
    decoder.set_memory_limit(budget);
    let failed = |e: Error| Failure::Decode(e, Some((width, height, budget)));

    let (out_width, out_height) = oriented_dimensions(width, height, orientation);
    decoder.start().map_err(failed)?;
    let grey = colour == Colour::Grey;
    let mut encoder = Encoder::new(out_width, out_height, grey, options, input.len() / 2, exif.as_deref())
        .map_err(Failure::Encode)?;
    let jpeg = if orientation == Orientation::NoTransforms {
        // Row by row from the decoder into the encoder: no image-sized buffer.
        let row_bytes = decoder.row_bytes();
        let mut rows = vec![0u8; row_bytes * ROWS];
        for y in (0..height as usize).step_by(ROWS) {
            let rows = &mut rows[..row_bytes * ROWS.min(height as usize - y)];
            decoder.read_rows(rows).map_err(failed)?;
            encoder.write_rows(row_colour.apply(rows)).map_err(Failure::Encode)?;
        }
        decoder.finish().map_err(failed)?;
        encoder.finish().map_err(Failure::Encode)?
    } else {
        let mut pixels = Vec::new();
        pixels.try_reserve_exact(decoded as usize).map_err(|_| {
            failed(Error { message: format!("cannot allocate {decoded} bytes"), kind: ErrorKind::OutOfMemory })
        })?;
        pixels.resize(decoded as usize, 0);
        if colour == Colour::Cmyk {
            // CMYK rows are 4 bytes a pixel: converted to RGB a chunk at a time into the image buffer.
            let row_bytes = decoder.row_bytes();
            let mut chunk = vec![0u8; row_bytes * ROWS];
            let mut filled = 0;
            for y in (0..height as usize).step_by(ROWS) {
                let rows = &mut chunk[..row_bytes * ROWS.min(height as usize - y)];
                decoder.read_rows(rows).map_err(failed)?;
                let rgb = row_colour.apply(rows);
                pixels[filled..filled + rgb.len()].copy_from_slice(rgb);
                filled += rgb.len();
            }
        } else {
            decoder.read_rows(&mut pixels).map_err(failed)?;
            row_colour.apply(&mut pixels);
        }
        decoder.finish().map_err(failed)?;
        drop(decoder);
        let size = (width, height);
        if channels == 1 {
            write_oriented::<u8, 1, 1>(encoder, &pixels, size, orientation, |p| [p[0]])
        } else {
            write_oriented::<u8, 3, 3>(encoder, &pixels, size, orientation, |p| [p[0], p[1], p[2]])
        }
        .map_err(Failure::Encode)?
    };
    Ok(Some(Compressed { jpeg, width: out_width, height: out_height, source_format: ImageFormat::Jpeg }))
}

/// What to do to the decoded rows for them to be sRGB; `None` for a CMYK JPEG without a usable profile.
fn row_colour(decoder: &Decoder<'_>, colour: Colour, icc: &Result<Option<Vec<u8>>, String>) -> Option<RowColour> {
    let described = match icc {
        Ok(Some(profile)) => Described::Icc(profile),
        Ok(None) => Described::Nothing,
        Err(reason) => Described::Unreadable(reason.clone()),
    };
    let model = match colour {
        Colour::Grey => Model::Grey,
        Colour::Cmyk => Model::Cmyk,
        _ => Model::Rgb,
    };
    let built = match (colour::to_srgb(described, model), colour) {
        (None, Colour::Cmyk) => return None,
        (None, _) => return Some(RowColour::AsIs),
        (Some(c), Colour::Cmyk) => c.cmyk_converter().map(|executor| RowColour::Cmyk {
            executor,
            inverted: decoder.inverted_cmyk(),
            rgb: Vec::new(),
        }),
        (Some(c), _) => c.rows_8(false).map(RowColour::Convert),
    };
    match built {
        Ok(row_colour) => Some(row_colour),
        Err(reason) => {
            colour::ignored(reason);
            (colour != Colour::Cmyk).then_some(RowColour::AsIs)
        }
    }
}

/// What decoding `decoder`'s JPEG through libjpeg holds (`budget`).
fn estimate(decoder: &Decoder<'_>, colour: Colour, input: &[u8], icc_bytes: u64, orientation: Orientation) -> Estimate {
    let out_channels = match colour {
        Colour::Grey => 1,
        Colour::Cmyk => 4,
        _ => 3,
    };
    let rotated = orientation != Orientation::NoTransforms;
    let (size, coefficients, input_bytes) = (decoder.dimensions(), decoder.coefficient_bytes(), input.len() as u64);
    budget::libjpeg(size, out_channels, coefficients, input_bytes, icc_bytes, rotated)
}

/// The budget of a JPEG from its header (`compress::plan`); `None` when the `image` crate will decode it (a feature
/// libjpeg lacks, an unusual component count). A CMYK or YCCK JPEG goes either way, depending on its
/// profile: the larger of both budgets.
pub(super) fn plan(input: &[u8], limits: CompressLimits) -> Result<Option<Estimate>, CompressError> {
    let mut decoder = match Decoder::new(input) {
        Ok(decoder) => decoder,
        // As `compress` does: a feature libjpeg lacks is the image crate's to decode, anything else a failure.
        Err(e) if e.kind == ErrorKind::Unsupported => return Ok(None),
        Err(e) => return Err(CompressError::Decode(e.message)),
    };
    let size = decoder.dimensions();
    check_dimensions(size.0, size.1, limits)?;
    let colour = decoder.colour();
    if colour == Colour::Other {
        return Ok(None);
    }
    let icc_bytes = decoder.icc_profile().ok().flatten().map_or(0, |p| p.len() as u64);
    let orientation = orient::from_exif(decoder.exif());
    let ours = estimate(&decoder, colour, input, icc_bytes, orientation);
    if colour != Colour::Cmyk {
        return Ok(Some(ours));
    }
    let theirs = super::image_crate::plan(input, ImageFormat::Jpeg, limits)?;
    Ok(Some(if theirs.total > ours.total { theirs } else { ours }))
}
