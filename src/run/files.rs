//! One `files` table's run ([`crate::source::files`]): each matching file is recorded
//! byte-for-byte like a page, its rows typed, checked and written, and the dataset grows by
//! the files that are new or changed.
//!
//! Guarantees:
//! - Per file: the copy in `raw/…/file-NNNNNN.<ext>` is durable first (hashed while it is
//!   copied, so the sha256 is of exactly the bytes read), then its rows are read from that copy
//!   (never from the original, which may change meanwhile) into the open parts, then its `page`
//!   line (`file`: the original path, with `rows`), then one checkpoint records its parts. A
//!   file is the unit of work: no checkpoint covers part of a file.
//! - A file whose sha256 equals the last harvested version of the same path is skipped; a
//!   changed file is harvested again, and once its new version's parts are recorded, the old
//!   version's parts (dataset and quarantine) are superseded: the dataset holds each file's
//!   current rows once.
//! - A file whose name does not match `name_pattern` is reported (a warning, and counted in
//!   `table_end`), never read.
//! - Resume after a crash: files whose checkpoint is recorded are done; a file whose line is
//!   recorded without its checkpoint is read again from its recorded copy (hash-checked), with
//!   the same page number; the rest are listed and read as new.
//! - Memory: rows stream in chunks of [`CHUNK_ROWS`]; the writer's budget bounds the rest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::run::context::{RunCtx, Totals, obj};
use crate::run::quarantine::{Gate, PageOrigin, Quarantine};
use crate::run::resume::TableProgress;
use crate::schema::{ColType, ColumnPlan};
use crate::source::TablePlan;
use crate::source::files::{Chunks, FileFormat};
use crate::source::settings::TableSettings;
use crate::store::fsutil::AtomicFile;
use crate::store::manifest::Manifest;
use crate::store::parts::TableSink;

/// Rows read from a file at a time.
pub const CHUNK_ROWS: usize = 8192;

/// A file this run takes: new, or recorded by an earlier process of the run.
struct FileWork {
    page: u64,
    /// The original path, as listed.
    source: String,
    snapshot_rel: String,
    sha256: String,
    bytes: u64,
    format: FileFormat,
    /// Its line is in the manifest already (a resumed run reads it again).
    recorded: bool,
}

struct FilesRun<'a> {
    ctx: &'a RunCtx<'a>,
    table: &'a TableSettings,
    plan: Option<TablePlan>,
    sink: Option<TableSink>,
    quarantine: Quarantine,
    gate: Option<Gate>,
    last_part: u64,
    rows: u64,
    parts: u64,
}

