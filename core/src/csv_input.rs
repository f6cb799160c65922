//! The CSV contract: parse an uploaded file into validated [`ProductRow`]s, reporting every bad row.

use std::collections::HashMap;

use serde::Serialize;

use crate::domain::{ImageUrl, ProductRow};

/// Most row errors listed in one rejection; `total` still counts all of them.
pub const MAX_LISTED_ERRORS: usize = 100;

/// Limits applied while parsing. Every value that ends up in an SQS message or a MongoDB document is capped
/// here, before anything is written, so an oversized cell is a row error and never a failed write later.
#[derive(Debug, Clone, Copy)]
pub struct CsvLimits {
    pub max_rows: usize,
    pub max_urls_per_row: usize,
    /// Longest image URL, in characters of its normalised form (ASCII, so also bytes): it travels in one SQS
    /// message per image and is stored in `RequestData`.
    pub max_url_chars: usize,
    /// Longest product name, in UTF-8 bytes (after trimming).
    pub max_product_name_bytes: usize,
    /// Largest row, in bytes of its cells: bounds the row's `RequestData` document far below MongoDB's 16 MiB.
    pub max_row_bytes: usize,
}

/// Ceiling on a configured URL limit: one image message (URL plus under 300 bytes of JSON) must stay far below
/// SQS's 256 KiB message limit.
pub const MAX_URL_CHARS_CEILING: usize = 64 * 1024;

impl CsvLimits {
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            max_rows: config.max_rows,
            max_urls_per_row: config.max_urls_per_row,
            max_url_chars: config.max_url_chars.min(MAX_URL_CHARS_CEILING),
            max_product_name_bytes: config.max_product_name_bytes,
            max_row_bytes: config.max_row_bytes,
        }
    }
}

/// One problem found in the file, located by 1-based line and column name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RowError {
    pub line: u64,
    pub column: String,
    pub value: String,
    pub message: String,
}

/// A rejected CSV: the first [`MAX_LISTED_ERRORS`] errors in file order, and how many there were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("the CSV has {total} error(s)")]
pub struct CsvRejection {
    pub errors: Vec<RowError>,
    pub total: usize,
}

pub const COL_SERIAL: &str = "S. No.";
pub const COL_PRODUCT: &str = "Product Name";
pub const COL_URLS: &str = "Input Image Urls";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Column {
    Serial,
    Product,
    Urls,
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::Serial => COL_SERIAL,
            Column::Product => COL_PRODUCT,
            Column::Urls => COL_URLS,
        }
    }

    /// Header names are compared lower-cased with everything but letters and digits removed.
    fn from_header(raw: &str) -> Option<Self> {
        let key: String = raw.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
        match key.as_str() {
            "sno" | "serialnumber" | "serialno" | "serial" => Some(Column::Serial),
            "productname" | "product" => Some(Column::Product),
            "inputimageurls" | "inputimageurl" | "imageurls" => Some(Column::Urls),
            _ => None,
        }
    }
}

struct Collector {
    errors: Vec<RowError>,
    total: usize,
}

impl Collector {
    fn push(&mut self, line: u64, column: &str, value: &str, message: impl Into<String>) {
        self.total += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            let mut value = value.to_string();
            if value.len() > 200 {
                let cut = (0..=200).rev().find(|&i| value.is_char_boundary(i)).unwrap_or(0);
                value.truncate(cut);
                value.push('…');
            }
            self.errors.push(RowError { line, column: column.to_string(), value, message: message.into() });
        }
    }
}

/// 1-based line numbers of records. The `csv` crate's own line counter drifts on blank lines and CRLF, so the
/// line is computed from the record's byte offset, skipping the line terminators that precede it.
struct Lines<'a> {
    input: &'a [u8],
    newlines: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input, newlines: input.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect() }
    }

    fn of(&self, position: Option<&csv::Position>) -> u64 {
        let Some(position) = position else { return 0 };
        let mut at = position.byte() as usize;
        while at < self.input.len() && matches!(self.input[at], b'\r' | b'\n') {
            at += 1;
        }
        (self.newlines.partition_point(|&n| n < at) + 1) as u64
    }
}

