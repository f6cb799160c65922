//! Status answers bounded in bytes whatever the request's size: a page of rows, and the inline output CSV.
//!
//! A Lambda response is at most 6 MB (6,291,456 bytes) of JSON, in which API Gateway's proxy integration carries the
//! body as one JSON string: escaping can grow it (`"` and `\` take 2 bytes, control characters up to 6), so both
//! bounds count bytes as escaped. The status function holds only what it answers plus one batch of rows read
//! ([`crate::ports::ROW_BATCH`]), so its memory does not grow with the request.

use std::io::Write;

use futures::TryStreamExt;

use super::cursor;
use super::status::{RowView, StatusReader};
use crate::csv_output::OutputCsv;
use crate::domain::{RequestKey, Row};
use crate::error::{Error, Result};

/// Most bytes of a status page's JSON body as it travels in Lambda's response (escaped once more): rows are added
/// while the page stays within it (a page holds at least one row: a row is at most about 310 KiB under the CSV
/// limits, 620 KiB escaped). 1 MiB below Lambda's limit leaves room for the headers.
pub const PAGE_BYTES: usize = 5 * 1024 * 1024;

/// Most bytes of an output CSV answered inline, counted as it travels in Lambda's response (JSON-escaped); a
/// larger one is a redirect to the stored CSV. 1 MiB below Lambda's limit leaves room for the headers.
pub const INLINE_CSV_BYTES: usize = 5 * 1024 * 1024;

/// Room for `nextCursor` in a page's size (a cursor is at most 36 characters).
const CURSOR_BYTES: usize = 64;

/// The length of `bytes` as a JSON string's contents, escaped the way serde_json escapes them.
pub fn json_escaped_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Bytes of `value` serialised as JSON and escaped once more as Lambda's response carries it, counted without
/// building them.
pub fn escaped_json_len(value: &impl serde::Serialize) -> Result<usize> {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += json_escaped_len(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_err(|e| Error::Corrupt(format!("JSON: {e}")))?;
    Ok(count.0)
}

/// A buffer that refuses to grow past `limit` bytes of escaped length.
struct Capped {
    bytes: Vec<u8>,
    escaped: usize,
    limit: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let escaped = self.escaped + json_escaped_len(bytes);
        if escaped > self.limit {
            self.over = true;
            return Err(std::io::Error::other("over the inline limit"));
        }
        self.escaped = escaped;
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl StatusReader<'_> {
    /// Up to `limit` rows after serial `after`, while the page stays within [`PAGE_BYTES`] with `header_bytes` of
    /// other fields; the cursor of the next page when rows remain. One query, read row by row.
    pub(super) async fn bounded_rows(
        &self,
        id: &RequestKey,
        after: Option<i64>,
        limit: i64,
        header_bytes: usize,
    ) -> Result<(Vec<RowView>, Option<String>)> {
        let expires_at = self.urls.expires_at();
        let mut bytes = header_bytes + CURSOR_BYTES;
        let mut views: Vec<RowView> = Vec::new();
        let mut last = after;
        let mut rows = self.rows.rows_after(id, after).await?;
        while let Some(row) = rows.try_next().await? {
            // A row beyond the page: there is a next page, after the last row shown.
            let next = || last.map(cursor::rows_after);
            if views.len() as i64 == limit {
                return Ok((views, next()));
            }
            let serial = row.serial_number;
            let view = self.row_view(row, expires_at).await?;
            let size = escaped_json_len(&view)? + 1;
            if !views.is_empty() && bytes + size > PAGE_BYTES {
                return Ok((views, next()));
            }
            bytes += size;
            views.push(view);
            last = Some(serial);
        }
        Ok((views, None))
    }

    /// The output CSV with downloadable URLs, built row by row; `None` once it passes [`INLINE_CSV_BYTES`] (what
    /// was built so far is dropped: it never holds more than the limit and one row).
    pub(super) async fn inline_csv(&self, id: &RequestKey) -> Result<Option<String>> {
        let mut capped = Capped { bytes: Vec::new(), escaped: 0, limit: INLINE_CSV_BYTES, over: false };
        let written = self.write_csv(id, &mut capped).await;
        if capped.over {
            // The writer's error is the cap refusing to grow, not a fault.
            return Ok(None);
        }
        written?;
        String::from_utf8(capped.bytes).map(Some).map_err(|e| Error::Corrupt(format!("output CSV: {e}")))
    }

    /// Writes the output CSV of `id` into `out`, row by row.
    async fn write_csv(&self, id: &RequestKey, out: &mut impl Write) -> Result<()> {
        let corrupt = |e: csv::Error| Error::Corrupt(format!("output CSV: {e}"));
        let mut csv = OutputCsv::new(out).map_err(corrupt)?;
        let mut rows = self.rows.rows_after(id, None).await?;
        while let Some(row) = rows.try_next().await? {
            let urls = self.csv_urls(&row).await?;
            csv.row(&row, &urls).map_err(corrupt)?;
        }
        csv.finish().map_err(corrupt)?;
        Ok(())
    }

    /// A row's downloadable output URLs, aligned with its inputs (empty where an image has no output).
    async fn csv_urls(&self, row: &Row) -> Result<Vec<String>> {
        let mut urls = Vec::with_capacity(row.images.len());
        for slot in &row.images {
            urls.push(match slot.output_key.as_deref() {
                Some(key) => self.urls.download(key).await?,
                None => String::new(),
            });
        }
        Ok(urls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_length_is_what_serde_json_writes() {
        let samples: [&[u8]; 5] = [
            b"plain ascii",
            b"\"quoted\", \\slashed\\",
            b"a\r\nb\tc\x08\x0c",
            b"\x00\x01\x1f\x7f",
            "na\u{ef}ve ✓".as_bytes(),
        ];
        for bytes in samples {
            let text = std::str::from_utf8(bytes).unwrap();
            let json = serde_json::to_string(text).unwrap();
            assert_eq!(json_escaped_len(bytes), json.len() - 2, "{json}");
        }
    }

    #[test]
    fn escaped_json_length_is_the_json_of_the_json() {
        let value = serde_json::json!({"a": "x\"y", "b": [1, 2, "\\"], "c": "\n\u{1}"});
        let twice = serde_json::to_string(&serde_json::to_string(&value).unwrap()).unwrap();
        assert_eq!(escaped_json_len(&value).unwrap(), twice.len() - 2, "{twice}");
    }

    #[test]
    fn capped_refuses_to_pass_its_limit_in_escaped_bytes() {
        let mut capped = Capped { bytes: Vec::new(), escaped: 0, limit: 10, over: false };
        capped.write_all(b"12345678").unwrap();
        capped.write_all(b"\"").expect("8 + 2 escaped bytes: at the limit");
        assert!(capped.write_all(b"x").is_err(), "one byte past the limit");
        assert!(capped.over);
        assert_eq!(capped.bytes, b"12345678\"");
    }
}
