//! Reading the manifest back to decide what a new run must do first (DESIGN.md crash-safety
//! rules 3 and 4).
//!
//! Guarantees:
//! - [`find_resumable`] names the last run only if it did not end `ok` and was started with
//!   the same settings (config digest); for each of its tables it says whether the table is
//!   done, or which recorded pages lie after the last durable Parquet checkpoint. Those pages'
//!   snapshots are replayed from disk (hash-checked), so a resume re-fetches no recorded page.
//! - [`sweep_parts`] removes every Parquet part (dataset or quarantine) the manifest does not
//!   vouch for: parts never
//!   recorded (a crash between rename and record) and superseded parts still present (a crash
//!   in the middle of a supersede). Readers then see each source row exactly once.
//! - A `--parallel` table resumes slice by slice: each slice has its own checkpoint, replay
//!   list and cursor, and the slice plan is the one recorded, never recomputed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::schema::ColumnPlan;
use crate::source::datasette::slices::SlicePlan;

/// A recorded page after the last checkpoint of a table.
#[derive(Debug, Clone)]
pub struct RecordedPage {
    pub page: u64,
    pub path: String,
    pub sha256: String,
    pub cursor_out: Option<String>,
}

impl RecordedPage {
    /// The page's snapshot, read back and checked against its recorded sha256.
    pub fn read_snapshot(&self, out: &Path) -> anyhow::Result<Vec<u8>> {
        let body = std::fs::read(out.join(&self.path)).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the snapshot {} to resume ({e}); rerun with --restart",
                self.path
            )
        })?;
        if crate::store::manifest::sha256_hex(&body) != self.sha256 {
            anyhow::bail!(
                "the snapshot {} no longer matches the sha256 its manifest line records, so it cannot be replayed; rerun with --restart",
                self.path
            );
        }
        Ok(body)
    }
}

/// Where one cursor of a table stands: the whole table, or one slice of a `--parallel` run.
#[derive(Debug, Clone, Default)]
pub struct StreamProgress {
    /// Last page whose rows are all in recorded parts (0: none).
    pub checkpoint_page: u64,
    /// `cursor_out` of the checkpoint page.
    pub checkpoint_cursor: Option<String>,
    /// Recorded pages after the checkpoint, in order: replay these from their snapshots.
    pub replay: Vec<RecordedPage>,
    /// Every recorded page of the stream in this run, in order (incremental replays them all
    /// to rebuild its watermark tracker; only those after the checkpoint go to Parquet).
    pub all_pages: Vec<RecordedPage>,
    /// The highest part number recorded for the stream in this run.
    pub last_part: u64,
    /// Rows in recorded parts so far.
    pub rows_in_parts: u64,
    /// Every cursor already followed (to keep the repeated-token guard across a resume).
    pub cursors: Vec<String>,
    /// The highest quarantine part number recorded for the stream in this run.
    pub last_quarantine_part: u64,
    /// How the source paged, as its last recorded page says (a REST table: the paginator
    /// `auto` chose); opaque here, read back by the source.
    pub paging: Option<Value>,
}

/// Where one table of an unfinished run stands.
#[derive(Debug, Clone, Default)]
pub struct TableProgress {
    /// The table's final parts are recorded (`table_end`): nothing to do.
    pub done: Option<TableDone>,
    /// The column plan recorded with the table's parts, if any part was recorded.
    pub plan: Option<Vec<ColumnPlan>>,
    /// The server's row count, recorded with page 1 (or with the slice plan).
    pub server_count: Option<u64>,
    /// The key ranges of a `--parallel` run, as recorded before its first page.
    pub slices: Option<SlicePlan>,
    /// Keyed by slice index (`None`: the table is paged with one cursor).
    pub streams: BTreeMap<Option<u32>, StreamProgress>,
    /// Parts of a checkpoint whose part lines were cut short by a crash: removed before the
    /// table continues, their pages replayed.
    pub incomplete_parts: Vec<String>,
    /// The `quarantine` lines of complete checkpoints (the row checks' counts so far).
    pub quarantined: Vec<Value>,
}

impl TableProgress {
    /// Rows already in recorded parts, all streams together.
    pub fn rows_in_parts(&self) -> u64 {
        self.streams.values().map(|s| s.rows_in_parts).sum()
    }
}

