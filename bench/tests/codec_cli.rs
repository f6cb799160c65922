//! `imgpipe-bench codec` as CI runs it: its exit status says whether every file compressed (figures are printed,
//! never asserted). Pillow is left out (`--python` names no interpreter), so only imgpipe's side runs.

use std::path::PathBuf;
use std::process::Command;

use image::{DynamicImage, ImageFormat, RgbImage};

/// A fresh corpus folder holding `files`.
fn corpus(name: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imgpipe-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

fn png() -> Vec<u8> {
    let image = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90])));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn run(corpus: &PathBuf) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imgpipe-bench"))
        .args(["codec", "--short", "--python", "/nonexistent/python", "--corpus"])
        .arg(corpus)
        .output()
        .expect("run imgpipe-bench")
}

#[test]
fn a_file_that_fails_to_compress_fails_the_run() {
    // A JPEG signature and then nothing a decoder can use.
    let dir = corpus("broken", &[("good.png", png()), ("broken.jpg", b"\xff\xd8\xff\xe0 not a JPEG".to_vec())]);
    let output = run(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status {:?}; stderr: {stderr}", output.status);
    assert!(stderr.contains("broken.jpg: imgpipe:"), "the failure is named: {stderr}");
    assert!(!stderr.contains("good.png"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corpus_that_compresses_passes() {
    let dir = corpus("good", &[("good.png", png())]);
    let output = run(&dir);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("good.png"), "the table lists the file");
    std::fs::remove_dir_all(dir).unwrap();
}
