//! Colour accuracy: every fixture of `tests/images/colour/` (a chart stored in Adobe RGB, Display P3, ProPhoto,
//! WideGamut, a channel-swapping space, CMYK and grey, with the profile embedded as each format does, or described by
//! PNG chunks; sRGB inputs; hostile profiles) goes through `compress` at the production quality, and the output,
//! read as sRGB (what a browser does with an untagged JPEG), must show the chart's colours: mean ΔE76 ≤ 3 and
//! max ΔE76 ≤ 6 over the patches. The fixtures and `chart.json` (the truth) were made with Pillow/LittleCMS by
//! `tests/images/colour/make_fixtures.py`; ΔE is computed here with the CIE formulas. Also: sRGB inputs are left
//! untouched (byte-identical output), hostile profiles are ignored with a logged reason, and outputs carry no
//! metadata. Pure functions: these tests need no stack environment.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use imgpipe_core::compress::{CompressLimits, compress};
use serde_json::Value;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::util::SubscriberInitExt;

const LIMITS: CompressLimits = CompressLimits::DEFAULT;
const QUALITY: u8 = 50;
const MEAN_LIMIT: f64 = 3.0;
const MAX_LIMIT: f64 = 6.0;

fn dir() -> String {
    format!("{}/images/colour", env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/{name}", dir())).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Chart {
    patch: u32,
    sample: u32,
    columns: u32,
    charts: BTreeMap<String, Vec<[f64; 3]>>,
    /// name → (chart, expect, note)
    fixtures: BTreeMap<String, (String, String, String)>,
}

fn chart() -> Chart {
    let v: Value = serde_json::from_slice(&read("chart.json")).unwrap();
    let num = |k: &str| v[k].as_u64().unwrap() as u32;
    let charts = v["charts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, patches)| {
            let patches = patches
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let p = p.as_array().unwrap();
                    [0, 1, 2].map(|i| p[i].as_f64().unwrap())
                })
                .collect();
            (k.clone(), patches)
        })
        .collect();
    let fixtures = v["fixtures"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, f)| {
            let s = |key: &str| f[key].as_str().unwrap().to_string();
            (k.clone(), (s("chart"), s("expect"), s("note")))
        })
        .collect();
    Chart { patch: num("patch"), sample: num("sample"), columns: num("columns"), charts, fixtures }
}

