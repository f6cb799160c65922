//! Property tests (`proptest`) of the parsers that face hostile input: the CSV contract and the address
//! classification of image fetches. Each property runs a bounded number of cases (`PROPTEST_CASES` overrides it);
//! a failing case is shrunk and its seed written to `core/proptest-regressions/properties.txt`, which is committed
//! so that the case runs first on every later run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use crate::csv_input::{CsvLimits, MAX_LISTED_ERRORS, parse_csv};
use crate::csv_output::write_csv;
use crate::domain::{ImageState, ImageUrl, RequestId, RequestKey, Row, Timestamp};
use crate::net_guard::{Policy, classify, literal_ip};

const LIMITS: CsvLimits = CsvLimits {
    max_rows: 50,
    max_urls_per_row: 5,
    max_url_chars: 2048,
    max_product_name_bytes: 1024,
    max_row_bytes: 64 * 1024,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, max_shrink_iters: 2_000, ..ProptestConfig::default() }
}

/// Bytes that look like a CSV often enough to reach past the header: the header, then cells of separators,
/// quotes, line ends, digits, URL pieces, non-ASCII and invalid UTF-8.
fn csvish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"https://a.example/x.jpg".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just(vec![0xff, 0xfe]),
        Just(b"\xEF\xBB\xBF".to_vec()),
        "[0-9]{1,3}".prop_map(String::into_bytes),
        "[ -~]{0,12}".prop_map(String::into_bytes),
    ];
    (any::<bool>(), prop::collection::vec(piece, 0..60)).prop_map(|(header, pieces)| {
        let mut out = if header { b"S. No.,Product Name,Input Image Urls\n".to_vec() } else { Vec::new() };
        out.extend(pieces.concat());
        out
    })
}

/// Every error of a rejection is located on a line of the input (or line 1 for a file-level error).
fn assert_located(input: &[u8]) {
    let lines = input.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    if let Err(rejection) = parse_csv(input, LIMITS) {
        assert!(!rejection.errors.is_empty());
        assert!(rejection.errors.len() <= MAX_LISTED_ERRORS && rejection.total >= rejection.errors.len());
        for e in &rejection.errors {
            assert!((1..=lines).contains(&e.line), "line {} of {lines}: {e:?}", e.line);
            assert!(!e.message.is_empty());
        }
    }
}

/// A product name a spreadsheet could hold: any printable text (commas, quotes, formula signs), not blank, no
/// surrounding spaces (the parser trims them).
fn product_name() -> impl Strategy<Value = String> {
    "[!-&(-~é€][ -~é€]{0,30}[!-~é€]|[!-&(-~é€]"
}

fn image_url() -> impl Strategy<Value = String> {
    ("[a-z][a-z0-9]{0,10}", "[a-zA-Z0-9._~-]{0,20}", prop::option::of("[a-z0-9]{1,8}"))
        .prop_map(|(host, path, q)| match q {
            Some(q) => format!("https://{host}.example/{path}?q={q}"),
            None => format!("http://{host}.example/{path}"),
        })
        .prop_filter("canonical form", |u| ImageUrl::parse(u).is_ok_and(|p| p.as_str() == u))
}

/// Rows with distinct serial numbers, each with 1 to 5 URLs.
fn rows() -> impl Strategy<Value = Vec<(i64, String, Vec<String>)>> {
    prop::collection::vec((product_name(), prop::collection::vec(image_url(), 1..=5)), 1..20)
        .prop_map(|rows| rows.into_iter().enumerate().map(|(i, (name, urls))| (i as i64 * 3 + 1, name, urls)).collect())
}

