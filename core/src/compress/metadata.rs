//! What an output may carry besides its pixels, when the configuration asks. By default nothing: a plain sRGB JPEG
//! (browsers assume sRGB for an untagged image) without EXIF, XMP, IPTC, ICC or comment segments.
//!
//! - `embed_srgb_profile` (`IMGPIPE_EMBED_SRGB_PROFILE`): a compact sRGB ICC profile in APP2, for viewers that do
//!   not assume sRGB. It is `moxcms`'s own sRGB description, encoded once per process by `moxcms`: 600 bytes,
//!   ICC version 4.3, matrix and parametric curves.
//! - `keep_copyright` (`IMGPIPE_KEEP_COPYRIGHT`): the input's EXIF Artist and Copyright fields, and nothing else,
//!   in a minimal EXIF APP1 written by `kamadak-exif` (imgproxy's default). GPS, camera serial numbers, dates, the
//!   thumbnail, XMP, IPTC and comments are still dropped. Read from the JPEG APP1, PNG `eXIf` or WebP `EXIF` chunk,
//!   or a TIFF's first IFD; a value that is not text, or a block that cannot be parsed, keeps nothing (logged).

use std::io::Cursor;
use std::sync::LazyLock;

use exif::{Field, In, Tag, Value};

/// What goes into an output besides its pixels; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// Embed a compact sRGB ICC profile (APP2).
    pub embed_srgb_profile: bool,
    /// Keep the input's EXIF Artist and Copyright fields (a minimal EXIF APP1 with those tags only).
    pub keep_copyright: bool,
}

/// The most an APP1 segment holds (its 16-bit length counts itself).
const MAX_APP1_PAYLOAD: usize = 65_533;

/// The embedded sRGB profile, encoded once; `None` if `moxcms` could not encode it (logged).
pub(super) fn srgb_profile() -> Option<&'static [u8]> {
    static PROFILE: LazyLock<Option<Vec<u8>>> = LazyLock::new(|| {
        let mut srgb = moxcms::ColorProfile::new_srgb();
        // The CICP tag belongs to ICC 4.4; the curves say the same to every reader of 4.3.
        srgb.cicp = None;
        srgb.encode().map_err(|e| tracing::error!(error = %e, "the sRGB profile could not be encoded")).ok()
    });
    PROFILE.as_deref()
}

/// The EXIF APP1 payload (`Exif\0\0` and a TIFF structure) holding only the Artist and Copyright fields of `exif`
/// (a TIFF structure, with or without the `Exif\0\0` header some writers put in PNG and WebP chunks); `None` when
/// it has neither.
pub(super) fn copyright_exif(exif: Option<&[u8]>) -> Option<Vec<u8>> {
    let exif = exif?;
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let (fields, little_endian) = match exif::parse_exif(tiff) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::warn!(error = %e, "EXIF unreadable; no copyright or artist kept");
            return None;
        }
    };
    let kept: Vec<&Field> = fields
        .iter()
        .filter(|f| f.ifd_num == In::PRIMARY && matches!(f.tag, Tag::Artist | Tag::Copyright))
        .filter(|f| match f.value {
            Value::Ascii(_) => true,
            _ => {
                tracing::warn!(tag = %f.tag, "EXIF field is not text; not kept");
                false
            }
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    let mut writer = exif::experimental::Writer::new();
    for field in &kept {
        writer.push_field(field);
    }
    let mut tiff = Cursor::new(Vec::new());
    if let Err(e) = writer.write(&mut tiff, little_endian) {
        tracing::warn!(error = %e, "EXIF copyright and artist could not be written; not kept");
        return None;
    }
    let payload = [&b"Exif\0\0"[..], tiff.get_ref()].concat();
    if payload.len() > MAX_APP1_PAYLOAD {
        tracing::warn!(bytes = payload.len(), "EXIF copyright and artist do not fit an APP1 segment; not kept");
        return None;
    }
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian TIFF structure with IFD0 entries (tag, type, count, inline value or offset) and `data` after
    /// the IFD.
    fn tiff(entries: &[(u16, u16, u32, u32)], data: &[u8]) -> Vec<u8> {
        let mut t = b"II*\0\x08\0\0\0".to_vec();
        t.extend((entries.len() as u16).to_le_bytes());
        for (tag, kind, count, value) in entries {
            t.extend(tag.to_le_bytes());
            t.extend(kind.to_le_bytes());
            t.extend(count.to_le_bytes());
            t.extend(value.to_le_bytes());
        }
        t.extend(0u32.to_le_bytes());
        t.extend(data);
        t
    }

    #[test]
    fn nothing_kept_without_the_fields_or_from_broken_exif() {
        assert_eq!(copyright_exif(None), None);
        assert_eq!(copyright_exif(Some(b"Exif\0\0II*\0\xff\xff\xff\xff")), None);
        // Make ("ABC") only.
        assert_eq!(copyright_exif(Some(&tiff(&[(0x010f, 2, 4, u32::from_le_bytes(*b"ABC\0"))], &[]))), None);
        // Artist stored as a LONG: not text.
        assert_eq!(copyright_exif(Some(&tiff(&[(0x013b, 4, 1, 7)], &[]))), None);
    }

    #[test]
    fn the_srgb_profile_is_compact() {
        let profile = srgb_profile().unwrap();
        assert!(profile.len() <= 1024, "{} bytes", profile.len());
        assert_eq!(&profile[36..40], b"acsp");
    }
}
