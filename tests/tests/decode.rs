//! `imgpipe_core::compress::compress` on every accepted format and variant, EXIF orientation, alpha, bombs,
//! non-images and the JPEG quality. Pure functions: these tests need no stack environment.
//!
//! Most inputs are generated here with the `image` crate or built byte by byte (EXIF segments, PNG chunks, a
//! TIFF writer, patched headers). What `image` cannot write (progressive and CMYK JPEG, lossy and animated
//! WebP, palette PNG, CMYK TIFF, an EXIF-tagged WebP and TIFF) is committed in `tests/images/`, made with Pillow
//! as described in `tests/images/README.md`.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::codecs::gif::GifEncoder;
use image::{Delay, DynamicImage, Frame, ImageBuffer, ImageFormat, Luma, LumaA, Pixel, Rgb, RgbImage, Rgba, RgbaImage};
use imgpipe_core::compress::{CompressError, CompressLimits, Compressed, compress};

/// The production defaults (`IMGPIPE_MAX_PIXELS`, `IMGPIPE_MAX_DIMENSION`, `IMGPIPE_MAX_DECODE_BYTES`,
/// `IMGPIPE_JPEG_QUALITY`).
const LIMITS: CompressLimits = CompressLimits::DEFAULT;
const QUALITY: u8 = 50;

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const YELLOW: [u8; 3] = [255, 255, 0];
const WHITE: [u8; 3] = [255, 255, 255];
const GREY: [u8; 3] = [128, 128, 128];
/// 50% red over white.
const PINK: [u8; 3] = [255, 127, 127];

// ---------------------------------------------------------------------------------------------------------------
// Memory: one compress in a child process (the `compress-rss` binary of this crate), whose peak resident set counts
// the C allocations of libjpeg-turbo as well as Rust's, and no other test's.

/// What one compress in a fresh process held and answered.
struct ChildRun {
    /// Peak resident set during compress, above the resident set when it started.
    growth: u64,
    /// The decode budget `plan` gave, or its refusal (`Debug`).
    plan: Result<u64, String>,
    /// `Ok((width, height))`, or the error's `Debug` form.
    result: Result<(u32, u32), String>,
}

#[track_caller]
fn compress_in_child(input: &[u8], limits: CompressLimits) -> ChildRun {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_compress-rss"))
        .args([limits.max_pixels, u64::from(limits.max_dimension), limits.max_decode_bytes].map(|n| n.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start compress-rss");
    child.stdin.take().unwrap().write_all(input).expect("write the image to compress-rss");
    // A deadline, not a hang: the child is killed and the test fails if it runs away.
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait for compress-rss").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("compress-rss still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(5)); // polling the child's exit, with the deadline above
    }
    let output = child.wait_with_output().expect("compress-rss output");
    assert!(output.status.success(), "compress-rss failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("compress-rss JSON");
    let kib = |field: &str| report[field].as_u64().unwrap_or_else(|| panic!("{field} in {report}"));
    let result = match report["error"].as_str() {
        Some(error) => Err(error.to_string()),
        None => Ok((kib("width") as u32, kib("height") as u32)),
    };
    let plan = match report["plan_error"].as_str() {
        Some(error) => Err(error.to_string()),
        None => Ok(kib("plan_bytes")),
    };
    ChildRun { growth: kib("peak_kib").saturating_sub(kib("rss_before_kib")) * 1024, plan, result }
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs.

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/images/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap_or_else(|e| panic!("encoding {:?} as {format:?}: {e}", image.color()));
    out.into_inner()
}

fn jpeg_of(image: &DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(image).unwrap();
    out
}

/// 64×48: red top-left, green top-right, blue bottom-left and yellow bottom-right quadrants.
fn quadrants() -> RgbImage {
    RgbImage::from_fn(64, 48, |x, y| Rgb(quadrant_colour(64, 48, x, y)))
}

fn quadrant_colour(w: u32, h: u32, x: u32, y: u32) -> [u8; 3] {
    match (x < w / 2, y < h / 2) {
        (true, true) => RED,
        (false, true) => GREEN,
        (true, false) => BLUE,
        (false, false) => YELLOW,
    }
}

/// The four grey levels of the grey variants of `quadrants`.
const GREY_LEVELS: [u8; 4] = [0, 85, 170, 255];

fn grey_quadrants() -> ImageBuffer<Luma<u8>, Vec<u8>> {
    ImageBuffer::from_fn(64, 48, |x, y| Luma([GREY_LEVELS[quadrant_index(64, 48, x, y)]]))
}

fn quadrant_index(w: u32, h: u32, x: u32, y: u32) -> usize {
    usize::from(x >= w / 2) + 2 * usize::from(y >= h / 2)
}

fn widen(v: u8) -> u16 {
    u16::from(v) * 257
}

/// A 96×64 "photo": smooth gradients and deterministic noise, so that the JPEG quality shows in the size.
fn photo() -> RgbImage {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    RgbImage::from_fn(96, 64, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let noise = (seed % 48) as u8;
        Rgb([(x * 2) as u8 + noise, (y * 3) as u8 + noise / 2, 200 - noise])
    })
}

fn pseudo_random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 56) as u8
        })
        .collect()
}

/// CRC-32 (ISO-HDLC), as PNG chunks need.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for &byte in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    chunk
}

/// Inserts a chunk in front of the first IDAT of a PNG.
fn png_insert_before_idat(png: &[u8], chunk: &[u8]) -> Vec<u8> {
    let mut at = 8;
    loop {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        if &png[at + 4..at + 8] == b"IDAT" {
            break;
        }
        at += 12 + len;
    }
    [&png[..at], chunk, &png[at..]].concat()
}

/// A PNG of a single IHDR, an IDAT holding an empty zlib stream, and IEND: tiny, whatever it declares.
fn png_header_only(width: u32, height: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, colour_type, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// The TIFF structure of an EXIF block holding a Make and an Orientation tag.
fn exif_tiff(orientation: u16, big_endian: bool) -> Vec<u8> {
    let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut tiff = if big_endian { b"MM\0*".to_vec() } else { b"II*\0".to_vec() };
    tiff.extend(u32b(8));
    tiff.extend(u16b(2));
    // Make (ASCII, 6 bytes, stored after the IFD).
    tiff.extend(u16b(0x010f));
    tiff.extend(u16b(2));
    tiff.extend(u32b(6));
    tiff.extend(u32b(8 + 2 + 2 * 12 + 4));
    // Orientation (SHORT, inline).
    tiff.extend(u16b(0x0112));
    tiff.extend(u16b(3));
    tiff.extend(u32b(1));
    tiff.extend(u16b(orientation));
    tiff.extend([0, 0]);
    tiff.extend(u32b(0));
    tiff.extend(b"Canon\0");
    tiff
}

/// The segment lengths of a JPEG walked from SOI: `(marker, offset of the marker, length field)`.
fn jpeg_segment_offsets(jpeg: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xff {
        let marker = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        out.push((marker, i, len));
        if marker == 0xda {
            break;
        }
        i += 2 + len;
    }
    out
}

/// Inserts a segment after the JFIF APP0 segment (or right after SOI if there is none).
fn jpeg_insert_segment(jpeg: &[u8], marker: u8, payload: &[u8]) -> Vec<u8> {
    let at = match jpeg_segment_offsets(jpeg).first() {
        Some(&(0xe0, offset, len)) => offset + 2 + len,
        _ => 2,
    };
    let mut segment = vec![0xff, marker];
    segment.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    segment.extend_from_slice(payload);
    [&jpeg[..at], &segment, &jpeg[at..]].concat()
}

fn jpeg_with_exif(jpeg: &[u8], orientation: u16, big_endian: bool) -> Vec<u8> {
    jpeg_insert_segment(jpeg, 0xe1, &[b"Exif\0\0".as_slice(), &exif_tiff(orientation, big_endian)].concat())
}

/// Sets the dimensions in the SOF segment of a JPEG.
fn jpeg_patch_dimensions(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let &(_, offset, _) =
        jpeg_segment_offsets(jpeg).iter().find(|(m, ..)| matches!(m, 0xc0..=0xc3)).expect("the JPEG has a SOF segment");
    out[offset + 5..offset + 7].copy_from_slice(&height.to_be_bytes());
    out[offset + 7..offset + 9].copy_from_slice(&width.to_be_bytes());
    out
}

/// The chunks of a RIFF/WebP file: `(fourcc, offset of the chunk header, payload length)`.
fn webp_chunks(webp: &[u8]) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut i = 12;
    while i + 8 <= webp.len() {
        let len = u32::from_le_bytes(webp[i + 4..i + 8].try_into().unwrap()) as usize;
        out.push((webp[i..i + 4].try_into().unwrap(), i, len));
        i += 8 + len + (len & 1);
    }
    out
}

fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend(((body.len() + 4) as u32).to_le_bytes());
    out.extend(b"WEBP");
    out.extend(body);
    out
}

fn webp_chunk(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut chunk = fourcc.to_vec();
    chunk.extend((payload.len() as u32).to_le_bytes());
    chunk.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        chunk.push(0);
    }
    chunk
}

/// Turns a simple (VP8L-only) WebP into an extended one with an EXIF chunk.
fn webp_with_exif(simple: &[u8], width: u32, height: u32, exif: &[u8]) -> Vec<u8> {
    let (fourcc, offset, len) = webp_chunks(simple)[0];
    assert_eq!(&fourcc, b"VP8L");
    let mut vp8x = vec![0x08, 0, 0, 0]; // EXIF flag
    vp8x.extend(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend(&(height - 1).to_le_bytes()[..3]);
    riff(&[
        webp_chunk(b"VP8X", &vp8x),
        webp_chunk(b"VP8L", &simple[offset + 8..offset + 8 + len]),
        webp_chunk(b"EXIF", exif),
    ])
}

/// A little-endian, uncompressed, single-strip TIFF of 8-bit samples (1 = grey, 3 = RGB).
fn tiff(width: u32, height: u32, samples: u16, data: &[u8], orientation: Option<u16>) -> Vec<u8> {
    let data_at = 8u32;
    let ifd_at = data_at + data.len() as u32 + (data.len() as u32 & 1);
    let mut entries: Vec<(u16, u16, u32, u32)> = vec![
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, u32::from(samples), 0), // value patched below
        (259, 3, 1, 1),
        (262, 3, 1, if samples == 1 { 1 } else { 2 }),
        (273, 4, 1, data_at),
        (277, 3, 1, u32::from(samples)),
        (278, 4, 1, height),
        (279, 4, 1, data.len() as u32),
    ];
    if let Some(o) = orientation {
        entries.push((274, 3, 1, u32::from(o)));
    }
    entries.sort_by_key(|e| e.0);
    let extra_at = ifd_at + 2 + 12 * entries.len() as u32 + 4;
    let mut out = b"II*\0".to_vec();
    out.extend(ifd_at.to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        out.extend(tag.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(count.to_le_bytes());
        match (tag, samples) {
            (258, 1) => out.extend([8, 0, 0, 0]),
            (258, _) => out.extend(extra_at.to_le_bytes()),
            (_, _) if kind == 3 => out.extend([(value as u16).to_le_bytes(), [0, 0]].concat()),
            _ => out.extend(value.to_le_bytes()),
        }
    }
    out.extend(0u32.to_le_bytes());
    if samples != 1 {
        for _ in 0..samples {
            out.extend(8u16.to_le_bytes());
        }
    }
    out
}

/// The offset of the first image descriptor (0x2C) of a GIF.
fn gif_first_descriptor(gif: &[u8]) -> usize {
    let flags = gif[10];
    let mut i = 13 + if flags & 0x80 != 0 { 3 << ((flags & 7) + 1) } else { 0 };
    loop {
        match gif[i] {
            0x2c => return i,
            0x21 => {
                i += 2;
                while gif[i] != 0 {
                    i += 1 + usize::from(gif[i]);
                }
                i += 1;
            }
            other => panic!("unexpected GIF block {other:#x} at {i}"),
        }
    }
}

/// A `width`×`height` 32-bit float RGBA TIFF whose samples are all the float with four `byte` bytes, PackBits
/// compressed (row by row, as TIFF requires): 64 times smaller than its pixels, as a real file's compression makes
/// it, so that what the decoder holds is not mistaken for the input it holds.
fn float_tiff_packbits(width: u32, height: u32, byte: u8) -> Vec<u8> {
    let row_bytes = width as usize * 16;
    let mut row = Vec::new();
    for run in (0..row_bytes).step_by(128) {
        let n = (row_bytes - run).min(128);
        row.extend([(257 - n) as u8, byte]); // -(n - 1): repeat the next byte n times
    }
    let data = row.repeat(height as usize);
    let entries: [(u16, u16, u32, u32); 11] = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 4, 0), // offset patched below
        (259, 3, 1, 32_773),
        (262, 3, 1, 2),
        (273, 4, 1, 8),
        (277, 3, 1, 4),
        (278, 4, 1, height),
        (279, 4, 1, data.len() as u32),
        (338, 3, 1, 2),
        (339, 3, 4, 0), // offset patched below
    ];
    let ifd_at = 8 + data.len() as u32;
    let extra_at = ifd_at + 2 + 12 * entries.len() as u32 + 4;
    let mut out = b"II*\0".to_vec();
    out.extend(ifd_at.to_le_bytes());
    out.extend_from_slice(&data);
    out.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        out.extend(tag.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(count.to_le_bytes());
        match tag {
            258 => out.extend(extra_at.to_le_bytes()),
            339 => out.extend((extra_at + 8).to_le_bytes()),
            _ if kind == 3 => out.extend([(value as u16).to_le_bytes(), [0, 0]].concat()),
            _ => out.extend(value.to_le_bytes()),
        }
    }
    out.extend(0u32.to_le_bytes());
    out.extend([32u16; 4].iter().flat_map(|v| v.to_le_bytes()));
    out.extend([3u16; 4].iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// A 32-bit float RGBA TIFF declaring 7071×7071 (its strip is a 1×1 image's: refused from the header, never read).
fn float_tiff_bomb() -> Vec<u8> {
    let mut tiff =
        encode(&DynamicImage::ImageRgba32F(ImageBuffer::from_pixel(1, 1, Rgba([0.5f32; 4]))), ImageFormat::Tiff);
    let ifd = u32::from_le_bytes(tiff[4..8].try_into().unwrap()) as usize;
    let count = usize::from(u16::from_le_bytes([tiff[ifd], tiff[ifd + 1]]));
    for entry in (0..count).map(|i| ifd + 2 + 12 * i) {
        let tag = u16::from_le_bytes([tiff[entry], tiff[entry + 1]]);
        let kind = u16::from_le_bytes([tiff[entry + 2], tiff[entry + 3]]);
        if tag == 256 || tag == 257 {
            let value =
                if kind == 3 { [7071u16.to_le_bytes(), [0, 0]].concat() } else { 7071u32.to_le_bytes().to_vec() };
            tiff[entry + 8..entry + 12].copy_from_slice(&value);
        }
    }
    tiff
}

fn gif_of(frames: Vec<Frame>) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(image::codecs::gif::Repeat::Infinite).unwrap();
        encoder.encode_frames(frames).unwrap();
    }
    out
}

fn frame(image: RgbaImage) -> Frame {
    Frame::from_parts(image, 0, 0, Delay::from_numer_denom_ms(100, 1))
}

// ---------------------------------------------------------------------------------------------------------------
// Output checks.

/// Walks the JPEG's segments (and the entropy-coded data after each SOS) and returns the markers in order.
fn jpeg_markers(jpeg: &[u8]) -> Vec<u8> {
    assert_eq!(&jpeg[..2], [0xff, 0xd8], "no SOI");
    let mut markers = vec![0xd8];
    let mut i = 2;
    loop {
        assert_eq!(jpeg[i], 0xff, "expected a marker at {i}");
        while jpeg[i + 1] == 0xff {
            i += 1;
        }
        let marker = jpeg[i + 1];
        markers.push(marker);
        i += 2;
        match marker {
            0xd9 => {
                assert_eq!(i, jpeg.len(), "bytes after EOI");
                return markers;
            }
            0xd0..=0xd7 => {}
            _ => {
                let len = usize::from(u16::from_be_bytes([jpeg[i], jpeg[i + 1]]));
                if marker == 0xe0 {
                    assert!(jpeg[i + 2..].starts_with(b"JFIF\0"), "APP0 that is not JFIF");
                }
                i += len;
                if marker == 0xda {
                    while !(jpeg[i] == 0xff && jpeg[i + 1] != 0 && !(0xd0..=0xd7).contains(&jpeg[i + 1])) {
                        i += 1;
                    }
                }
            }
        }
    }
}