/// Undoes the output CSV's formula escaping (a leading `'` before `=`, `+`, `-`, `@`, tab or CR).
fn unescape(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_bytes_parse_without_panic_and_every_error_has_a_line(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        assert_located(&input);
    }

    #[test]
    fn csv_like_bytes_parse_without_panic_and_every_error_has_a_line(input in csvish()) {
        assert_located(&input);
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_valid_csv_round_trips_through_the_parser_and_the_output_csv(rows in rows(), crlf in any::<bool>()) {
        let mut writer = csv::WriterBuilder::new()
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        writer.write_record(["S. No.", "Product Name", "Input Image Urls"]).unwrap();
        for (serial, name, urls) in &rows {
            writer.write_record([serial.to_string(), name.clone(), urls.join(",")]).unwrap();
        }
        let input = writer.into_inner().unwrap();

        let parsed = parse_csv(&input, LIMITS).unwrap_or_else(|e| panic!("{e:?}\n{}", String::from_utf8_lossy(&input)));
        let got: Vec<(i64, String, Vec<String>)> = parsed
            .iter()
            .map(|r| (r.serial_number, r.product_name.clone(), r.input_image_urls.iter().map(|u| u.as_str().to_string()).collect()))
            .collect();
        prop_assert_eq!(&got, &rows);
        // No cell here holds a line break, so row i is on line i + 2 (the header is line 1).
        let lines: Vec<u64> = parsed.iter().map(|r| r.line).collect();
        prop_assert_eq!(lines, (2..rows.len() as u64 + 2).collect::<Vec<_>>());

        // The output CSV of those rows (one image failed per row) carries the same three columns back.
        let docs: Vec<Row> = parsed
            .iter()
            .map(|r| {
                let urls = r.input_image_urls.iter().map(|u| u.as_str().to_string()).collect();
                let mut row = Row::new(&RequestKey::new(&crate::domain::TenantId::parse("acme").unwrap(), &RequestId::new()), r.serial_number, r.product_name.clone(), urls, Timestamp::now());
                row.images.iter_mut().for_each(|s| s.state = ImageState::Failed);
                (row.settled_images, row.failed_images) = (row.total_images(), row.total_images());
                row
            })
            .collect();
        let output = write_csv(&docs).unwrap();
        let mut reader = csv::Reader::from_reader(output.as_slice());
        let back: Vec<(i64, String, Vec<String>)> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[0].parse().unwrap(), unescape(&r[1]).to_string(), unescape(&r[2]).split(',').map(str::to_string).collect())
            })
            .collect();
        prop_assert_eq!(back, rows);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A bad serial number on any row, after blank lines anywhere, is reported at that row's line and column.
    #[test]
    fn a_bad_row_is_reported_at_its_line(rows in rows(), bad in any::<prop::sample::Index>(), blanks in prop::collection::vec(0..3usize, 20)) {
        let bad = bad.index(rows.len());
        let mut input = String::from("S. No.,Product Name,Input Image Urls\n");
        let mut line = 1;
        let mut bad_line = 0;
        for (i, (serial, _, urls)) in rows.iter().enumerate() {
            for _ in 0..blanks[i] {
                input.push_str("\r\n");
                line += 1;
            }
            line += 1;
            let serial = if i == bad { bad_line = line; "x".to_string() } else { serial.to_string() };
            input.push_str(&format!("{serial},P,\"{}\"\n", urls.join(",")));
        }
        let rejection = parse_csv(input.as_bytes(), LIMITS).unwrap_err();
        prop_assert_eq!(rejection.errors.len(), 1);
        prop_assert_eq!(rejection.errors[0].line, bad_line);
        prop_assert_eq!(rejection.errors[0].column.as_str(), "S. No.");
    }
}

proptest! {
    #![proptest_config(config(4096))]

    /// Every IPv6 form that carries an IPv4 address is judged as that address.
    #[test]
    fn embedded_ipv4_is_judged_as_its_ipv4(v4 in any::<u32>().prop_map(Ipv4Addr::from)) {
        let expected = classify(IpAddr::V4(v4));
        let [a, b, c, d] = v4.octets();
        let mapped = v4.to_ipv6_mapped();
        let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
        let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1);
        prop_assert_eq!(classify(IpAddr::V6(mapped)), expected);
        prop_assert_eq!(classify(IpAddr::V6(nat64)), expected);
        prop_assert_eq!(classify(IpAddr::V6(six_to_four)), expected);
        // `::a.b.c.d` (IPv4-compatible), except `::` and `::1`, which IPv6 defines itself.
        if u32::from(v4) > 1 {
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_compatible())), expected);
        }
    }

    /// Whatever spelling a URL gives an IPv4 host (dotted, one decimal number, hex), the fetcher sees the
    /// same address and judges it the same.
    #[test]
    fn every_spelling_of_an_ipv4_host_is_the_same_address(v4 in any::<u32>().prop_map(Ipv4Addr::from), form in 0..3u8) {
        let host = match form {
            0 => v4.to_string(),
            1 => u32::from(v4).to_string(),
            _ => format!("0x{:x}", u32::from(v4)),
        };
        let url = url::Url::parse(&format!("http://{host}/a.jpg")).unwrap();
        prop_assert_eq!(literal_ip(&url), Some(IpAddr::V4(v4)));
    }

    /// An allow-listed network allows every address in it on every port; outside it, a refused class stays
    /// refused on every port and a public address is allowed on 80 and 443 only.
    #[test]
    fn the_allow_list_and_the_port_rule(v4 in any::<u32>().prop_map(Ipv4Addr::from), prefix in 8u8..=32, port in 1u16..) {
        let net = ipnet::Ipv4Net::new(v4, prefix).unwrap().trunc();
        let policy = Policy::parse(Some(&net.to_string())).unwrap();
        let inside = IpAddr::V4(net.network());
        prop_assert!(policy.check_target(inside, port).is_ok());
        let next = Ipv4Addr::from(u32::from(net.broadcast()).wrapping_add(1));
        let outside = IpAddr::V4(next);
        if !net.contains(&next) {
            let verdict = policy.check_target(outside, port);
            match classify(outside) {
                Some(_) => prop_assert!(verdict.is_err()),
                None => prop_assert_eq!(verdict.is_ok(), port == 80 || port == 443),
            }
        }
    }
}
