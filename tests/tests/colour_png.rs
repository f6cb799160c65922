//! Palette PNGs take their own path (indices decoded, the at most 256 colours converted to sRGB and flattened onto
//! white once): its output must be exactly what the pixel path gives for the same image expanded to RGBA (or RGB)
//! with the same profile, for every bit depth, with and without transparency (not interlaced: the `png` crate's
//! encoder writes no Adam7). The expansion is done here, by hand, and written with the `png` crate; the pixel path
//! is covered against the chart by colour.rs.
//! Pure functions: no stack environment.

use std::borrow::Cow;

use imgpipe_core::compress::{CompressLimits, compress};

const QUALITY: u8 = 50;

fn profile(name: &str) -> Vec<u8> {
    let path = format!("{}/images/colour/profiles/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A PNG of `data` (rows packed as the colour type and depth say) with the given chunks.
fn png(
    (width, height): (u32, u32),
    (colour, depth): (png::ColorType, png::BitDepth),
    palette: Option<&[u8]>,
    trns: Option<&[u8]>,
    icc: Option<&[u8]>,
    interlaced: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut info = png::Info::with_size(width, height);
    (info.color_type, info.bit_depth, info.interlaced) = (colour, depth, interlaced);
    info.palette = palette.map(|p| Cow::Owned(p.to_vec()));
    info.trns = trns.map(|t| Cow::Owned(t.to_vec()));
    info.icc_profile = icc.map(|p| Cow::Owned(p.to_vec()));
    let mut out = Vec::new();
    let mut writer = png::Encoder::with_info(&mut out, info).unwrap().write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
    out
}

/// Pseudo-random bytes (a fixed LCG: the same image every run).
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

/// One palette image and its expansion: both compressed must give the same JPEG.
fn assert_same_as_expanded(bits: u8, with_trns: bool, interlaced: bool, icc: Option<&[u8]>) {
    let (w, h) = (61u32, 37u32); // odd sizes: rows of packed indices end mid-byte
    let entries = (1usize << bits).min(256) - usize::from(bits == 8) * 6; // an 8-bit palette shorter than 256
    let palette = noise(entries * 3, u32::from(bits) + 7);
    // Alpha from fully transparent to opaque, and some entries past the tRNS (opaque by the PNG rules).
    let trns: Vec<u8> = (0..entries.saturating_sub(1)).map(|i| (i * 255 / entries.max(2)) as u8).collect();
    let indices: Vec<u8> = noise((w * h) as usize, 99).iter().map(|v| v % entries as u8).collect();
    let row_bytes = (w as usize * usize::from(bits)).div_ceil(8);
    let mut packed = vec![0u8; row_bytes * h as usize];
    for (y, row) in indices.chunks(w as usize).enumerate() {
        for (x, &i) in row.iter().enumerate() {
            let bit = x * usize::from(bits);
            packed[y * row_bytes + bit / 8] |= i << (8 - usize::from(bits) - bit % 8);
        }
    }
    let depth = png::BitDepth::from_u8(bits).unwrap();
    let trns = with_trns.then_some(&trns[..]);
    let indexed = png((w, h), (png::ColorType::Indexed, depth), Some(&palette), trns, icc, interlaced, &packed);

    let channels = if with_trns { 4 } else { 3 };
    let expanded: Vec<u8> = indices
        .iter()
        .flat_map(|&i| {
            let i = usize::from(i);
            let alpha = trns.map_or(255, |t| t.get(i).copied().unwrap_or(255));
            [palette[3 * i], palette[3 * i + 1], palette[3 * i + 2], alpha].into_iter().take(channels)
        })
        .collect();
    let colour = if with_trns { png::ColorType::Rgba } else { png::ColorType::Rgb };
    let expanded = png((w, h), (colour, png::BitDepth::Eight), None, None, icc, false, &expanded);

    let what = format!("{bits}-bit palette, tRNS {with_trns}, interlaced {interlaced}, profile {}", icc.is_some());
    let ours = compress(&indexed, QUALITY, CompressLimits::DEFAULT).unwrap_or_else(|e| panic!("{what}: {e}"));
    let theirs = compress(&expanded, QUALITY, CompressLimits::DEFAULT).unwrap();
    assert_eq!((ours.width, ours.height), (w, h), "{what}");
    assert!(ours.jpeg == theirs.jpeg, "{what}: the palette path's JPEG differs from the pixel path's");
}

#[test]
fn palette_pngs_come_out_as_their_expansion_would() {
    let adobe = profile("compatibleWithAdobeRGB1998.icc");
    for bits in [1, 2, 4, 8] {
        for with_trns in [false, true] {
            assert_same_as_expanded(bits, with_trns, false, Some(&adobe));
        }
        assert_same_as_expanded(bits, true, false, None);
    }
}

/// The profile is honoured at all: the same palette file without it gives other colours (else the test above would
/// also pass with a path that ignored profiles on both sides).
#[test]
fn a_palette_profile_changes_the_colours() {
    let adobe = profile("compatibleWithAdobeRGB1998.icc");
    let palette = [200u8, 30, 40, 20, 180, 60, 40, 50, 190, 250, 250, 250];
    let indices: Vec<u8> = (0..64 * 64).map(|i| (i / 1024) as u8).collect();
    let make = |icc: Option<&[u8]>| {
        let image =
            png((64, 64), (png::ColorType::Indexed, png::BitDepth::Eight), Some(&palette), None, icc, false, &indices);
        let jpeg = compress(&image, 100, CompressLimits::DEFAULT).unwrap().jpeg;
        image::load_from_memory(&jpeg).unwrap().to_rgb8()
    };
    let (tagged, untagged) = (make(Some(&adobe)), make(None));
    // Adobe RGB's red is more saturated than sRGB's: converted, it leaves sRGB's gamut and clips at 255.
    let (t, u) = (tagged.get_pixel(32, 4).0, untagged.get_pixel(32, 4).0);
    assert!(t[0] > u[0] + 10, "an Adobe RGB red shown as sRGB: converted {t:?}, as stored {u:?}");
}