/// The luminance quantisation table (table 0, zig-zag order) of a JPEG.
fn luma_quant_table(jpeg: &[u8]) -> Vec<u8> {
    let &(_, offset, len) = jpeg_segment_offsets(jpeg).iter().find(|(m, ..)| *m == 0xdb).expect("a DQT segment");
    let mut i = offset + 4;
    while i < offset + 2 + len {
        let (precision, id) = (jpeg[i] >> 4, jpeg[i] & 0x0f);
        assert_eq!(precision, 0, "8-bit tables");
        if id == 0 {
            return jpeg[i + 1..i + 65].to_vec();
        }
        i += 65;
    }
    panic!("no table 0");
}

/// Checks that the output is a clean baseline JPEG of the expected size and returns its decoded pixels.
#[track_caller]
fn check_output(out: &Compressed, width: u32, height: u32, format: ImageFormat) -> RgbImage {
    assert_eq!(&out.jpeg[..3], [0xff, 0xd8, 0xff], "JPEG magic");
    assert_eq!(image::guess_format(&out.jpeg).unwrap(), ImageFormat::Jpeg);
    assert_eq!((out.width, out.height, out.source_format), (width, height, format));
    let markers = jpeg_markers(&out.jpeg);
    for marker in &markers {
        assert!(
            matches!(marker, 0xd8 | 0xe0 | 0xdb | 0xc0 | 0xc4 | 0xdd | 0xda | 0xd0..=0xd7 | 0xd9),
            "unexpected marker {marker:#04x} (metadata or a non-baseline frame) in {markers:02x?}"
        );
    }
    assert!(markers.contains(&0xc0), "a baseline SOF0 frame: {markers:02x?}");
    let decoded = image::load_from_memory_with_format(&out.jpeg, ImageFormat::Jpeg).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (width, height), "decoded dimensions");
    decoded.to_rgb8()
}

fn mean(image: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for y in y0..y1 {
        for x in x0..x1 {
            for (s, c) in sum.iter_mut().zip(image.get_pixel(x, y).0) {
                *s += f64::from(c);
            }
        }
    }
    let n = f64::from((x1 - x0) * (y1 - y0));
    sum.map(|s| s / n)
}

#[track_caller]
fn assert_region(image: &RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32), expected: [u8; 3], tolerance: f64) {
    let got = mean(image, x0, y0, x1, y1);
    let off = got.iter().zip(expected).map(|(g, e)| (g - f64::from(e)).abs()).fold(0f64, f64::max);
    assert!(off <= tolerance, "region {x0},{y0}..{x1},{y1}: mean {got:.1?}, expected {expected:?} ±{tolerance}");
}

/// The quadrant regions of a w×h image, 4 px away from the quadrant borders, in `quadrant_index` order.
fn quadrant_regions(w: u32, h: u32) -> [(u32, u32, u32, u32); 4] {
    let (mx, my) = (w / 2, h / 2);
    [(4, 4, mx - 4, my - 4), (mx + 4, 4, w - 4, my - 4), (4, my + 4, mx - 4, h - 4), (mx + 4, my + 4, w - 4, h - 4)]
}

#[track_caller]
fn assert_quadrants(image: &RgbImage, colours: [[u8; 3]; 4], tolerance: f64) {
    for (region, colour) in quadrant_regions(image.width(), image.height()).into_iter().zip(colours) {
        assert_region(image, region, colour, tolerance);
    }
}

const QUADRANT_COLOURS: [[u8; 3]; 4] = [RED, GREEN, BLUE, YELLOW];
const GREY_COLOURS: [[u8; 3]; 4] = [[0; 3], [85; 3], [170; 3], [255; 3]];
/// Mean colour tolerance at quality 50 on flat 8×8-aligned regions.
const TOLERANCE: f64 = 12.0;

#[track_caller]
fn compress_ok(input: &[u8]) -> Compressed {
    compress(input, QUALITY, LIMITS).unwrap_or_else(|e| panic!("compress failed: {e}"))
}

#[track_caller]
fn check_quadrants(input: &[u8], format: ImageFormat, colours: [[u8; 3]; 4]) {
    let out = compress_ok(input);
    let pixels = check_output(&out, 64, 48, format);
    assert_quadrants(&pixels, colours, TOLERANCE);
}

// ---------------------------------------------------------------------------------------------------------------
// Formats.

#[test]
fn jpeg_baseline_and_greyscale() {
    check_quadrants(&jpeg_of(&DynamicImage::ImageRgb8(quadrants()), 95), ImageFormat::Jpeg, QUADRANT_COLOURS);
    check_quadrants(&jpeg_of(&DynamicImage::ImageLuma8(grey_quadrants()), 95), ImageFormat::Jpeg, GREY_COLOURS);
}

#[test]
fn jpeg_progressive() {
    let input = fixture("jpeg_progressive.jpg");
    assert!(jpeg_segment_offsets(&input).iter().any(|(m, ..)| *m == 0xc2), "the fixture is progressive (SOF2)");
    check_quadrants(&input, ImageFormat::Jpeg, QUADRANT_COLOURS);
}

/// A progressive JPEG whose last scan is repeated 600 times: refused by libjpeg's scan limit with its reason, not
/// handed to the `image` crate (whose decoder would make every pass).
#[test]
fn jpeg_with_too_many_scans_is_refused() {
    let input = fixture("jpeg_progressive.jpg");
    let scans: Vec<usize> = input.windows(2).enumerate().filter(|(_, w)| *w == [0xff, 0xda]).map(|(i, _)| i).collect();
    let eoi = input.len() - 2;
    assert!(scans.len() > 2 && input[eoi..] == [0xff, 0xd9], "a progressive fixture ending in EOI");
    let last = &input[*scans.last().unwrap()..eoi];
    let bomb = [&input[..eoi], &last.repeat(600), &input[eoi..]].concat();
    match compress(&bomb, QUALITY, LIMITS) {
        Err(CompressError::Decode(message)) => {
            assert!(message.contains("more than 500 progressive scans"), "{message}")
        }
        other => panic!("expected the scan limit, got {other:?}"),
    }
}

#[test]
fn jpeg_cmyk_with_adobe_marker() {
    let input = fixture("jpeg_cmyk_adobe.jpg");
    let segments = jpeg_segment_offsets(&input);
    let &(_, at, _) = segments.iter().find(|(m, ..)| *m == 0xee).expect("the fixture has an Adobe APP14 segment");
    assert_eq!(&input[at + 4..at + 9], b"Adobe");
    assert_eq!(input[at + 15], 0, "transform 0: CMYK, stored inverted");
    let out = compress_ok(&input);
    let pixels = check_output(&out, 64, 48, ImageFormat::Jpeg);
    assert_quadrants(&pixels, QUADRANT_COLOURS, TOLERANCE);
    // The top-left 8×8 block is 50% black ink: mid grey, not inverted.
    assert_region(&pixels, (1, 1, 7, 7), [127; 3], TOLERANCE);
}

/// A CMYK JPEG without an Adobe APP14 segment, holding plain (non-inverted) ink values. zune-jpeg (behind
/// `image`) always applies the Adobe convention (inverted samples), as Pillow does ("always use Adobe polarity")
/// and as the files written by Photoshop and libjpeg need, and `image` converts CMYK to RGB inside the decoder,
/// so the raw inks are not reachable to re-interpret. Such files are practically non-existent (libjpeg writes the
/// APP14 marker for every CMYK JPEG); this test pins down that they are still compressed, with the complementary
/// colours, rather than refused.
#[test]
fn jpeg_cmyk_without_adobe_marker_uses_adobe_polarity() {
    let input = fixture("jpeg_cmyk_plain.jpg");
    assert!(!jpeg_segment_offsets(&input).iter().any(|(m, ..)| *m == 0xee), "no APP14");
    let out = compress_ok(&input);
    let pixels = check_output(&out, 64, 48, ImageFormat::Jpeg);
    // Plain red ink (C=0, M=Y=255, K=0) read as inverted: C'=255, M'=Y'=0, K'=255 → black.
    assert_region(&pixels, quadrant_regions(64, 48)[0], [0; 3], TOLERANCE);
}

