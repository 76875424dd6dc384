//! Row checks in a run: every row a table takes is judged ([`crate::schema::checks`]) before it
//! reaches a Parquet part; a row that fails goes to the stream's quarantine part instead, with
//! every check it failed, its reasons and where it came from.
//!
//! Guarantees:
//! - Nothing is lost and nothing is mixed in: each row taken lands in the dataset or in
//!   quarantine, never both, never neither.
//! - Quarantine parts are members of the checkpoint that closes them: recorded (`quarantine`
//!   manifest lines, with sha256, rows and per-check counts) after the dataset's part lines of
//!   the same checkpoint, and counted in its `of`, so a crash between those lines replays the
//!   checkpoint's pages and removes both (the resume rule for cut-short checkpoints).
//! - `unique` keys are pending in the key index ([`crate::store::unique`]) until their
//!   checkpoint's lines are written: made durable before the lines, settled after, so a kill -9
//!   anywhere neither loses nor doubles a key.
//! - `max_failed`: a count is judged as rows fail; a share over the table's rows at its end.
//!   Past it the table stops with [`TooManyFailed`] (exit 6) after its parts are recorded.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::error::TooManyFailed;
use crate::run::context::{RunCtx, obj};
use crate::schema::ColumnPlan;
use crate::schema::checks::{Checks, Failure, Origin, quarantine_columns, quarantine_row};
use crate::source::settings::TableSettings;
use crate::store::manifest::Manifest;
use crate::store::parts::{ClosedPart, TableSink};
use crate::store::unique::KeyIndex;

/// What a table's checks counted: rows judged, rows quarantined, and failures per check (a
/// row that fails two checks counts once in `quarantined` and once under each check).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckCounts {
    pub judged: u64,
    pub quarantined: u64,
    pub by_check: BTreeMap<String, u64>,
}

impl CheckCounts {
    pub fn add(&mut self, other: &CheckCounts) {
        self.judged += other.judged;
        self.quarantined += other.quarantined;
        for (k, v) in &other.by_check {
            *self.by_check.entry(k.clone()).or_default() += v;
        }
    }

    /// `required: 20, unique: 13`
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .by_check
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        parts.join(", ")
    }

    /// As a `quarantine` manifest line records it (its rows were judged too; the rows that
    /// passed are counted by the dataset's part lines).
    pub fn from_line(r: &Value) -> Self {
        let mut c = CheckCounts {
            judged: r["rows"].as_u64().unwrap_or(0),
            quarantined: r["rows"].as_u64().unwrap_or(0),
            by_check: BTreeMap::new(),
        };
        if let Some(m) = r["checks"].as_object() {
            for (k, v) in m {
                c.by_check.insert(k.clone(), v.as_u64().unwrap_or(0));
            }
        }
        c
    }
}

/// A table's checks in a run: the rules, the key index, and the counts of the whole run
/// (earlier processes' recorded checkpoints included).
pub(crate) struct Gate {
    pub checks: Checks,
    index: Option<KeyIndex>,
    pub counts: CheckCounts,
}

/// One stream's quarantine: its open part and what it counted since its last checkpoint.
pub(crate) struct Quarantine {
    out: std::path::PathBuf,
    settings: crate::store::parts::SinkSettings,
    run_id: String,
    sink: Option<TableSink>,
    /// The table's columns the open part was opened with.
    columns: Vec<String>,
    /// Part number to continue after, and the part file tag (`<run_id>[-s<k>]`).
    last_part: u64,
    tag: String,
    pub since: CheckCounts,
}

impl Quarantine {
    /// The quarantine of one stream of run `run_id` (its parts tagged `tag`) under `out`.
    pub fn new(
        out: &std::path::Path,
        settings: &crate::store::parts::SinkSettings,
        run_id: &str,
        tag: String,
        last_part: u64,
    ) -> Self {
        Self {
            out: out.to_path_buf(),
            settings: settings.clone(),
            run_id: run_id.to_string(),
            sink: None,
            columns: Vec::new(),
            last_part,
            tag,
            since: CheckCounts::default(),
        }
    }

    /// Close the open part (if any): the quarantine parts of this checkpoint.
    pub fn close(&mut self) -> anyhow::Result<Vec<ClosedPart>> {
        let Some(mut sink) = self.sink.take() else {
            return Ok(vec![]);
        };
        sink.skip_empty_part();
        let closed = sink.finish()?;
        self.last_part += closed.len() as u64;
        Ok(closed)
    }

    /// Drop the open part unrecorded (its rows are taken again, or replayed by a resume).
    pub fn abandon(&mut self) {
        self.sink = None;
        self.since = CheckCounts::default();
    }

    /// True when the open part holds enough rows that a checkpoint is due.
    pub fn checkpoint_due(&self) -> bool {
        self.sink.as_ref().is_some_and(TableSink::checkpoint_due)
    }

