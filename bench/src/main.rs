//! `imgpipe-bench codec --corpus DIR [--short]`: runs the worker's real `compress` over every image of a corpus
//! (made by scripts/bench/corpus.sh), and Pillow on the same files in the same run when it is importable
//! (scripts/bench/pillow_ref.py), interleaved file by file, and prints per image and in total: MP/s
//! (single-threaded, best of N), output bytes, a SSIMULACRA2 score of the output against the source, and the ratios
//! imgpipe/Pillow; then the peak RSS of compressing the largest JPEG and PNG, each in a fresh child process. Files with an ICC profile (the corpus's
//! `prof-*`) are scored against LittleCMS's conversion to sRGB, and get a table of their own (`colour`): speed and
//! mean ΔE76 of both sides.
//!
//! Figures are printed, never asserted. What is checked is that everything worked: the command exits non-zero
//! when any file fails on any side, so the short mode (CI) catches a codec that stopped compressing.

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Parser, Subcommand};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use imgpipe_core::compress::{CompressError, CompressLimits, Compressed, compress};
use serde::Deserialize;

mod colour;
mod dct_domain;
mod pillow;
use dct_domain::compress_in_dct_domain;
use pillow::Pillow;

/// The worker's defaults (IMGPIPE_MAX_PIXELS, IMGPIPE_MAX_DIMENSION, IMGPIPE_MAX_DECODE_BYTES).
const LIMITS: CompressLimits = CompressLimits::DEFAULT;

/// Quality is scored on a centred window of at most this many pixels a side (SSIMULACRA2 of a 24 MP image takes
/// seconds and gigabytes; a window keeps the full-resolution pixels, which is what the score is about).
const SCORE_WINDOW: u32 = 1024;

#[derive(Parser)]
#[command(about = "imgpipe benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Codec benchmark: imgpipe's compress vs Pillow over a corpus.
    Codec {
        /// Folder of images (scripts/bench/corpus.sh prints it).
        #[arg(long)]
        corpus: PathBuf,
        /// Fewer repetitions (CI): the figures are not meant to be read.
        #[arg(long)]
        short: bool,
        #[arg(long, default_value_t = 50)]
        quality: u8,
        /// Timed runs per image (best kept); default 5, or 1 with --short.
        #[arg(long)]
        repeat: Option<usize>,
        /// Python with Pillow (scripts/bench/codec.sh passes the bench venv's).
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Compresses one file in this process and prints its peak RSS as JSON (run as a child by `codec`).
    #[command(hide = true)]
    Rss {
        file: PathBuf,
        #[arg(long, default_value_t = 50)]
        quality: u8,
    },
}

fn main() {
    match Cli::parse().command {
        Cmd::Codec { corpus, short, quality, repeat, python } => {
            codec(&corpus, short, quality, repeat.unwrap_or(if short { 1 } else { 5 }), &python)
        }
        Cmd::Rss { file, quality } => rss(&file, quality),
    }
}

struct Side {
    seconds: f64,
    bytes: usize,
    score: Option<f64>,
    /// Profiled inputs only: mean ΔE76 against the LittleCMS reference.
    delta_e: Option<f64>,
}

struct Row {
    name: String,
    jpeg_input: bool,
    /// Has an ICC profile (scored against LittleCMS's conversion).
    profiled: bool,
    megapixels: f64,
    ours: Result<Side, String>,
    pillow: Option<Result<Side, String>>,
    /// JPEG input requantised in the DCT domain (where that applies) instead of decoded and re-encoded.
    dct_domain: Option<Result<Side, String>>,
}

