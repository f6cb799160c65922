//! The output CSV: the input columns plus the output image URLs (aligned with the inputs) and per-image errors.

use crate::csv_input::{COL_PRODUCT, COL_SERIAL, COL_URLS};
use crate::domain::Row;

pub const COL_OUTPUT_URLS: &str = "Output Image Urls";
pub const COL_ERRORS: &str = "Errors";

/// Neutralises spreadsheet formulas: a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`.
pub fn escape_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Writes rows (already in serial order) as RFC 4180 CSV, with each row's stored output URLs.
pub fn write_csv(rows: &[Row]) -> Result<Vec<u8>, csv::Error> {
    write_csv_with(rows, Row::output_urls)
}

/// [`write_csv`] with the output URLs of each row given by `urls` (e.g. presigned ones).
pub fn write_csv_with(rows: &[Row], mut urls: impl FnMut(&Row) -> Vec<String>) -> Result<Vec<u8>, csv::Error> {
    let mut csv = OutputCsv::new(Vec::new())?;
    for row in rows {
        csv.row(row, &urls(row))?;
    }
    csv.finish()
}

/// The output CSV written row by row into `W` (the header first), so that it can be built page by page.
pub struct OutputCsv<W: std::io::Write> {
    writer: csv::Writer<W>,
}

impl<W: std::io::Write> OutputCsv<W> {
    /// Starts the CSV with its header.
    pub fn new(out: W) -> Result<Self, csv::Error> {
        let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
        writer.write_record([COL_SERIAL, COL_PRODUCT, COL_URLS, COL_OUTPUT_URLS, COL_ERRORS])?;
        Ok(Self { writer })
    }

    /// Appends `row` with its output URLs `urls` (aligned with its inputs).
    pub fn row(&mut self, row: &Row, urls: &[String]) -> Result<(), csv::Error> {
        self.writer.write_record([
            row.serial_number.to_string().as_str(),
            &escape_formula(&row.product_name),
            &escape_formula(&row.input_image_urls.join(",")),
            &escape_formula(&urls.join(",")),
            &escape_formula(&row.image_errors().join("; ")),
        ])
    }

    /// Flushes the CSV and hands back its writer.
    pub fn finish(self) -> Result<W, csv::Error> {
        self.writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ImageResult, ImageSlot, ImageState, RequestId, RequestKey, Timestamp};
    use crate::failure::FailureReason;

    fn row() -> Row {
        let inputs = vec!["http://i/1.jpg".into(), "http://i/2.jpg".into(), "http://i/3.jpg".into()];
        let mut row = Row::new(
            &RequestKey::new(&crate::domain::TenantId::parse("acme").unwrap(), &RequestId::new()),
            1,
            "=HYPERLINK(\"x\"), \"quoted\"".into(),
            inputs,
            Timestamp::now(),
        );
        let ok = |url: &str| ImageSlot {
            state: ImageState::Succeeded,
            output_url: Some(url.into()),
            ..ImageSlot::pending()
        };
        row.images = vec![
            ok("http://o/1.jpg"),
            ImageSlot::settled(&ImageResult::Failed { reason: FailureReason::HttpStatus }),
            ok("http://o/3.jpg"),
        ];
        row.settled_images = 3;
        row.failed_images = 1;
        row
    }

    #[test]
    fn output_is_aligned_quoted_and_formula_safe() {
        let bytes = write_csv(&[row()]).unwrap();
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(reader.headers().unwrap(), vec![COL_SERIAL, COL_PRODUCT, COL_URLS, COL_OUTPUT_URLS, COL_ERRORS]);
        let rec = reader.records().next().unwrap().unwrap();
        assert_eq!(&rec[0], "1");
        assert_eq!(&rec[1], "'=HYPERLINK(\"x\"), \"quoted\"");
        assert_eq!(&rec[2], "http://i/1.jpg,http://i/2.jpg,http://i/3.jpg");
        assert_eq!(&rec[3], "http://o/1.jpg,,http://o/3.jpg");
        assert_eq!(&rec[4], format!("image 2: {}", FailureReason::HttpStatus.message()));
    }
}
