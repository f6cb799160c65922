//! The JPEG encoder: libjpeg-turbo (inside `mozjpeg-sys`) with its standard settings, fed whole rows and writing
//! into a `Vec`. The settings were chosen with `make bench-codec` (README, "Codec benchmark"). It writes the JFIF
//! header and, when the options ask, a minimal EXIF and an sRGB profile (`metadata`); nothing else of the input.

use std::mem;
use std::os::raw::c_int;

use mozjpeg_sys as ffi;
use mozjpeg_sys::{
    J_COLOR_SPACE, JINT_COMPRESS_PROFILE_VALUE, jpeg_compress_struct, jpeg_destination_mgr, jpeg_error_mgr,
};

use super::jpeglib::{Error, error_manager, guard};
use super::metadata::{self, OutputOptions};

/// Huffman tables optimised per image cost a second pass over the coefficients; see the README's codec benchmark.
const OPTIMIZE_CODING: bool = false;

/// Encoder settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct EncodeOptions {
    /// 1–100, libjpeg's scaling of the standard (Annex K) tables, clamped to baseline (≤ 255).
    pub quality: u8,
    /// Huffman tables computed for the image (a second pass over the coefficients) instead of the standard ones.
    pub optimize_coding: bool,
    /// What the output carries besides its pixels.
    pub output: OutputOptions,
}

impl EncodeOptions {
    pub fn new(quality: u8, output: OutputOptions) -> Self {
        EncodeOptions { quality: quality.clamp(1, 100), optimize_coding: OPTIMIZE_CODING, output }
    }
}

/// JPEG marker codes of the segments written after the JFIF header.
const APP1: c_int = 0xe1;

/// Where the encoder writes: a 64 KiB buffer that is appended to `out` whenever it fills.
#[repr(C)]
struct VecDestination {
    manager: jpeg_destination_mgr, // first: libjpeg's `dest` pointer is cast back to this struct
    out: Vec<u8>,
    buffer: Box<[u8]>,
}

unsafe fn destination(cinfo: &mut jpeg_compress_struct) -> &mut VecDestination {
    // SAFETY: `dest` points at the `manager` field (the first) of the encoder's VecDestination.
    unsafe { &mut *cinfo.dest.cast::<VecDestination>() }
}

unsafe extern "C-unwind" fn init_destination(cinfo: &mut jpeg_compress_struct) {
    let d = unsafe { destination(cinfo) };
    d.manager.next_output_byte = d.buffer.as_mut_ptr();
    d.manager.free_in_buffer = d.buffer.len();
}

unsafe extern "C-unwind" fn empty_output_buffer(cinfo: &mut jpeg_compress_struct) -> ffi::boolean {
    let d = unsafe { destination(cinfo) };
    d.out.extend_from_slice(&d.buffer);
    d.manager.next_output_byte = d.buffer.as_mut_ptr();
    d.manager.free_in_buffer = d.buffer.len();
    1
}

unsafe extern "C-unwind" fn term_destination(cinfo: &mut jpeg_compress_struct) {
    let d = unsafe { destination(cinfo) };
    let used = d.buffer.len() - d.manager.free_in_buffer;
    d.out.extend_from_slice(&d.buffer[..used]);
    d.manager.free_in_buffer = d.buffer.len();
    d.manager.next_output_byte = d.buffer.as_mut_ptr();
}

/// A baseline JPEG encoder: JFIF header, 4:2:0 chroma subsampling for colour input, and only the metadata asked for.
pub(super) struct Encoder {
    cinfo: Box<jpeg_compress_struct>,
    _err: Box<jpeg_error_mgr>,
    dest: Box<VecDestination>,
    row_bytes: usize,
}

