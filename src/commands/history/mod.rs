//! `harvest history`: the run history of an output directory, read from its manifest: one
//! line per run (command, start, duration, outcome, tables, pages, rows, bytes, retries,
//! resumes), optionally per dataset (rows, watermark before and after), and a summary.
//!
//! Guarantees: DIR is only read (`--html` writes FILE alone); the manifest is streamed line by line into small per-run totals (a
//! year of nightly runs reads in well under a second), never held whole. A torn, unparseable
//! or edited manifest does not stop it: it reports the runs it can read and says what is
//! wrong with the file, pointing at `harvest verify`. A run whose last process has no
//! `run_end` is `unfinished`. `--json` prints the same facts as one document (format
//! `version` 1) on stdout; `--html FILE` writes them as one page with charts ([`html`]).

mod html;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cli::HistoryArgs;
use crate::error::UsageError;
use crate::printer::Printer;
use crate::store::manifest::{FILE_NAME, sha256_hex};

/// The JSON document's format version.
pub const HISTORY_VERSION: u64 = 1;

/// The fields of a manifest line that history reads (everything else is skipped unparsed).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Line {
    kind: String,
    run_id: Option<String>,
    prev: Option<String>,
    command: Option<String>,
    started_at: Option<String>,
    resumed_at: Option<String>,
    ended_at: Option<String>,
    outcome: Option<Value>,
    totals: Option<RunTotals>,
    output: Option<String>,
    /// Numbers on `table_end`; other kinds use these names for other shapes.
    rows: Option<Value>,
    pages: Option<Value>,
    watermark: Option<Value>,
    /// On `table_end` of a table with checks: rows quarantined, and failures per check.
    rows_quarantined: Option<u64>,
    checks: Option<std::collections::BTreeMap<String, u64>>,
    /// On `schema`: the page that widened the dataset's columns, and what it added.
    page: Option<u64>,
    added: Option<Vec<AddedColumn>>,
}

/// A column a `schema` record added.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AddedColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant_of: Option<String>,
}

/// A widening of one dataset's columns within one run (schema evolution).
#[derive(Debug, Clone, Serialize, Default)]
pub struct SchemaChange {
    pub dataset: String,
    pub page: u64,
    pub added: Vec<AddedColumn>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RunTotals {
    bytes: u64,
    retries: u64,
    wall_ms: u64,
}

/// One dataset within one run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DatasetRun {
    pub dataset: String,
    pub rows: u64,
    pub pages: Option<u64>,
    pub watermark_before: Option<Value>,
    pub watermark_after: Option<Value>,
    /// Tables with checks: rows that failed them (in quarantine), and failures per check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_quarantined: Option<u64>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, u64>,
}

/// One run, as its records tell it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Run {
    pub run_id: String,
    pub command: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// Time spent by the run's processes (the sum of their `run_end` wall times).
    pub duration_ms: u64,
    /// ok, failed, interrupted or unfinished.
    pub outcome: String,
    /// Why a failed run failed.
    pub reason: Option<String>,
    pub tables: u64,
    pub pages: u64,
    pub rows: u64,
    /// Rows its tables' checks sent to quarantine.
    pub rows_quarantined: u64,
    pub bytes: u64,
    pub retries: u64,
    pub resumes: u64,
    pub datasets: Vec<DatasetRun>,
    /// Columns the run added to its datasets.
    pub schema_changes: Vec<SchemaChange>,
    /// A process of the run is still to end (set while reading).
    #[serde(skip)]
    open: bool,
}

/// What is wrong with the manifest file, if anything.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ManifestHealth {
    pub lines: u64,
    pub unreadable_lines: u64,
    pub torn_last_line: bool,
    /// The first line whose `prev` is not the hash of the line before it.
    pub chain_break_at: Option<u64>,
}

impl ManifestHealth {
    fn ok(&self) -> bool {
        self.unreadable_lines == 0 && !self.torn_last_line && self.chain_break_at.is_none()
    }
}

