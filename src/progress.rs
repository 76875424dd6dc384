//! The one place progress bars are made (hyperfine style). A bar exists only when stderr is a
//! terminal and the run is not `--quiet`; otherwise every method is a no-op, so cron logs and
//! CI output stay clean. Core code reports counts through [`Progress`] and never touches
//! indicatif directly.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A rows counter with throughput, labelled `label`.
    pub fn rows(label: &str, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {prefix}: {human_pos} rows ({per_sec}) {elapsed}",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar: Some(bar) }
    }

    pub fn set(&self, rows: u64) {
        if let Some(b) = &self.bar {
            b.set_position(rows);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