/// Harvest one `files` table.
pub(crate) fn harvest_files(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    mut progress: TableProgress,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let Some(ft) = table.files.as_ref() else {
        bail!("table {:?} is not a files table", table.output);
    };
    if ctx.settings.table_format == crate::store::delta::TableFormat::Delta {
        return Err(crate::error::UsageError::with_hint(
            format!(
                "table {:?}: a files table is written as Parquet parts; --table-format delta is not available for it yet",
                table.name
            ),
            "harvest files tables without --table-format delta (or in a run of their own)",
        )
        .into());
    }
    crate::run::pipeline::remove_incomplete_checkpoint(
        ctx,
        table,
        &progress.incomplete_parts,
        manifest,
        None,
    )?;
    let sp = progress.streams.remove(&None).unwrap_or_default();
    let resuming = !sp.all_pages.is_empty() || sp.last_part > 0;
    if !resuming {
        crate::run::pipeline::remove_unfinished_parts(ctx, table, manifest, None)?;
    }
    let history = FileHistory::read(ctx.history, &table.output, ctx.run_id);
    let (raw_rel, _) = ctx.raw_dir(&table.output)?;

    // The dataset keeps its columns across runs; a resumed run takes its recorded plan.
    let columns = progress.plan.clone().or_else(|| {
        Some(crate::run::resume::dataset_schema(
            ctx.history,
            &table.output,
        ))
        .filter(|c| !c.is_empty())
    });
    let mut run = FilesRun {
        ctx,
        table,
        plan: None,
        sink: None,
        quarantine: Quarantine::new(
            &ctx.settings.out,
            &ctx.settings.sink,
            ctx.run_id,
            ctx.run_id.to_string(),
            sp.last_quarantine_part,
        ),
        // The dataset grows by the files that are new or changed.
        gate: Gate::open(ctx, table, true, sp.rows_in_parts, &progress.quarantined)?,
        last_part: sp.last_part,
        rows: sp.rows_in_parts,
        parts: 0,
    };
    if let Some(c) = columns {
        run.set_plan(c)?;
    }

    // 1. Files an earlier process of this run recorded without their checkpoint: again, from
    //    their recorded copies.
    let mut page_no = sp.all_pages.last().map_or(0, |p| p.page);
    let mut taken: HashSet<String> = HashSet::new();
    for rp in &sp.all_pages {
        let Some(f) = history.this_run.get(&rp.page) else {
            continue;
        };
        taken.insert(f.source.clone());
        if rp.page > sp.checkpoint_page {
            rp.read_snapshot(&ctx.settings.out)?;
            let work = FileWork {
                page: rp.page,
                source: f.source.clone(),
                snapshot_rel: rp.path.clone(),
                sha256: rp.sha256.clone(),
                bytes: f.bytes,
                format: f.format,
                recorded: true,
            };
            run.take_file(&work, &history, manifest)?;
        }
    }

    // 2. The files the glob names now (local, or on object storage).
    let place = Place::open(ctx, table, &ft.glob)?;
    let listed = place.list()?;
    if listed.is_empty() {
        let w = format!(
            "{}: no file matches {:?} (relative paths are from the working directory)",
            table.output, ft.glob
        );
        tracing::warn!("{w}");
        totals.warnings.push(w);
    }
    let (mut unchanged, mut not_matching) = (0u64, 0u64);
    let mut files_taken = 0u64;
    for (source, name) in listed {
        if taken.contains(&source) {
            continue;
        }
        if let Some(re) = &ft.name_pattern
            && !re.is_match(&name)
        {
            let w = format!(
                "{}: {source} was not read: its name does not match name_pattern {}",
                table.output,
                re.as_str()
            );
            tracing::warn!("{w}");
            totals.warnings.push(w);
            not_matching += 1;
            continue;
        }
        let Some(format) = ft.format.or_else(|| FileFormat::from_name(&name)) else {
            let w = format!(
                "{}: {source} was not read: its extension names no format (csv, ndjson, jsonl, parquet); set `format` on the table",
                table.output
            );
            tracing::warn!("{w}");
            totals.warnings.push(w);
            not_matching += 1;
            continue;
        };
        let snapshot_rel = format!("{raw_rel}/file-{:06}.{}", page_no + 1, format.extension());
        let (sha256, bytes) = copy_hashing(
            &source,
            &ctx.settings.out.join(&snapshot_rel),
            |w| place.read(&source, &name, w),
            |sha| history.latest.get(&source).is_some_and(|s| s == sha),
        )?;
        let Some(sha256) = sha256 else {
            tracing::info!(
                "{}: {source} is unchanged since it was harvested",
                table.output
            );
            unchanged += 1;
            continue;
        };
        page_no += 1;
        let work = FileWork {
            page: page_no,
            source,
            snapshot_rel,
            sha256,
            bytes,
            format,
            recorded: false,
        };
        run.take_file(&work, &history, manifest)?;
        files_taken += 1;
    }
    run.finish(
        manifest,
        totals,
        page_no,
        files_taken,
        unchanged,
        not_matching,
        started,
    )
}

/// Where a table's files are: a local directory, or an `s3://` prefix.
enum Place {
    Local(String),
    S3 {
        remote: Box<crate::store::remote::Remote>,
        /// `s3://bucket/dir/` the names are under.
        dir: String,
        name_glob: String,
    },
}