    /// Keep `row` (row `row_no` of `origin`'s page) with the checks it failed.
    fn push(
        &mut self,
        output: &str,
        columns: &[ColumnPlan],
        row: &[Value],
        failures: &[Failure],
        origin: &PageOrigin<'_>,
        row_no: u64,
    ) -> anyhow::Result<()> {
        let names_changed = self.columns.len() != columns.len()
            || self.columns.iter().zip(columns).any(|(a, b)| *a != b.name);
        if self.sink.is_some() && names_changed {
            anyhow::bail!(
                "internal: the columns of {output:?} changed while a quarantine part was open"
            );
        }
        if self.sink.is_none() {
            let mut sink = TableSink::new(
                &self.out,
                output,
                &self.tag,
                &quarantine_columns(columns),
                None,
                self.settings.clone(),
            )?
            .under("quarantine");
            sink.continue_after_part(self.last_part);
            self.sink = Some(sink);
            self.columns = columns.iter().map(|c| c.name.clone()).collect();
        }
        let q = quarantine_row(
            columns,
            row,
            failures,
            &Origin {
                run_id: &self.run_id,
                page: origin.page,
                row: row_no,
                snapshot: origin.snapshot,
                request_id: None,
            },
        );
        let Some(sink) = self.sink.as_mut() else {
            unreachable!("opened above")
        };
        sink.push_rows(std::slice::from_ref(&q), origin.page)
    }
}

/// Where the rows being judged came from.
pub(crate) struct PageOrigin<'a> {
    pub page: u64,
    pub snapshot: &'a str,
    /// The key index's checkpoint id of the stream's open checkpoint.
    pub checkpoint: &'a str,
    /// Rows of the same page judged before these (a file read in chunks): `_row` counts on.
    pub row_base: u64,
}

impl Gate {
    /// The table's gate, when it has checks. `adds`: the run adds to the dataset (incremental,
    /// files), so the keys of its finished runs' live checkpoints count; otherwise it replaces
    /// the dataset and only its own keys do. `rows_in_parts` and `quarantine_lines`: what the
    /// run's earlier processes recorded (their rows were judged too).
    pub fn open(
        ctx: &RunCtx<'_>,
        table: &TableSettings,
        adds: bool,
        rows_in_parts: u64,
        quarantine_lines: &[Value],
    ) -> anyhow::Result<Option<Self>> {
        let Some(checks) = table.checks.clone() else {
            return Ok(None);
        };
        let live = if adds {
            crate::run::resume::live_checkpoints(ctx.history, &table.output)
        } else {
            HashSet::new()
        };
        let mut before = CheckCounts {
            judged: rows_in_parts,
            ..Default::default()
        };
        for r in quarantine_lines {
            before.add(&CheckCounts::from_line(r));
        }
        Self::open_at(
            &ctx.settings.home,
            ctx.history,
            &table.output,
            ctx.run_id,
            checks,
            &live,
            before,
        )
        .map(Some)
    }

    /// [`Gate::open`] from its parts: the writer's home (its `state/`), the manifest read at
    /// start, the dataset, the run.
    pub fn open_at(
        home: &std::path::Path,
        history: &[Value],
        output: &str,
        run_id: &str,
        checks: Checks,
        live: &HashSet<String>,
        before: CheckCounts,
    ) -> anyhow::Result<Self> {
        let index = if checks.unique.is_empty() {
            None
        } else {
            let mut ix = KeyIndex::open(home, output, run_id, live)?;
            let vouched = crate::run::resume::vouched_checkpoints(history);
            let (settled, dropped) = ix.recover(&vouched)?;
            if settled + dropped > 0 {
                tracing::warn!(
                    "{output}: key index recovered after an interrupted run: {settled} key(s) of recorded checkpoints kept, {dropped} of unrecorded ones dropped (their pages are replayed)",
                );
            }
            Some(ix)
        };
        Ok(Self {
            checks,
            index,
            counts: before,
        })
    }