#[test]
fn png_every_colour_type_and_depth() {
    let rgb = quadrants();
    let rgba = RgbaImage::from_fn(64, 48, |x, y| rgb.get_pixel(x, y).to_rgba());
    let rgb16 = ImageBuffer::<Rgb<u16>, _>::from_fn(64, 48, |x, y| Rgb(rgb.get_pixel(x, y).0.map(widen)));
    let rgba16 = ImageBuffer::<Rgba<u16>, _>::from_fn(64, 48, |x, y| rgb16.get_pixel(x, y).to_rgba());
    let grey = grey_quadrants();
    let grey_alpha = ImageBuffer::<LumaA<u8>, _>::from_fn(64, 48, |x, y| grey.get_pixel(x, y).to_luma_alpha());
    let grey16 = ImageBuffer::<Luma<u16>, _>::from_fn(64, 48, |x, y| Luma([widen(grey.get_pixel(x, y).0[0])]));
    let grey_alpha16 = ImageBuffer::<LumaA<u16>, _>::from_fn(64, 48, |x, y| grey16.get_pixel(x, y).to_luma_alpha());
    for (image, colours) in [
        (DynamicImage::ImageRgb8(rgb.clone()), QUADRANT_COLOURS),
        (DynamicImage::ImageRgba8(rgba), QUADRANT_COLOURS),
        (DynamicImage::ImageRgb16(rgb16), QUADRANT_COLOURS),
        (DynamicImage::ImageRgba16(rgba16), QUADRANT_COLOURS),
        (DynamicImage::ImageLuma8(grey), GREY_COLOURS),
        (DynamicImage::ImageLumaA8(grey_alpha), GREY_COLOURS),
        (DynamicImage::ImageLuma16(grey16), GREY_COLOURS),
        (DynamicImage::ImageLumaA16(grey_alpha16), GREY_COLOURS),
    ] {
        let input = encode(&image, ImageFormat::Png);
        let decoded = image::load_from_memory(&input).unwrap();
        assert_eq!(decoded.color(), image.color(), "the PNG keeps its colour type");
        check_quadrants(&input, ImageFormat::Png, colours);
    }
}

#[test]
fn png_palette_and_one_bit() {
    let palette = fixture("png_palette.png");
    assert_eq!(palette[25], 3, "colour type 3 (palette)");
    check_quadrants(&palette, ImageFormat::Png, QUADRANT_COLOURS);

    let one_bit = fixture("png_gray_1bit.png");
    assert_eq!((one_bit[24], one_bit[25]), (1, 0), "1-bit greyscale");
    let out = compress_ok(&one_bit);
    let pixels = check_output(&out, 64, 48, ImageFormat::Png);
    assert_region(&pixels, (4, 4, 28, 44), [0; 3], TOLERANCE);
    assert_region(&pixels, (36, 4, 60, 44), WHITE, TOLERANCE);
}

#[test]
fn webp_lossless_lossy_and_animated() {
    let rgb = DynamicImage::ImageRgb8(quadrants());
    check_quadrants(&encode(&rgb, ImageFormat::WebP), ImageFormat::WebP, QUADRANT_COLOURS);
    let rgba = DynamicImage::ImageRgba8(rgb.to_rgba8());
    check_quadrants(&encode(&rgba, ImageFormat::WebP), ImageFormat::WebP, QUADRANT_COLOURS);

    let lossy = fixture("webp_lossy.webp");
    assert_eq!(&webp_chunks(&lossy)[0].0, b"VP8 ", "a lossy (VP8) bitstream");
    check_quadrants(&lossy, ImageFormat::WebP, QUADRANT_COLOURS);

    // Two frames, red then blue: the output is the first.
    let animated = fixture("webp_animated.webp");
    assert_eq!(webp_chunks(&animated).iter().filter(|c| &c.0 == b"ANMF").count(), 2);
    check_quadrants(&animated, ImageFormat::WebP, [RED; 4]);
}

#[test]
fn gif_animated_gives_the_first_frame() {
    let first = RgbaImage::from_fn(64, 48, |x, y| quadrants().get_pixel(x, y).to_rgba());
    let second = RgbaImage::from_pixel(64, 48, Rgba([0, 0, 255, 255]));
    let third = RgbaImage::from_pixel(64, 48, Rgba([255, 255, 255, 255]));
    let gif = gif_of(vec![frame(first), frame(second), frame(third)]);
    let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(&gif)).unwrap();
    assert_eq!(image::AnimationDecoder::into_frames(decoder).count(), 3, "three frames");
    check_quadrants(&gif, ImageFormat::Gif, QUADRANT_COLOURS);
}

#[test]
fn bmp_rgb_and_rgba() {
    let rgb = DynamicImage::ImageRgb8(quadrants());
    check_quadrants(&encode(&rgb, ImageFormat::Bmp), ImageFormat::Bmp, QUADRANT_COLOURS);
    let rgba = DynamicImage::ImageRgba8(rgb.to_rgba8());
    check_quadrants(&encode(&rgba, ImageFormat::Bmp), ImageFormat::Bmp, QUADRANT_COLOURS);
    let grey = DynamicImage::ImageLuma8(grey_quadrants());
    check_quadrants(&encode(&grey, ImageFormat::Bmp), ImageFormat::Bmp, GREY_COLOURS);
}

#[test]
fn tiff_every_sample_type() {
    let rgb = DynamicImage::ImageRgb8(quadrants());
    for image in [
        rgb.clone(),
        DynamicImage::ImageRgba8(rgb.to_rgba8()),
        DynamicImage::ImageRgb16(rgb.to_rgb16()),
        DynamicImage::ImageRgba16(rgb.to_rgba16()),
        DynamicImage::ImageRgb32F(rgb.to_rgb32f()),
        DynamicImage::ImageRgba32F(rgb.to_rgba32f()),
    ] {
        let input = encode(&image, ImageFormat::Tiff);
        assert_eq!(image::load_from_memory(&input).unwrap().color(), image.color());
        check_quadrants(&input, ImageFormat::Tiff, QUADRANT_COLOURS);
    }
    for image in [
        DynamicImage::ImageLuma8(grey_quadrants()),
        DynamicImage::ImageLuma16(DynamicImage::ImageLuma8(grey_quadrants()).to_luma16()),
    ] {
        check_quadrants(&encode(&image, ImageFormat::Tiff), ImageFormat::Tiff, GREY_COLOURS);
    }
    // The hand-written TIFF writer used for the orientation and bomb tests.
    let raw: Vec<u8> = quadrants().into_raw();
    check_quadrants(&tiff(64, 48, 3, &raw, None), ImageFormat::Tiff, QUADRANT_COLOURS);
}

#[test]
fn tiff_cmyk() {
    let out = compress_ok(&fixture("tiff_cmyk.tif"));
    let pixels = check_output(&out, 64, 48, ImageFormat::Tiff);
    assert_quadrants(&pixels, QUADRANT_COLOURS, TOLERANCE);
    assert_region(&pixels, (1, 1, 7, 7), [127; 3], TOLERANCE);
}

