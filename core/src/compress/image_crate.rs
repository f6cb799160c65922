//! Every format but most JPEGs, decoded by the `image` crate into one buffer (with an allocation budget derived
//! from the checked header), converted to sRGB in place when its profile says it is in another space (`colour`),
//! then encoded from it (`pixels`). Palette PNGs take the header's colour information from it, then their indices
//! from the `png` crate (`palette`).

use std::io::Cursor;

use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use super::budget::{self, DECODER_SCRATCH, Estimate};
use super::colour::{self, Described, Model};
use super::encode::EncodeOptions;
use super::sniff::declared_dimensions;
use super::{CompressError, CompressLimits, Compressed, check_dimensions, metadata, orient, palette, pixels};

/// The decoder of `input`, its header read and its size checked.
fn open(
    input: &[u8],
    format: ImageFormat,
    limits: CompressLimits,
) -> Result<Box<dyn ImageDecoder + '_>, CompressError> {
    let mut reader = ImageReader::with_format(Cursor::new(input), format);
    if format == ImageFormat::Png {
        // The png crate inflates the iCCP (and text) chunks while reading the header, before the budget below is
        // set: bound them now. (Over it, png drops the profile, and `describe_png` logs that.)
        let mut header_limits = Limits::default();
        header_limits.max_alloc = Some(colour::MAX_PROFILE_BYTES as u64 + DECODER_SCRATCH);
        reader.limits(header_limits);
    }
    let decoder = match reader.into_decoder() {
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
    Ok(Box::new(decoder))
}

/// What decoding holds (`budget`); `icc_bytes`: the profile read from the header.
fn estimate(decoder: &dyn ImageDecoder, format: ImageFormat, input: &[u8], icc_bytes: u64) -> Estimate {
    let (size, decoded, original) = (decoder.dimensions(), decoder.total_bytes(), decoder.original_color_type());
    budget::image_crate(format, size, decoded, original, input.len() as u64, icc_bytes)
}

/// The budget of `input` from its header (`compress::plan`).
pub(super) fn plan(input: &[u8], format: ImageFormat, limits: CompressLimits) -> Result<Estimate, CompressError> {
    let mut decoder = open(input, format, limits)?;
    let icc_bytes = decoder.icc_profile().ok().flatten().map_or(0, |p| p.len() as u64);
    Ok(estimate(&*decoder, format, input, icc_bytes))
}

pub(super) fn compress(
    input: &[u8],
    format: ImageFormat,
    options: EncodeOptions,
    limits: CompressLimits,
) -> Result<Compressed, CompressError> {
    let mut decoder = open(input, format, limits)?;
    let (width, height) = decoder.dimensions();
    let icc = decoder.icc_profile().ok().flatten();
    let described = match format {
        ImageFormat::Png => colour::describe_png(input, icc.as_deref()),
        _ => icc.as_deref().map_or(Described::Nothing, Described::Icc),
    };
    let grey = matches!(decoder.color_type(), ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16);
    let conversion = colour::to_srgb(described, if grey { Model::Grey } else { Model::Rgb });

    let estimate = estimate(&*decoder, format, input, icc.as_ref().map_or(0, |p| p.len() as u64));
    estimate.check(limits.max_decode_bytes)?;
    // Decoders that honour `max_alloc` refuse a frame or buffer declared larger than their part.
    let budget = estimate.decoder;
    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(limits.max_dimension);
    decode_limits.max_image_height = Some(limits.max_dimension);
    decode_limits.max_alloc = Some(budget);
    let too_large = Some((width, height, budget));
    decoder.set_limits(decode_limits).map_err(|e| from_image_error(e, too_large))?;
    let orientation = orient::of_decoder(&mut decoder, format);
    let exif = match (options.output.keep_copyright, format) {
        (false, _) => None,
        // A TIFF's fields are its own first IFD, which the decoder does not hand out.
        (true, ImageFormat::Tiff) => metadata::copyright_exif(Some(input)),
        (true, _) => metadata::copyright_exif(decoder.exif_metadata().ok().flatten().as_deref()),
    };
    let (capacity, exif) = (input.len() / 2, exif.as_deref());
    let jpeg = if palette::is_indexed(format, input) {
        drop(decoder);
        let indexed =
            palette::decode(input, budget, conversion.as_ref()).map_err(|e| from_image_error(e, too_large))?;
        palette::encode(&indexed, orientation, options, capacity, exif)
    } else {
        let mut image = DynamicImage::from_decoder(decoder).map_err(|e| from_image_error(e, too_large))?;
        if let Some(conversion) = &conversion {
            conversion.convert_image(&mut image);
        }
        pixels::encode_image(&image, orientation, options, capacity, exif)
    }
    .map_err(|e| CompressError::Encode(e.message))?;
    let (width, height) = orient::oriented_dimensions(width, height, orientation);
    Ok(Compressed { jpeg, width, height, source_format: format })
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
