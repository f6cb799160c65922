//! The alternative JPEG path the codec benchmark keeps measuring (README, "Codec benchmark"): JPEG to JPEG without
//! leaving the DCT domain. The quantised coefficients are read (entropy decoding only), each is brought from the
//! source's quantiser to the standard table of the target quality (c·q_src/q_dst, rounded), and written with the
//! same sampling (entropy coding only): no IDCT, colour conversion, chroma resampling or FDCT. It measured slower
//! than `compress`'s streaming pixel path (it holds every coefficient of the image, where the pixel path streams
//! 16 rows through the cache), so it lives here, not in the worker.

use std::mem;
use std::os::raw::{c_int, c_ulong, c_void};

use image::ImageFormat;
use image::metadata::Orientation;
use imgpipe_core::compress::jpeglib::{Error, error_manager, guard};
use imgpipe_core::compress::{CompressError, CompressLimits, Compressed, compress};
use mozjpeg_sys as ffi;
use mozjpeg_sys::{J_COLOR_SPACE, JINT_COMPRESS_PROFILE_VALUE, jpeg_compress_struct, jpeg_decompress_struct};

unsafe extern "C" {
    /// Frees `jpeg_mem_dest`'s buffer, which libjpeg allocates with `malloc` and leaves to the caller.
    fn free(ptr: *mut c_void);
}

const APP1: c_int = 0xe1;

/// [`compress`], but a 4:2:0 or grey JPEG needing no rotation is requantised in the DCT domain. Everything else,
/// and anything the DCT-domain path fails on, takes `compress`.
pub fn compress_in_dct_domain(input: &[u8], quality: u8, limits: CompressLimits) -> Result<Compressed, CompressError> {
    match transcode(input, quality.clamp(1, 100), limits) {
        Some(Ok(compressed)) => Ok(compressed),
        Some(Err(_)) | None => compress(input, quality, limits),
    }
}

/// The two libjpeg structs of one transcode, destroyed on drop (also after an error).
struct Structs {
    src: Box<jpeg_decompress_struct>,
    dst: Box<jpeg_compress_struct>,
    _errors: [Box<ffi::jpeg_error_mgr>; 2],
    out: *mut u8,
    out_size: c_ulong,
}

impl Drop for Structs {
    fn drop(&mut self) {
        let (src, dst) = (&mut *self.src, &mut *self.dst);
        let _ = guard(|| unsafe {
            ffi::jpeg_destroy_decompress(src);
            ffi::jpeg_destroy_compress(dst);
        });
        if !self.out.is_null() {
            // SAFETY: allocated by jpeg_mem_dest with malloc; nothing points at it once the compressor is gone.
            unsafe { free(self.out.cast()) };
        }
    }
}

/// `None` when the DCT-domain path does not apply (not a JPEG, over the limits, not 4:2:0 or grey, rotated).
fn transcode(input: &[u8], quality: u8, limits: CompressLimits) -> Option<Result<Compressed, Error>> {
    if image::guess_format(input).ok()? != ImageFormat::Jpeg {
        return None;
    }
    // SAFETY: zeroed structs are what jpeg_Create* expect; the boxes keep the error managers at fixed addresses.
    let mut s = Structs {
        src: Box::new(unsafe { mem::zeroed() }),
        dst: Box::new(unsafe { mem::zeroed() }),
        _errors: [error_manager(), error_manager()],
        out: std::ptr::null_mut(),
        out_size: 0,
    };
    s.src.common.err = &raw mut *s._errors[0];
    s.dst.common.err = &raw mut *s._errors[1];
    let (src, dst) = (&mut *s.src, &mut *s.dst);
    guard(|| unsafe {
        ffi::jpeg_create_decompress(src);
        ffi::jpeg_mem_src(src, input.as_ptr(), input.len() as c_ulong);
        ffi::jpeg_save_markers(src, APP1, 0xffff);
        ffi::jpeg_read_header(src, 1);
    })
    .ok()?;
    let (width, height) = (src.image_width, src.image_height);
    let applies = width <= limits.max_dimension
        && height <= limits.max_dimension
        && u64::from(width) * u64::from(height) <= limits.max_pixels
        && orientation(src) == Orientation::NoTransforms
        && transcodable(src);
    if !applies {
        return None;
    }
    let (out, out_size) = (&raw mut s.out, &raw mut s.out_size);
    let result = guard(|| unsafe {
        let coefficients = ffi::jpeg_read_coefficients(src);
        ffi::jpeg_create_compress(dst);
        ffi::jpeg_mem_dest(dst, out, out_size);
        ffi::jpeg_c_set_int_param(
            dst,
            ffi::J_INT_PARAM::JINT_COMPRESS_PROFILE,
            JINT_COMPRESS_PROFILE_VALUE::JCP_FASTEST as c_int,
        );
        // Sizes, colour space, sampling and the source's tables; then the standard tables of the target quality.
        ffi::jpeg_copy_critical_parameters(src, dst);
        ffi::jpeg_set_quality(dst, c_int::from(quality), 1);
        dst.optimize_coding = 0;
        requantise(src, dst, coefficients);
        ffi::jpeg_write_coefficients(dst, coefficients);
        ffi::jpeg_finish_compress(dst);
        ffi::jpeg_finish_decompress(src);
    });
    Some(result.map(|()| {
        // SAFETY: jpeg_mem_dest's buffer holds `out_size` bytes after finish_compress.
        let jpeg = unsafe { std::slice::from_raw_parts(s.out, s.out_size as usize) }.to_vec();
        Compressed { jpeg, width, height, source_format: ImageFormat::Jpeg }
    }))
}

