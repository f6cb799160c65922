//! A small safe wrapper over libjpeg-turbo's API (the copy inside `mozjpeg-sys`, built with its SIMD code): a
//! decoder that reads the header first and then rows, and a baseline encoder that takes rows.
//!
//! libjpeg reports fatal errors by calling `error_exit`, which must not return: ours unwinds with the message
//! (`resume_unwind`, so no panic hook runs and nothing is printed), and every call into the library goes through
//! [`guard`], which turns that unwind back into an `Err`. Warnings (corrupt or truncated entropy-coded data, which
//! libjpeg decodes as far as it can, as zune-jpeg does) are not printed. The structs are boxed so
//! that the pointers libjpeg keeps between them stay valid, and destroyed on drop (also after an error).

use std::any::Any;
use std::mem;
use std::os::raw::{c_int, c_long, c_ulong};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use mozjpeg_sys as ffi;
use mozjpeg_sys::{
    J_COLOR_SPACE, JINT_COMPRESS_PROFILE_VALUE, jpeg_common_struct, jpeg_compress_struct, jpeg_decompress_struct,
    jpeg_destination_mgr, jpeg_error_mgr, jpeg_progress_mgr,
};

/// A progressive JPEG with more scans than this is refused: each scan is a pass over the whole coefficient buffer,
/// so a few kilobytes of crafted scans could otherwise keep a worker busy for minutes. (Encoders write about ten.)
const MAX_SCANS: c_int = 500;

const APP1: c_int = 0xe1;

/// A libjpeg error: its message, and whether it was the memory limit.
#[derive(Debug)]
pub(super) struct Error {
    pub message: String,
    pub out_of_memory: bool,
}

fn error_exit_message(payload: Box<dyn Any + Send>) -> Error {
    match payload.downcast::<Error>() {
        Ok(e) => *e,
        Err(payload) => Error {
            message: payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "libjpeg failed".to_string()),
            out_of_memory: false,
        },
    }
}

/// Runs `f`, turning libjpeg's error exit (an unwind carrying an [`Error`]) into `Err`.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).map_err(error_exit_message)
}

unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    // SAFETY: `err` is the error manager installed by `new_error_manager`, alive as long as the struct. The binding
    // declares the message buffer `&[u8; 80]`, but libjpeg writes the message into it.
    type FormatMessage = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &mut [u8; 80]);
    let format = unsafe { (*cinfo.err).format_message };
    let mut buffer = [0u8; 80];
    if let Some(format) = format {
        unsafe {
            let format = mem::transmute::<unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]), FormatMessage>(
                format,
            );
            format(cinfo, &mut buffer);
        }
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let message = String::from_utf8_lossy(&buffer[..end]).into_owned();
    // JERR_NO_BACKING_STORE (what libjpeg says when `max_memory_to_use` is exceeded) and JERR_OUT_OF_MEMORY.
    let out_of_memory =
        message.starts_with("Backing store not supported") || message.starts_with("Insufficient memory");
    resume_unwind(Box::new(Error { message, out_of_memory }));
}

unsafe extern "C-unwind" fn silent(_cinfo: &mut jpeg_common_struct) {}

fn new_error_manager() -> Box<jpeg_error_mgr> {
    // SAFETY: jpeg_error_mgr is plain data; jpeg_std_error fills every field.
    let mut err: Box<jpeg_error_mgr> = Box::new(unsafe { mem::zeroed() });
    unsafe { ffi::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    // The standard emit_message counts warnings in `num_warnings` and prints the first through output_message.
    err.output_message = Some(silent);
    err
}

unsafe extern "C-unwind" fn limit_scans(cinfo: &mut jpeg_common_struct) {
    if cinfo.is_decompressor != 0 {
        // SAFETY: a decompressor's common struct is the first field of its jpeg_decompress_struct.
        let scans = unsafe { (*(cinfo as *mut jpeg_common_struct).cast::<jpeg_decompress_struct>()).input_scan_number };
        if scans > MAX_SCANS {
            resume_unwind(Box::new(Error {
                message: format!("more than {MAX_SCANS} progressive scans"),
                out_of_memory: false,
            }));
        }
    }
}

/// The colour model of the pixels a JPEG decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Colour {
    Grey,
    Rgb,
    /// CMYK or YCCK: left to the `image` crate, which knows the Adobe conventions.
    Other,
}

/// A JPEG decoder over borrowed bytes. The header has been read when it exists.
pub(super) struct Decoder<'a> {
    cinfo: Box<jpeg_decompress_struct>,
    _err: Box<jpeg_error_mgr>,
    _progress: Box<jpeg_progress_mgr>,
    _input: std::marker::PhantomData<&'a [u8]>,
    started: bool,
}

