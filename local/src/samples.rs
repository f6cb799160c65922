//! Sample images for the demo and the tests, generated (nothing is downloaded).

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, RgbImage, RgbaImage};

/// A photo-like image: smooth gradients plus deterministic noise, so JPEG sizes are realistic.
pub fn photo(width: u32, height: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state % 24) as i32 - 12;
        let px = |v: u32| (v as i32 + noise).clamp(0, 255) as u8;
        image::Rgb([px(x * 255 / width.max(1)), px(y * 255 / height.max(1)), px(((x + y + seed) * 3) % 256)])
    })
}

pub fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(img).expect("in-memory JPEG");
    out
}

pub fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("in-memory PNG");
    out.into_inner()
}

/// The images `samples/products.csv` refers to: JPEG photos at quality 95 and PNGs, one with transparency.
pub fn write_demo_images(dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>| -> std::io::Result<()> {
        std::fs::write(dir.join(name), bytes)?;
        written.push(name.to_string());
        Ok(())
    };
    put("shirt-front.jpg", jpeg(&photo(1600, 1200, 1), 95))?;
    put("shirt-back.jpg", jpeg(&photo(1600, 1200, 2), 95))?;
    put("shoe-side.jpg", jpeg(&photo(1200, 1600, 3), 95))?;
    put("shoe-top.png", png(&DynamicImage::ImageRgb8(photo(800, 600, 4))))?;
    let logo = photo(512, 512, 5);
    let logo = RgbaImage::from_fn(512, 512, |x, y| {
        let p = logo.get_pixel(x, y);
        let inside = (x as i32 - 256).pow(2) + (y as i32 - 256).pow(2) < 200 * 200;
        image::Rgba([p[0], p[1], p[2], if inside { 255 } else { 0 }])
    });
    put("hat-logo.png", png(&DynamicImage::ImageRgba8(logo)))?;
    put("hat-worn.jpg", jpeg(&photo(2000, 1500, 6), 95))?;
    Ok(written)
}