/// Read the history of `dir`: runs in the order they started, and the manifest's health.
pub fn read_history(dir: &Path) -> anyhow::Result<(Vec<Run>, ManifestHealth)> {
    let path = dir.join(FILE_NAME);
    let file = std::fs::File::open(&path).map_err(|_| {
        let writers = crate::store::writers::list(dir);
        if !writers.is_empty() {
            return UsageError::with_hint(
                format!(
                    "{} is shared by writers ({}), each with its own history",
                    dir.display(),
                    writers.join(", ")
                ),
                format!(
                    "pass one writer's home, e.g. --out {}",
                    crate::store::writers::home(dir, &writers[0]).display()
                ),
            );
        }
        UsageError::with_hint(
            format!(
                "{} has no {FILE_NAME}: it is not a harvest output directory",
                dir.display()
            ),
            "pass the --out DIR of a harvest, incremental or sql-extract run",
        )
    })?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut runs: Vec<Run> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut health = ManifestHealth::default();
    let mut prev_hash: Option<String> = None;
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        health.lines += 1;
        let Some(body) = buf.strip_suffix(b"\n") else {
            health.torn_last_line = true;
            break;
        };
        let line: Line = match serde_json::from_slice(body) {
            Ok(l) => l,
            Err(_) => {
                health.unreadable_lines += 1;
                prev_hash = Some(sha256_hex(body));
                continue;
            }
        };
        if line.prev != prev_hash && health.chain_break_at.is_none() {
            health.chain_break_at = Some(health.lines);
        }
        prev_hash = Some(sha256_hex(body));
        // Cached exports carry an id of their own but are not runs.
        if line.kind.starts_with("export") {
            continue;
        }
        let Some(id) = line.run_id.clone() else {
            continue;
        };
        let i = *index.entry(id.clone()).or_insert_with(|| {
            runs.push(Run {
                run_id: id,
                ..Run::default()
            });
            runs.len() - 1
        });
        take(&mut runs[i], line);
    }
    for r in &mut runs {
        if r.open || r.outcome.is_empty() {
            r.outcome = "unfinished".into();
            r.reason = None;
        }
    }
    Ok((runs, health))
}

/// Fold one record into its run.
fn take(run: &mut Run, line: Line) {
    match line.kind.as_str() {
        "run_start" => {
            run.command = line.command.unwrap_or_default();
            run.started_at = line.started_at;
            run.open = true;
        }
        "run_resume" => {
            run.resumes += 1;
            run.open = true;
            if run.started_at.is_none() {
                run.started_at = line.resumed_at;
            }
        }
        "run_end" => {
            run.open = false;
            run.ended_at = line.ended_at;
            if let Some(t) = line.totals {
                run.duration_ms += t.wall_ms;
                run.bytes += t.bytes;
                run.retries += t.retries;
            }
            let outcome = match &line.outcome {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            match outcome.strip_prefix("failed: ") {
                Some(why) => {
                    run.outcome = "failed".into();
                    run.reason = Some(why.to_string());
                }
                None => {
                    run.outcome = outcome;
                    run.reason = None;
                }
            }
        }
        "table_end" => {
            let rows = line.rows.as_ref().and_then(Value::as_u64).unwrap_or(0);
            let pages = line.pages.as_ref().and_then(Value::as_u64);
            run.tables += 1;
            run.rows += rows;
            run.pages += pages.unwrap_or(0);
            run.rows_quarantined += line.rows_quarantined.unwrap_or(0);
            let w = line.watermark.unwrap_or(Value::Null);
            run.datasets.push(DatasetRun {
                dataset: line.output.unwrap_or_default(),
                rows,
                pages,
                watermark_before: w.get("before").cloned(),
                watermark_after: w.get("after").cloned(),
                rows_quarantined: line.rows_quarantined,
                checks: line.checks.unwrap_or_default(),
            });
        }
        "schema" => run.schema_changes.push(SchemaChange {
            dataset: line.output.unwrap_or_default(),
            page: line.page.unwrap_or(0),
            added: line.added.unwrap_or_default(),
        }),
        _ => {}
    }
}

/// The summary of a list of runs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub runs: usize,
    pub ok: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub unfinished: usize,
    /// ok ÷ runs, as a percentage (null without runs).
    pub success_rate: Option<f64>,
    pub median_duration_ms: Option<u64>,
    pub max_duration_ms: Option<u64>,
    pub median_rows: Option<u64>,
    pub total_rows: u64,
}