    /// Judge the rows `candidates` (indexes into `rows`, in `columns` order) of one page:
    /// returns the indexes of the rows that pass; the others go to `q`.
    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        &mut self,
        output: &str,
        q: &mut Quarantine,
        columns: &[ColumnPlan],
        rows: &[Vec<Value>],
        candidates: impl Iterator<Item = usize>,
        origin: &PageOrigin<'_>,
    ) -> anyhow::Result<Vec<usize>> {
        let checker = self.checks.bind(columns);
        let mut good = Vec::with_capacity(rows.len());
        let mut page_counts = CheckCounts::default();
        // Every check but `unique` first; then the keys of the rows that passed them, looked
        // up together (a failed row holds no key).
        let candidates: Vec<usize> = candidates.collect();
        let mut failed: Vec<Vec<Failure>> = Vec::with_capacity(candidates.len());
        let (mut keys, mut keyed): (Vec<Vec<u8>>, Vec<usize>) = (vec![], vec![]);
        for (j, &i) in candidates.iter().enumerate() {
            let mut f = Vec::new();
            checker.failures(&rows[i], &mut f);
            if f.is_empty()
                && self.index.is_some()
                && let Some(key) = checker.key(&rows[i])
            {
                keys.push(key);
                keyed.push(j);
            }
            failed.push(f);
        }
        if let Some(ix) = self.index.as_mut()
            && !keys.is_empty()
        {
            for (j, dup) in keyed
                .into_iter()
                .zip(ix.seen_many(&keys, origin.checkpoint)?)
            {
                if dup {
                    failed[j].push(checker.duplicate(&rows[candidates[j]]));
                }
            }
        }
        for (&i, failures) in candidates.iter().zip(failed) {
            page_counts.judged += 1;
            if failures.is_empty() {
                good.push(i);
                continue;
            }
            page_counts.quarantined += 1;
            let mut named: Vec<&str> = Vec::with_capacity(failures.len());
            for f in &failures {
                if !named.contains(&f.check) {
                    named.push(f.check);
                    *page_counts.by_check.entry(f.check.to_string()).or_default() += 1;
                }
            }
            q.push(
                output,
                columns,
                &rows[i],
                &failures,
                origin,
                origin.row_base + i as u64 + 1,
            )?;
        }
        q.since.add(&page_counts);
        self.counts.add(&page_counts);
        Ok(good)
    }

    /// The keys of these checkpoints stop counting: their parts are being replaced.
    pub fn forget(&mut self, checkpoints: &[String]) -> anyhow::Result<()> {
        if let Some(ix) = self.index.as_mut() {
            for ck in checkpoints {
                ix.forget(ck)?;
            }
        }
        Ok(())
    }

    /// [`Gate::judge`] every row of `rows`, keeping those that pass (moved, in order).
    pub fn keep_passing(
        &mut self,
        output: &str,
        q: &mut Quarantine,
        columns: &[ColumnPlan],
        rows: Vec<Vec<Value>>,
        origin: &PageOrigin<'_>,
    ) -> anyhow::Result<Vec<Vec<Value>>> {
        let good = self.judge(output, q, columns, &rows, 0..rows.len(), origin)?;
        if good.len() == rows.len() {
            return Ok(rows);
        }
        let mut keep = good.into_iter().peekable();
        Ok(rows
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.next_if_eq(i).is_some())
            .map(|(_, r)| r)
            .collect())
    }

    /// Before a checkpoint's lines: the keys its rows hold become durable.
    pub fn before_lines(&mut self) -> anyhow::Result<()> {
        match self.index.as_mut() {
            Some(ix) => ix.commit_pending(),
            None => Ok(()),
        }
    }

    /// After a checkpoint's lines: its keys are held.
    pub fn after_lines(&mut self, checkpoint: &str) -> anyhow::Result<()> {
        if let Some(ix) = self.index.as_mut() {
            crate::store::fsutil::failpoint("unique:before-settle");
            ix.settle(checkpoint)?;
        }
        Ok(())
    }

    /// Forget the keys of an open checkpoint whose rows are taken again (a changed plan).
    pub fn retake(&mut self, checkpoint: &str, q: &mut Quarantine) -> anyhow::Result<()> {
        let since = std::mem::take(&mut q.since);
        self.counts.judged -= since.judged;
        self.counts.quarantined -= since.quarantined;
        for (k, v) in since.by_check {
            if let Some(c) = self.counts.by_check.get_mut(&k) {
                *c -= v;
            }
        }
        q.abandon();
        match self.index.as_mut() {
            Some(ix) => ix.drop_pending(checkpoint),
            None => Ok(()),
        }
    }

    /// Past a `max_failed` count (judged as rows fail), or at the table's end past any limit.
    pub fn over_limit(&self, output: &str, at_end: bool) -> Option<TooManyFailed> {
        let limit = self.checks.max_failed?;
        if !(at_end || limit.is_count())
            || !limit.exceeded(self.counts.quarantined, self.counts.judged)
        {
            return None;
        }
        Some(TooManyFailed {
            output: output.to_string(),
            quarantine_dir: crate::store::fsutil::sanitize_component(output),
            failed: self.counts.quarantined,
            judged: self.counts.judged,
            by_check: self.counts.describe(),
            limit: limit.to_string(),
        })
    }

    /// What `table_end` records about the checks.
    pub fn end_fields(&self, end: &mut serde_json::Map<String, Value>) {
        end.insert("rows_quarantined".into(), json!(self.counts.quarantined));
        end.insert("checks".into(), json!(self.counts.by_check));
    }
}

/// One `quarantine` manifest line per closed quarantine part of a checkpoint (after the
/// dataset's lines; `of` counts both).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_quarantine_lines(
    manifest: &mut Manifest,
    run_id: &str,
    (source, table, output): (&str, &str, &str),
    pages: &Value,
    closed: &[ClosedPart],
    counts: &CheckCounts,
    columns: &[ColumnPlan],
    of: usize,
) -> anyhow::Result<()> {
    let schema = quarantine_columns(columns);
    for part in closed {
        let rec = obj(json!({
            "path": part.rel_path,
            "sha256": part.sha256,
            "bytes": part.bytes,
            "rows": part.rows,
            "checks": counts.by_check,
            "source": source,
            "table": table,
            "output": output,
            "pages": pages,
            "schema": schema,
            "of": of,
        }));
        manifest.append("quarantine", run_id, rec)?;
        crate::store::fsutil::failpoint("parts:between-lines");
    }
    Ok(())
}
