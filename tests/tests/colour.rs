//! Colour accuracy: every fixture of `tests/images/colour/` (a chart stored in Adobe RGB, Display P3, ProPhoto,
//! WideGamut, a channel-swapping space, CMYK and grey, with the profile embedded as each format does, or described by
//! PNG chunks; sRGB inputs; hostile profiles) goes through `compress` at the production quality, and the output,
//! read as sRGB (what a browser does with an untagged JPEG), must show the chart's colours: mean ΔE76 ≤ 3 and
//! max ΔE76 ≤ 6 over the patches. The fixtures and `chart.json` (the truth) were made with Pillow/LittleCMS by
//! `tests/images/colour/make_fixtures.py`; ΔE is computed here with the CIE formulas. Also: sRGB inputs are left
//! untouched (byte-identical output), hostile profiles are ignored with a logged reason, outputs carry no metadata,
//! and the two options that add some (an sRGB profile; the EXIF copyright and artist) add exactly that. Pure
//! functions: these tests need no stack environment.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use imgpipe_core::compress::{CompressLimits, OutputOptions, compress, compress_with};
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

/// Press shadows (black alone, rich blacks up to all four inks at 100 %, dark colours; CMYK through FOGRA39) come out
/// as dark as LittleCMS shows them (the chart `make_fixtures.py` read from LittleCMS): it maps the press's darkest
/// ink, L* 9.8, to sRGB's black (black point compensation). Without that the darkest ink stays a dark grey, every
/// shadow is lighter, and the rich blacks are off by ΔE76 10 or more.
#[test]
fn cmyk_shadows_are_as_dark_as_littlecms_shows_them() {
    let chart = chart();
    let name = "cmyk-shadows-littlecms";
    let out = compress(&read("cmyk-fogra39-shadows.jpg"), QUALITY, LIMITS).unwrap().jpeg;
    let truth = &chart.charts[name];
    let found = patches(&chart, &out, truth.len());
    for (i, (a, b)) in found.iter().zip(truth).enumerate() {
        println!("patch {i:>2}: {:>5.1?} LittleCMS {b:>5.1?}  ΔE {:.2}", a, delta_e76(*a, *b));
    }
    let (mean, max) = accuracy(&chart, name, &out);
    println!("mean ΔE {mean:.2}, max {max:.2}");
    assert!(mean <= 2.0 && max <= 5.0, "mean ΔE {mean:.2}, max {max:.2} from LittleCMS (bar: 2 / 5)");
    // All four inks at 100 %: sRGB's black, as LittleCMS shows it.
    let darkest = lab(found[4])[0];
    assert!(darkest <= 2.0, "the darkest ink comes out at L* {darkest:.1}");
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

const EMBED_PROFILE: OutputOptions = OutputOptions { embed_srgb_profile: true, keep_copyright: false };
const KEEP_COPYRIGHT: OutputOptions = OutputOptions { embed_srgb_profile: false, keep_copyright: true };

/// The payloads of the segments of `jpeg` with marker `marker` whose payload starts with `prefix`.
fn payloads<'a>(jpeg: &'a [u8], marker: u8, prefix: &[u8]) -> Vec<&'a [u8]> {
    segments(jpeg).into_iter().filter(|(m, p)| *m == marker && p.starts_with(prefix)).map(|(_, p)| p).collect()
}

/// `jpeg` without its segments of marker `marker`: what is left when one segment was added to an output.
fn without(jpeg: &[u8], marker: u8) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut at = 2;
    loop {
        let (m, len) = (jpeg[at + 1], usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]])));
        if m == 0xda {
            out.extend_from_slice(&jpeg[at..]);
            return out;
        }
        if m != marker {
            out.extend_from_slice(&jpeg[at..at + 2 + len]);
        }
        at += 2 + len;
    }
}

