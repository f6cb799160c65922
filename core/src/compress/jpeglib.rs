//! What the libjpeg-turbo decoder and encoder wrappers share (the copy inside `mozjpeg-sys`, built with its SIMD
//! code): libjpeg's fatal errors as Rust `Result`s, sorted into the kinds that decide what `compress` does next.
//!
//! libjpeg reports fatal errors by calling `error_exit`, which must not return: ours unwinds with the message
//! (`resume_unwind`, so no panic hook runs and nothing is printed), and every call into the library goes through
//! [`guard`], which turns that unwind back into an `Err`. Warnings (corrupt or truncated entropy-coded data, which
//! libjpeg decodes as far as it can) are not printed. Public so that the benchmark crate's DCT-domain experiment
//! drives libjpeg with the same error handling.

use std::any::Any;
use std::mem;
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use mozjpeg_sys as ffi;
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr};

/// What kind of failure a libjpeg error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Over the memory limit set on the decoder: the image is too large for its budget.
    OutOfMemory,
    /// A valid JPEG feature this build of libjpeg does not decode (arithmetic coding, 12-bit samples, lossless or
    /// hierarchical frames, a side over 65,500 px): another decoder may still read the file.
    Unsupported,
    /// Anything else: the stream is malformed or hostile; no other decoder is asked.
    Corrupt,
}

/// A libjpeg error: its message and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub kind: ErrorKind,
}

impl Error {
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error { message: message.into(), kind: ErrorKind::Corrupt }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The kind of a libjpeg message code (jerror.h).
fn kind_of(code: c_int) -> ErrorKind {
    match code {
        // Over `max_memory_to_use` (libjpeg then asks for backing store, which this build has not got).
        ffi::JERR_NO_BACKING_STORE | ffi::JERR_OUT_OF_MEMORY => ErrorKind::OutOfMemory,
        ffi::JERR_ARITH_NOTIMPL
        | ffi::JERR_BAD_PRECISION
        | ffi::JERR_SOF_UNSUPPORTED
        | ffi::JERR_NOT_COMPILED
        | ffi::JERR_NOTIMPL
        | ffi::JERR_CCIR601_NOTIMPL
        | ffi::JERR_FRACT_SAMPLE_NOTIMPL
        | ffi::JERR_CONVERSION_NOTIMPL
        | ffi::JERR_IMAGE_TOO_BIG
        | ffi::JERR_WIDTH_OVERFLOW => ErrorKind::Unsupported,
        _ => ErrorKind::Corrupt,
    }
}

fn from_payload(payload: Box<dyn Any + Send>) -> Error {
    match payload.downcast::<Error>() {
        Ok(e) => *e,
        Err(payload) => Error::corrupt(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "libjpeg failed".to_string()),
        ),
    }
}

/// Runs `f`, turning libjpeg's error exit (an unwind carrying an [`Error`]) into `Err`.
pub fn guard<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).map_err(from_payload)
}

/// Leaves the libjpeg call in progress with `error` (for callbacks such as a progress monitor).
pub fn exit_with(error: Error) -> ! {
    resume_unwind(Box::new(error))
}

unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    // SAFETY: `err` is the error manager installed by `error_manager`, alive as long as the struct. The binding
    // declares the message buffer `&[u8; 80]`, but libjpeg writes the message into it.
    type FormatMessage = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &mut [u8; 80]);
    let (format, code) = unsafe { ((*cinfo.err).format_message, (*cinfo.err).msg_code) };
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
    exit_with(Error { message, kind: kind_of(code) });
}

unsafe extern "C-unwind" fn silent(_cinfo: &mut jpeg_common_struct) {}

/// An error manager whose fatal errors unwind to [`guard`] and whose warnings are counted but not printed. Box
/// it for as long as the libjpeg struct points at it.
pub fn error_manager() -> Box<jpeg_error_mgr> {
    // SAFETY: jpeg_error_mgr is plain data; jpeg_std_error fills every field.
    let mut err: Box<jpeg_error_mgr> = Box::new(unsafe { mem::zeroed() });
    unsafe { ffi::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    // The standard emit_message counts warnings in `num_warnings` and prints the first through output_message.
    err.output_message = Some(silent);
    err
}
