//! The Pillow side of the codec benchmark: scripts/bench/pillow_ref.py as a child process, asked for one file at a
//! time, between imgpipe's runs of the same file, so that a change of machine load skews neither side.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::Deserialize;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/pillow_ref.py")
}

#[derive(Deserialize)]
struct Hello {
    pillow: String,
    libjpeg_turbo: Option<String>,
}

/// Pillow's answer for one file.
#[derive(Deserialize)]
pub struct PillowResult {
    pub seconds: Option<f64>,
    pub bytes: usize,
    pub output: PathBuf,
    pub error: Option<String>,
    /// For a file with an ICC profile: its pixels converted to sRGB by LittleCMS (PNG), the score reference.
    #[serde(default)]
    pub reference: Option<PathBuf>,
}

pub struct Pillow {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// "Pillow 13.0.0 (libjpeg-turbo 3.1.2)".
    pub version: String,
}

impl Pillow {
    /// `None` when `python` cannot import Pillow.
    pub fn start(python: &str, quality: u8, repeat: usize, out_dir: &Path) -> Option<Pillow> {
        let importable =
            Command::new(python).args(["-c", "import PIL.Image"]).output().is_ok_and(|o| o.status.success());
        if !importable {
            return None;
        }
        let mut child = Command::new(python)
            .arg(script())
            .args(["--serve", "--quality", &quality.to_string(), "--repeat", &repeat.to_string(), "--out"])
            .arg(out_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start pillow_ref.py");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let hello: Hello = serde_json::from_str(&read_line(&mut stdout)).expect("pillow_ref.py's first line");
        let version =
            format!("Pillow {} (libjpeg-turbo {})", hello.pillow, hello.libjpeg_turbo.as_deref().unwrap_or("?"));
        Some(Pillow { child, stdin, stdout, version })
    }

    /// Compresses `file` (best of the repeat count) and answers how it went.
    pub fn compress(&mut self, file: &Path) -> PillowResult {
        let request = serde_json::json!({ "file": file });
        let stdin = self.stdin.as_mut().expect("pillow_ref.py's stdin");
        writeln!(stdin, "{request}").and_then(|()| stdin.flush()).expect("ask pillow_ref.py");
        serde_json::from_str(&read_line(&mut self.stdout)).expect("pillow_ref.py's result line")
    }
}

impl Drop for Pillow {
    fn drop(&mut self) {
        drop(self.stdin.take()); // end of input: the script's loop ends
        let _ = self.child.wait();
    }
}

fn read_line(stdout: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    let read = stdout.read_line(&mut line).expect("read from pillow_ref.py");
    assert!(read > 0, "pillow_ref.py ended early (its error is above)");
    line
}

/// Pillow's peak RSS (KiB) compressing `file` once in a fresh process.
pub fn peak_rss_kib(python: &str, quality: u8, file: &Path) -> Option<f64> {
    let output = Command::new(python)
        .arg(script())
        .args(["--rss", "--quality", &quality.to_string()])
        .arg(file)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}