fn codec(corpus: &Path, short: bool, quality: u8, repeat: usize, python: &str) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
            matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "webp" | "gif" | "tif" | "tiff" | "bmp")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no images in {}", corpus.display());
    println!("{}", environment(short, repeat, quality));

    let mut pillow = Pillow::start(python, quality, repeat, &corpus.with_extension("pillow-out"));
    match &pillow {
        Some(p) => println!("{}, same files, interleaved file by file, one image at a time", p.version),
        None => println!("Pillow is not importable by {python}: imgpipe only (scripts/bench/codec.sh installs it)"),
    }
    let with_pillow = pillow.is_some();
    println!();

    let mut rows = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let input = std::fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // Both sides on this file, one after the other, which goes first alternating from file to file (neither
        // always runs on a warmer cache); scored afterwards.
        let mut run_pillow = || pillow.as_mut().map(|p| p.compress(file));
        let (timed, pillow_run) = if i % 2 == 0 {
            let timed = time_ours(&input, quality, repeat, compress);
            (timed, run_pillow())
        } else {
            let pillow_run = run_pillow();
            (time_ours(&input, quality, repeat, compress), pillow_run)
        };
        let jpeg_input = image::guess_format(&input).ok() == Some(image::ImageFormat::Jpeg);
        let dct_timed = jpeg_input.then(|| time_ours(&input, quality, repeat, compress_in_dct_domain));
        // A profiled file is scored against LittleCMS's conversion (one that ignored the profile would score correct
        // output below wrong output).
        let lcms = pillow_run.as_ref().and_then(|r| r.reference.as_ref());
        let lcms = lcms.and_then(|path| image::open(path).ok()).map(|image| image.to_rgb8());
        let profiled = lcms.is_some();
        let reference = lcms.map_or_else(|| reference_pixels(&input), Ok);
        let delta_e = |jpeg: &[u8]| {
            profiled
                .then(|| reference.as_ref().ok().and_then(|r| colour::mean_delta_e(r, jpeg, SCORE_WINDOW)))
                .flatten()
        };
        let megapixels = reference.as_ref().map(|r| f64::from(r.width()) * f64::from(r.height()) / 1e6).unwrap_or(0.0);
        let side = |timed: Result<(f64, Vec<u8>), String>| {
            timed.map(|(seconds, jpeg)| Side {
                seconds,
                bytes: jpeg.len(),
                score: reference.as_ref().ok().and_then(|r| score(r, &jpeg)),
                delta_e: delta_e(&jpeg),
            })
        };
        let ours = side(timed);
        let dct_domain = dct_timed.map(side);
        let pillow_side = pillow_run.map(|r| match (&r.error, r.seconds) {
            (None, Some(seconds)) => {
                let jpeg = std::fs::read(&r.output).ok();
                Ok(Side {
                    seconds,
                    bytes: r.bytes,
                    score: jpeg.as_ref().and_then(|jpeg| reference.as_ref().ok().and_then(|r| score(r, jpeg))),
                    delta_e: jpeg.as_ref().and_then(|jpeg| delta_e(jpeg)),
                })
            }
            (error, _) => Err(error.clone().unwrap_or_else(|| "no result".into())),
        });
        rows.push(Row { name, jpeg_input, profiled, megapixels, ours, pillow: pillow_side, dct_domain });
    }
    drop(pillow);
    print!("{}", table(&rows, with_pillow));
    println!();
    print!("{}", dct_domain_table(&rows));
    let profiled: Vec<colour::Profiled<'_>> = rows
        .iter()
        .filter(|r| r.profiled)
        .filter_map(|r| match (&r.ours, &r.pillow) {
            (Ok(o), Some(Ok(p))) => Some(colour::Profiled {
                name: &r.name,
                megapixels: r.megapixels,
                ours: (o.seconds, o.delta_e),
                pillow: (p.seconds, p.delta_e),
            }),
            _ => None,
        })
        .collect();
    println!();
    print!("{}", colour::table(&profiled));

    println!();
    println!("Peak RSS (VmHWM) of one compress in a fresh process, input bytes held as the worker holds them:");
    let largest = |jpeg: bool| {
        rows.iter()
            .zip(&files)
            .filter(|(r, f)| {
                r.jpeg_input == jpeg && (jpeg || f.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
            })
            .max_by(|a, b| a.0.megapixels.total_cmp(&b.0.megapixels))
            .map(|(_, f)| f.clone())
    };
    let mut failures = failures(&rows);
    for file in [largest(true), largest(false)].into_iter().flatten() {
        if let Err(e) = print_rss(&file, quality, python) {
            failures.push(format!("{}: peak RSS run: {e}", file.display()));
        }
    }
    if !failures.is_empty() {
        eprintln!("codec benchmark: {} failure(s):", failures.len());
        for failure in &failures {
            eprintln!("  {failure}");
        }
        std::process::exit(1);
    }
}

