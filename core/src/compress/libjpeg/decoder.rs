//! A small safe wrapper over libjpeg-turbo's decompressor: reads the header first (no pixel memory), then rows.
//! The structs are boxed so that the pointers libjpeg keeps between them stay valid, and destroyed on drop (also
//! after an error).

use std::mem;
use std::os::raw::{c_int, c_long, c_ulong};

use mozjpeg_sys as ffi;
use mozjpeg_sys::{J_COLOR_SPACE, jpeg_common_struct, jpeg_decompress_struct, jpeg_error_mgr, jpeg_progress_mgr};

use crate::compress::jpeglib::{Error, error_manager, exit_with, guard};

unsafe extern "C" {
    /// The C library's `free`, for the profile `jpeg_read_icc_profile` allocates with `malloc`.
    fn free(pointer: *mut std::ffi::c_void);
}

/// A progressive JPEG with more scans than this is refused: each scan is a pass over the whole coefficient buffer,
/// so a few kilobytes of crafted scans could otherwise keep a worker busy for minutes. (Encoders write about ten.)
const MAX_SCANS: c_int = 500;

const APP1: c_int = 0xe1;
const APP2: c_int = 0xe2;
const APP14: c_int = 0xee;

unsafe extern "C-unwind" fn limit_scans(cinfo: &mut jpeg_common_struct) {
    if cinfo.is_decompressor != 0 {
        // SAFETY: a decompressor's common struct is the first field of its jpeg_decompress_struct.
        let scans = unsafe { (*(cinfo as *mut jpeg_common_struct).cast::<jpeg_decompress_struct>()).input_scan_number };
        if scans > MAX_SCANS {
            exit_with(Error::corrupt(format!("more than {MAX_SCANS} progressive scans")));
        }
    }
}

/// The colour model of the pixels a JPEG decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::compress) enum Colour {
    Grey,
    Rgb,
    /// CMYK or YCCK (which libjpeg decodes to CMYK): decoded here when an ICC profile says what the inks look
    /// like, else left to the `image` crate's default conversion.
    Cmyk,
    /// An unusual component count: left to the `image` crate.
    Other,
}