fn field_str(record: &csv::ByteRecord, i: usize) -> Result<&str, ()> {
    std::str::from_utf8(record.get(i).unwrap_or_default()).map_err(|_| ())
}

/// Parses and validates a whole CSV. Either every row is good, or every bad row is reported.
pub fn parse_csv(input: &[u8], limits: CsvLimits) -> Result<Vec<ProductRow>, CsvRejection> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let lines = Lines::new(input);
    let mut errs = Collector { errors: Vec::new(), total: 0 };
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut records = reader.byte_records();

    // Header: the first non-blank record.
    let mut order: Vec<Column> = Vec::new();
    let header = loop {
        match records.next() {
            None => {
                errs.push(1, "", "", "the file is empty: expected a header `S. No.,Product Name,Input Image Urls`");
                return Err(CsvRejection { errors: errs.errors, total: errs.total });
            }
            Some(Err(e)) => {
                errs.push(lines.of(e.position()).max(1), "", "", format!("unreadable CSV: {e}"));
                return Err(CsvRejection { errors: errs.errors, total: errs.total });
            }
            Some(Ok(r)) if r.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) => continue,
            Some(Ok(r)) => break r,
        }
    };
    let header_line = lines.of(header.position()).max(1);
    for (i, raw) in header.iter().enumerate() {
        let raw = String::from_utf8_lossy(raw);
        if raw.trim().is_empty() && i >= 3 {
            continue; // trailing empty header cells (a stray comma) are harmless
        }
        match Column::from_header(&raw) {
            Some(c) if !order.contains(&c) => order.push(c),
            Some(c) => errs.push(header_line, c.name(), &raw, "duplicate column"),
            None => errs.push(
                header_line,
                &format!("column {}", i + 1),
                &raw,
                "unknown column: expected `S. No.`, `Product Name` and `Input Image Urls`",
            ),
        }
    }
    for c in [Column::Serial, Column::Product, Column::Urls] {
        if !order.contains(&c) {
            errs.push(header_line, c.name(), "", "missing column");
        }
    }
    if errs.total > 0 {
        return Err(CsvRejection { errors: errs.errors, total: errs.total });
    }
    let url_col = order.iter().position(|&c| c == Column::Urls).expect("checked above");

    let mut rows = Vec::new();
    let mut seen: HashMap<i64, u64> = HashMap::new();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errs.push(lines.of(e.position()), "", "", format!("unreadable CSV: {e}"));
                break;
            }
        };
        let line = lines.of(record.position());
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue; // blank line, or a line of empty cells
        }
        let before = errs.total;
        let row_bytes = record.as_slice().len();
        if row_bytes > limits.max_row_bytes {
            // Located at the row's largest cell (cells past the header are spilled URLs).
            let largest = (0..record.len()).max_by_key(|&i| record.get(i).map_or(0, <[u8]>::len)).unwrap_or(0);
            let column = order.get(largest).map_or(COL_URLS, |c| c.name());
            let message = format!("the row is {row_bytes} bytes; at most {} bytes per row", limits.max_row_bytes);
            errs.push(line, column, "", message);
            continue;
        }
        let mut serial = None;
        let mut product = None;
        let mut urls: Vec<ImageUrl> = Vec::new();
        let mut url_texts: Vec<String> = Vec::new();

        for (i, &column) in order.iter().enumerate() {
            let Ok(value) = field_str(&record, i) else {
                errs.push(line, column.name(), "", "not valid UTF-8");
                continue;
            };
            match column {
                Column::Serial => {
                    let t = value.trim();
                    let t = t.strip_suffix('.').unwrap_or(t).trim();
                    match t.parse::<i64>() {
                        Ok(n) if n > 0 => serial = Some(n),
                        _ => errs.push(line, column.name(), value, "serial number must be a positive integer"),
                    }
                }
                Column::Product => {
                    let t = value.trim();
                    if t.is_empty() {
                        errs.push(line, column.name(), value, "product name is required");
                    } else if t.len() > limits.max_product_name_bytes {
                        let message = format!(
                            "product name is {} bytes; at most {} bytes",
                            t.len(),
                            limits.max_product_name_bytes
                        );
                        errs.push(line, column.name(), value, message);
                    } else {
                        product = Some(t.to_string());
                    }
                }
                Column::Urls => url_texts.extend(value.split(',').map(str::to_string)),
            }
        }
        // An unquoted URL list spills into extra columns: those cells are more URLs of this row.
        if record.len() > order.len() {
            if url_col + 1 != order.len() {
                errs.push(
                    line,
                    COL_URLS,
                    "",
                    format!("row has {} cells but the header has {}; quote the URL list", record.len(), order.len()),
                );
            } else {
                for i in order.len()..record.len() {
                    match field_str(&record, i) {
                        Ok(v) => url_texts.extend(v.split(',').map(str::to_string)),
                        Err(()) => errs.push(line, COL_URLS, "", "not valid UTF-8"),
                    }
                }
            }
        }
        for text in url_texts.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            // The raw text is checked first so that a huge cell is never parsed; the normalised form (what is
            // queued and stored) can be longer than the raw text (percent-encoding), so it is checked too.
            let too_long = |n: usize| format!("image URL is {n} characters; at most {}", limits.max_url_chars);
            let chars = text.chars().count();
            if chars > limits.max_url_chars {
                errs.push(line, COL_URLS, text, too_long(chars));
                continue;
            }
            match ImageUrl::parse(text) {
                Ok(u) if u.as_str().len() > limits.max_url_chars => {
                    errs.push(line, COL_URLS, text, too_long(u.as_str().len()));
                }
                Ok(u) => urls.push(u),
                Err(e) => errs.push(line, COL_URLS, text, format!("invalid image URL: {e}")),
            }
        }
        if urls.is_empty() && errs.total == before {
            errs.push(line, COL_URLS, "", "at least one image URL is required");
        }
        if urls.len() > limits.max_urls_per_row {
            errs.push(
                line,
                COL_URLS,
                "",
                format!("{} image URLs; at most {} per row", urls.len(), limits.max_urls_per_row),
            );
        }
        if let Some(n) = serial
            && let Some(first) = seen.insert(n, line)
        {
            errs.push(line, COL_SERIAL, &n.to_string(), format!("duplicate serial number (first on line {first})"));
            seen.insert(n, first);
        }
        if errs.total == before
            && let (Some(serial_number), Some(product_name)) = (serial, product)
        {
            rows.push(ProductRow { line, serial_number, product_name, input_image_urls: urls });
        }
        if seen.len() > limits.max_rows {
            errs.push(line, "", "", format!("too many rows: at most {}", limits.max_rows));
            break;
        }
    }
    if errs.total == 0 && rows.is_empty() {
        errs.push(header_line, "", "", "the file has a header but no product rows");
    }
    if errs.total > 0 {
        return Err(CsvRejection { errors: errs.errors, total: errs.total });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CsvLimits = CsvLimits {
        max_rows: 1000,
        max_urls_per_row: 10,
        max_url_chars: 2048,
        max_product_name_bytes: 256,
        max_row_bytes: 64 * 1024,
    };

    fn urls(row: &ProductRow) -> Vec<&str> {
        row.input_image_urls.iter().map(ImageUrl::as_str).collect()
    }

    #[test]
    fn parses_the_documented_example() {
        let csv = "S. No.,Product Name,Input Image Urls\n\
                   1,SKU1,\"https://a.example/1.jpg,https://a.example/2.jpg\"\n\
                   2,SKU2,https://a.example/3.png\n";
        let rows = parse_csv(csv.as_bytes(), LIMITS).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].serial_number, rows[0].product_name.as_str(), rows[0].line), (1, "SKU1", 2));
        assert_eq!(urls(&rows[0]), ["https://a.example/1.jpg", "https://a.example/2.jpg"]);
        assert_eq!(urls(&rows[1]), ["https://a.example/3.png"]);
    }

    #[test]
    fn accepts_spreadsheet_quirks() {
        let csv = "\u{feff}serial number , PRODUCT NAME,inputImageUrls\r\n\r\n 1. ,\"Shoe, \"\"red\"\"\",\"https://a.example/1.jpg, https://a.example/2.jpg\"\r\n,,\r\n2,Hat,https://a.example/3.jpg,https://a.example/4.jpg\r\n";
        let rows = parse_csv(csv.as_bytes(), LIMITS).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].serial_number, 1);
        assert_eq!(rows[0].product_name, "Shoe, \"red\"");
        assert_eq!(urls(&rows[0]), ["https://a.example/1.jpg", "https://a.example/2.jpg"]);
        // unquoted URL list spilled into a fourth column: kept, not dropped
        assert_eq!(urls(&rows[1]), ["https://a.example/3.jpg", "https://a.example/4.jpg"]);
        assert_eq!((rows[0].line, rows[1].line), (3, 5));
    }

    #[test]
    fn reports_every_bad_row_with_line_and_column() {
        let csv = "S. No.,Product Name,Input Image Urls\n\
                   x,A,https://a.example/1.jpg\n\
                   2,,https://a.example/1.jpg\n\
                   3,C,ftp://a.example/1.jpg\n\
                   3,D,https://a.example/2.jpg\n\
                   5,E,\n";
        let err = parse_csv(csv.as_bytes(), LIMITS).unwrap_err();
        let got: Vec<(u64, &str)> = err.errors.iter().map(|e| (e.line, e.column.as_str())).collect();
        assert_eq!(got, [(2, COL_SERIAL), (3, COL_PRODUCT), (4, COL_URLS), (5, COL_SERIAL), (6, COL_URLS)]);
        assert_eq!(err.total, 5);
        assert_eq!(err.errors[3].message, "duplicate serial number (first on line 4)");
    }

    #[test]
    fn rejects_bad_headers_and_empty_files() {
        assert_eq!(parse_csv(b"", LIMITS).unwrap_err().errors[0].line, 1);
        let err = parse_csv(b"id,name\n1,a\n", LIMITS).unwrap_err();
        assert_eq!(err.total, 5, "{err:?}"); // two unknown columns, three missing
        let err = parse_csv(b"S. No.,Product Name,Input Image Urls\n", LIMITS).unwrap_err();
        assert!(err.errors[0].message.contains("no product rows"));
    }

    #[test]
    fn enforces_limits() {
        let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
        for i in 1..=3 {
            csv.push_str(&format!("{i},P{i},https://a.example/{i}.jpg\n"));
        }
        let err = parse_csv(csv.as_bytes(), CsvLimits { max_rows: 2, ..LIMITS }).unwrap_err();
        assert!(err.errors[0].message.contains("too many rows"));
        let err = parse_csv(csv.as_bytes(), CsvLimits { max_rows: 10, max_urls_per_row: 0, ..LIMITS }).unwrap_err();
        assert_eq!(err.total, 3);
    }

    #[test]
    fn caps_the_listed_errors_but_counts_all() {
        let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
        for _ in 0..150 {
            csv.push_str("bad,P,https://a.example/1.jpg\n");
        }
        let err = parse_csv(csv.as_bytes(), LIMITS).unwrap_err();
        assert_eq!(err.errors.len(), MAX_LISTED_ERRORS);
        assert_eq!(err.total, 150);
    }

    #[test]
    fn lines_count_blank_lines_crlf_and_quoted_newlines() {
        let csv = "S. No.,Product Name,Input Image Urls\r\n\r\n1,\"two\r\nlines\",https://a.example/1.jpg\r\n\r\n\r\nx,B,https://a.example/2.jpg\r\n";
        let err = parse_csv(csv.as_bytes(), LIMITS).unwrap_err();
        assert_eq!((err.errors[0].line, err.errors[0].column.as_str()), (7, COL_SERIAL));
    }

    fn one_row(name: &str, urls: &[String]) -> Vec<u8> {
        format!("S. No.,Product Name,Input Image Urls\n1,{name},\"{}\"\n", urls.join(",")).into_bytes()
    }

    /// An ASCII URL of exactly `n` characters.
    fn url_of(n: usize) -> String {
        let prefix = "https://a.example/";
        format!("{prefix}{}", "u".repeat(n - prefix.len()))
    }

    #[test]
    fn url_length_limit_holds_at_its_edge() {
        let rows = parse_csv(&one_row("P", &[url_of(2048)]), LIMITS).unwrap();
        assert_eq!(rows[0].input_image_urls[0].as_str().len(), 2048);
        let err = parse_csv(&one_row("P", &[url_of(2049)]), LIMITS).unwrap_err();
        assert_eq!((err.errors[0].line, err.errors[0].column.as_str()), (2, COL_URLS));
        assert_eq!(err.errors[0].message, "image URL is 2049 characters; at most 2048");
        // the stored form counts: a raw 2,048-character URL whose normalised form is longer is refused
        let spaced = format!("{} u", url_of(2046)); // the space becomes %20
        let err = parse_csv(&one_row("P", &[spaced]), LIMITS).unwrap_err();
        assert_eq!(err.errors[0].message, "image URL is 2050 characters; at most 2048");
    }

    #[test]
    fn product_name_limit_holds_at_its_edge_in_bytes() {
        assert!(parse_csv(&one_row(&"n".repeat(256), &[url_of(30)]), LIMITS).is_ok());
        let err = parse_csv(&one_row(&"n".repeat(257), &[url_of(30)]), LIMITS).unwrap_err();
        assert_eq!((err.errors[0].line, err.errors[0].column.as_str()), (2, COL_PRODUCT));
        // bytes, not characters: 128 two-byte characters fit, 129 do not
        assert!(parse_csv(&one_row(&"é".repeat(128), &[url_of(30)]), LIMITS).is_ok());
        let err = parse_csv(&one_row(&"é".repeat(129), &[url_of(30)]), LIMITS).unwrap_err();
        assert_eq!(err.errors[0].message, "product name is 258 bytes; at most 256 bytes");
    }

    #[test]
    fn row_size_limit_holds_at_its_edge() {
        let limits = CsvLimits { max_row_bytes: 100, ..LIMITS };
        // cells: "1" + "P" + the URL = 100 bytes exactly
        let csv = one_row("P", &[url_of(98)]);
        assert!(parse_csv(&csv, limits).is_ok());
        let err = parse_csv(&one_row("P", &[url_of(99)]), limits).unwrap_err();
        assert_eq!((err.errors[0].line, err.errors[0].column.as_str()), (2, COL_URLS));
        assert_eq!(err.errors[0].message, "the row is 101 bytes; at most 100 bytes per row");
        // the other rows are still checked and reported
        let csv = "S. No.,Product Name,Input Image Urls\n1,P,https://a.example/a\n2,".to_string()
            + &"n".repeat(200)
            + ",https://a.example/b\nx,Q,https://a.example/c\n";
        let err = parse_csv(csv.as_bytes(), limits).unwrap_err();
        let got: Vec<(u64, &str)> = err.errors.iter().map(|e| (e.line, e.column.as_str())).collect();
        assert_eq!(got, [(3, COL_PRODUCT), (4, COL_SERIAL)]);
    }

    #[test]
    fn a_configured_url_limit_is_capped_below_the_message_size() {
        let config: crate::Config = serde_json::from_value(serde_json::json!({
            "mongodb_uri": "mongodb://127.0.0.1:1/", "uploads_bucket": "u", "outputs_bucket": "o",
            "queue_url": "http://127.0.0.1:1/q", "max_url_chars": 10_000_000,
        }))
        .unwrap();
        assert_eq!(CsvLimits::from_config(&config).max_url_chars, MAX_URL_CHARS_CEILING);
    }

    #[test]
    fn invalid_utf8_is_located() {
        let err = parse_csv(b"S. No.,Product Name,Input Image Urls\n1,\xff\xfe,https://a.example/1.jpg\n", LIMITS)
            .unwrap_err();
        assert_eq!((err.errors[0].line, err.errors[0].column.as_str()), (2, COL_PRODUCT));
    }
}