/// CIELAB (D65 white) of an 8-bit sRGB colour: IEC 61966-2-1 decoding, the sRGB-to-XYZ matrix, CIE 1976 L*a*b*.
fn lab([r, g, b]: [f64; 3]) -> [f64; 3] {
    let linear = |c: f64| {
        let c = c / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let (r, g, b) = (linear(r), linear(g), linear(b));
    let x = 0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175_0 * b;
    let z = 0.019_333_9 * r + 0.119_192_0 * g + 0.950_304_1 * b;
    let f = |t: f64| {
        let d: f64 = 6.0 / 29.0;
        if t > d.powi(3) { t.cbrt() } else { t / (3.0 * d * d) + 4.0 / 29.0 }
    };
    let (fx, fy, fz) = (f(x / 0.950_47), f(y), f(z / 1.088_83));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn delta_e76(a: [f64; 3], b: [f64; 3]) -> f64 {
    let (a, b) = (lab(a), lab(b));
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// The mean sRGB colour of the central sample×sample pixels of each patch of an output JPEG.
fn patches(chart: &Chart, jpeg: &[u8], count: usize) -> Vec<[f64; 3]> {
    let image = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).unwrap().to_rgb8();
    let (p, s) = (chart.patch, chart.sample);
    (0..count as u32)
        .map(|i| {
            let (x0, y0) = ((i % chart.columns) * p + (p - s) / 2, (i / chart.columns) * p + (p - s) / 2);
            let mut sum = [0.0; 3];
            for y in y0..y0 + s {
                for x in x0..x0 + s {
                    let px = image.get_pixel(x, y).0;
                    for c in 0..3 {
                        sum[c] += f64::from(px[c]);
                    }
                }
            }
            sum.map(|v| v / f64::from(s * s))
        })
        .collect()
}

/// (mean, max) ΔE76 of `jpeg`'s patches against the chart `name`.
fn accuracy(chart: &Chart, name: &str, jpeg: &[u8]) -> (f64, f64) {
    let truth = &chart.charts[name];
    let errors: Vec<f64> =
        patches(chart, jpeg, truth.len()).into_iter().zip(truth).map(|(a, &b)| delta_e76(a, b)).collect();
    (errors.iter().sum::<f64>() / errors.len() as f64, errors.iter().copied().fold(0.0, f64::max))
}

/// Every fixture, read back as sRGB, shows the chart's colours.
#[test]
fn every_fixture_comes_out_with_the_charts_colours() {
    let chart = chart();
    assert!(chart.fixtures.len() >= 30, "chart.json lists {} fixtures", chart.fixtures.len());
    let mut failures = Vec::new();
    println!("{:<34} {:>6} {:>6}  note", "fixture", "mean", "max");
    for (name, (chart_name, _, note)) in &chart.fixtures {
        let out = compress(&read(name), QUALITY, LIMITS).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (mean, max) = accuracy(&chart, chart_name, &out.jpeg);
        println!("{name:<34} {mean:>6.2} {max:>6.2}  {note}");
        if mean > MEAN_LIMIT || max > MAX_LIMIT {
            failures.push(format!("{name}: mean ΔE {mean:.2}, max {max:.2}"));
        }
    }
    assert!(failures.is_empty(), "over mean ΔE {MEAN_LIMIT} / max {MAX_LIMIT}:\n{}", failures.join("\n"));
}

/// sRGB inputs, whatever profile says so (recognised by its contents: one is named "Display P3"), skip the
/// conversion (no "converting" event, which a wide-gamut input does log) and come out as the untagged file does,
/// byte for byte.
#[test]
fn srgb_inputs_are_left_untouched() {
    let reference = |name: &str| compress(&read(name), QUALITY, LIMITS).unwrap().jpeg;
    let (png, jpeg) = (reference("srgb-untagged.png"), reference("srgb-untagged.jpg"));
    let cases = ["srgb-colord-v4.png", "srgb-argyll-named-p3.png", "srgb-chunk.png", "srgb-littlecms.jpg"];
    for name in cases {
        let expected = if name.ends_with(".png") { &png } else { &jpeg };
        assert!(compress(&read(name), QUALITY, LIMITS).unwrap().jpeg == *expected, "{name}: output differs");
        let logs = logged(name);
        assert!(!logs.contains("converting the image to sRGB"), "{name} was converted: {logs}");
    }
    assert!(logged("adobe-rgb.jpg").contains("converting the image to sRGB"));
}

/// A writer collecting what the tracing subscriber prints.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compresses `name` with a subscriber on this thread; returns what was logged.
fn logged(name: &str) -> String {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(LevelFilter::DEBUG)
        .finish();
    let _guard = subscriber.set_default();
    compress(&read(name), QUALITY, LIMITS).unwrap_or_else(|e| panic!("{name}: {e}"));
    String::from_utf8(logs.0.lock().unwrap().clone()).unwrap()
}

/// Hostile profiles are ignored (the image succeeds as sRGB: the accuracy test above) and the reason is logged.
#[test]
fn hostile_profiles_are_ignored_with_the_reason_logged() {
    let cases = [
        ("hostile-truncated.jpg", "declares 580 bytes, 300 present"),
        // The colour engine drops the tag it cannot read, and then finds the profile incomplete.
        ("hostile-tag-outside.png", "no transform to sRGB"),
        ("hostile-declared-4gb.webp", "declares 4294967040 bytes, 580 present"),
        ("hostile-tag-count.jpg", "malformed ICC profile"),
        ("hostile-wrong-class.png", "a Lab profile on Rgb pixels"),
        ("hostile-grey-profile-on-rgb.jpg", "a Gray profile on Rgb pixels"),
        ("hostile-missing-segment.jpg", "APP2 ICC_PROFILE segments are inconsistent"),
        ("hostile-iccp-bomb.png", "iCCP chunk could not be inflated"),
    ];
    for (name, reason) in cases {
        let logs = logged(name);
        assert!(
            logs.contains("colour profile ignored") && logs.contains(reason),
            "{name}: expected {reason:?} in {logs:?}"
        );
    }
    // A good profile logs no warning.
    assert!(!logged("adobe-rgb.jpg").contains("WARN"));
}

/// The JPEG segments of `jpeg` up to the start of scan: (marker, payload).
fn segments(jpeg: &[u8]) -> Vec<(u8, &[u8])> {
    assert_eq!(&jpeg[..2], [0xff, 0xd8], "no SOI");
    let mut at = 2;
    let mut found = Vec::new();
    while at + 4 <= jpeg.len() {
        assert_eq!(jpeg[at], 0xff, "segment at {at}");
        let marker = jpeg[at + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        found.push((marker, &jpeg[at + 4..at + 2 + len]));
        if marker == 0xda {
            break;
        }
        at += 2 + len;
    }
    found
}

/// A photo with GPS, camera make, model and serial number, artist, copyright, XMP, IPTC and a comment: the output
/// has none of it (only the JFIF header, tables, frame and scan).
#[test]
fn outputs_carry_no_metadata() {
    let input = read("metadata-gps-serial-xmp.jpg");
    let kinds = |jpeg: &[u8]| segments(jpeg).iter().map(|(m, _)| *m).collect::<Vec<u8>>();
    // The input really has them: APP1 (EXIF, XMP), APP13 (IPTC), COM.
    let input_kinds = kinds(&input);
    for marker in [0xe1, 0xed, 0xfe] {
        assert!(input_kinds.contains(&marker), "fixture lacks marker {marker:#x}");
    }
    let needles: [&[u8]; 6] = [b"SN-0123456789", b"ExampleCam", b"Jane", b"Example Shop", b"GPS", b"Photoshop"];
    assert!(needles.iter().all(|n| input.windows(n.len()).any(|w| w == *n)));

    let out = compress(&input, QUALITY, LIMITS).unwrap().jpeg;
    for (marker, payload) in segments(&out) {
        match marker {
            0xe0 => assert!(payload.starts_with(b"JFIF\0"), "APP0 other than JFIF"),
            0xdb | 0xc0 | 0xc4 | 0xda | 0xdd => {}
            other => panic!("output has segment {other:#x}"),
        }
    }
    for needle in needles {
        assert!(!out.windows(needle.len()).any(|w| w == needle), "{:?} in the output", String::from_utf8_lossy(needle));
    }
}
