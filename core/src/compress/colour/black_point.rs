//! Black point compensation (BPC; Adobe's definition, ISO 18619, as LittleCMS does it): the darkest colour the
//! source can show is mapped to sRGB's black, and everything between it and white is scaled in XYZ to match.
//!
//! Why: a press cannot print black. FOGRA39's darkest ink (all four at 100 %) is L* 9.8; converted without BPC it
//! stays the dark grey (28, 27, 23) and the shadows of a CMYK photo come out lighter than LittleCMS (Pillow,
//! ImageMagick, GIMP) and Photoshop show them: LittleCMS compensates whenever the perceptual intent goes into a
//! version 4 profile such as its own sRGB, Photoshop by default. For matrix/TRC RGB profiles (Adobe RGB, Display
//! P3, ProPhoto…) the black point is 0, and nothing changes.
//!
//! How, on top of `moxcms` (which has no BPC):
//! 1. The source's black point: its darkest colorant (all inks at 100 %, RGB 0, grey 0) converted with the chosen
//!    intent into XYZ (a linear destination whose primaries are X, Y and Z, at 16 bits), L* capped at 50 and a*,
//!    b* set to 0: LittleCMS's `BlackPointAsDarkerColorant`. So it is neutral: `k` times the white, k = its Y.
//! 2. The scaling in XYZ from that black point to sRGB's (0) is X' = (X − k·Xw)/(1 − k), Y and Z alike. sRGB's
//!    matrix maps the white to (1, 1, 1), so in linear sRGB it is the same map on each channel: c' = (c − k)/(1 −
//!    k). That is folded into the destination's tone curve: a pixel is encoded as sRGB⁻¹((c − k)/(1 − k)), whose
//!    inverse c = k + (1 − k)·sRGB(v) is an ICC parametric curve of type 4 (below). `moxcms` then applies it in
//!    floating point at every node of its tables, before rounding, and clips what falls below black as it clips
//!    any out-of-gamut colour.

use moxcms::{ColorProfile, Layout, ToneReprCurve, TransformOptions, Xyzd};

use super::Model;

/// The Y of L* 50: LittleCMS's cap on a detected black point (a "black" lighter than mid-grey is a broken profile).
const Y_OF_L50: f64 = 0.184_186;

/// Black points darker than this (Y, white = 1) are taken as black: the compensation would move no 16-bit level.
const NEGLIGIBLE: f64 = 1.0 / 65_535.0;

/// The Y (white = 1) of the neutral black point of `source` under `options`' intent; 0 when it is black.
pub(super) fn detect(source: &ColorProfile, model: Model, options: TransformOptions) -> Result<f64, String> {
    let (layout, darkest): (Layout, &[u16]) = match model {
        Model::Grey => (Layout::Gray, &[0]),
        Model::Rgb => (Layout::Rgb, &[0, 0, 0]),
        Model::Cmyk => (Layout::Rgba, &[u16::MAX; 4]),
    };
    let executor = source
        .create_transform_16bit(layout, &xyz_destination(), Layout::Rgb, options)
        .map_err(|e| format!("no transform to XYZ: {e}"))?;
    let mut xyz = [0u16; 3];
    executor.transform(darkest, &mut xyz).map_err(|e| format!("the black point did not convert: {e}"))?;
    let y = (f64::from(xyz[1]) / 65_535.0).min(Y_OF_L50);
    Ok(if y < NEGLIGIBLE { 0.0 } else { y })
}

/// A linear RGB destination whose channels are the connection space's X, Y and Z.
fn xyz_destination() -> ColorProfile {
    let mut profile = ColorProfile::new_srgb();
    profile.cicp = None;
    profile.red_colorant = Xyzd::new(1.0, 0.0, 0.0);
    profile.green_colorant = Xyzd::new(0.0, 1.0, 0.0);
    profile.blue_colorant = Xyzd::new(0.0, 0.0, 1.0);
    let linear = ToneReprCurve::Lut(Vec::new());
    profile.red_trc = Some(linear.clone());
    profile.green_trc = Some(linear.clone());
    profile.blue_trc = Some(linear);
    profile
}