/// A table the run already completed: the totals its `table_end` records.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableDone {
    pub pages: u64,
    pub rows: u64,
}

#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub run_id: String,
    /// Keyed by the table's `output` name.
    pub tables: BTreeMap<String, TableProgress>,
}

fn part_number(path: &str) -> u64 {
    // …/part-<run_id>[-s<slice>]-<n>.parquet
    path.rsplit('-')
        .next()
        .and_then(|s| s.strip_suffix(".parquet"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The slice a `page` or `parquet` record belongs to (`None`: an unsliced table).
fn slice_of(r: &Value) -> Option<u32> {
    let v = if r["kind"] == "parquet" {
        &r["pages"]["slice"]
    } else {
        &r["slice"]
    };
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// What identifies one checkpoint's part lines: the dataset, the key range and the pages.
type CheckpointKey = (String, Option<u32>, String, u64, u64);

fn checkpoint_key(r: &Value) -> CheckpointKey {
    (
        r["output"].as_str().unwrap_or_default().to_string(),
        slice_of(r),
        r["pages"]["raw_run"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        r["pages"]["first"].as_u64().unwrap_or(0),
        r["pages"]["last"].as_u64().unwrap_or(0),
    )
}

/// Checkpoints whose part lines are not all recorded: a checkpoint closes several parts (one
/// per partition) and records one line each, each saying how many there are (`of`); a crash
/// between those lines leaves fewer. (Lines without `of` come from before it was recorded.)
fn incomplete_checkpoints(mine: &[&Value]) -> std::collections::HashSet<CheckpointKey> {
    let mut seen: BTreeMap<CheckpointKey, (u64, u64)> = BTreeMap::new();
    for r in mine.iter().filter(|r| is_part_line(r)) {
        let Some(of) = r["of"].as_u64() else { continue };
        let e = seen.entry(checkpoint_key(r)).or_insert((0, of));
        e.0 += 1;
    }
    seen.into_iter()
        .filter(|(_, (n, of))| n < of)
        .map(|(k, _)| k)
        .collect()
}

/// A line that records a part of a checkpoint: a dataset part or a quarantine part.
fn is_part_line(r: &Value) -> bool {
    r["kind"] == "parquet" || r["kind"] == "quarantine"
}

/// The key index's ids ([`crate::store::unique::checkpoint_id`]) of every checkpoint whose
/// part lines are all in the manifest.
pub fn vouched_checkpoints(records: &[Value]) -> HashSet<String> {
    let lines: Vec<&Value> = records.iter().filter(|r| is_part_line(r)).collect();
    let incomplete = incomplete_checkpoints(&lines);
    lines
        .iter()
        .filter(|r| !incomplete.contains(&checkpoint_key(r)))
        .map(|r| {
            let (_, slice, run, first, _) = checkpoint_key(r);
            crate::store::unique::checkpoint_id(&run, slice, first)
        })
        .collect()
}

/// The checkpoints (key index ids) of `output` whose parts (dataset or quarantine) are live:
/// recorded by a run that finished the dataset, complete, and not superseded. Their `unique`
/// keys are the dataset's.
pub fn live_checkpoints(records: &[Value], output: &str) -> HashSet<String> {
    let finished = finished_runs(records, output);
    let superseded = superseded_paths(records);
    let vouched = vouched_checkpoints(records);
    records
        .iter()
        .filter(|r| is_part_line(r) && r["output"] == output)
        .filter(|r| r["run_id"].as_str().is_some_and(|id| finished.contains(id)))
        .filter(|r| r["path"].as_str().is_some_and(|p| !superseded.contains(p)))
        .map(|r| {
            let (_, slice, run, first, _) = checkpoint_key(r);
            crate::store::unique::checkpoint_id(&run, slice, first)
        })
        .filter(|ck| vouched.contains(ck))
        .collect()
}

/// The last run, if it is unfinished and was started with `digest`.
pub fn find_resumable(records: &[Value], digest: &str) -> Option<ResumePoint> {
    let last_start = records
        .iter()
        .rposition(|r| r["kind"] == "run_start" || r["kind"] == "run_resume")?;
    let run_id = records[last_start]["run_id"].as_str()?.to_string();
    // The digest of the run as first started.
    let first_start = records
        .iter()
        .find(|r| r["kind"] == "run_start" && r["run_id"] == run_id.as_str())?;
    if first_start["config_digest"] != digest {
        return None;
    }
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| r["run_id"] == run_id.as_str())
        .collect();
    if mine
        .iter()
        .rev()
        .find(|r| r["kind"] == "run_end")
        .is_some_and(|r| r["outcome"] == "ok")
    {
        return None;
    }
    let incomplete = incomplete_checkpoints(&mine);
    let mut tables: BTreeMap<String, TableProgress> = BTreeMap::new();
    let mut pages: BTreeMap<(String, Option<u32>), Vec<&Value>> = BTreeMap::new();
    for r in &mine {
        let Some(output) = r["output"].as_str() else {
            continue;
        };
        let t = tables.entry(output.to_string()).or_default();
        match r["kind"].as_str() {
            Some("page") => pages
                .entry((output.to_string(), slice_of(r)))
                .or_default()
                .push(r),
            Some("slices") => {
                t.slices = serde_json::from_value(r["plan"].clone()).ok();
                t.server_count = t.slices.as_ref().and_then(|s| s.server_count);
            }
            Some("parquet") => {
                let s = t.streams.entry(slice_of(r)).or_default();
                // Numbered past every recorded part, so no path is ever recorded twice.
                s.last_part = s
                    .last_part
                    .max(part_number(r["path"].as_str().unwrap_or("")));
                if incomplete.contains(&checkpoint_key(r)) {
                    // A checkpoint cut short: its pages are replayed, its parts go.
                    if let Some(p) = r["path"].as_str() {
                        t.incomplete_parts.push(p.to_string());
                    }
                    continue;
                }
                let last = r["pages"]["last"].as_u64().unwrap_or(0);
                s.checkpoint_page = s.checkpoint_page.max(last);
                s.rows_in_parts += r["rows"].as_u64().unwrap_or(0);
                // The last part's plan: columns only ever widen (schema evolution).
                if let Ok(p) = serde_json::from_value::<Vec<ColumnPlan>>(r["schema"].clone()) {
                    t.plan = Some(p.into_iter().map(ColumnPlan::restored).collect());
                }
            }
            Some("quarantine") => {
                let s = t.streams.entry(slice_of(r)).or_default();
                s.last_quarantine_part = s
                    .last_quarantine_part
                    .max(part_number(r["path"].as_str().unwrap_or("")));
                if incomplete.contains(&checkpoint_key(r)) {
                    if let Some(p) = r["path"].as_str() {
                        t.incomplete_parts.push(p.to_string());
                    }
                    continue;
                }
                s.checkpoint_page = s
                    .checkpoint_page
                    .max(r["pages"]["last"].as_u64().unwrap_or(0));
                t.quarantined.push((*r).clone());
            }
            Some("table_end") => {
                t.done = Some(TableDone {
                    pages: r["pages"].as_u64().unwrap_or(0),
                    rows: r["rows"].as_u64().unwrap_or(0),
                });
            }
            _ => {}
        }
    }
    for ((output, slice), recs) in pages {
        let t = tables.entry(output).or_default();
        let s = t.streams.entry(slice).or_default();
        for r in recs {
            let page = r["page"].as_u64().unwrap_or(0);
            let cursor_out = r["cursor_out"].as_str().map(str::to_string);
            if let Some(c) = &cursor_out {
                s.cursors.push(c.clone());
            }
            if page == 1 && slice.is_none() {
                t.server_count = r["server_count"].as_u64();
            }
            if !r["paging"].is_null() {
                s.paging = Some(r["paging"].clone());
            }
            if page == s.checkpoint_page {
                s.checkpoint_cursor = cursor_out.clone();
            }
            let rec = RecordedPage {
                page,
                path: r["path"].as_str().unwrap_or_default().to_string(),
                sha256: r["sha256"].as_str().unwrap_or_default().to_string(),
                cursor_out,
            };
            if page > s.checkpoint_page {
                s.replay.push(rec.clone());
            }
            s.all_pages.push(rec);
        }
        s.replay.sort_by_key(|p| p.page);
        s.all_pages.sort_by_key(|p| p.page);
        // Only a gap-free run of pages right after the checkpoint can be replayed.
        let mut expect = s.checkpoint_page + 1;
        s.replay.retain(|p| {
            let keep = p.page == expect;
            if keep {
                expect += 1;
            }
            keep
        });
    }
    Some(ResumePoint { run_id, tables })
}

/// Remove Parquet parts under `DIR/parquet` that the manifest does not vouch for (in a DIR
/// shared by writers, only parts of `own` runs: the others are other writers'). Returns the
/// relative paths removed.
pub fn sweep_parts(
    out: &Path,
    records: &[Value],
    own: Option<&HashSet<String>>,
) -> std::io::Result<Vec<String>> {
    let mut recorded: HashSet<String> = HashSet::new();
    for r in records {
        match r["kind"].as_str() {
            Some("parquet" | "quarantine") => {
                if let Some(p) = r["path"].as_str() {
                    recorded.insert(p.to_string());
                }
            }
            // Parts a Delta commit removed stay on disk: older versions of the table read them.
            Some("supersede") if r["kept"] != true => {
                for p in r["paths"].as_array().into_iter().flatten() {
                    if let Some(p) = p.as_str() {
                        recorded.remove(p);
                    }
                }
            }
            _ => {}
        }
    }
    let mut removed = vec![];
    let mut files = crate::store::fsutil::files_under(&out.join("parquet"))?;
    files.extend(crate::store::fsutil::files_under(&out.join("quarantine"))?);
    for p in files {
        let rel = crate::store::fsutil::rel_path(out, &p);
        if crate::store::fsutil::is_part_file(&p)
            && !recorded.contains(&rel)
            && own.is_none_or(|runs| crate::store::writers::written_by(&rel, runs))
        {
            std::fs::remove_file(&p)?;
            if let Some(dir) = p.parent() {
                crate::store::fsutil::fsync_dir(dir)?;
            }
            removed.push(rel);
        }
    }
    Ok(removed)
}

/// The runs that completed dataset `output` (recorded its `table_end`).
pub fn finished_runs<'a>(records: &'a [Value], output: &str) -> HashSet<&'a str> {
    records
        .iter()
        .filter(|r| r["kind"] == "table_end" && r["output"] == output)
        .filter_map(|r| r["run_id"].as_str())
        .collect()
}

/// The schema dataset `output` has so far: the columns of its live parts (not superseded),
/// in the order they first appeared, each with the type it was first written with.
pub fn dataset_schema(records: &[Value], output: &str) -> Vec<ColumnPlan> {
    let superseded = superseded_paths(records);
    let mut columns: Vec<ColumnPlan> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r["kind"] == "parquet" && r["output"] == output)
    {
        if r["path"].as_str().is_some_and(|p| superseded.contains(p)) {
            continue;
        }
        let Ok(plan) = serde_json::from_value::<Vec<ColumnPlan>>(r["schema"].clone()) else {
            continue;
        };
        for c in plan {
            if !columns.iter().any(|k| k.name == c.name) {
                columns.push(c.restored());
            }
        }
    }
    columns
}

/// Every part path a `supersede` record removed.
pub fn superseded_paths(records: &[Value]) -> HashSet<&str> {
    records
        .iter()
        .filter(|r| r["kind"] == "supersede")
        .flat_map(|r| r["paths"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect()
}

/// Parts (dataset and quarantine) of `output` recorded by runs other than `except_run` that
/// have no `table_end` for it, and that no `supersede` removed.
pub fn unfinished_parts(records: &[Value], output: &str, except_run: &str) -> Vec<String> {
    let finished = finished_runs(records, output);
    let superseded = superseded_paths(records);
    records
        .iter()
        .filter(|r| is_part_line(r) && r["output"] == output)
        .filter(|r| {
            r["run_id"]
                .as_str()
                .is_some_and(|id| id != except_run && !finished.contains(id))
        })
        .filter_map(|r| r["path"].as_str())
        .filter(|p| !superseded.contains(p))
        .map(str::to_string)
        .collect()
}