/// Metadata segments of the input (EXIF, XMP, ICC, comment) are not copied to the output.
#[test]
fn metadata_is_stripped() {
    let base = jpeg_of(&DynamicImage::ImageRgb8(quadrants()), 95);
    let mut input = jpeg_with_exif(&base, 1, true);
    input = jpeg_insert_segment(&input, 0xe1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'/>");
    input = jpeg_insert_segment(&input, 0xe2, &[b"ICC_PROFILE\0\x01\x01".as_slice(), &[0; 128]].concat());
    input = jpeg_insert_segment(&input, 0xed, b"Photoshop 3.0\0");
    input = jpeg_insert_segment(&input, 0xfe, b"a comment");
    let markers: Vec<u8> = jpeg_segment_offsets(&input).iter().map(|s| s.0).collect();
    for marker in [0xe1, 0xe2, 0xed, 0xfe] {
        assert!(markers.contains(&marker), "the input has {marker:#x}");
    }
    check_quadrants(&input, ImageFormat::Jpeg, QUADRANT_COLOURS); // check_output refuses any of them

    // PNG text and colour chunks, and a Pillow JPEG with EXIF, XMP, ICC and a comment.
    let png = encode(&DynamicImage::ImageRgb8(quadrants()), ImageFormat::Png);
    let png = png_insert_before_idat(&png, &png_chunk(b"tEXt", b"Comment\0secret"));
    let png = png_insert_before_idat(&png, &png_chunk(b"gAMA", &45455u32.to_be_bytes()));
    check_quadrants(&png, ImageFormat::Png, QUADRANT_COLOURS);
    let out = compress_ok(&fixture("jpeg_exif_orientation6_pillow.jpg"));
    check_output(&out, 20, 40, ImageFormat::Jpeg);
}

// ---------------------------------------------------------------------------------------------------------------
// EXIF orientation.

/// 40×20 grey with an 8×8 red block at the top-left and an 8×8 green block at the top-right corner.
fn corners() -> RgbImage {
    RgbImage::from_fn(40, 20, |x, y| {
        Rgb(match (x, y) {
            (0..8, 0..8) => RED,
            (32..40, 0..8) => GREEN,
            _ => GREY,
        })
    })
}

/// Where the pixel (x, y) of a w×h image lands once EXIF orientation `o` is applied.
fn oriented(o: u16, w: u32, h: u32, x: u32, y: u32) -> (u32, u32) {
    match o {
        1 => (x, y),
        2 => (w - 1 - x, y),
        3 => (w - 1 - x, h - 1 - y),
        4 => (x, h - 1 - y),
        5 => (y, x),
        6 => (h - 1 - y, x),
        7 => (h - 1 - y, w - 1 - x),
        8 => (y, w - 1 - x),
        _ => unreachable!(),
    }
}

/// Checks that the corner blocks of `corners()` are where orientation `o` puts them.
#[track_caller]
fn check_orientation(out: &Compressed, o: u16, format: ImageFormat) {
    let (w, h) = (40, 20);
    let (ow, oh) = if o >= 5 { (h, w) } else { (w, h) };
    let pixels = check_output(out, ow, oh, format);
    for (x0, colour) in [(0, RED), (32, GREEN)] {
        // The centre 4×4 of the 8×8 block.
        let (ax, ay) = oriented(o, w, h, x0 + 2, 2);
        let (bx, by) = oriented(o, w, h, x0 + 5, 5);
        let region = (ax.min(bx), ay.min(by), ax.max(bx) + 1, ay.max(by) + 1);
        assert_region(&pixels, region, colour, 24.0);
    }
    // The opposite corner is grey in every orientation.
    let (gx, gy) = oriented(o, w, h, 20, 15);
    assert_region(&pixels, (gx - 1, gy - 1, gx + 2, gy + 2), GREY, 24.0);
}

#[test]
fn jpeg_exif_orientations_1_to_8() {
    let base = jpeg_of(&DynamicImage::ImageRgb8(corners()), 95);
    for o in 1..=8 {
        for big_endian in [true, false] {
            let out = compress_ok(&jpeg_with_exif(&base, o, big_endian));
            check_orientation(&out, o, ImageFormat::Jpeg);
        }
    }
    // Without EXIF, and with an out-of-range value: no transformation.
    check_orientation(&compress_ok(&base), 1, ImageFormat::Jpeg);
    check_orientation(&compress_ok(&jpeg_with_exif(&base, 9, true)), 1, ImageFormat::Jpeg);
    // Made by Pillow, with XMP, ICC and a comment around the EXIF segment.
    check_orientation(&compress_ok(&fixture("jpeg_exif_orientation6_pillow.jpg")), 6, ImageFormat::Jpeg);
}

/// `image` reads a PNG `eXIf` chunk (when it comes before IDAT) and `ImageDecoder::orientation` uses it.
#[test]
fn png_exif_orientations_1_to_8() {
    let base = encode(&DynamicImage::ImageRgb8(corners()), ImageFormat::Png);
    for o in 1..=8 {
        let png = png_insert_before_idat(&base, &png_chunk(b"eXIf", &exif_tiff(o, o % 2 == 0)));
        check_orientation(&compress_ok(&png), o, ImageFormat::Png);
    }
    // Some writers put the JPEG-style "Exif\0\0" prefix in front of the TIFF structure.
    let prefixed = [b"Exif\0\0".as_slice(), &exif_tiff(6, true)].concat();
    let png = png_insert_before_idat(&base, &png_chunk(b"eXIf", &prefixed));
    check_orientation(&compress_ok(&png), 6, ImageFormat::Png);
}

#[test]
fn webp_exif_orientations_1_to_8() {
    let base = encode(&DynamicImage::ImageRgb8(corners()), ImageFormat::WebP);
    for o in 1..=8 {
        let webp = webp_with_exif(&base, 40, 20, &exif_tiff(o, o % 2 == 1));
        check_orientation(&compress_ok(&webp), o, ImageFormat::WebP);
    }
    let prefixed = [b"Exif\0\0".as_slice(), &exif_tiff(8, false)].concat();
    check_orientation(&compress_ok(&webp_with_exif(&base, 40, 20, &prefixed)), 8, ImageFormat::WebP);
    check_orientation(&compress_ok(&fixture("webp_exif_orientation6.webp")), 6, ImageFormat::WebP);
}

#[test]
fn tiff_orientation_tag_1_to_8() {
    let raw = corners().into_raw();
    for o in 1..=8 {
        check_orientation(&compress_ok(&tiff(40, 20, 3, &raw, Some(o))), o, ImageFormat::Tiff);
    }
    check_orientation(&compress_ok(&fixture("tiff_orientation6.tif")), 6, ImageFormat::Tiff);
}

// ---------------------------------------------------------------------------------------------------------------
// Alpha.

/// 64×48: the left half fully transparent (black under it), the top-right quadrant 50% red, the bottom-right
/// quadrant opaque blue.
fn alpha_test_image() -> RgbaImage {
    RgbaImage::from_fn(64, 48, |x, y| match (x < 32, y < 24) {
        (true, _) => Rgba([0, 0, 0, 0]),
        (false, true) => Rgba([255, 0, 0, 128]),
        (false, false) => Rgba([0, 0, 255, 255]),
    })
}

#[track_caller]
fn check_alpha(input: &[u8], format: ImageFormat, semi_transparent: bool) {
    let out = compress_ok(input);
    let pixels = check_output(&out, 64, 48, format);
    assert_region(&pixels, (4, 4, 28, 44), WHITE, TOLERANCE);
    if semi_transparent {
        assert_region(&pixels, (36, 4, 60, 20), PINK, TOLERANCE);
    }
    assert_region(&pixels, (36, 28, 60, 44), BLUE, TOLERANCE);
}

#[test]
fn alpha_is_flattened_onto_white() {
    let rgba = alpha_test_image();
    check_alpha(&encode(&DynamicImage::ImageRgba8(rgba.clone()), ImageFormat::Png), ImageFormat::Png, true);
    let rgba16: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_fn(64, 48, |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        Rgba([widen(r), widen(g), widen(b), if a == 128 { 32768 } else { widen(a) }])
    });
    check_alpha(&encode(&DynamicImage::ImageRgba16(rgba16), ImageFormat::Png), ImageFormat::Png, true);
    check_alpha(&encode(&DynamicImage::ImageRgba8(rgba.clone()), ImageFormat::WebP), ImageFormat::WebP, true);
    check_alpha(&encode(&DynamicImage::ImageRgba8(rgba.clone()), ImageFormat::Tiff), ImageFormat::Tiff, true);
    check_alpha(&encode(&DynamicImage::ImageRgba8(rgba.clone()), ImageFormat::Bmp), ImageFormat::Bmp, true);
    // GIF: transparency is on or off.
    let gif_frame = RgbaImage::from_fn(64, 48, |x, y| match rgba.get_pixel(x, y).0 {
        [.., 128] => Rgba([255, 0, 0, 255]),
        other => Rgba(other),
    });
    check_alpha(&gif_of(vec![frame(gif_frame)]), ImageFormat::Gif, false);
}

