//! Profiled inputs (an embedded ICC profile): the colour error of each side's output against the LittleCMS-converted
//! reference (mean CIE ΔE76 over the scored window, both read as sRGB), and the table comparing them.
//! (tests/tests/colour.rs has its own copy of these formulas on purpose: a test must not share code with what it
//! checks.)

use std::fmt::Write as _;

use image::RgbImage;

/// CIELAB (D65) of an 8-bit sRGB colour: IEC 61966-2-1 decoding, the sRGB-to-XYZ matrix, CIE 1976 L*a*b*.
fn lab(rgb: [u8; 3]) -> [f64; 3] {
    let linear = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let [r, g, b] = rgb.map(linear);
    let x = (0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b) / 0.950_47;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175_0 * b;
    let z = (0.019_333_9 * r + 0.119_192_0 * g + 0.950_304_1 * b) / 1.088_83;
    let f = |t: f64| if t > 216.0 / 24_389.0 { t.cbrt() } else { t * 841.0 / 108.0 + 4.0 / 29.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// Mean ΔE76 between `jpeg` (decoded) and `reference` over the central `window`×`window` pixels; `None` when the
/// sizes differ or the JPEG does not decode.
pub fn mean_delta_e(reference: &RgbImage, jpeg: &[u8], window: u32) -> Option<f64> {
    let out = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).ok()?.to_rgb8();
    if out.dimensions() != reference.dimensions() {
        return None;
    }
    let (w, h) = reference.dimensions();
    let (cw, ch) = (w.min(window), h.min(window));
    let (x0, y0) = ((w - cw) / 2, (h - ch) / 2);
    let mut sum = 0.0;
    for y in y0..y0 + ch {
        for x in x0..x0 + cw {
            let (a, b) = (lab(reference.get_pixel(x, y).0), lab(out.get_pixel(x, y).0));
            sum += ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
        }
    }
    Some(sum / f64::from(cw * ch))
}

/// One profiled file: name, megapixels, and each side's (seconds, mean ΔE).
pub struct Profiled<'a> {
    pub name: &'a str,
    pub megapixels: f64,
    pub ours: (f64, Option<f64>),
    pub pillow: (f64, Option<f64>),
}

/// The profiled inputs' table: speed and colour error of both sides.
pub fn table(rows: &[Profiled<'_>]) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        return s;
    }
    let _ =
        writeln!(s, "Profiled inputs, converted to sRGB by both sides (Pillow: ImageCms.profileToProfile, LittleCMS)");
    let _ = writeln!(
        s,
        "{:<40} {:>6} | {:>7} {:>7} | {:>6} | {:>6} {:>6} {:>6}",
        "image", "MP", "imgpipe", "Pillow", "speed", "ΔE", "ΔE", "ΔΔE"
    );
    let _ = writeln!(s, "{:<40} {:>6} | {:^15} | {:>6} | {:>6} {:>6} {:>6}", "", "", "MP/s", "", "ours", "Pillow", "");
    let e = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for r in rows {
        let diff = match (r.ours.1, r.pillow.1) {
            (Some(a), Some(b)) => format!("{:+.2}", a - b),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<40} {:>6.2} | {:>7.1} {:>7.1} | {:>5.2}× | {:>6} {:>6} {:>6}",
            r.name,
            r.megapixels,
            r.megapixels / r.ours.0,
            r.megapixels / r.pillow.0,
            r.pillow.0 / r.ours.0,
            e(r.ours.1),
            e(r.pillow.1),
            diff
        );
    }
    let _ = writeln!(
        s,
        "ΔE: mean CIE ΔE76 of the output against the LittleCMS-converted source (the score reference of these files) on the\n\
         central window; ΔΔE > 0: imgpipe further from it than Pillow. speed: Pillow's time / imgpipe's."
    );
    s
}
