//! EXIF orientation: where to read it, and writing a decoded image to the encoder in the oriented order without
//! a second full-size buffer.

use image::ImageDecoder;
use image::ImageFormat;
use image::metadata::Orientation;

use super::encode::Encoder;
use super::jpeglib::Error;

/// Rows handed to the encoder at a time (one 4:2:0 MCU row).
pub(super) const ROWS: usize = 16;

/// The orientation in a JPEG's `Exif` APP1 segment (its TIFF structure). A broken one is ignored: the image is
/// still worth compressing.
pub(super) fn from_exif(tiff: Option<&[u8]>) -> Orientation {
    tiff.and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms)
}

/// The EXIF orientation (PNG eXIf, WebP EXIF, JPEG APP1) or TIFF Orientation tag of an `image` crate decoder. A
/// broken one is ignored.
pub(super) fn of_decoder(decoder: &mut impl ImageDecoder, format: ImageFormat) -> Orientation {
    let found = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if found != Orientation::NoTransforms || !matches!(format, ImageFormat::Png | ImageFormat::WebP) {
        return found;
    }
    // Some writers put the JPEG-style "Exif\0\0" header in front of the TIFF structure of a PNG eXIf or WebP EXIF
    // chunk, where `image` expects the TIFF structure itself.
    from_exif(decoder.exif_metadata().ok().flatten().as_deref().and_then(|exif| exif.strip_prefix(b"Exif\0\0")))
}

fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

/// The size of the image as shown, for a `width`×`height` source.
pub(super) fn oriented_dimensions(width: u32, height: u32, orientation: Orientation) -> (u32, u32) {
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
pub(super) fn write_oriented<S: Copy, const C: usize, const N: usize>(
    mut encoder: Encoder,
    samples: &[S],
    (w, h): (u32, u32),
    orientation: Orientation,
    convert: impl Fn(&[S]) -> [u8; N],
) -> Result<Vec<u8>, Error> {
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
