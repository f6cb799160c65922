//! The output CSV: the input columns plus the output image URLs (aligned with the inputs) and per-image errors.

use crate::csv_input::{COL_PRODUCT, COL_SERIAL, COL_URLS};
use crate::domain::ImageState;
use crate::model::{ImageSlot, RowDoc};

pub const COL_OUTPUT_URLS: &str = "Output Image Urls";
pub const COL_ERRORS: &str = "Errors";

/// Neutralises spreadsheet formulas: a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`.
pub fn escape_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// The output URL of every image of the row, in input order; an image without output gives an empty string.
pub fn output_urls(row: &RowDoc) -> Vec<String> {
    row.slots().into_iter().map(|slot| slot.and_then(|s| s.output_url.clone()).unwrap_or_default()).collect()
}

/// What a caller is told about a failed image: its reason's message (documents written before reasons existed
/// keep their stored text).
pub fn failure_message(slot: &ImageSlot) -> &str {
    match slot.reason {
        Some(reason) => reason.message(),
        None => slot.error.as_deref().unwrap_or("failed"),
    }
}

/// `"<image number>: <reason>"` for each failed image of the row (image numbers are 1-based).
pub fn image_errors(row: &RowDoc) -> Vec<String> {
    row.slots()
        .into_iter()
        .enumerate()
        .filter_map(|(i, slot)| {
            let slot = slot?;
            (slot.state == ImageState::Failed).then(|| format!("image {}: {}", i + 1, failure_message(slot)))
        })
        .collect()
}

/// Writes rows (already in serial order) as RFC 4180 CSV, with each row's stored output URLs.
pub fn write_csv(rows: &[RowDoc]) -> Result<Vec<u8>, csv::Error> {
    write_csv_with(rows, output_urls)
}

/// [`write_csv`] with the output URLs of each row given by `urls` (e.g. presigned ones).
pub fn write_csv_with(rows: &[RowDoc], mut urls: impl FnMut(&RowDoc) -> Vec<String>) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    writer.write_record([COL_SERIAL, COL_PRODUCT, COL_URLS, COL_OUTPUT_URLS, COL_ERRORS])?;
    for row in rows {
        writer.write_record([
            row.serial_number.to_string().as_str(),
            &escape_formula(&row.product_name),
            &escape_formula(&row.input_image_urls.join(",")),
            &escape_formula(&urls(row).join(",")),
            &escape_formula(&image_errors(row).join("; ")),
        ])?;
    }
    writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RequestId;
    use mongodb::bson::DateTime;

    fn row() -> RowDoc {
        let mut images = std::collections::BTreeMap::new();
        images.insert(
            "0".into(),
            ImageSlot {
                state: ImageState::Succeeded,
                output_url: Some("http://o/1.jpg".into()),
                ..ImageSlot::pending()
            },
        );
        images.insert(
            "1".into(),
            ImageSlot { state: ImageState::Failed, error: Some("HTTP 404".into()), ..ImageSlot::pending() },
        );
        images.insert(
            "2".into(),
            ImageSlot {
                state: ImageState::Succeeded,
                output_url: Some("http://o/3.jpg".into()),
                ..ImageSlot::pending()
            },
        );
        RowDoc {
            request_id: RequestId::new(),
            serial_number: 1,
            product_name: "=HYPERLINK(\"x\"), \"quoted\"".into(),
            input_image_urls: vec!["http://i/1.jpg".into(), "http://i/2.jpg".into(), "http://i/3.jpg".into()],
            output_image_urls: vec![],
            created_at: DateTime::now(),
            completed_at: None,
            images,
            total_images: 3,
            settled_images: 3,
            failed_images: 1,
        }
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
        assert_eq!(&rec[4], "image 2: HTTP 404");
    }
}