/// Every file a side failed to compress, with the error.
fn failures(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for row in rows {
        let sides =
            [("imgpipe", Some(&row.ours)), ("Pillow", row.pillow.as_ref()), ("DCT domain", row.dct_domain.as_ref())];
        for (side, result) in sides {
            if let Some(Err(e)) = result {
                out.push(format!("{}: {side}: {e}", row.name));
            }
        }
    }
    out
}

fn environment(short: bool, repeat: usize, quality: u8) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let profile = if cfg!(debug_assertions) { "dev profile (figures not representative)" } else { "release profile" };
    format!(
        "codec benchmark{}: quality {quality}, best of {repeat}, single-threaded; {cpu}, {cores} cores; {profile}",
        if short { " (short)" } else { "" }
    )
}

fn time_ours(
    input: &[u8],
    quality: u8,
    repeat: usize,
    compress: fn(&[u8], u8, CompressLimits) -> Result<Compressed, CompressError>,
) -> Result<(f64, Vec<u8>), String> {
    let mut best = f64::INFINITY;
    let mut jpeg = Vec::new();
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        let out = compress(input, quality, LIMITS).map_err(|e| e.to_string())?;
        best = best.min(t0.elapsed().as_secs_f64());
        jpeg = out.jpeg;
    }
    Ok((best, jpeg))
}

/// The source as it should look: decoded by the `image` crate, oriented, alpha flattened onto white, 8-bit RGB.
fn reference_pixels(input: &[u8]) -> Result<RgbImage, String> {
    let mut decoder = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .into_decoder()
        .map_err(|e| e.to_string())?;
    let orientation = decoder.orientation().map_err(|e| e.to_string())?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    image.apply_orientation(orientation);
    let rgba = image.to_rgba8();
    let over_white = |c: u8, a: u8| ((u32::from(c) * u32::from(a) + 255 * (255 - u32::from(a)) + 127) / 255) as u8;
    Ok(RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        image::Rgb([over_white(p[0], p[3]), over_white(p[1], p[3]), over_white(p[2], p[3])])
    }))
}

/// SSIMULACRA2 of `jpeg` against `reference` on the centred window (100: identical; 70: high quality; 50: medium;
/// 30: low).
fn score(reference: &RgbImage, jpeg: &[u8]) -> Option<f64> {
    let distorted = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).ok()?.to_rgb8();
    if distorted.dimensions() != reference.dimensions() {
        return None;
    }
    let (w, h) = reference.dimensions();
    let (cw, ch) = (w.min(SCORE_WINDOW), h.min(SCORE_WINDOW));
    let (x0, y0) = ((w - cw) / 2 / 16 * 16, (h - ch) / 2 / 16 * 16);
    let frame = |image: &RgbImage| {
        let data: Vec<[f32; 3]> = (y0..y0 + ch)
            .flat_map(|y| (x0..x0 + cw).map(move |x| (x, y)))
            .map(|(x, y)| image.get_pixel(x, y).0.map(|c| f32::from(c) / 255.0))
            .collect();
        ssimulacra2::Rgb::new(
            data,
            cw as usize,
            ch as usize,
            ssimulacra2::TransferCharacteristic::SRGB,
            ssimulacra2::ColorPrimaries::BT709,
        )
        .ok()
    };
    ssimulacra2::compute_frame_ssimulacra2(frame(reference)?, frame(&distorted)?).ok()
}

#[derive(Default)]
struct Total {
    files: usize,
    megapixels: f64,
    ours_seconds: f64,
    ours_bytes: usize,
    ours_score: f64,
    pillow_seconds: f64,
    pillow_bytes: usize,
    pillow_score: f64,
    scored: usize,
}