/// Rescales every coefficient from the source's quantiser to the destination's.
///
/// # Safety
/// Inside `guard`, after `jpeg_read_coefficients` returned `coefficients` and `jpeg_copy_critical_parameters` and
/// `jpeg_set_quality` set up `dst`.
unsafe fn requantise(
    src: &mut jpeg_decompress_struct,
    dst: &mut jpeg_compress_struct,
    coefficients: *mut *mut ffi::jvirt_barray_control,
) {
    unsafe {
        let components = std::slice::from_raw_parts_mut(dst.comp_info, dst.num_components as usize);
        for (index, component) in components.iter_mut().enumerate() {
            component.quant_tbl_no = if index == 0 { 0 } else { 1 };
        }
        let sources = std::slice::from_raw_parts(src.comp_info, src.num_components as usize);
        for (index, (source, target)) in sources.iter().zip(components.iter()).enumerate() {
            let old = if source.quant_table.is_null() {
                &*src.quant_tbl_ptrs[source.quant_tbl_no as usize]
            } else {
                &*source.quant_table
            };
            let new = &*dst.quant_tbl_ptrs[target.quant_tbl_no as usize];
            let ratio: [f32; 64] = std::array::from_fn(|k| f32::from(old.quantval[k]) / f32::from(new.quantval[k]));
            // The arrays cover whole MCUs: blocks rounded up to the sampling factors.
            let round_up = |n: u32, m: c_int| n.div_ceil(m as u32) * m as u32;
            let width = round_up(source.width_in_blocks, source.h_samp_factor) as usize;
            let height = round_up(source.height_in_blocks, source.v_samp_factor);
            let access = (*src.common.mem).access_virt_barray.expect("libjpeg memory manager");
            for row in 0..height {
                let rows = access(&mut src.common, *coefficients.add(index), row, 1, 1);
                let blocks = std::slice::from_raw_parts_mut(*rows, width);
                for block in blocks {
                    for (c, r) in block.iter_mut().zip(&ratio) {
                        if *c != 0 {
                            *c = (f32::from(*c) * r).round() as i16;
                        }
                    }
                }
            }
        }
    }
}

/// 8-bit YCbCr at 4:2:0 (what cameras and phones write, and what the encoder writes), or grey.
fn transcodable(src: &jpeg_decompress_struct) -> bool {
    // SAFETY: read_header allocated `num_components` entries.
    let components = unsafe { std::slice::from_raw_parts(src.comp_info, src.num_components as usize) };
    let sampling: Vec<(c_int, c_int)> = components.iter().map(|c| (c.h_samp_factor, c.v_samp_factor)).collect();
    match src.jpeg_color_space {
        J_COLOR_SPACE::JCS_YCbCr => sampling == [(2, 2), (1, 1), (1, 1)],
        J_COLOR_SPACE::JCS_GRAYSCALE => sampling.len() == 1,
        _ => false,
    }
}