#[test]
fn alpha_lossy_webp_and_palette_transparency() {
    // Pillow: top-left quadrant transparent, top-right 50% red, bottom quadrants opaque blue and yellow.
    let out = compress_ok(&fixture("webp_lossy_alpha.webp"));
    let pixels = check_output(&out, 64, 48, ImageFormat::WebP);
    assert_quadrants(&pixels, [WHITE, PINK, BLUE, YELLOW], TOLERANCE);
    // Pillow: the palette entry of the red quadrant is transparent (tRNS).
    let out = compress_ok(&fixture("png_palette_trns.png"));
    let pixels = check_output(&out, 64, 48, ImageFormat::Png);
    assert_quadrants(&pixels, [WHITE, GREEN, BLUE, YELLOW], TOLERANCE);
}

/// Exact blending, checked on flat 16×16 images at quality 100 for every alpha level of 8-bit and 16-bit
/// RGBA and grey+alpha PNGs: `c·a + 255·(1 − a)`, to within JPEG rounding.
#[test]
fn alpha_blend_is_exact() {
    for alpha in [0u8, 1, 64, 127, 128, 191, 254, 255] {
        let a = f64::from(alpha) / 255.0;
        let expected = |c: u8| (f64::from(c) * a + 255.0 * (1.0 - a)).round() as u8;
        let colour = [200u8, 40, 0];
        let want = colour.map(expected);
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(16, 16, Rgba([200, 40, 0, alpha])));
        let rgba16 =
            DynamicImage::ImageRgba16(ImageBuffer::from_pixel(16, 16, Rgba([widen(200), widen(40), 0, widen(alpha)])));
        for image in [rgba, rgba16] {
            let out = compress(&encode(&image, ImageFormat::Png), 100, LIMITS).unwrap();
            let pixels = check_output(&out, 16, 16, ImageFormat::Png);
            assert_region(&pixels, (0, 0, 16, 16), want, 3.0);
        }
        let grey = [expected(60); 3];
        let la = DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(16, 16, LumaA([60, alpha])));
        let la16 = DynamicImage::ImageLumaA16(ImageBuffer::from_pixel(16, 16, LumaA([widen(60), widen(alpha)])));
        for image in [la, la16] {
            let out = compress(&encode(&image, ImageFormat::Png), 100, LIMITS).unwrap();
            let pixels = check_output(&out, 16, 16, ImageFormat::Png);
            assert_region(&pixels, (0, 0, 16, 16), grey, 2.0);
        }
    }
}

/// A GIF whose first frame covers only part of the logical screen: the rest is transparent, hence white.
#[test]
fn gif_first_frame_smaller_than_the_screen() {
    let small = RgbaImage::from_pixel(32, 24, Rgba([255, 0, 0, 255]));
    let mut gif = gif_of(vec![frame(small), frame(RgbaImage::from_pixel(32, 24, Rgba([0, 0, 255, 255])))]);
    gif[6..8].copy_from_slice(&64u16.to_le_bytes());
    gif[8..10].copy_from_slice(&48u16.to_le_bytes());
    let out = compress_ok(&gif);
    let pixels = check_output(&out, 64, 48, ImageFormat::Gif);
    assert_quadrants(&pixels, [RED, WHITE, WHITE, WHITE], TOLERANCE);
}

// ---------------------------------------------------------------------------------------------------------------
// Bombs: tiny files declaring huge images, refused from the header.

/// What refusing a bomb may add to the process's resident set: the header parsers' and libjpeg's small
/// structures, far from any image-sized buffer (the smallest bomb here would decode to 48 MB).
const BOMB_RSS_BOUND: u64 = 4 << 20;

#[track_caller]
fn assert_refused_as_bomb(input: &[u8], width: u32, height: u32) {
    assert!(input.len() < 1024, "the bomb is tiny: {} bytes", input.len());
    match compress(input, QUALITY, LIMITS) {
        Err(CompressError::TooLarge { width: w, height: h, limit }) => {
            assert_eq!((w, h), (width, height), "the declared dimensions are reported");
            let message = CompressError::TooLarge { width: w, height: h, limit }.to_string();
            assert!(message.contains(&format!("{width}×{height}")), "{message}");
        }
        other => panic!("{width}×{height}: expected TooLarge, got {other:?}"),
    }
    // Refused before allocation: measured from the process, so C allocations count.
    let run = compress_in_child(input, LIMITS);
    assert!(run.result.is_err(), "{width}×{height}: {:?}", run.result);
    println!("{width}×{height}: resident set grew by {} bytes while refusing", run.growth);
    assert!(run.growth < BOMB_RSS_BOUND, "{width}×{height}: resident set grew by {} bytes while refusing", run.growth);
}

#[test]
fn bomb_png() {
    // Over the dimension cap, then within it but over the pixel cap; RGB and RGBA16.
    assert_refused_as_bomb(&png_header_only(100_000, 100_000, 8, 2), 100_000, 100_000);
    assert_refused_as_bomb(&png_header_only(20_000, 20_000, 8, 2), 20_000, 20_000);
    assert_refused_as_bomb(&png_header_only(19_000, 19_000, 16, 6), 19_000, 19_000);
    assert_refused_as_bomb(&png_header_only(1, 60_000_000, 8, 0), 1, 60_000_000);
}

#[test]
fn bomb_jpeg() {
    let base = jpeg_of(&DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb(RED))), 50);
    assert_refused_as_bomb(&jpeg_patch_dimensions(&base, 65_535, 65_535), 65_535, 65_535);
    assert_refused_as_bomb(&jpeg_patch_dimensions(&base, 20_000, 20_000), 20_000, 20_000);
    let progressive = fixture("jpeg_progressive.jpg");
    assert_refused_as_bomb(&jpeg_patch_dimensions(&progressive, 30_000, 3_000), 30_000, 3_000);
    let cmyk = fixture("jpeg_cmyk_adobe.jpg");
    assert_refused_as_bomb(&jpeg_patch_dimensions(&cmyk, 10_000, 10_000), 10_000, 10_000);
}

#[test]
fn bomb_gif() {
    let mut gif = gif_of(vec![frame(RgbaImage::from_pixel(4, 4, Rgba([255, 0, 0, 255])))]);
    gif[6..10].copy_from_slice(&[0xff; 4]);
    assert_refused_as_bomb(&gif, 65_535, 65_535);
    // A 4×4 screen whose first frame declares 60000×60000: refused when the frame's buffer is reserved.
    let mut gif = gif_of(vec![frame(RgbaImage::from_pixel(4, 4, Rgba([255, 0, 0, 255])))]);
    let at = gif_first_descriptor(&gif);
    gif[at + 5..at + 7].copy_from_slice(&60_000u16.to_le_bytes());
    gif[at + 7..at + 9].copy_from_slice(&60_000u16.to_le_bytes());
    assert_refused_as_bomb(&gif, 4, 4);
}

#[test]
fn bomb_webp() {
    // Lossless: 14-bit dimensions, 16000×16000 is over the pixel cap. (At 16384 image-webp 0.2.4 computes the
    // sides as `(1 + bits) & 0x3fff`, i.e. 0, and the decoder then fails on the inconsistent sizes.)
    let mut lossless = encode(&DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb(RED))), ImageFormat::WebP);
    let (_, at, _) = webp_chunks(&lossless)[0];
    assert_eq!(lossless[at + 8], 0x2f, "VP8L signature");
    let bits = u32::from_le_bytes(lossless[at + 9..at + 13].try_into().unwrap());
    let bits = (bits & 0xf000_0000) | (15_999 << 14) | 15_999;
    lossless[at + 9..at + 13].copy_from_slice(&bits.to_le_bytes());
    assert_refused_as_bomb(&lossless, 16_000, 16_000);
    // Lossy: the VP8 frame header's 14-bit dimensions.
    let mut lossy = fixture("webp_lossy.webp");
    let (_, at, _) = webp_chunks(&lossy)[0];
    assert_eq!(lossy[at + 11..at + 14], [0x9d, 0x01, 0x2a], "VP8 start code");
    lossy[at + 14..at + 16].copy_from_slice(&16_383u16.to_le_bytes());
    lossy[at + 16..at + 18].copy_from_slice(&16_383u16.to_le_bytes());
    assert_refused_as_bomb(&lossy, 16_383, 16_383);
    // Animated: the VP8X canvas has 24-bit dimensions.
    let mut animated = fixture("webp_animated.webp");
    let (fourcc, at, _) = webp_chunks(&animated)[0];
    assert_eq!(&fourcc, b"VP8X");
    animated[at + 12..at + 15].copy_from_slice(&(99_999u32).to_le_bytes()[..3]);
    animated[at + 15..at + 18].copy_from_slice(&(99_999u32).to_le_bytes()[..3]);
    assert_refused_as_bomb(&animated, 100_000, 100_000);
    animated[at + 12..at + 15].copy_from_slice(&(59_999u32).to_le_bytes()[..3]);
    animated[at + 15..at + 18].copy_from_slice(&(59_999u32).to_le_bytes()[..3]);
    assert_refused_as_bomb(&animated, 60_000, 60_000);
}