/// Makes `destination` (sRGB, or grey with sRGB's tone curve) map a source whose black point has luminance `black`
/// onto sRGB's black: its tone curve becomes c = k + (1 − k)·sRGB(v), the ICC parametric curve (type 4)
/// Y = (aX + b)^g + e for X ≥ d, Y = cX + f below, with sRGB's g = 2.4 and d = 0.04045, s = (1 − k)^(1/2.4),
/// a = s/1.055, b = s·0.055/1.055, c = (1 − k)/12.92, e = f = k.
pub(super) fn compensate(destination: &mut ColorProfile, black: f64) {
    if black == 0.0 {
        return;
    }
    let s = (1.0 - black).powf(1.0 / 2.4);
    let curve = ToneReprCurve::Parametric(
        [2.4, s / 1.055, s * 0.055 / 1.055, (1.0 - black) / 12.92, 0.04045, black, black].map(|v| v as f32).to_vec(),
    );
    // The CICP code points would let moxcms use sRGB's own transfer function instead of this curve.
    destination.cicp = None;
    for trc in [&mut destination.red_trc, &mut destination.green_trc, &mut destination.blue_trc] {
        *trc = Some(curve.clone());
    }
    if destination.gray_trc.is_some() {
        destination.gray_trc = Some(curve);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str) -> ColorProfile {
        let path = format!("{}/../tests/images/colour/profiles/{name}", env!("CARGO_MANIFEST_DIR"));
        ColorProfile::new_from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn options(intent: moxcms::RenderingIntent) -> TransformOptions {
        TransformOptions { rendering_intent: intent, ..Default::default() }
    }

    /// FOGRA39's darkest ink is L* 9.8 (LittleCMS 2.19 reads the same profile as Lab 9.8, 0, +2.7); matrix RGB and
    /// grey profiles have a black black.
    #[test]
    fn black_points() {
        let cmyk =
            detect(&profile("CMYK-FOGRA39L-argyll.icc"), Model::Cmyk, options(moxcms::RenderingIntent::Perceptual));
        let l = 116.0 * cmyk.unwrap().cbrt() - 16.0;
        assert!((l - 9.8).abs() < 0.2, "L* {l}");
        let relative = options(moxcms::RenderingIntent::RelativeColorimetric);
        assert_eq!(detect(&profile("compatibleWithAdobeRGB1998.icc"), Model::Rgb, relative), Ok(0.0));
        assert_eq!(detect(&profile("Gray.icc"), Model::Grey, relative), Ok(0.0));
    }

    /// The compensated curve maps the black point to 0 and white to white, and is sRGB's when k = 0.
    #[test]
    fn compensated_curve() {
        let k = 0.011;
        let mut srgb = ColorProfile::new_srgb();
        compensate(&mut srgb, k);
        let Some(ToneReprCurve::Parametric(p)) = &srgb.red_trc else { panic!("{:?}", srgb.red_trc) };
        let curve = moxcms::ParametricCurve::new(p).unwrap();
        assert!((curve.eval(0.0) - k as f32).abs() < 1e-6);
        assert!((curve.eval(1.0) - 1.0).abs() < 1e-5);
        let srgb_decode = |v: f32| if v < 0.04045 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) };
        for v in [0.01f32, 0.04, 0.05, 0.2, 0.5, 0.9] {
            let expected = k as f32 + (1.0 - k as f32) * srgb_decode(v);
            assert!((curve.eval(v) - expected).abs() < 1e-5, "at {v}: {} vs {expected}", curve.eval(v));
        }
        let mut untouched = ColorProfile::new_srgb();
        compensate(&mut untouched, 0.0);
        assert_eq!(untouched.red_trc, ColorProfile::new_srgb().red_trc);
    }
}