impl Summary {
    /// The summary as one line (the table's last, and the history page's headline).
    pub fn line(&self) -> String {
        let opt = |v: Option<u64>, f: fn(u64) -> String| v.map_or("-".to_string(), f);
        format!(
            "{} run(s): {} ok, {} failed, {} interrupted, {} unfinished; success rate {}; duration median {}, max {}; rows per run median {}, total {}",
            self.runs,
            self.ok,
            self.failed,
            self.interrupted,
            self.unfinished,
            self.success_rate.map_or("-".into(), |p| format!("{p:.0}%")),
            opt(self.median_duration_ms, human_duration),
            opt(self.max_duration_ms, human_duration),
            opt(self.median_rows, |n| n.to_string()),
            self.total_rows
        )
    }
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

pub fn summarize(runs: &[Run]) -> Summary {
    let count = |o: &str| runs.iter().filter(|r| r.outcome == o).count();
    let ok = count("ok");
    Summary {
        runs: runs.len(),
        ok,
        failed: count("failed"),
        interrupted: count("interrupted"),
        unfinished: count("unfinished"),
        success_rate: (!runs.is_empty()).then(|| 100.0 * ok as f64 / runs.len() as f64),
        median_duration_ms: median(runs.iter().map(|r| r.duration_ms).collect()),
        max_duration_ms: runs.iter().map(|r| r.duration_ms).max(),
        median_rows: median(runs.iter().map(|r| r.rows).collect()),
        total_rows: runs.iter().map(|r| r.rows).sum(),
    }
}

/// `1.2s`, `3m04s`, `2h05m`.
pub fn human_duration(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

fn human_bytes(b: u64) -> String {
    if b < 1_000_000 {
        format!("{:.1} kB", b as f64 / 1e3)
    } else if b < 1_000_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else {
        format!("{:.2} GB", b as f64 / 1e9)
    }
}

fn short_value(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The human form: a table of runs, then the summary line.
pub fn render(runs: &[Run], summary: &Summary, dataset: Option<&str>) -> String {
    let mut out = String::new();
    let head = [
        "run", "command", "started", "duration", "outcome", "tables", "pages", "rows", "bytes",
        "retries", "resumes",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in runs {
        rows.push(vec![
            r.run_id.clone(),
            r.command.clone(),
            r.started_at.clone().unwrap_or_else(|| "-".into()),
            human_duration(r.duration_ms),
            r.outcome.clone(),
            r.tables.to_string(),
            r.pages.to_string(),
            r.rows.to_string(),
            human_bytes(r.bytes),
            r.retries.to_string(),
            r.resumes.to_string(),
        ]);
    }
    out.push_str(&table(&rows, &[5, 6, 7, 8, 9, 10]));
    // Why each failed run failed, in full, below the table.
    let failed: Vec<&Run> = runs.iter().filter(|r| r.reason.is_some()).collect();
    if !failed.is_empty() {
        out.push('\n');
        for r in failed {
            out.push_str(&format!(
                "{} failed: {}\n",
                r.run_id,
                r.reason.as_deref().unwrap_or_default()
            ));
        }
    }
    // Rows quarantined by row checks, per run and dataset, below the table.
    let quarantined: Vec<(&Run, &DatasetRun)> = runs
        .iter()
        .flat_map(|r| r.datasets.iter().map(move |d| (r, d)))
        .filter(|(_, d)| d.rows_quarantined.is_some_and(|q| q > 0))
        .filter(|(_, d)| dataset.is_none_or(|ds| d.dataset == ds))
        .collect();
    if !quarantined.is_empty() {
        out.push('\n');
        for (r, d) in quarantined {
            let by: Vec<String> = d.checks.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            out.push_str(&format!(
                "{} {}: {} rows written, {} quarantined ({})\n",
                r.run_id,
                d.dataset,
                d.rows,
                d.rows_quarantined.unwrap_or(0),
                by.join(", ")
            ));
        }
    }
    if let Some(ds) = dataset {
        let mut drows: Vec<Vec<String>> = vec![
            [
                "run",
                "dataset",
                "rows",
                "pages",
                "watermark before",
                "watermark after",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ];
        for r in runs {
            for d in r.datasets.iter().filter(|d| d.dataset == ds) {
                drows.push(vec![
                    r.run_id.clone(),
                    d.dataset.clone(),
                    d.rows.to_string(),
                    d.pages.map_or("-".into(), |p| p.to_string()),
                    short_value(&d.watermark_before),
                    short_value(&d.watermark_after),
                ]);
            }
        }
        out.push('\n');
        out.push_str(&table(&drows, &[2, 3]));
    }
    // Schema changes, one line each, below the tables.
    let changes: Vec<(&Run, &SchemaChange)> = runs
        .iter()
        .flat_map(|r| r.schema_changes.iter().map(move |c| (r, c)))
        .filter(|(_, c)| dataset.is_none_or(|d| c.dataset == d))
        .collect();
    if !changes.is_empty() {
        out.push('\n');
        for (r, c) in changes {
            let added: Vec<String> = c
                .added
                .iter()
                .map(|a| match &a.variant_of {
                    Some(of) => format!("{} {} (variant of {of})", a.name, a.ty),
                    None => format!("{} {}", a.name, a.ty),
                })
                .collect();
            out.push_str(&format!(
                "{} {}: page {} added {}\n",
                r.run_id,
                c.dataset,
                c.page,
                added.join(", ")
            ));
        }
    }
    out.push('\n');
    out.push_str(&summary.line());
    out.push('\n');
    out
}

/// Columns padded to their widest cell; `right` are right-aligned.
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if right.contains(&c) {
                    format!("{v:>w$}", w = widths[c])
                } else {
                    format!("{v:<w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn run(args: &HistoryArgs, printer: Printer) -> anyhow::Result<()> {
    // Object storage: the history is in the manifests (their segments joined), not the data.
    if crate::store::remote::is_remote(&args.out) {
        let copy = crate::store::remote::local_copy(&args.out, &args.s3.options(), |_| false)?;
        return run_on(args, copy.path(), printer);
    }
    if !args.out.is_dir() {
        return Err(UsageError::with_hint(
            format!("{} is not a directory", args.out.display()),
            "pass the --out DIR of a harvest, incremental or sql-extract run",
        )
        .into());
    }
    run_on(args, &args.out, printer)
}

/// The history of the manifests in `dir` (DIR itself, or a copy of an object store's), shown
/// under the name `args.out`.
fn run_on(args: &HistoryArgs, dir: &Path, printer: Printer) -> anyhow::Result<()> {
    let (mut runs, health) = read_history(dir)?;
    if let Some(ds) = &args.dataset {
        let known: std::collections::BTreeSet<&str> = runs
            .iter()
            .flat_map(|r| r.datasets.iter().map(|d| d.dataset.as_str()))
            .collect();
        if !known.contains(ds.as_str()) {
            return Err(UsageError::with_hint(
                format!(
                    "no run in {} completed a dataset {ds:?}",
                    args.out.display()
                ),
                format!(
                    "datasets: {}",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
            .into());
        }
        runs.retain(|r| r.datasets.iter().any(|d| d.dataset == *ds));
    }
    if let Some(n) = args.last {
        let skip = runs.len().saturating_sub(n);
        runs.drain(..skip);
    }
    if let Some(ds) = &args.dataset {
        for r in &mut runs {
            r.datasets.retain(|d| d.dataset == *ds);
            r.schema_changes.retain(|c| c.dataset == *ds);
        }
    }
    if !health.ok() {
        let mut what = vec![];
        if health.unreadable_lines > 0 {
            what.push(format!("{} unreadable line(s)", health.unreadable_lines));
        }
        if health.torn_last_line {
            what.push("a torn last line".to_string());
        }
        if let Some(l) = health.chain_break_at {
            what.push(format!("a broken hash chain at line {l}"));
        }
        tracing::warn!(
            "{FILE_NAME} has {}: the history shows what could be read; run `harvest verify --out {}` for details",
            what.join(", "),
            args.out.display()
        );
    }
    let summary = summarize(&runs);
    if args.json {
        let doc = json!({
            "version": HISTORY_VERSION,
            "dir": args.out.display().to_string(),
            "dataset": args.dataset,
            "manifest": health,
            "runs": runs,
            "summary": summary,
        });
        printer.stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    } else if let Some(file) = &args.html {
        let table = render(&runs, &summary, args.dataset.as_deref());
        let page = html::page(&args.out.display().to_string(), &runs, &summary, &table);
        crate::store::fsutil::atomic_write(file, page.as_bytes()).map_err(|e| {
            UsageError::with_hint(
                format!("cannot write the history page {}: {e}", file.display()),
                "check the --html path (its directory must exist and be writable)",
            )
        })?;
        printer.summary(&format!(
            "wrote {} ({} run(s), {} dataset(s)); open it in a browser",
            file.display(),
            runs.len(),
            runs.iter()
                .flat_map(|r| r.datasets.iter().map(|d| d.dataset.as_str()))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        ));
    } else {
        printer.stdout(&render(&runs, &summary, args.dataset.as_deref()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_medians_and_tables_render() {
        assert_eq!(human_duration(1234), "1.2s");
        assert_eq!(human_duration(184_000), "3m04s");
        assert_eq!(human_duration(7_500_000), "2h05m");
        assert_eq!(median(vec![5, 1, 3]), Some(3));
        assert_eq!(median(vec![4, 1, 3, 2]), Some(2));
        assert_eq!(median(vec![]), None);
        let t = table(
            &[
                vec!["a".into(), "n".into()],
                vec!["long".into(), "12".into()],
            ],
            &[1],
        );
        assert_eq!(t, "a      n\nlong  12\n");
    }
}
