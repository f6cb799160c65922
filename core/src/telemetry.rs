//! Structured logs: JSON lines on stdout (CloudWatch-friendly), with the span fields (`requestId`) on each line.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber once; `RUST_LOG` (default `info`) sets the level. Safe to call twice.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// This process's peak resident memory (`VmHWM` of `/proc/self/status`), in KiB; `None` where `/proc` is not
/// available. The benchmarks report it.
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// One `kB` field of `/proc/self/status` (e.g. `VmRSS:`), in KiB; `None` where it is not available.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}
