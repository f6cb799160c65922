//! Progress of a request while `submit --wait` polls it: a live bar on a terminal, otherwise one plain line per
//! change (`processing 3/6 images, 0 failed`), so logs and CI output stay readable.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::api::Status;

pub struct Progress {
    interactive: bool,
    bar: Option<ProgressBar>,
    last: Option<(String, u64, u64, u64)>,
    last_note: Option<String>,
    start: Instant,
}

impl Progress {
    /// `interactive`: draw a bar (stdout is a terminal); otherwise print lines.
    pub fn new(interactive: bool) -> Self {
        Self { interactive, bar: None, last: None, last_note: None, start: Instant::now() }
    }

    fn bar(&mut self) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        })
    }

    /// Something the user should know while nothing else changes (waiting for ingestion, a retried poll).
    /// Printed once until it changes.
    pub fn note(&mut self, note: &str) {
        if self.last_note.as_deref() == Some(note) {
            return;
        }
        self.last_note = Some(note.to_string());
        if self.interactive {
            self.bar().set_message(note.to_string());
        } else {
            println!("{note}");
        }
    }

    /// A new poll result.
    pub fn update(&mut self, s: &Status) {
        self.last_note = None;
        let c = &s.counts;
        let key = (s.status.clone(), c.images, c.processed, c.failed);
        if self.interactive {
            let bar = self.bar().clone();
            if bar.length() != Some(c.images) {
                bar.set_length(c.images);
                bar.set_style(bar_style());
                bar.reset_eta();
            }
            bar.set_prefix(s.status.clone());
            bar.set_position(c.processed);
            bar.set_message(format!("{} failed", c.failed));
        } else if self.last.as_ref() != Some(&key) {
            println!("{} {}/{} images, {} failed", s.status, c.processed, c.images, c.failed);
        }
        self.last = Some(key);
    }

    /// The request is final: replaces the bar with a one-line summary.
    pub fn finish(&mut self, s: &Status) {
        self.clear();
        let c = &s.counts;
        println!(
            "{} in {:.1}s: {} of {} images succeeded, {} failed",
            s.status,
            self.start.elapsed().as_secs_f64(),
            c.succeeded,
            c.images,
            c.failed
        );
    }

    /// Removes the bar (before an error message).
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.green} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.green} {prefix:<10} [{bar:30.cyan/blue}] {pos}/{len} images, {msg} · {rate} · ETA {eta}",
    )
    .map(|style| {
        style
            .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1} images/s", state.per_sec());
            })
            // No estimate before the first image is done.
            .with_key("eta", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = match state.pos() {
                    0 => write!(w, "?"),
                    _ => write!(w, "{:#}", indicatif::HumanDuration(state.eta())),
                };
            })
            .progress_chars("=> ")
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}