fn table(rows: &[Row], with_pillow: bool) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:<34} {:>6} | {:>7} {:>8} {:>6} |", "image", "MP", "MP/s", "KB", "SSIM2");
    if with_pillow {
        let _ = write!(s, " {:>7} {:>8} {:>6} | {:>6} {:>6} {:>6}", "MP/s", "KB", "SSIM2", "speed", "bytes", "Δscore");
    }
    let _ = writeln!(s);
    let _ = write!(s, "{:<34} {:>6} | {:^24} |", "", "", "imgpipe");
    if with_pillow {
        let _ = write!(s, " {:^24} | {:^20}", "Pillow", "imgpipe / Pillow");
    }
    let _ = writeln!(s);
    let mut totals: [(&str, Total); 3] =
        [("all JPEG input", Total::default()), ("all other input", Total::default()), ("all", Total::default())];
    let fmt_score = |s: Option<f64>| s.map_or("-".to_string(), |v| format!("{v:.1}"));
    for row in rows {
        let _ = write!(s, "{:<34} {:>6.2} |", truncate(&row.name, 34), row.megapixels);
        // One side's cells: speed, size and score, or its error.
        let side = |s: &mut String, side: &Result<Side, String>| {
            let _ = match side {
                Ok(x) => write!(
                    s,
                    " {:>7.1} {:>8.1} {:>6} |",
                    row.megapixels / x.seconds,
                    x.bytes as f64 / 1e3,
                    fmt_score(x.score)
                ),
                Err(e) => write!(s, " {:<24} |", truncate(&format!("error: {e}"), 24)),
            };
        };
        side(&mut s, &row.ours);
        if let Some(pillow) = &row.pillow {
            side(&mut s, pillow);
            if let (Ok(o), Ok(p)) = (&row.ours, pillow) {
                let delta = match (o.score, p.score) {
                    (Some(a), Some(b)) => format!("{:+.1}", a - b),
                    _ => "-".into(),
                };
                let _ = write!(
                    s,
                    " {:>5.2}× {:>5.2}× {:>6}",
                    p.seconds / o.seconds,
                    o.bytes as f64 / p.bytes as f64,
                    delta
                );
                for (_, t) in
                    totals.iter_mut().filter(|(k, _)| *k == "all" || (*k == "all JPEG input") == row.jpeg_input)
                {
                    t.files += 1;
                    t.megapixels += row.megapixels;
                    t.ours_seconds += o.seconds;
                    t.ours_bytes += o.bytes;
                    t.pillow_seconds += p.seconds;
                    t.pillow_bytes += p.bytes;
                    if let (Some(a), Some(b)) = (o.score, p.score) {
                        t.ours_score += a;
                        t.pillow_score += b;
                        t.scored += 1;
                    }
                }
            }
        } else if let Ok(o) = &row.ours {
            for (_, t) in totals.iter_mut().filter(|(k, _)| *k == "all" || (*k == "all JPEG input") == row.jpeg_input) {
                t.files += 1;
                t.megapixels += row.megapixels;
                t.ours_seconds += o.seconds;
                t.ours_bytes += o.bytes;
                if let Some(a) = o.score {
                    t.ours_score += a;
                    t.scored += 1;
                }
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "{}", "-".repeat(if with_pillow { 118 } else { 69 }));
    for (label, t) in &totals {
        if t.files == 0 {
            continue;
        }
        let mean = |sum: f64| if t.scored > 0 { Some(sum / t.scored as f64) } else { None };
        let _ = write!(
            s,
            "{:<34} {:>6.1} | {:>7.1} {:>8.1} {:>6} |",
            format!("{label} ({} files)", t.files),
            t.megapixels,
            t.megapixels / t.ours_seconds,
            t.ours_bytes as f64 / 1e3,
            fmt_score(mean(t.ours_score))
        );
        if with_pillow && t.pillow_seconds > 0.0 {
            let delta = match (mean(t.ours_score), mean(t.pillow_score)) {
                (Some(a), Some(b)) => format!("{:+.1}", a - b),
                _ => "-".into(),
            };
            let _ = write!(
                s,
                " {:>7.1} {:>8.1} {:>6} | {:>5.2}× {:>5.2}× {:>6}",
                t.megapixels / t.pillow_seconds,
                t.pillow_bytes as f64 / 1e3,
                fmt_score(mean(t.pillow_score)),
                t.pillow_seconds / t.ours_seconds,
                t.ours_bytes as f64 / t.pillow_bytes as f64,
                delta
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "MP/s: source megapixels per second of decode + orient + flatten + encode, from bytes in memory to JPEG bytes;\n\
         speed: Pillow's time / imgpipe's (> 1: imgpipe faster); bytes: imgpipe's / Pillow's (< 1: smaller);\n\
         SSIM2: SSIMULACRA2 against the oriented, flattened source on the central {SCORE_WINDOW}×{SCORE_WINDOW} window \
         (Δscore > 0: imgpipe better). Totals: MP/s and bytes over the files both sides compressed; scores are means."
    );
    s
}

/// JPEG input: what `compress` does (decode to pixels, re-encode) against requantising in the DCT domain where that
/// applies (4:2:0 or grey, upright; the other files take the pixel path in both columns), each as a ratio to Pillow.
fn dct_domain_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "JPEG input: compress (pixels: decode + encode) vs requantising in the DCT domain (4:2:0 or grey, upright)"
    );
    let _ = writeln!(
        s,
        "{:<34} | {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6}",
        "image", "MP/s", "speed", "SSIM2", "MP/s", "speed", "SSIM2"
    );
    let _ = writeln!(s, "{:<34} | {:^22} | {:^22}", "", "compress (vs Pillow)", "DCT domain (vs Pillow)");
    let (mut mp, mut fast, mut full, mut pillow) = (0.0, 0.0, 0.0, 0.0);
    for row in rows {
        let (Ok(o), Some(Ok(f))) = (&row.ours, &row.dct_domain) else { continue };
        let p = match &row.pillow {
            Some(Ok(p)) => Some(p.seconds),
            _ => None,
        };
        let ratio = |t: f64| p.map_or("-".to_string(), |p| format!("{:.2}×", p / t));
        let sc = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(
            s,
            "{:<34} | {:>7.1} {:>7} {:>6} | {:>7.1} {:>7} {:>6}",
            truncate(&row.name, 34),
            row.megapixels / o.seconds,
            ratio(o.seconds),
            sc(o.score),
            row.megapixels / f.seconds,
            ratio(f.seconds),
            sc(f.score)
        );
        if let Some(p) = p {
            mp += row.megapixels;
            fast += o.seconds;
            full += f.seconds;
            pillow += p;
        }
    }
    if mp > 0.0 {
        let _ = writeln!(
            s,
            "{:<34} | {:>7.1} {:>6.2}× {:>6} | {:>7.1} {:>6.2}× {:>6}",
            "total",
            mp / fast,
            pillow / fast,
            "",
            mp / full,
            pillow / full,
            ""
        );
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).chain(['…']).collect() }
}