#[test]
fn bomb_tiff() {
    assert_refused_as_bomb(&tiff(100_000, 100_000, 3, &[0; 16], None), 100_000, 100_000);
    assert_refused_as_bomb(&tiff(15_000, 15_000, 1, &[0; 16], None), 15_000, 15_000);
}

#[test]
fn bomb_bmp() {
    let base = encode(&DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb(RED))), ImageFormat::Bmp);
    let patch = |width: i32, height: i32| {
        let mut bmp = base.clone();
        bmp[18..22].copy_from_slice(&width.to_le_bytes());
        bmp[22..26].copy_from_slice(&height.to_le_bytes());
        bmp
    };
    assert_refused_as_bomb(&patch(100_000, 100_000), 100_000, 100_000);
    assert_refused_as_bomb(&patch(20_000, 20_000), 20_000, 20_000);
    // Top-down (negative height).
    assert_refused_as_bomb(&patch(20_000, -20_000), 20_000, 20_000);
}

/// The limits are the caller's: a 64×48 image is refused under a 1000-pixel cap or a 50-pixel side.
#[test]
fn configured_limits_apply() {
    let png = encode(&DynamicImage::ImageRgb8(quadrants()), ImageFormat::Png);
    let pixels = CompressLimits { max_pixels: 1000, ..LIMITS };
    assert!(matches!(compress(&png, QUALITY, pixels), Err(CompressError::TooLarge { width: 64, height: 48, .. })));
    let side = CompressLimits { max_dimension: 50, ..LIMITS };
    assert!(matches!(compress(&png, QUALITY, side), Err(CompressError::TooLarge { width: 64, height: 48, .. })));
    let exact = CompressLimits { max_pixels: 64 * 48, max_dimension: 64, ..LIMITS };
    assert!(compress(&png, QUALITY, exact).is_ok(), "the limits are inclusive");
}

/// Codec state, row buffers and the output JPEG, beyond the image-sized buffers each case below allows.
const CODEC_RSS_SLACK: u64 = 3 << 20;

/// Decoding works on one decoded buffer at most: no full-size copy for the conversion to 8-bit RGB, the alpha
/// flattening or the orientation, and none at all for an upright JPEG (rows stream from libjpeg to the encoder).
/// Measured as the peak resident set of a child process, so libjpeg's own allocations count.
#[test]
fn memory_is_one_decoded_image() {
    let (w, h) = (2048u32, 1536u32);
    let rgba = RgbaImage::from_fn(w, h, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 90, ((x + y) % 256) as u8]));
    let rgba16: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_fn(w, h, |x, y| {
        let p = rgba.get_pixel(x, y).0;
        Rgba(p.map(widen))
    });
    let rgb = DynamicImage::ImageRgba8(rgba.clone()).to_rgb8();
    let upright = jpeg_of(&DynamicImage::ImageRgb8(rgb), 90);
    let rotated = jpeg_with_exif(&upright, 6, true);
    let pixels = u64::from(w) * u64::from(h);
    // (case, input, image-sized bytes allowed: the decoded buffer, or nothing when rows stream)
    for (name, input, allowed, expected) in [
        ("RGBA8 PNG", encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png), pixels * 4, (w, h)),
        ("RGBA16 PNG", encode(&DynamicImage::ImageRgba16(rgba16), ImageFormat::Png), pixels * 8, (w, h)),
        ("rotated JPEG", rotated, pixels * 3, (h, w)),
        ("upright JPEG", upright, 0, (w, h)),
    ] {
        let run = compress_in_child(&input, LIMITS);
        assert_eq!(run.result, Ok(expected), "{name}");
        let bound = allowed + input.len() as u64 + CODEC_RSS_SLACK;
        println!("{name}: resident set grew by {} bytes (bound {bound}; RGB would be {})", run.growth, pixels * 3);
        assert!(run.growth <= bound, "{name}: resident set grew by {} bytes, over {bound}", run.growth);
    }
}

/// The decode budget (`plan`, from the header alone) covers what compressing really holds, for every decoder and
/// the sample types that make them hold more (a second copy in the TIFF decoder, a canvas and a frame in GIF and
/// WebP, every coefficient of a progressive JPEG in libjpeg or zune-jpeg), measured from a child process; and it is
/// not so loose that it would starve the worker of images it could hold.
#[test]
fn decode_budget_covers_what_decoding_holds() {
    let (w, h) = (2048u32, 1536u32);
    let rgba = RgbaImage::from_fn(w, h, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, (x ^ y) as u8, (x / 8) as u8]));
    let rgba = DynamicImage::ImageRgba8(rgba);
    let rgb = DynamicImage::ImageRgb8(rgba.to_rgb8());
    let small = rgba.resize_exact(1024, 768, image::imageops::FilterType::Nearest);
    let cases = [
        ("RGBA8 PNG", encode(&rgba, ImageFormat::Png)),
        ("RGBA16 PNG", encode(&DynamicImage::ImageRgba16(rgba.to_rgba16()), ImageFormat::Png)),
        ("RGB8 TIFF", encode(&rgb, ImageFormat::Tiff)),
        ("RGBA16 TIFF", encode(&DynamicImage::ImageRgba16(rgba.to_rgba16()), ImageFormat::Tiff)),
        ("RGBA32F TIFF", encode(&DynamicImage::ImageRgba32F(rgba.to_rgba32f()), ImageFormat::Tiff)),
        ("RGBA32F PackBits TIFF", float_tiff_packbits(w, h, 0x3f)),
        ("RGBA GIF", gif_of(vec![frame(small.to_rgba8())])),
        ("RGBA lossless WebP", encode(&small, ImageFormat::WebP)),
        ("RGB BMP", encode(&rgb, ImageFormat::Bmp)),
        ("baseline JPEG", jpeg_of(&rgb, 90)),
        ("rotated JPEG", jpeg_with_exif(&jpeg_of(&rgb, 90), 6, true)),
        ("progressive 4:4:4 JPEG", fixture("jpeg_progressive_444_large.jpg")),
        ("rotated progressive JPEG", jpeg_with_exif(&fixture("jpeg_progressive_444_large.jpg"), 8, false)),
        ("progressive CMYK JPEG (zune)", fixture("jpeg_cmyk_progressive_large.jpg")),
    ];
    for (name, input) in cases {
        let run = compress_in_child(&input, LIMITS);
        assert!(run.result.is_ok(), "{name}: {:?}", run.result);
        let planned = run.plan.unwrap_or_else(|e| panic!("{name}: plan refused it: {e}"));
        println!("{name}: held {} bytes, budget {planned} ({:.2}×)", run.growth, planned as f64 / run.growth as f64);
        assert!(run.growth <= planned, "{name}: held {} bytes, over its budget of {planned}", run.growth);
        // Not loose: at most twice what was held, beside fixed allowances (tables, WebP's Huffman codes: 36 MiB at
        // the most), the input-sized allowance and one byte a pixel of output room.
        let loose = 2 * run.growth + (36 << 20) + input.len() as u64 + u64::from(w) * u64::from(h);
        assert!(planned <= loose, "{name}: budget {planned} for {} bytes held", run.growth);
    }
}