/// With `IMGPIPE_EMBED_SRGB_PROFILE`, an output holds one APP2 ICC profile (compact: at most 1 KiB) that a colour
/// engine (moxcms, parsing it afresh) reads as sRGB: converting colours across the cube from it into sRGB moves
/// none by more than one 8-bit level, where Adobe RGB moves them by up to 60. Nothing else changes: the rest of
/// the file is the default output, byte for byte. Without the option there is no APP2 at all. Both backends: a
/// JPEG (libjpeg) and a PNG converted from Adobe RGB (the image crate).
#[test]
fn an_srgb_profile_is_embedded_only_when_asked() {
    use moxcms::{ColorProfile, Layout, TransformOptions};
    let moves = |from: &ColorProfile| {
        let executor = from
            .create_transform_8bit(Layout::Rgb, &ColorProfile::new_srgb(), Layout::Rgb, TransformOptions::default())
            .unwrap();
        let probe: Vec<u8> =
            (0..16 * 16 * 16).flat_map(|i| [i / 256 * 17, i / 16 % 16 * 17, i % 16 * 17]).map(|v| v as u8).collect();
        let mut out = vec![0; probe.len()];
        executor.transform(&probe, &mut out).unwrap();
        probe.iter().zip(&out).map(|(a, b)| a.abs_diff(*b)).max().unwrap()
    };
    let adobe = ColorProfile::new_from_slice(&read("profiles/compatibleWithAdobeRGB1998.icc")).unwrap();
    assert!(moves(&adobe) > 30, "the probe cannot tell Adobe RGB from sRGB");
    for name in ["srgb-untagged.jpg", "adobe-rgb.png"] {
        let plain = compress(&read(name), QUALITY, LIMITS).unwrap().jpeg;
        assert!(segments(&plain).iter().all(|(m, _)| *m != 0xe2), "{name}: APP2 without the option");
        let tagged = compress_with(&read(name), QUALITY, LIMITS, EMBED_PROFILE).unwrap().jpeg;
        let icc = payloads(&tagged, 0xe2, b"ICC_PROFILE\0");
        assert_eq!(icc.len(), 1, "{name}: {} ICC segments", icc.len());
        assert_eq!(&icc[0][12..14], [1, 1], "{name}: segment 1 of 1");
        let profile = &icc[0][14..];
        assert!(profile.len() <= 1024, "{name}: a profile of {} bytes", profile.len());
        let parsed = ColorProfile::new_from_slice(profile).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(moves(&parsed) <= 1, "{name}: the embedded profile is not sRGB (moves {})", moves(&parsed));
        assert!(without(&tagged, 0xe2) == plain, "{name}: the output differs beyond the profile");
        assert!(payloads(&tagged, 0xe1, b"").is_empty(), "{name}: EXIF without being asked");
    }
}

/// The IFD0 entries of a TIFF structure, read with the TIFF 6 layout: (tag, text) for ASCII entries, (tag, "")
/// for the others; and the offset of the next IFD.
fn ifd0(tiff: &[u8]) -> (Vec<(u16, String)>, u32) {
    let le = match &tiff[..4] {
        b"II*\0" => true,
        b"MM\0*" => false,
        other => panic!("not a TIFF header: {other:?}"),
    };
    let u16_at = |i: usize| {
        let b = [tiff[i], tiff[i + 1]];
        if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) }
    };
    let u32_at = |i: usize| {
        let b = [tiff[i], tiff[i + 1], tiff[i + 2], tiff[i + 3]];
        if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
    };
    let ifd = u32_at(4) as usize;
    let count = usize::from(u16_at(ifd));
    let entries = (0..count)
        .map(|n| {
            let e = ifd + 2 + 12 * n;
            let (tag, kind, len) = (u16_at(e), u16_at(e + 2), u32_at(e + 4) as usize);
            let value = if kind != 2 {
                String::new()
            } else {
                let at = if len <= 4 { e + 8 } else { u32_at(e + 8) as usize };
                String::from_utf8_lossy(&tiff[at..at + len]).trim_end_matches('\0').to_string()
            };
            (tag, value)
        })
        .collect();
    (entries, u32_at(ifd + 2 + 12 * count))
}

const ARTIST: (u16, &str) = (0x013b, "Jane Photographer");
const COPYRIGHT: (u16, &str) = (0x8298, "(c) 2024 Example Shop");