#[derive(Deserialize)]
struct RssReport {
    width: u32,
    height: u32,
    input_bytes: usize,
    baseline_kib: u64,
    peak_kib: u64,
}

fn print_rss(file: &Path, quality: u8, python: &str) -> Result<(), String> {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("rss")
        .arg(file)
        .args(["--quality", &quality.to_string()])
        .output()
        .expect("re-run the bench binary");
    let name = file.file_name().unwrap().to_string_lossy();
    let Ok(r) = serde_json::from_slice::<RssReport>(&output.stdout) else {
        let error = String::from_utf8_lossy(&output.stderr).into_owned();
        println!("  {name}: failed: {error}");
        return Err(error);
    };
    let decoded = f64::from(r.width) * f64::from(r.height) * 3.0 / 1e6;
    let peak = r.peak_kib as f64 * 1024.0 / 1e6;
    let mut line = format!(
        "  {name} ({}×{}, {:.1} MB file): peak {peak:.0} MB = {:.2}× its decoded RGB size ({decoded:.0} MB); \
         process before compressing: {:.0} MB",
        r.width,
        r.height,
        r.input_bytes as f64 / 1e6,
        peak / decoded,
        r.baseline_kib as f64 * 1024.0 / 1e6,
    );
    if let Some(kib) = pillow::peak_rss_kib(python, quality, file) {
        let _ = write!(line, "; Pillow: peak {:.0} MB", kib * 1024.0 / 1e6);
    }
    println!("{line}");
    Ok(())
}

/// The hidden `rss` subcommand: one compress, then this process's peak resident set.
fn rss(file: &Path, quality: u8) {
    let input = std::fs::read(file).unwrap();
    let baseline_kib = vm_hwm_kib();
    let out = compress(&input, quality, LIMITS).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let peak_kib = vm_hwm_kib();
    println!(
        "{}",
        serde_json::json!({
            "width": out.width, "height": out.height, "input_bytes": input.len(),
            "baseline_kib": baseline_kib, "peak_kib": peak_kib,
        })
    );
}

fn vm_hwm_kib() -> u64 {
    imgpipe_core::telemetry::peak_rss_kib().unwrap_or(0)
}