impl<'a> Decoder<'a> {
    /// Reads the header (and keeps APP1 segments for the EXIF orientation); no pixel memory is allocated.
    pub fn new(input: &'a [u8]) -> Result<Self, Error> {
        // SAFETY: zeroed structs are what jpeg_CreateDecompress expects (it zeroes them itself too); the boxes keep
        // the error and progress managers at fixed addresses for as long as `cinfo` points at them.
        let mut decoder = Decoder {
            cinfo: Box::new(unsafe { mem::zeroed() }),
            _err: new_error_manager(),
            _progress: Box::new(unsafe { mem::zeroed() }),
            _input: std::marker::PhantomData,
            started: false,
        };
        decoder._progress.progress_monitor = Some(limit_scans);
        decoder.cinfo.common.err = &raw mut *decoder._err;
        let cinfo = &mut *decoder.cinfo;
        guard(|| unsafe { ffi::jpeg_create_decompress(cinfo) })?;
        decoder.cinfo.common.progress = &raw mut *decoder._progress;
        let cinfo = &mut *decoder.cinfo;
        guard(|| unsafe {
            ffi::jpeg_mem_src(cinfo, input.as_ptr(), input.len() as c_ulong);
            ffi::jpeg_save_markers(cinfo, APP1, 0xffff);
            // require_image = TRUE: a tables-only stream is an error.
            ffi::jpeg_read_header(cinfo, 1);
        })?;
        Ok(decoder)
    }

    pub fn dimensions(&self) -> (u32, u32) {
        (self.cinfo.image_width, self.cinfo.image_height)
    }

    pub fn colour(&self) -> Colour {
        match self.cinfo.jpeg_color_space {
            J_COLOR_SPACE::JCS_GRAYSCALE => Colour::Grey,
            J_COLOR_SPACE::JCS_YCbCr | J_COLOR_SPACE::JCS_RGB => Colour::Rgb,
            _ => Colour::Other,
        }
    }

    /// The TIFF structure of the first `Exif\0\0` APP1 segment.
    pub fn exif(&self) -> Option<&[u8]> {
        let mut marker = self.cinfo.marker_list;
        while !marker.is_null() {
            // SAFETY: the saved-marker list lives in libjpeg's image pool until the decoder is destroyed.
            let m = unsafe { &*marker };
            if c_int::from(m.marker) == APP1 && !m.data.is_null() {
                let data = unsafe { std::slice::from_raw_parts(m.data, m.data_length as usize) };
                if let Some(tiff) = data.strip_prefix(b"Exif\0\0") {
                    return Some(tiff);
                }
            }
            marker = m.next;
        }
        None
    }

    /// Caps libjpeg's own allocations (progressive coefficient buffers, row buffers); over it, decoding fails with
    /// `out_of_memory`.
    pub fn set_memory_limit(&mut self, bytes: u64) {
        // SAFETY: `mem` is set by jpeg_create_decompress.
        unsafe { (*self.cinfo.common.mem).max_memory_to_use = c_long::try_from(bytes).unwrap_or(c_long::MAX) };
    }

    /// Starts decoding to 8-bit grey or RGB rows (the colour must not be `Other`).
    pub fn start(&mut self) -> Result<(), Error> {
        self.cinfo.out_color_space =
            if self.colour() == Colour::Grey { J_COLOR_SPACE::JCS_GRAYSCALE } else { J_COLOR_SPACE::JCS_RGB };
        let cinfo = &mut *self.cinfo;
        guard(|| unsafe { ffi::jpeg_start_decompress(cinfo) })?;
        self.started = true;
        Ok(())
    }

    pub fn row_bytes(&self) -> usize {
        self.cinfo.output_width as usize * self.cinfo.output_components as usize
    }

    /// Fills `rows` (a whole number of rows) with the next rows of the image.
    pub fn read_rows(&mut self, rows: &mut [u8]) -> Result<(), Error> {
        let row_bytes = self.row_bytes();
        let cinfo = &mut *self.cinfo;
        guard(|| {
            let mut pointers = [std::ptr::null_mut::<u8>(); 16];
            for chunk in rows.chunks_mut(row_bytes * pointers.len()) {
                let count = chunk.len() / row_bytes;
                for (pointer, row) in pointers.iter_mut().zip(chunk.chunks_exact_mut(row_bytes)) {
                    *pointer = row.as_mut_ptr();
                }
                let mut done = 0;
                while done < count {
                    // SAFETY: each pointer addresses `row_bytes` writable bytes of `rows`.
                    let read = unsafe {
                        ffi::jpeg_read_scanlines(cinfo, pointers[done..].as_mut_ptr(), (count - done) as u32)
                    } as usize;
                    if read == 0 {
                        resume_unwind(Box::new(Error {
                            message: "the decoder stopped before the last row".into(),
                            out_of_memory: false,
                        }));
                    }
                    done += read;
                }
            }
        })
    }

    /// Whether [`transcode`] applies: 8-bit YCbCr at 4:2:0 (what cameras and phones write, and what the encoder
    /// writes), or grey.
    pub fn transcodable(&self) -> bool {
        let sampling: Vec<(c_int, c_int)> =
            self.components().iter().map(|c| (c.h_samp_factor, c.v_samp_factor)).collect();
        match self.cinfo.jpeg_color_space {
            J_COLOR_SPACE::JCS_YCbCr => sampling == [(2, 2), (1, 1), (1, 1)],
            J_COLOR_SPACE::JCS_GRAYSCALE => sampling.len() == 1,
            _ => false,
        }
    }

