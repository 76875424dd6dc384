//! All terminal output goes through here: logs (human or JSON lines) and the final summary or
//! error, on stderr; machine-readable results on stdout.
//!
//! Guarantee: every byte written to the terminal passes through [`crate::redact::redact`] first,
//! so no registered credential reaches stderr or stdout. Library code logs with `tracing`
//! macros and never prints directly.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::redact::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line (for cron and log shippers).
    Json,
}

/// A stderr writer that redacts secrets line by line.
#[derive(Clone, Copy)]
pub struct RedactingStderr;

pub struct RedactingWriter {
    buf: Vec<u8>,
}

impl Write for RedactingWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let out = redact(&text);
        let mut err = io::stderr().lock();
        err.write_all(out.as_bytes())?;
        self.buf.clear();
        err.flush()
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { buf: Vec::new() }
    }
}

/// The one printer: set up once in `main_entry`, passed to every command.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: LogFormat,
    pub quiet: bool,
}

impl Printer {
    /// Install the global tracing subscriber. `verbose` adds debug lines; `quiet` keeps warnings
    /// and errors only. `HARVEST_LOG` (an `EnvFilter` directive) overrides both.
    pub fn init(format: LogFormat, quiet: bool, verbose: bool) -> Self {
        let default = if quiet {
            "warn"
        } else if verbose {
            "harvest=debug,info"
        } else {
            "info"
        };
        let filter =
            EnvFilter::try_from_env("HARVEST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(RedactingStderr)
            .with_ansi(io::stderr().is_terminal())
            .with_target(false);
        let _ = match format {
            LogFormat::Human => builder.without_time().try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        Self { format, quiet }
    }

    /// The final one-line summary of a run (always shown unless `--quiet`).
    pub fn summary(&self, line: &str) {
        if self.quiet {
            return;
        }
        match self.format {
            LogFormat::Human => eprint_redacted(&format!("{line}\n")),
            LogFormat::Json => tracing::info!(summary = true, "{line}"),
        }
    }

    /// Print a fatal error: `error: …` then one `caused by:` line per cause.
    pub fn error(&self, err: &anyhow::Error) {
        let mut text = format!("error: {err}");
        for cause in err.chain().skip(1) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        match self.format {
            LogFormat::Human => eprint_redacted(&format!("{text}\n")),
            LogFormat::Json => tracing::error!("{text}"),
        }
    }

    /// Machine-readable output (e.g. `verify --json`) on stdout.
    pub fn stdout(&self, text: &str) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(redact(text).as_bytes());
        let _ = out.flush();
    }
}

fn eprint_redacted(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(redact(text).as_bytes());
    let _ = err.flush();
}