/// The orientation in the first `Exif` APP1 segment; a broken one counts as upright (as in `compress`).
fn orientation(src: &jpeg_decompress_struct) -> Orientation {
    let mut marker = src.marker_list;
    while !marker.is_null() {
        // SAFETY: the saved-marker list lives in libjpeg's image pool until the decoder is destroyed.
        let m = unsafe { &*marker };
        if c_int::from(m.marker) == APP1 && !m.data.is_null() {
            let data = unsafe { std::slice::from_raw_parts(m.data, m.data_length as usize) };
            if let Some(tiff) = data.strip_prefix(b"Exif\0\0") {
                return Orientation::from_exif_chunk(tiff).unwrap_or(Orientation::NoTransforms);
            }
        }
        marker = m.next;
    }
    Orientation::NoTransforms
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, RgbImage};

    const LIMITS: CompressLimits =
        CompressLimits { max_pixels: 10_000_000, max_dimension: 10_000, ..CompressLimits::DEFAULT };

    /// A JPEG from `compress` itself (4:2:0 or grey, baseline), of a PNG of `image`.
    fn jpeg_of(image: &DynamicImage, quality: u8) -> Vec<u8> {
        let mut png = std::io::Cursor::new(Vec::new());
        image.write_to(&mut png, ImageFormat::Png).unwrap();
        compress(png.get_ref(), quality, LIMITS).unwrap().jpeg
    }

    /// A 4:2:0 JPEG goes through the DCT domain; its output looks like the pixel path's, with the same tables.
    #[test]
    fn dct_domain_path_matches_the_pixel_path() {
        let source = RgbImage::from_fn(203, 117, |x, y| {
            image::Rgb([(x * 255 / 203) as u8, (y * 255 / 117) as u8, ((x * y) % 256) as u8])
        });
        for (grey, quality) in [(false, 92), (true, 90), (false, 30)] {
            let image = DynamicImage::ImageRgb8(source.clone());
            let input = jpeg_of(&if grey { DynamicImage::ImageLuma8(image.to_luma8()) } else { image }, quality);
            let fast = compress_in_dct_domain(&input, 50, LIMITS).unwrap();
            let full = compress(&input, 50, LIMITS).unwrap();
            assert_ne!(fast.jpeg, full.jpeg, "grey {grey}: the DCT-domain path was not taken");
            assert_eq!((fast.width, fast.height), (203, 117));
            let reference = image::load_from_memory(&input).unwrap().to_rgb8();
            let error = |jpeg: &[u8]| {
                let out = image::load_from_memory(jpeg).unwrap().to_rgb8();
                let sum: f64 =
                    out.as_raw().iter().zip(reference.as_raw()).map(|(&p, &q)| f64::from(p.abs_diff(q))).sum();
                sum / out.as_raw().len() as f64
            };
            let (fast_error, full_error) = (error(&fast.jpeg), error(&full.jpeg));
            assert!(
                fast_error <= full_error * 1.1 + 0.2,
                "grey {grey}, source q{quality}: mean error {fast_error} (DCT domain) vs {full_error} (pixels)"
            );
            // Same DQT segment (standard tables at q50) and a baseline frame.
            let dqt = |jpeg: &[u8]| jpeg.windows(2).position(|w| w == [0xff, 0xdb]).map(|i| jpeg[i..i + 69].to_vec());
            assert_eq!(dqt(&fast.jpeg), dqt(&full.jpeg));
            assert!(fast.jpeg.windows(2).any(|w| w == [0xff, 0xc0]));
        }
    }

    /// Truncated and corrupted 4:2:0 JPEGs: an error or an image, never a panic.
    #[test]
    fn dct_domain_path_survives_corruption() {
        let source = RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 4) as u8, ((x ^ y) * 3) as u8]));
        let input = jpeg_of(&DynamicImage::ImageRgb8(source), 90);
        for len in (0..input.len()).step_by(7) {
            let _ = compress_in_dct_domain(&input[..len], 50, LIMITS);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for position in (2..input.len()).step_by(5) {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let mut corrupt = input.clone();
            corrupt[position] ^= (seed >> 56) as u8 | 1;
            let _ = compress_in_dct_domain(&corrupt, 50, LIMITS);
        }
    }
}
