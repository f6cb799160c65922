//! End-to-end checks of `compress` that need its internals or a quiet process (the fallback counter); the full
//! format matrix is in tests/tests/decode.rs.

use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex};

use image::{DynamicImage, ImageBuffer, RgbImage, Rgba};

use super::*;

const LIMITS: CompressLimits =
    CompressLimits { max_pixels: 10_000_000, max_dimension: 10_000, ..CompressLimits::DEFAULT };

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn gradient(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])))
}

/// A baseline JPEG made by our encoder.
fn baseline_jpeg() -> Vec<u8> {
    compress(&encode(&gradient(64, 48), ImageFormat::Png), 90, LIMITS).unwrap().jpeg
}

/// Runs `f` with this thread's log events captured, and returns what was logged.
fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture(Arc::default());
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    (result, text)
}

#[test]
fn png_becomes_jpeg_of_same_size() {
    let out = compress(&encode(&gradient(64, 48), ImageFormat::Png), 50, LIMITS).unwrap();
    assert_eq!((out.width, out.height, out.source_format), (64, 48, ImageFormat::Png));
    let back = image::load_from_memory_with_format(&out.jpeg, ImageFormat::Jpeg).unwrap();
    assert_eq!((back.width(), back.height()), (64, 48));
}

#[test]
fn transparent_pixels_become_white_not_black() {
    let img = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(16, 16, Rgba([0, 0, 0, 0])));
    let out = compress(&encode(&img, ImageFormat::Png), 90, LIMITS).unwrap();
    let back = image::load_from_memory(&out.jpeg).unwrap().to_rgb8();
    assert!(back.pixels().all(|p| p.0.iter().all(|&c| c > 245)), "{:?}", back.get_pixel(0, 0));
}

#[test]
fn refuses_non_images_and_oversize() {
    assert!(matches!(compress(b"<html><body>hi</body></html>", 50, LIMITS), Err(CompressError::NotAnImage(_))));
    let small = CompressLimits { max_pixels: 100, ..LIMITS };
    assert!(matches!(
        compress(&encode(&gradient(20, 20), ImageFormat::Png), 50, small),
        Err(CompressError::TooLarge { .. })
    ));
}

/// An arithmetic-coded JPEG (a valid feature this build of libjpeg leaves out) goes to the `image` crate, with a
/// warning naming libjpeg's reason and one more on the counter. (The only test in this binary that makes libjpeg
/// fall back, so the counter's delta is exact.)
#[test]
fn unsupported_jpeg_features_fall_back_logged_and_counted() {
    let mut jpeg = baseline_jpeg();
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline SOF0 marker");
    jpeg[sof + 1] = 0xc9; // SOF9: extended sequential, arithmetic coding
    let before = libjpeg_fallbacks();
    let (result, log) = logged(|| compress(&jpeg, 50, LIMITS));
    assert_eq!(libjpeg_fallbacks(), before + 1, "one fallback counted");
    assert!(log.contains("WARN") && log.contains("falling back to the image crate"), "{log}");
    assert!(log.contains("arithmetic coding"), "libjpeg's reason is logged: {log}");
    // zune-jpeg (inside `image`) does not decode arithmetic coding either: a clear, permanent answer.
    assert!(matches!(result, Err(CompressError::Unsupported(_) | CompressError::Decode(_))), "{result:?}");
}

/// A malformed JPEG is libjpeg's clear failure (its message, not the `image` crate's): nothing falls back.
#[test]
fn corrupt_jpeg_is_a_decode_failure_without_fallback() {
    let mut jpeg = baseline_jpeg();
    // The scan header's first component selects Huffman tables 3/3, which the file does not define.
    let sos = jpeg.windows(2).position(|w| w == [0xff, 0xda]).expect("an SOS marker");
    jpeg[sos + 6] = 0x33;
    let (result, log) = logged(|| compress(&jpeg, 50, LIMITS));
    match result {
        Err(CompressError::Decode(message)) => assert!(message.contains("Huffman table"), "{message}"),
        other => panic!("expected libjpeg's Decode failure, got {other:?}"),
    }
    assert!(!log.contains("falling back"), "no fallback for corrupt input: {log}");
}
