//! One `compress` in a fresh process, for the memory tests of tests/tests/decode.rs: the process's resident set
//! counts what the decoders allocate in C (libjpeg-turbo's `malloc`) as well as in Rust.
//!
//!   compress-rss MAX_PIXELS MAX_DIMENSION MAX_DECODE_BYTES < image
//!
//! Reads the image from stdin, plans it (`compress::plan`: its decode budget, from the header), resets the
//! peak-RSS mark (`/proc/self/clear_refs`, so reading stdin does not count), compresses at quality 50, and prints one
//! JSON line: `plan_bytes` (or `plan_error`), `rss_before_kib` (resident when compress started), `peak_kib` (the
//! peak since), and `width`/`height` or `error`.

use std::io::Read;

use imgpipe_core::compress::{CompressLimits, compress, plan};
use imgpipe_core::telemetry::peak_rss_kib;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("MAX_PIXELS MAX_DIMENSION")).collect();
    let [max_pixels, max_dimension, max_decode_bytes] = args[..] else {
        panic!("usage: compress-rss MAX_PIXELS MAX_DIMENSION MAX_DECODE_BYTES < image")
    };
    let max_dimension = u32::try_from(max_dimension).expect("a u32 side");
    let limits = CompressLimits { max_pixels, max_dimension, max_decode_bytes };
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).expect("read stdin");
    input.shrink_to_fit();
    let planned = plan(&input, limits);
    let rss_before_kib = imgpipe_tests::reset_peak_rss();
    let result = compress(&input, 50, limits);
    let peak_kib = peak_rss_kib().expect("VmHWM");
    let mut report = serde_json::json!({ "rss_before_kib": rss_before_kib, "peak_kib": peak_kib });
    match planned {
        Ok(plan) => report["plan_bytes"] = plan.decode_bytes.into(),
        Err(e) => report["plan_error"] = format!("{e:?}").into(),
    }
    match result {
        Ok(out) => {
            report["width"] = out.width.into();
            report["height"] = out.height.into();
        }
        Err(e) => report["error"] = format!("{e:?}").into(),
    }
    println!("{report}");
}