impl Place {
    fn open(ctx: &RunCtx<'_>, table: &TableSettings, glob: &str) -> anyhow::Result<Self> {
        let Some(rest) = glob.strip_prefix("s3://") else {
            return Ok(Place::Local(glob.to_string()));
        };
        let (dir, name_glob) = match rest.rsplit_once('/') {
            Some((d, n)) if !d.is_empty() && !n.is_empty() => (format!("s3://{d}/"), n),
            _ => {
                return Err(crate::error::UsageError::with_hint(
                    format!("table {:?}: path {glob:?} names no file under a bucket", table.name),
                    "write it as s3://BUCKET/PREFIX/NAME-GLOB, e.g. s3://uploads/hr/hired_employees*.csv",
                )
                .into());
            }
        };
        if dir.contains(['*', '?', '[']) {
            return Err(crate::error::UsageError::with_hint(
                format!(
                    "table {:?}: {glob:?} has wildcards before its file name",
                    table.name
                ),
                "only the file name may hold * ? [..]",
            )
            .into());
        }
        let remote = Box::new(crate::store::remote::Remote::new(
            &dir,
            &ctx.settings.s3,
            ctx.settings.out.clone(),
            None,
        )?);
        Ok(Place::S3 {
            remote,
            dir,
            name_glob: name_glob.to_string(),
        })
    }

    /// The files, as (source, name), sorted: local paths, or `s3://…` URLs.
    fn list(&self) -> anyhow::Result<Vec<(String, String)>> {
        let bad_glob = |why: String| {
            crate::error::UsageError::with_hint(
                why,
                "`path` is a file path whose name may hold * ? [..] (e.g. data/hired_employees*.csv)",
            )
        };
        match self {
            Place::Local(glob) => Ok(crate::source::files::list(glob)
                .map_err(bad_glob)?
                .into_iter()
                .map(|p| {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (p.display().to_string(), name)
                })
                .collect()),
            Place::S3 {
                remote,
                dir,
                name_glob,
            } => {
                let re = crate::source::files::glob_regex(name_glob).map_err(bad_glob)?;
                Ok(remote
                    .list_files()?
                    .into_iter()
                    .filter(|(n, _)| !n.starts_with('.') && re.is_match(n))
                    .map(|(n, _)| (format!("{dir}{n}"), n))
                    .collect())
            }
        }
    }

    /// Copy file `source` (named `name`) into `w`; returns its size.
    fn read(&self, source: &str, name: &str, w: &mut (dyn Write + Send)) -> anyhow::Result<u64> {
        match self {
            Place::Local(_) => {
                let mut f =
                    std::fs::File::open(source).with_context(|| format!("cannot open {source}"))?;
                std::io::copy(&mut f, w).with_context(|| format!("cannot read {source}"))
            }
            Place::S3 { remote, .. } => remote.read_into(name, w),
        }
    }
}

