//! All terminal output goes through here: logs (human or JSON lines) and the final summary or
//! error, on stderr; machine-readable results on stdout.
//!
//! Guarantee: every byte written to the terminal passes through [`crate::redact::redact`] first,
//! so no registered credential reaches stderr or stdout. Library code logs with `tracing`
//! macros and never prints directly.
//!
//! `--log-format json`: one object per line with `timestamp`, `level`, `message`, the event's
//! own fields (`source`, `table`, `page`, `rows`, `pages`, `retries`, `elapsed_ms`, `attempt`,
//! `status`, `outcome`, … where they apply; docs/harvest.md §"Logs") and, once a run has an id,
//! `run_id` on every line. The human format prints the message only.

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

/// Logs are JSON lines (set once by [`Printer::init`]).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The current run's id, added to every JSON log line once known.
static RUN_ID: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Every JSON log line from now on carries `run_id`.
pub fn set_run_id(id: &str) {
    if let Ok(mut r) = RUN_ID.lock() {
        *r = Some(id.to_string());
    }
}

fn run_id() -> Option<String> {
    RUN_ID.lock().ok().and_then(|r| r.clone())
}

/// `text` (JSON lines) with `run_id` added to each object that lacks it.
fn with_run_id(text: &str) -> String {
    let Some(id) = run_id() else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len() + 40);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        match serde_json::from_str::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.entry("run_id")
                    .or_insert_with(|| serde_json::Value::String(id.clone()));
                out.push_str(&serde_json::Value::Object(m).to_string());
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            _ => out.push_str(line),
        }
    }
    out
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
        let text = if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
            with_run_id(&text)
        } else {
            text.into_owned()
        };
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
            // Only harvest's own progress: libraries (delta-rs's snapshot spans, say) speak
            // up for warnings and errors.
            "warn,harvest=info"
        };
        let filter =
            EnvFilter::try_from_env("HARVEST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(RedactingStderr)
            .with_ansi(io::stderr().is_terminal())
            .with_target(false);
        let _ = match format {
            // The message only: structured fields are for the JSON form.
            LogFormat::Human => builder
                .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                    |w, field, value| {
                        if field.name() == "message" {
                            write!(w, "{value:?}")
                        } else {
                            Ok(())
                        }
                    },
                ))
                .without_time()
                .try_init(),
            LogFormat::Json => {
                JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
                builder.json().flatten_event(true).try_init()
            }
        };
        Self { format, quiet }
    }

    /// The final one-line summary of a run (always shown unless `--quiet`).
    pub fn summary(&self, line: &str) {
        self.summary_with(line, serde_json::json!({}));
    }

    /// The summary, with its facts as fields of the JSON line (`outcome`, `rows`, …).
    pub fn summary_with(&self, line: &str, fields: serde_json::Value) {
        if self.quiet {
            return;
        }
        match self.format {
            LogFormat::Human => eprint_redacted(&format!("{line}\n")),
            LogFormat::Json => {
                let mut m = json_line("INFO", line);
                m.insert("summary".into(), true.into());
                if let serde_json::Value::Object(f) = fields {
                    m.extend(f);
                }
                eprint_redacted(&format!("{}\n", serde_json::Value::Object(m)));
            }
        }
    }

    /// Print a fatal error: `error: …` then one `caused by:` line per cause. As JSON: one
    /// line with `outcome` (`failed` or `interrupted`) and the `exit_code`.
    pub fn error(&self, err: &anyhow::Error) {
        let mut text = format!("error: {err}");
        for cause in err.chain().skip(1) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        if let Some(h) = crate::error::hint_for(err) {
            text.push_str(&format!("\n  hint: {h}"));
        }
        match self.format {
            LogFormat::Human => eprint_redacted(&format!("{text}\n")),
            LogFormat::Json => {
                let code = crate::error::exit_code_for(err) as i32;
                let mut m = json_line("ERROR", &text);
                m.insert(
                    "outcome".into(),
                    if code == 130 { "interrupted" } else { "failed" }.into(),
                );
                m.insert("exit_code".into(), code.into());
                eprint_redacted(&format!("{}\n", serde_json::Value::Object(m)));
            }
        }
    }

    /// Machine-readable output (e.g. `verify --json`) on stdout.
    pub fn stdout(&self, text: &str) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(redact(text).as_bytes());
        let _ = out.flush();
    }
}

/// A JSON log line written by the printer itself, shaped like the `tracing` ones.
fn json_line(level: &str, message: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "timestamp".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    m.insert("level".into(), level.into());
    m.insert("message".into(), message.into());
    if let Some(id) = run_id() {
        m.insert("run_id".into(), id.into());
    }
    m
}

fn eprint_redacted(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(redact(text).as_bytes());
    let _ = err.flush();
}