/// A 32-bit float RGBA TIFF just under the pixel limit (7071×7071, 50 MP) needs two full copies of 800 MB to
/// decode: refused from its header, with the reason, before anything is allocated.
#[test]
fn float_tiff_over_the_decode_budget_is_refused_before_allocation() {
    let input = float_tiff_bomb();
    let run = compress_in_child(&input, LIMITS);
    let refused =
        |e: &str| e.starts_with("TooLarge { width: 7071, height: 7071,") && e.contains("32-bit float RGBA TIFF");
    assert!(run.plan.as_ref().is_err_and(|e| refused(e)), "plan: {:?}", run.plan);
    assert!(run.result.as_ref().is_err_and(|e| refused(e)), "compress: {:?}", run.result);
    println!("float TIFF: resident set grew by {} bytes while refusing", run.growth);
    assert!(run.growth < BOMB_RSS_BOUND, "resident set grew by {} bytes while refusing", run.growth);
    let message = compress(&input, QUALITY, LIMITS).unwrap_err().to_string();
    assert!(message.contains("bytes of decoding memory"), "{message}");
}

// ---------------------------------------------------------------------------------------------------------------
// Non-images.

#[track_caller]
fn assert_not_an_image(input: &[u8], needle: &str) {
    match compress(input, QUALITY, LIMITS) {
        Err(e @ CompressError::NotAnImage(_)) => {
            let message = e.to_string();
            assert!(message.contains(needle), "{:?}: {message:?} does not mention {needle:?}", preview(input));
        }
        other => panic!("{:?}: expected NotAnImage({needle}), got {other:?}", preview(input)),
    }
}

fn preview(input: &[u8]) -> String {
    String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned()
}

#[test]
fn svg_is_refused() {
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#;
    for input in [
        svg.to_string(),
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{svg}"),
        format!("\n\n   \t{svg}"),
        format!("\u{feff}<?xml version=\"1.0\"?>{svg}"),
        format!("\u{feff}{svg}"),
        format!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \
             \"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd\">\n{svg}"
        ),
        format!("<?xml version=\"1.0\"?>\n<!-- Generator: Adobe Illustrator 27.0.0 -->\n{svg}"),
        format!("<?xml version=\"1.0\"?>\n<!--{}-->\n{svg}", "x".repeat(5000)),
        svg.to_uppercase(),
    ] {
        assert_not_an_image(input.as_bytes(), "SVG");
    }
}

#[test]
fn html_is_refused() {
    for input in [
        "<!DOCTYPE html><html><head><title>Not found</title></head><body>404</body></html>",
        "<!doctype html>\n<html lang=\"en\">",
        "<html><body>hi</body></html>",
        "  \r\n<HTML>",
        "\u{feff}<!DOCTYPE html>",
        "<!-- served by nginx -->\n<html>",
        "<?xml version=\"1.0\"?><!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" \"x.dtd\"><html>",
        "<head><meta charset=\"utf-8\"></head>",
        "<body>Access denied</body>",
    ] {
        assert_not_an_image(input.as_bytes(), "HTML");
    }
}

#[test]
fn other_non_images_are_refused() {
    assert_not_an_image(br#"{"error":"not found","status":404}"#, "JSON");
    assert_not_an_image(b"  [1, 2, 3]", "JSON");
    assert_not_an_image(b"", "empty");
    assert_not_an_image(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code></Error>", "XML");
    assert_not_an_image(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF");
    assert_not_an_image(b"Not Found", "text");
    let mut random = pseudo_random_bytes(4096, 7);
    random[0] = 0x01;
    assert_not_an_image(&random, "unknown");
}

/// Image formats that are recognised but not accepted.
#[test]
fn unsupported_formats_are_named() {
    for (input, name) in [
        (b"\0\0\0\x1cftypheic\0\0\0\0mif1heic".to_vec(), "HEIC"),
        (b"\0\0\0\x1cftypavif\0\0\0\0mif1avif".to_vec(), "AVIF"),
        ([&[0u8, 0, 1, 0, 1, 0][..], &[0; 32]].concat(), "ICO"),
        (b"qoif\0\0\0\x10\0\0\0\x10\x03\0".to_vec(), "QOI"),
        (b"P6\n16 16\n255\n".to_vec(), "PNM"),
        (b"\xff\x0a\xfa\x7f".to_vec(), "JPEG XL"),
    ] {
        match compress(&input, QUALITY, LIMITS) {
            Err(e @ CompressError::Unsupported(_)) => {
                assert!(e.to_string().to_uppercase().contains(name), "{e} should name {name}")
            }
            other => panic!("{name}: expected Unsupported, got {other:?}"),
        }
    }
}

#[test]
fn truncated_and_corrupt_images_are_decode_errors() {
    let jpeg = jpeg_of(&DynamicImage::ImageRgb8(photo()), 90);
    assert!(jpeg.len() > 1000);
    match compress(&jpeg[..200], QUALITY, LIMITS) {
        Err(CompressError::Decode(message)) => assert!(!message.is_empty()),
        other => panic!("expected Decode, got {other:?}"),
    }
    for (input, format) in [
        (&jpeg[..3], "JPEG"),
        (&b"\x89PNG\r\n\x1a\n"[..], "PNG"),
        (&b"GIF89a"[..], "GIF"),
        (&b"RIFF\0\0\0\0WEBPVP8 "[..], "WebP"),
        (&b"II*\0\x08\0\0\0"[..], "TIFF"),
        (&b"BM"[..], "BMP"),
    ] {
        assert!(matches!(compress(input, QUALITY, LIMITS), Err(CompressError::Decode(_))), "{format}");
    }
}

/// Every prefix length of every format, and bit flips: an error or an image, never a panic.
#[test]
fn truncations_and_corruptions_never_panic() {
    let photo = DynamicImage::ImageRgb8(photo());
    let rgba = DynamicImage::ImageRgba8(photo.to_rgba8());
    let inputs = [
        jpeg_of(&photo, 90),
        fixture("jpeg_progressive.jpg"),
        fixture("jpeg_cmyk_adobe.jpg"),
        encode(&rgba, ImageFormat::Png),
        encode(&DynamicImage::ImageRgba16(rgba.to_rgba16()), ImageFormat::Png),
        fixture("png_palette_trns.png"),
        encode(&rgba, ImageFormat::WebP),
        fixture("webp_lossy_alpha.webp"),
        fixture("webp_animated.webp"),
        gif_of(vec![frame(rgba.to_rgba8()), frame(rgba.to_rgba8())]),
        encode(&rgba, ImageFormat::Bmp),
        encode(&rgba, ImageFormat::Tiff),
        fixture("tiff_cmyk.tif"),
    ];
    for input in &inputs {
        let step = (input.len() / 150).max(1);
        for len in (0..input.len()).step_by(step) {
            let result = compress(&input[..len], QUALITY, LIMITS);
            assert!(!matches!(result, Err(CompressError::Encode(_))), "{len}: {result:?}");
        }
        let noise = pseudo_random_bytes(input.len(), input.len() as u64);
        for (round, position) in (16..input.len()).step_by(step * 3).enumerate() {
            let mut corrupt = input.clone();
            corrupt[position] ^= noise[round % noise.len()] | 1;
            let _ = compress(&corrupt, QUALITY, LIMITS);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Quality.

#[test]
fn quality_is_honoured() {
    let png = encode(&DynamicImage::ImageRgb8(photo()), ImageFormat::Png);
    let size = |q: u8| compress(&png, q, LIMITS).unwrap().jpeg.len();
    let (q10, q50, q90) = (size(10), size(50), size(90));
    assert!(q10 < q50 && q50 < q90, "sizes at q10 {q10}, q50 {q50}, q90 {q90}");
    // The luminance table is libjpeg's standard table scaled for the quality (its first entry is 16 at q50).
    for (quality, first) in [(50u8, 16u8), (10, 80), (90, 3), (100, 1), (1, 255), (0, 255), (255, 1)] {
        let out = compress(&png, quality, LIMITS).unwrap();
        check_output(&out, 96, 64, ImageFormat::Png);
        assert_eq!(luma_quant_table(&out.jpeg)[0], first, "quality {quality}");
    }
}

#[test]
fn source_format_comes_from_the_bytes() {
    // A PNG is a PNG whatever its name or the Content-Type said: only the bytes are passed in.
    let png = encode(&DynamicImage::ImageRgb8(quadrants()), ImageFormat::Png);
    assert_eq!(compress_ok(&png).source_format, ImageFormat::Png);
    let out =
        compress_ok(&gif_of(vec![frame(RgbaImage::from_fn(64, 48, |x, y| quadrants().get_pixel(x, y).to_rgba()))]));
    assert_eq!(out.source_format, ImageFormat::Gif);
}