/// What a copy writes through: the snapshot file, and the hash of every byte.
struct Hashing {
    file: AtomicFile,
    hasher: sha2::Sha256,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Copy `source` to `to` atomically with `fill`, hashing the bytes as they are copied. When
/// `skip` says the hash is one already harvested, the copy is dropped and `None` returned.
fn copy_hashing(
    source: &str,
    to: &Path,
    fill: impl FnOnce(&mut (dyn Write + Send)) -> anyhow::Result<u64>,
    skip: impl Fn(&str) -> bool,
) -> anyhow::Result<(Option<String>, u64)> {
    use sha2::Digest as _;
    let file = AtomicFile::create(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut w = Hashing {
        file,
        hasher: sha2::Sha256::new(),
    };
    let bytes = fill(&mut w).with_context(|| format!("cannot copy {source}"))?;
    let Hashing { file, hasher } = w;
    let sha: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if skip(&sha) {
        return Ok((None, bytes)); // the temp file goes with `file`
    }
    file.commit()
        .with_context(|| format!("cannot write {}", to.display()))?;
    Ok((Some(sha), bytes))
}

/// What the manifest says about the table's files.
struct FileHistory {
    /// The sha256 of the last version of each path harvested by a finished run (or taken
    /// by a checkpoint of this run).
    latest: HashMap<String, String>,
    /// This run's recorded files, by page number.
    this_run: BTreeMap<u64, RecordedFile>,
    /// Live parts (dataset and quarantine) of each path's earlier versions.
    parts_of: HashMap<String, Vec<String>>,
    /// The checkpoints (key index ids) of each path's earlier versions.
    checkpoints_of: HashMap<String, Vec<String>>,
}

struct RecordedFile {
    source: String,
    bytes: u64,
    format: FileFormat,
}

impl FileHistory {
    fn read(records: &[Value], output: &str, run_id: &str) -> Self {
        let finished = crate::run::resume::finished_runs(records, output);
        let superseded = crate::run::resume::superseded_paths(records);
        let mut latest = HashMap::new();
        let mut this_run = BTreeMap::new();
        let mut page_file: HashMap<(String, u64), String> = HashMap::new();
        for r in records
            .iter()
            .filter(|r| r["kind"] == "page" && r["output"] == output)
        {
            let (Some(src), Some(run)) = (r["file"]["path"].as_str(), r["run_id"].as_str()) else {
                continue;
            };
            let page = r["page"].as_u64().unwrap_or(0);
            page_file.insert((run.to_string(), page), src.to_string());
            if run == run_id {
                let format = match r["file"]["format"].as_str() {
                    Some("ndjson") => FileFormat::Ndjson,
                    Some("parquet") => FileFormat::Parquet,
                    _ => FileFormat::Csv,
                };
                this_run.insert(
                    page,
                    RecordedFile {
                        source: src.to_string(),
                        bytes: r["bytes"].as_u64().unwrap_or(0),
                        format,
                    },
                );
            } else if finished.contains(run) {
                latest.insert(
                    src.to_string(),
                    r["sha256"].as_str().unwrap_or("").to_string(),
                );
            }
        }
        let mut parts_of: HashMap<String, Vec<String>> = HashMap::new();
        let mut checkpoints_of: HashMap<String, Vec<String>> = HashMap::new();
        for r in records.iter().filter(|r| {
            (r["kind"] == "parquet" || r["kind"] == "quarantine") && r["output"] == output
        }) {
            let (Some(path), Some(run)) = (r["path"].as_str(), r["pages"]["raw_run"].as_str())
            else {
                continue;
            };
            if superseded.contains(path) || run == run_id {
                continue;
            }
            let first = r["pages"]["first"].as_u64().unwrap_or(0);
            let last = r["pages"]["last"].as_u64().unwrap_or(0);
            for p in first..=last {
                if let Some(src) = page_file.get(&(run.to_string(), p)) {
                    parts_of
                        .entry(src.clone())
                        .or_default()
                        .push(path.to_string());
                    checkpoints_of
                        .entry(src.clone())
                        .or_default()
                        .push(crate::store::unique::checkpoint_id(run, None, first));
                }
            }
        }
        FileHistory {
            latest,
            this_run,
            parts_of,
            checkpoints_of,
        }
    }
}

impl FilesRun<'_> {
    fn set_plan(&mut self, columns: Vec<ColumnPlan>) -> anyhow::Result<()> {
        let mut sink = TableSink::new(
            &self.ctx.settings.out,
            &self.table.output,
            self.ctx.run_id,
            &columns,
            self.table.partition_by.as_deref(),
            self.ctx.settings.sink.clone(),
        )?;
        sink.continue_after_part(self.last_part);
        self.sink = Some(sink);
        self.plan = Some(TablePlan {
            columns,
            is_view: false,
            count: None,
        });
        Ok(())
    }

    /// The columns of the first file: CSV text (or its `types`), NDJSON by the values of its
    /// first chunk (as REST pages), Parquet by the file's own types (or `types`).
    fn plan_from(&mut self, work: &FileWork, first: &crate::source::Page) -> anyhow::Result<()> {
        let path = self.ctx.settings.out.join(&work.snapshot_rel);
        let columns = match work.format {
            FileFormat::Parquet => Chunks::parquet_columns(&path)
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .map(|mut c| {
                    if let Some(t) = self.table.types.get(&c.name) {
                        c.ty = *t;
                        c.reason = "override".into();
                        c.numbers_as_text = *t == ColType::Text;
                    }
                    c
                })
                .collect(),
            FileFormat::Csv | FileFormat::Ndjson => {
                crate::source::rest::plan_records(self.table, first, &[])?.columns
            }
        };
        self.set_plan(columns)
    }

    /// Read one file's recorded copy into the open parts, record its line (if new), then
    /// checkpoint; then supersede its earlier versions.
    fn take_file(
        &mut self,
        work: &FileWork,
        history: &FileHistory,
        manifest: &mut Manifest,
    ) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let snapshot = ctx.settings.out.join(&work.snapshot_rel);
        let mut chunks =
            Chunks::open(&snapshot, work.format, &self.table.types).map_err(|why| {
                anyhow::anyhow!("{} (copy of {}): {why}", work.snapshot_rel, work.source)
            })?;
        let checkpoint = crate::store::unique::checkpoint_id(ctx.run_id, None, work.page);
        // A new version replaces the old one: its keys are not duplicates of the old one's.
        if let (Some(g), Some(old)) = (self.gate.as_mut(), history.checkpoints_of.get(&work.source))
        {
            g.forget(old)?;
        }
        let mut rows_in_file = 0u64;
        let mut row_base = 0u64;
        while let Some(chunk) = chunks
            .next_chunk(CHUNK_ROWS)
            .map_err(|why| anyhow::anyhow!("{why} (copied from {})", work.source))?
        {
            if self.plan.is_none() {
                self.plan_from(work, &chunk)?;
            }
            let Some(plan) = self.plan.as_ref() else {
                unreachable!("planned above")
            };
            let rows = chunk.aligned(&plan.columns, &self.table.output, work.page)?;
            rows_in_file += rows.len() as u64;
            let good = match self.gate.as_mut() {
                None => rows,
                Some(gate) => gate.keep_passing(
                    &self.table.output,
                    &mut self.quarantine,
                    &plan.columns,
                    rows,
                    &PageOrigin {
                        page: work.page,
                        snapshot: &work.snapshot_rel,
                        checkpoint: &checkpoint,
                        row_base,
                    },
                )?,
            };
            row_base = rows_in_file;
            let Some(sink) = self.sink.as_mut() else {
                unreachable!("a plan comes with a sink")
            };
            sink.push_rows(&good, work.page)?;
            self.rows += good.len() as u64;
            if let Some(too_many) = self
                .gate
                .as_ref()
                .and_then(|g| g.over_limit(&self.table.output, false))
            {
                // The file's rows are not recorded (no checkpoint covers part of a file).
                return Err(too_many.into());
            }
        }
        if !work.recorded {
            let mut rec = obj(json!({
                "source": work.source,
                "table": self.table.name,
                "output": self.table.output,
                "page": work.page,
                "file": {
                    "path": work.source,
                    "format": work.format.extension(),
                },
                "status": 200,
                "sha256": work.sha256,
                "bytes": work.bytes,
                "path": work.snapshot_rel,
                "rows": rows_in_file,
                "cursor_in": Value::Null,
                "cursor_out": Value::Null,
                "fetched_at": crate::store::manifest::now_rfc3339(),
                "attempts": 1,
                "elapsed_ms": 0,
            }));
            if let Ok(m) = std::fs::metadata(&work.source)
                && let Ok(t) = m.modified()
            {
                let t: chrono::DateTime<chrono::Utc> = t.into();
                rec.insert(
                    "last_modified".into(),
                    json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                );
            }
            manifest.append("page", ctx.run_id, rec)?;
        }
        self.checkpoint(work.page, manifest)?;
        tracing::info!(
            "{}: {} ({} rows) harvested",
            self.table.output,
            work.source,
            rows_in_file
        );
        // The file's earlier versions are replaced by this one.
        if let Some(old) = history.parts_of.get(&work.source).filter(|p| !p.is_empty()) {
            supersede(ctx, &self.table.output, old, manifest)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, page: u64, manifest: &mut Manifest) -> anyhow::Result<()> {
        let (Some(plan), Some(sink)) = (self.plan.as_ref(), self.sink.as_mut()) else {
            return Ok(());
        };
        let closed = sink.checkpoint()?;
        crate::run::pipeline::record_checkpoint(
            manifest,
            self.ctx,
            self.table,
            &plan.columns,
            &json!({ "raw_run": self.ctx.run_id, "first": page, "last": page }),
            &closed,
            &mut self.quarantine,
            self.gate.as_mut(),
            None,
        )?;
        self.parts += closed.len() as u64;
        self.last_part += closed.len() as u64;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        manifest: &mut Manifest,
        totals: &mut Totals,
        pages: u64,
        files_taken: u64,
        unchanged: u64,
        not_matching: u64,
        started: Instant,
    ) -> anyhow::Result<()> {
        let (ctx, table) = (self.ctx, self.table);
        if let Some(too_many) = self
            .gate
            .as_ref()
            .and_then(|g| g.over_limit(&table.output, true))
        {
            return Err(too_many.into());
        }
        let mut end = obj(json!({
            "source": ctx.source.name,
            "table": table.name,
            "output": table.output,
            "pages": pages,
            "rows": self.rows,
            "server_count": Value::Null,
            "fetched_pages": files_taken,
            "replayed_pages": 0,
            "earlier_pages": pages.saturating_sub(files_taken),
            "files": {
                "harvested": files_taken,
                "unchanged": unchanged,
                "not_matching": not_matching,
            },
        }));
        if let Some(g) = &self.gate {
            g.end_fields(&mut end);
            totals.add_checks(&table.output, g.counts.quarantined, &g.counts.by_check);
        }
        manifest.append("table_end", ctx.run_id, end)?;
        totals.add_table(pages, self.rows, 0);
        totals.fetched_pages += files_taken;
        totals.parts += self.parts;
        tracing::info!(
            table = %table.output,
            rows = self.rows,
            files = files_taken,
            unchanged,
            not_matching,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{}: {files_taken} file(s) harvested, {unchanged} unchanged, {not_matching} not matching; {} rows in the run, {:.1}s",
            table.output,
            self.rows,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// Record, then remove, the parts of a file's earlier version.
fn supersede(
    ctx: &RunCtx<'_>,
    output: &str,
    paths: &[String],
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    let paths: Vec<&String> = paths
        .iter()
        .filter(|p| ctx.settings.out.join(p).exists())
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    manifest.append(
        "supersede",
        ctx.run_id,
        obj(json!({
            "output": output,
            "reason": "a newer version of the file they were read from replaces these parts",
            "paths": paths,
        })),
    )?;
    for p in &paths {
        let full = ctx.settings.out.join(p);
        std::fs::remove_file(&full).with_context(|| format!("cannot remove {}", full.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest::sha256_hex;

    #[test]
    fn a_copy_is_hashed_as_written_and_dropped_when_already_harvested() {
        let d = std::env::temp_dir().join(format!("harvest-copy-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (from, to) = (d.join("a.csv"), d.join("copy.csv"));
        std::fs::write(&from, "id\n1\n").unwrap();
        let place = Place::Local(from.display().to_string());
        let src = from.display().to_string();
        let (sha, bytes) =
            copy_hashing(&src, &to, |w| place.read(&src, "a.csv", w), |_| false).unwrap();
        assert_eq!(sha.as_deref(), Some(sha256_hex(b"id\n1\n").as_str()));
        assert_eq!(bytes, 5);
        assert_eq!(std::fs::read(&to).unwrap(), b"id\n1\n");
        std::fs::remove_file(&to).unwrap();
        let (sha, _) = copy_hashing(&src, &to, |w| place.read(&src, "a.csv", w), |_| true).unwrap();
        assert!(sha.is_none() && !to.exists());
    }
}
