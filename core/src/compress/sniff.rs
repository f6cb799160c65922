//! The format comes from the bytes (never the URL or the Content-Type). Bodies that are not an accepted image are
//! refused here, named (SVG, HTML, XML, JSON, text, PDF, HEIC…) so that the recorded failure reason says what the
//! URL really served.

use image::ImageFormat;

use super::CompressError;

const SUPPORTED: [ImageFormat; 6] =
    [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Gif, ImageFormat::Bmp, ImageFormat::Tiff];

/// The accepted image format `input` starts with, or why it is not one.
pub(super) fn sniff(input: &[u8]) -> Result<ImageFormat, CompressError> {
    let Ok(format) = image::guess_format(input) else {
        return Err(identify_non_image(input));
    };
    if !SUPPORTED.contains(&format) {
        return Err(CompressError::Unsupported(format!("{format:?}").to_uppercase()));
    }
    Ok(format)
}

/// The dimensions a header declares, for formats whose decoder refuses some large ones before reporting them.
pub(super) fn declared_dimensions(format: ImageFormat, input: &[u8]) -> Option<(u32, u32)> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(input.get(at..at + 4)?.try_into().ok()?));
    let u16_at = |at: usize| Some(u16::from_le_bytes(input.get(at..at + 2)?.try_into().ok()?));
    match format {
        // BITMAPCOREHEADER (12 bytes) has 16-bit sides; the later headers signed 32-bit ones (negative height:
        // top-down rows).
        ImageFormat::Bmp if u32_at(14)? == 12 => Some((u32::from(u16_at(18)?), u32::from(u16_at(20)?))),
        ImageFormat::Bmp => Some(((u32_at(18)? as i32).unsigned_abs(), (u32_at(22)? as i32).unsigned_abs())),
        // An extended WebP whose canvas (24-bit sides) has more than u32::MAX pixels.
        ImageFormat::WebP if input.get(12..16)? == b"VP8X" => {
            let side = |at: usize| Some((u32_at(at)? & 0x00ff_ffff) + 1);
            Some((side(24)?, side(27)?))
        }
        _ => None,
    }
}

/// Names what a body without a supported image signature is, for the failure reason.
fn identify_non_image(input: &[u8]) -> CompressError {
    let not_an_image = |what: &str| CompressError::NotAnImage(what.to_string());
    if input.is_empty() {
        return not_an_image("the body is empty");
    }
    if input.starts_with(b"%PDF-") {
        return not_an_image("a PDF document");
    }
    if input.starts_with(&[0xff, 0x0a]) || input.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return CompressError::Unsupported("JPEG XL".to_string());
    }
    if input.get(4..8) == Some(b"ftyp") {
        // ISO base media: the major brand, then the compatible brands up to the end of the `ftyp` box.
        let end = input.len().min(u32::from_be_bytes(input[..4].try_into().unwrap_or_default()) as usize);
        let brands: Vec<&[u8]> = input.get(8..end).unwrap_or_default().chunks_exact(4).collect();
        return if brands.iter().any(|b| matches!(*b, b"avif" | b"avis")) {
            CompressError::Unsupported("AVIF".to_string())
        } else if brands
            .iter()
            .any(|b| matches!(*b, b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1"))
        {
            CompressError::Unsupported("HEIC/HEIF".to_string())
        } else {
            not_an_image("a video or other ISO media file")
        };
    }

    let text = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let text = text[..text.len().min(64 << 10)].trim_ascii_start();
    match text.first() {
        Some(b'<') => not_an_image(markup_kind(text)),
        Some(b'{' | b'[') => not_an_image("JSON data"),
        _ if looks_like_text(text) => not_an_image("plain text"),
        _ => not_an_image("unknown data (no image signature)"),
    }
}

/// Skips the XML declaration, processing instructions, comments and the doctype, and names the document by its
/// doctype or root element.
fn markup_kind(mut s: &[u8]) -> &'static str {
    const SVG: &str = "an SVG document (vector images are not accepted)";
    const HTML: &str = "an HTML page";
    const XML: &str = "an XML document";
    let skip_past = |s: &[u8], end: &[u8]| s.windows(end.len()).position(|w| w == end).map(|i| i + end.len());
    loop {
        s = s.trim_ascii_start();
        let skipped = if s.starts_with(b"<?") {
            skip_past(s, b"?>")
        } else if s.starts_with(b"<!--") {
            skip_past(s, b"-->")
        } else if s.len() >= 9 && s[..9].eq_ignore_ascii_case(b"<!doctype") {
            let name = s[9..].trim_ascii_start();
            if starts_with_ignore_case(name, b"svg") {
                return SVG;
            }
            if starts_with_ignore_case(name, b"html") {
                return HTML;
            }
            skip_past(s, b">")
        } else {
            break;
        };
        match skipped {
            Some(i) => s = &s[i..],
            // Cut inside a comment or declaration: look for the usual root elements anywhere.
            None => {
                let lower = s.to_ascii_lowercase();
                let contains = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
                return if contains(b"<svg") {
                    SVG
                } else if contains(b"<html") {
                    HTML
                } else {
                    XML
                };
            }
        }
    }
    let name: Vec<u8> = s
        .iter()
        .skip(1)
        .take_while(|b| !b.is_ascii_whitespace() && !matches!(b, b'>' | b'/'))
        .map(u8::to_ascii_lowercase)
        .collect();
    let local = name.rsplit(|&b| b == b':').next().unwrap_or_default();
    match local {
        b"svg" => SVG,
        b"html" | b"head" | b"body" | b"title" | b"meta" | b"link" | b"script" | b"style" | b"div" | b"p" => HTML,
        _ => XML,
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// UTF-8 without control characters other than whitespace, judged on the first 512 bytes.
fn looks_like_text(s: &[u8]) -> bool {
    let head = &s[..s.len().min(512)];
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A character cut by the 512-byte window is fine; an invalid sequence is not.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        Err(_) => return false,
    };
    valid.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_images_are_named() {
        let kind = |input: &[u8]| match sniff(input) {
            Err(CompressError::NotAnImage(m) | CompressError::Unsupported(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(kind(b"<html><body>hi</body></html>").contains("HTML"));
        assert!(kind(b"<svg xmlns='http://www.w3.org/2000/svg'/>").contains("SVG"));
        assert!(kind(b"<svg:svg xmlns:svg='http://www.w3.org/2000/svg'/>").contains("SVG"));
        assert!(kind(b"<?xml version='1.0'?><!-- unterminated").contains("XML"));
        assert!(kind(b"<!DOCTYPE note><note/>").contains("XML"));
        assert!(kind(b"caf\xc3\xa9 not found").contains("text"));
        assert!(kind(b"hello").contains("text"));
        assert!(kind(b"\x00\x01\x02\x03").contains("unknown"));
        assert!(kind(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom").contains("video"));
    }
}