impl Encoder {
    /// An encoder of `width`×`height` 8-bit grey or RGB rows; `capacity` is the output's expected size. `exif`: an
    /// EXIF APP1 payload to write (`metadata::copyright_exif`); the sRGB profile if `options.output` asks for it.
    pub fn new(
        width: u32,
        height: u32,
        grey: bool,
        options: EncodeOptions,
        capacity: usize,
        exif: Option<&[u8]>,
    ) -> Result<Self, Error> {
        let mut encoder = Encoder {
            // SAFETY: zeroed structs are what jpeg_CreateCompress expects; the boxes keep the error manager and
            // the destination at fixed addresses for as long as `cinfo` points at them.
            cinfo: Box::new(unsafe { mem::zeroed() }),
            _err: error_manager(),
            dest: Box::new(VecDestination {
                manager: jpeg_destination_mgr {
                    next_output_byte: std::ptr::null_mut(),
                    free_in_buffer: 0,
                    init_destination: Some(init_destination),
                    empty_output_buffer: Some(empty_output_buffer),
                    term_destination: Some(term_destination),
                },
                out: Vec::with_capacity(capacity),
                buffer: vec![0; 64 << 10].into_boxed_slice(),
            }),
            row_bytes: width as usize * if grey { 1 } else { 3 },
        };
        encoder.cinfo.common.err = &raw mut *encoder._err;
        let dest = &raw mut encoder.dest.manager;
        let icc = if options.output.embed_srgb_profile { metadata::srgb_profile() } else { None };
        let cinfo = &mut *encoder.cinfo;
        guard(|| unsafe {
            ffi::jpeg_create_compress(cinfo);
            cinfo.dest = dest;
            cinfo.image_width = width;
            cinfo.image_height = height;
            (cinfo.in_color_space, cinfo.input_components) =
                if grey { (J_COLOR_SPACE::JCS_GRAYSCALE, 1) } else { (J_COLOR_SPACE::JCS_RGB, 3) };
            // libjpeg-turbo's defaults (mozjpeg's own defaults add trellis quantisation and progressive scans: several
            // times slower). Then: YCbCr 4:2:0 (or grey), islow DCT, standard tables, baseline, JFIF.
            ffi::jpeg_c_set_int_param(
                cinfo,
                ffi::J_INT_PARAM::JINT_COMPRESS_PROFILE,
                JINT_COMPRESS_PROFILE_VALUE::JCP_FASTEST as c_int,
            );
            ffi::jpeg_set_defaults(cinfo);
            ffi::jpeg_set_quality(cinfo, c_int::from(options.quality.clamp(1, 100)), 1);
            cinfo.optimize_coding = ffi::boolean::from(options.optimize_coding);
            ffi::jpeg_start_compress(cinfo, 1);
            // After the JFIF APP0 that jpeg_start_compress wrote: APP1 (EXIF), then APP2 (ICC), as cameras order them.
            if let Some(exif) = exif {
                ffi::jpeg_write_marker(cinfo, APP1, exif.as_ptr(), exif.len() as u32);
            }
            if let Some(icc) = icc {
                ffi::jpeg_write_icc_profile(cinfo, icc.as_ptr(), icc.len() as u32);
            }
        })?;
        Ok(encoder)
    }

    /// Writes whole rows (8-bit grey or RGB, as declared), in order.
    pub fn write_rows(&mut self, rows: &[u8]) -> Result<(), Error> {
        let row_bytes = self.row_bytes;
        let cinfo = &mut *self.cinfo;
        guard(|| {
            let mut pointers = [std::ptr::null::<u8>(); 16];
            for chunk in rows.chunks(row_bytes * pointers.len()) {
                let count = chunk.len() / row_bytes;
                for (pointer, row) in pointers.iter_mut().zip(chunk.chunks_exact(row_bytes)) {
                    *pointer = row.as_ptr();
                }
                let mut done = 0;
                while done < count {
                    // SAFETY: each pointer addresses `row_bytes` readable bytes of `rows`; libjpeg only reads them.
                    done += unsafe {
                        ffi::jpeg_write_scanlines(cinfo, pointers[done..].as_ptr().cast(), (count - done) as u32)
                    } as usize;
                }
            }
        })
    }

    pub fn finish(mut self) -> Result<Vec<u8>, Error> {
        let cinfo = &mut *self.cinfo;
        guard(|| unsafe { ffi::jpeg_finish_compress(cinfo) })?;
        Ok(mem::take(&mut self.dest.out))
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let cinfo = &mut *self.cinfo;
        let _ = guard(|| unsafe { ffi::jpeg_destroy_compress(cinfo) });
    }
}
