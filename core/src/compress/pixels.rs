//! Sample conversion: whatever colour type the `image` crate decoded, the 8-bit grey or RGB the encoder takes,
//! with alpha flattened onto white and 16-bit and float samples reduced to 8 bits, fed 16 oriented rows at a time
//! (no second full-size image, whatever the colour type or orientation).

use image::DynamicImage;
use image::metadata::Orientation;

use super::encode::{EncodeOptions, Encoder};
use super::jpeglib::Error;
use super::orient::{oriented_dimensions, write_oriented};

/// Encodes an image decoded by the `image` crate, whatever its colour type.
pub(super) fn encode_image(
    image: &DynamicImage,
    orientation: Orientation,
    options: EncodeOptions,
    capacity: usize,
    exif: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    let (w, h) = (image.width(), image.height());
    let (out_w, out_h) = oriented_dimensions(w, h, orientation);
    let encoder = |grey: bool| Encoder::new(out_w, out_h, grey, options, capacity, exif);
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
pub(super) fn over_white_8(c: u8, a: u8) -> u8 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::OutputOptions;
    use image::RgbImage;

    /// The oriented rows are `DynamicImage::apply_orientation`'s, for every orientation.
    #[test]
    fn oriented_rows_match_apply_orientation() {
        let source = RgbImage::from_fn(37, 21, |x, y| image::Rgb([(x * 6) as u8, (y * 12) as u8, 128]));
        for exif in 1..=8 {
            let orientation = Orientation::from_exif(exif).unwrap();
            let mut expected = DynamicImage::ImageRgb8(source.clone());
            expected.apply_orientation(orientation);
            let expected = expected.to_rgb8();
            let options = EncodeOptions::new(100, OutputOptions::default());
            let jpeg = encode_image(&DynamicImage::ImageRgb8(source.clone()), orientation, options, 0, None).unwrap();
            let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
            assert_eq!(back.dimensions(), expected.dimensions(), "orientation {exif}");
            for (x, y, p) in expected.enumerate_pixels() {
                let q = back.get_pixel(x, y);
                let close = p.0.iter().zip(q.0).all(|(&a, b)| a.abs_diff(b) <= 24);
                assert!(close, "orientation {exif} at {x},{y}: {p:?} vs {q:?}");
            }
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
}