/// With `IMGPIPE_KEEP_COPYRIGHT`, the photo with GPS, camera make, model and serial, XMP, IPTC and a comment comes
/// out with one EXIF APP1 whose only entries are its Artist and Copyright (no GPS or EXIF sub-IFD, no second IFD,
/// no thumbnail), and none of the rest anywhere in the file. Without the option there is no APP1 at all.
#[test]
fn copyright_and_artist_are_kept_only_when_asked() {
    let input = read("metadata-gps-serial-xmp.jpg");
    let plain = compress(&input, QUALITY, LIMITS).unwrap().jpeg;
    assert!(payloads(&plain, 0xe1, b"").is_empty(), "APP1 without the option");
    let kept = compress_with(&input, QUALITY, LIMITS, KEEP_COPYRIGHT).unwrap().jpeg;
    assert_copyright_only(&kept, "JPEG");
    assert!(without(&kept, 0xe1) == plain, "the output differs beyond the EXIF");
    let both = OutputOptions { embed_srgb_profile: true, keep_copyright: true };
    let tagged = compress_with(&input, QUALITY, LIMITS, both).unwrap().jpeg;
    assert_copyright_only(&tagged, "JPEG, with the profile");
    assert_eq!(payloads(&tagged, 0xe2, b"ICC_PROFILE\0").len(), 1);

    // The other backend: a lossless WebP carrying the same EXIF block in an extended-format EXIF chunk.
    let exif = segments(&input).into_iter().find(|(m, p)| *m == 0xe1 && p.starts_with(b"Exif\0\0")).unwrap().1;
    let webp = webp_with_exif(&exif[6..]);
    assert_copyright_only(&compress_with(&webp, QUALITY, LIMITS, KEEP_COPYRIGHT).unwrap().jpeg, "WebP");
    assert!(payloads(&compress(&webp, QUALITY, LIMITS).unwrap().jpeg, 0xe1, b"").is_empty(), "WebP: APP1 anyway");
}

fn assert_copyright_only(jpeg: &[u8], what: &str) {
    let app1 = payloads(jpeg, 0xe1, b"");
    assert_eq!(app1.len(), 1, "{what}: {} APP1 segments", app1.len());
    let tiff = app1[0].strip_prefix(b"Exif\0\0").unwrap_or_else(|| panic!("{what}: APP1 is not EXIF"));
    let (entries, next) = ifd0(tiff);
    let expected = vec![(ARTIST.0, ARTIST.1.to_string()), (COPYRIGHT.0, COPYRIGHT.1.to_string())];
    assert_eq!(entries, expected, "{what}: IFD0");
    assert_eq!(next, 0, "{what}: a second IFD (thumbnail)");
    for (marker, _) in segments(jpeg) {
        assert!(matches!(marker, 0xe0 | 0xe1 | 0xe2 | 0xdb | 0xc0 | 0xc4 | 0xda | 0xdd), "{what}: segment {marker:#x}");
    }
    let needles: [&[u8]; 6] = [b"SN-0123456789", b"ExampleCam", b"X100", b"xmpmeta", b"Photoshop", b"shot at home"];
    for needle in needles {
        assert!(!jpeg.windows(needle.len()).any(|w| w == needle), "{what}: {:?}", String::from_utf8_lossy(needle));
    }
}

/// A lossless WebP of a small image in the extended format (VP8X) with `tiff` as its EXIF chunk.
fn webp_with_exif(tiff: &[u8]) -> Vec<u8> {
    let image = image::RgbImage::from_fn(48, 32, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, 90]));
    let mut simple = std::io::Cursor::new(Vec::new());
    image.write_to(&mut simple, image::ImageFormat::WebP).unwrap();
    let simple = simple.into_inner();
    assert_eq!(&simple[12..16], b"VP8L", "the image crate writes lossless WebP");
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = [kind, &(data.len() as u32).to_le_bytes()[..], data].concat();
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    // VP8X: flags (EXIF present: bit 3), 3 reserved bytes, canvas width − 1 and height − 1 on 24 bits each.
    let mut vp8x = vec![0x08, 0, 0, 0];
    vp8x.extend_from_slice(&47u32.to_le_bytes()[..3]);
    vp8x.extend_from_slice(&31u32.to_le_bytes()[..3]);
    let body = [&b"WEBP"[..], &chunk(b"VP8X", &vp8x), &simple[12..], &chunk(b"EXIF", tiff)].concat();
    [&b"RIFF"[..], &(body.len() as u32).to_le_bytes(), &body].concat()
}