    fn components(&self) -> &[ffi::jpeg_component_info] {
        if self.cinfo.comp_info.is_null() {
            return &[];
        }
        // SAFETY: read_header allocated `num_components` entries.
        unsafe { std::slice::from_raw_parts(self.cinfo.comp_info, self.cinfo.num_components as usize) }
    }

    /// Reads to the end of the image (after the last row), so that trailing corruption shows up as warnings.
    pub fn finish(&mut self) -> Result<(), Error> {
        let cinfo = &mut *self.cinfo;
        guard(|| unsafe { ffi::jpeg_finish_decompress(cinfo) })?;
        self.started = false;
        Ok(())
    }
}

impl Drop for Decoder<'_> {
    fn drop(&mut self) {
        let _ = self.started;
        // SAFETY: destroying is valid in any state, including after an error exit.
        let cinfo = &mut *self.cinfo;
        let _ = guard(|| unsafe { ffi::jpeg_destroy_decompress(cinfo) });
    }
}

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

/// Encoder settings chosen by the codec benchmark (README, "Codec benchmark").
#[derive(Debug, Clone, Copy)]
pub(super) struct EncodeOptions {
    /// 1–100, libjpeg's scaling of the standard (Annex K) tables, clamped to baseline (≤ 255).
    pub quality: u8,
    /// Huffman tables computed for the image (a second pass over the coefficients) instead of the standard ones.
    pub optimize_coding: bool,
}

/// A baseline JPEG encoder: JFIF header, no other metadata, 4:2:0 chroma subsampling for colour input.
pub(super) struct Encoder {
    cinfo: Box<jpeg_compress_struct>,
    _err: Box<jpeg_error_mgr>,
    dest: Box<VecDestination>,
    row_bytes: usize,
}

impl Encoder {
    /// A compressor writing into a `Vec`, not configured yet.
    fn create(capacity: usize, row_bytes: usize) -> Result<Self, Error> {
        let mut encoder = Encoder {
            // SAFETY: as in Decoder::new.
            cinfo: Box::new(unsafe { mem::zeroed() }),
            _err: new_error_manager(),
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
            row_bytes,
        };
        encoder.cinfo.common.err = &raw mut *encoder._err;
        let dest = &raw mut encoder.dest.manager;
        let cinfo = &mut *encoder.cinfo;
        guard(|| unsafe {
            ffi::jpeg_create_compress(cinfo);
            cinfo.dest = dest;
        })?;
        Ok(encoder)
    }

    pub fn new(width: u32, height: u32, grey: bool, options: EncodeOptions, capacity: usize) -> Result<Self, Error> {
        let mut encoder = Self::create(capacity, width as usize * if grey { 1 } else { 3 })?;
        let cinfo = &mut *encoder.cinfo;
        guard(|| unsafe {
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

/// JPEG to JPEG without leaving the DCT domain: the quantised coefficients are read (entropy decoding only), each is
/// brought from the source's quantiser to the standard table of `options.quality` (c·q_src/q_dst, rounded), and
/// written with the same sampling (entropy coding only). No IDCT, colour conversion, chroma upsampling and
/// re-subsampling, or FDCT: several times faster than decoding and re-encoding, and the chroma is not blurred by an
/// upsample/downsample round trip. The output is the same kind of file as the encoder's (baseline, standard tables,
/// JFIF, no other metadata). The caller checks [`Decoder::transcodable`] and that no rotation is needed.
pub(super) fn transcode(mut decoder: Decoder<'_>, options: EncodeOptions, capacity: usize) -> Result<Vec<u8>, Error> {
    let src = &mut *decoder.cinfo;
    let coefficients = guard(|| unsafe { ffi::jpeg_read_coefficients(src) })?;
    if coefficients.is_null() {
        return Err(Error { message: "no coefficients".into(), out_of_memory: false });
    }
    decoder.started = true;
    let mut encoder = Encoder::create(capacity, 0)?;
    let src = &mut *decoder.cinfo;
    let dst = &mut *encoder.cinfo;
    guard(|| unsafe {
        ffi::jpeg_c_set_int_param(
            dst,
            ffi::J_INT_PARAM::JINT_COMPRESS_PROFILE,
            JINT_COMPRESS_PROFILE_VALUE::JCP_FASTEST as c_int,
        );
        // Sizes, colour space, sampling and the source's tables; then the standard tables of the target quality.
        ffi::jpeg_copy_critical_parameters(src, dst);
        ffi::jpeg_set_quality(dst, c_int::from(options.quality.clamp(1, 100)), 1);
        dst.optimize_coding = ffi::boolean::from(options.optimize_coding);
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
        ffi::jpeg_write_coefficients(dst, coefficients);
        ffi::jpeg_finish_compress(dst);
        ffi::jpeg_finish_decompress(src);
    })?;
    decoder.started = false;
    Ok(mem::take(&mut encoder.dest.out))
}