/// A JPEG decoder over borrowed bytes. The header has been read when it exists.
pub(in crate::compress) struct Decoder<'a> {
    cinfo: Box<jpeg_decompress_struct>,
    _err: Box<jpeg_error_mgr>,
    _progress: Box<jpeg_progress_mgr>,
    _input: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Decoder<'a> {
    /// Reads the header (and keeps APP1 segments for the EXIF orientation); no pixel memory is allocated.
    pub fn new(input: &'a [u8]) -> Result<Self, Error> {
        // SAFETY: zeroed structs are what jpeg_CreateDecompress expects (it zeroes them itself too); the boxes keep
        // the error and progress managers at fixed addresses for as long as `cinfo` points at them.
        let mut decoder = Decoder {
            cinfo: Box::new(unsafe { mem::zeroed() }),
            _err: error_manager(),
            _progress: Box::new(unsafe { mem::zeroed() }),
            _input: std::marker::PhantomData,
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
            ffi::jpeg_save_markers(cinfo, APP2, 0xffff);
            ffi::jpeg_save_markers(cinfo, APP14, 12);
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
            J_COLOR_SPACE::JCS_CMYK | J_COLOR_SPACE::JCS_YCCK => Colour::Cmyk,
            _ => Colour::Other,
        }
    }

    /// The whole-image coefficient buffer libjpeg allocates for a progressive or multi-scan JPEG (2 bytes a
    /// coefficient, every component rounded up to whole MCUs, as `jinit_d_coef_controller` requests it); 0 for a
    /// single-scan JPEG, which libjpeg decodes an MCU row at a time.
    pub fn coefficient_bytes(&self) -> u64 {
        let cinfo = &*self.cinfo;
        // Valid once the header is read (as it is for every Decoder); libjpeg decides it from the first scan.
        let multiple = guard(|| unsafe { ffi::jpeg_has_multiple_scans(cinfo) }).unwrap_or(1);
        if multiple == 0 || cinfo.comp_info.is_null() {
            return 0;
        }
        // SAFETY: read_header allocated `num_components` entries.
        let components = unsafe { std::slice::from_raw_parts(cinfo.comp_info, cinfo.num_components as usize) };
        let round_up = |n: u32, m: c_int| u64::from(n.div_ceil(m.max(1) as u32) * m.max(1) as u32);
        components
            .iter()
            .map(|c| round_up(c.width_in_blocks, c.h_samp_factor) * round_up(c.height_in_blocks, c.v_samp_factor) * 128)
            .sum()
    }

    /// The saved segments of one kind (APP1, APP2, APP14), in file order.
    fn segments(&self, kind: c_int) -> impl Iterator<Item = &[u8]> {
        let mut marker = self.cinfo.marker_list;
        std::iter::from_fn(move || {
            while !marker.is_null() {
                // SAFETY: the saved-marker list lives in libjpeg's image pool until the decoder is destroyed.
                let m = unsafe { &*marker };
                marker = m.next;
                if c_int::from(m.marker) == kind && !m.data.is_null() {
                    return Some(unsafe { std::slice::from_raw_parts(m.data, m.data_length as usize) });
                }
            }
            None
        })
    }

    /// The TIFF structure of the first `Exif\0\0` APP1 segment.
    pub fn exif(&self) -> Option<&[u8]> {
        self.segments(APP1).find_map(|data| data.strip_prefix(b"Exif\0\0"))
    }

    /// The ICC profile of the APP2 `ICC_PROFILE` segments, reassembled in their numbered order by libjpeg
    /// (`jpeg_read_icc_profile`, which refuses a missing, repeated or misnumbered segment); `Err` says why a
    /// profile that is there cannot be used.
    pub fn icc_profile(&mut self) -> Result<Option<Vec<u8>>, String> {
        if !self.segments(APP2).any(|data| data.starts_with(b"ICC_PROFILE\0")) {
            return Ok(None);
        }
        let (mut data, mut len) = (std::ptr::null_mut::<u8>(), 0);
        let cinfo = &mut *self.cinfo;
        let found = guard(|| unsafe { ffi::jpeg_read_icc_profile(cinfo, &mut data, &mut len) }).unwrap_or(0);
        if found == 0 || data.is_null() {
            return Err("the APP2 ICC_PROFILE segments are inconsistent (missing, repeated or misnumbered)".into());
        }
        // SAFETY: libjpeg allocated `len` bytes with malloc and hands them over.
        let profile = unsafe { std::slice::from_raw_parts(data, len as usize) }.to_vec();
        unsafe { free(data.cast()) };
        Ok(Some(profile))
    }

    /// Whether CMYK samples are stored inverted (255 = no ink), as Adobe's APP14 marker says (Photoshop's
    /// convention, which other writers follow).
    pub fn inverted_cmyk(&self) -> bool {
        self.segments(APP14).any(|data| data.starts_with(b"Adobe"))
    }

    /// Caps libjpeg's own allocations (progressive coefficient buffers, row buffers); over it, decoding fails with
    /// [`ErrorKind::OutOfMemory`](crate::compress::jpeglib::ErrorKind::OutOfMemory).
    pub fn set_memory_limit(&mut self, bytes: u64) {
        // SAFETY: `mem` is set by jpeg_create_decompress.
        unsafe { (*self.cinfo.common.mem).max_memory_to_use = c_long::try_from(bytes).unwrap_or(c_long::MAX) };
    }

    /// Starts decoding to 8-bit grey, RGB or CMYK rows (the colour must not be `Other`).
    pub fn start(&mut self) -> Result<(), Error> {
        self.cinfo.out_color_space = match self.colour() {
            Colour::Grey => J_COLOR_SPACE::JCS_GRAYSCALE,
            Colour::Cmyk => J_COLOR_SPACE::JCS_CMYK,
            _ => J_COLOR_SPACE::JCS_RGB,
        };
        let cinfo = &mut *self.cinfo;
        guard(|| unsafe { ffi::jpeg_start_decompress(cinfo) })?;
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
                        exit_with(Error::corrupt("the decoder stopped before the last row"));
                    }
                    done += read;
                }
            }
        })
    }

    /// Reads to the end of the image (after the last row), so that trailing corruption shows up as warnings.
    pub fn finish(&mut self) -> Result<(), Error> {
        let cinfo = &mut *self.cinfo;
        guard(|| unsafe { ffi::jpeg_finish_decompress(cinfo) })?;
        Ok(())
    }
}

impl Drop for Decoder<'_> {
    fn drop(&mut self) {
        // SAFETY: destroying is valid in any state, including after an error exit.
        let cinfo = &mut *self.cinfo;
        let _ = guard(|| unsafe { ffi::jpeg_destroy_decompress(cinfo) });
    }
}
