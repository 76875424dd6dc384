//! The table pipeline shared by `harvest` and `incremental`: pages come in (replayed from
//! snapshots, or fetched by [`crate::cursor`] walkers), each becomes a durable snapshot and a
//! manifest line, and its rows go to the table's Parquet sink.
//!
//! Guarantees (DESIGN.md crash-safety protocol):
//! - Per page, the body is saved byte-for-byte and durable *before* its manifest line is
//!   appended, and its rows reach a sink only after that line. All writing happens on one
//!   task, in page order per cursor; fetching runs ahead on other threads (bounded), so a crash
//!   loses at most the pages in flight, which were never recorded.
//! - The pipeline never names a source kind: it drives a [`TableSource`] (Datasette or REST)
//!   that prepares the table before its first page is requested (Datasette: a type probe),
//!   plans its columns with that first page, builds its cursors and parses its snapshots.
//!   Checkpoints cover only pages whose rows are in the sink.
//! - Typing from the pages (a Datasette table declared numeric, no type scan): each page's
//!   values are checked before its rows are taken; a plan they change is applied by dropping
//!   the open (never recorded) parts and encoding their pages again from their hash-checked
//!   snapshots. No part is recorded with such a plan unconfirmed: a due checkpoint runs the
//!   scan first, and an interruption records no part (the resume replays the pages).
//! - A Parquet part is recorded only once durable and visible; a checkpoint closes a stream's
//!   open parts at a page boundary, so "pages up to N of this stream are in recorded parts".
//! - A table is paged by one cursor, or with `--parallel N` by one cursor per disjoint key
//!   range ([`crate::slices`]), each with its own snapshots (`…/<run_id>/slice-<k>/`), page
//!   numbers, checkpoints and parts (`part-<run_id>-s<k>-<n>`). The slice plan is recorded
//!   before the first page. Under `--shard I/N` a split table's run pages only its share of
//!   the slices (recorded as `shard` in `slices` and `table_end`); the shards' plans agree
//!   because each derives it from the config and the table's key range, which `verify` checks.
//! - Resume: the pages a stream recorded after its last checkpoint are replayed from their
//!   hash-checked snapshots and fetching continues from the last recorded cursor, so no
//!   recorded page is fetched twice and every row lands once.
//! - SIGINT/SIGTERM abandon the pages in flight, close and record the open parts (a clean
//!   checkpoint) and stop with [`Interrupted`].
//! - A completed table replaces the parts earlier runs wrote for it (`supersede` recorded
//!   before anything is deleted); an incremental table instead adds parts and then moves its
//!   watermark (pending → `table_end` → published).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::commands::harvest::{RunCtx, Totals, obj};
use crate::config::TableSettings;
use crate::cursor::{self, Event, FetchedPage, Start, Walk};
use crate::error::{Interrupted, UsageError};
use crate::fsutil::{
    atomic_write, create_dir_all_durable, files_under, is_part_file, rel_path, sanitize_component,
};
use crate::manifest::{Manifest, sha256_hex};
use crate::parquet_sink::{ClosedPart, TableSink};
use crate::planner::{Observed, TablePlan, watermark_index};
use crate::resume::{RecordedPage, StreamProgress, TableProgress};
use crate::slices::{Planned, SlicePlan};
use crate::source::{Page, TableSource};
use crate::watermark::{Lookback, Mark, Tracker};

/// Pages each walker may fetch ahead of the writer.
const FETCH_AHEAD: usize = 2;

/// One cursor of a table: the whole table, or one slice of a `--parallel` run.
struct Stream {
    slice: Option<u32>,
    /// The query parameters of the stream's requests (the table's, its slice's filters).
    params: Vec<(String, String)>,
    raw_rel: String,
    raw_dir: PathBuf,
    sink: Option<TableSink>,
    /// The last page recorded (replayed, or fetched and recorded); 0 before the first.
    page_no: u64,
    /// The last page whose rows are in the sink; checkpoints cover pages up to here.
    taken: u64,
    /// The token that continues after `page_no` (`None` once the last page was taken).
    cursor: Option<String>,
    first_page_since_checkpoint: u64,
    last_part: u64,
    /// Rows taken in this process (replayed or fetched), of them replayed, and parts closed.
    rows: u64,
    rows_replayed: u64,
    parts: u64,
    fetched: u64,
    replayed: u64,
    progress: StreamProgress,
}

impl Stream {
    /// True once the stream's last page was taken.
    fn complete(&self) -> bool {
        self.page_no > 0 && self.cursor.is_none()
    }
}

/// One table being harvested.
struct TableRun<'a> {
    ctx: &'a RunCtx<'a>,
    table: &'a TableSettings,
    plan: Option<TablePlan>,
    streams: Vec<Stream>,
    slices: Option<SlicePlan>,
    /// The server's row count for the whole request, when known.
    server_count: Option<u64>,
    /// Incremental: decides which rows are new, tracks the next watermark.
    tracker: Option<Tracker>,
    rows_before: u64,
    /// `--table-format delta`: the table's Delta log and how this run writes it.
    delta: Option<crate::delta::Target>,
    /// The source kind's side of the table: planning, paging, parsing, checks.
    src: TableSource,
    /// While the types come from the values received ([`TableSource::typing_from_pages`]):
    /// the first page (planning again needs it) and the pages whose rows are in the open
    /// parts, to encode them again if a column's type changes.
    first_page: Option<Page>,
    open_pages: Vec<RecordedPage>,
    /// A checkpoint came due while typing from the pages: the type scan runs first.
    confirm_due: bool,
}

impl<'a> TableRun<'a> {
    fn rows(&self) -> u64 {
        self.rows_before + self.streams.iter().map(|s| s.rows).sum::<u64>()
    }

    fn known_columns(&self) -> Option<Vec<String>> {
        self.plan
            .as_ref()
            .map(|p| p.columns.iter().map(|c| c.name.clone()).collect())
    }

    /// Take one page of stream `si` whose snapshot and manifest line are durable.
    /// `to_sink: false` only feeds the watermark tracker (pages already in recorded parts).
    fn accept(
        &mut self,
        si: usize,
        page_no: u64,
        page: &Page,
        to_sink: bool,
        manifest: &mut Manifest,
        totals: &mut Totals,
    ) -> anyhow::Result<()> {
        if self.plan.is_none() {
            // A sliced table's page counts only its slice; the plan holds the table's count.
            let count = match &self.slices {
                Some(s) => s.server_count,
                None => page.count,
            };
            let p = self.src.plan(page, count)?;
            self.install_plan(p, totals)?;
            if self.src.typing_from_pages() {
                self.first_page = Some(page.clone());
            }
        }
        let Some(plan) = self.plan.as_ref() else {
            unreachable!("planned above")
        };
        let aligned;
        let same_columns = page.columns.as_ref().is_some_and(|cols| {
            cols.len() == plan.columns.len()
                && cols.iter().zip(&plan.columns).all(|(a, b)| *a == b.name)
        });
        let page_rows: &[Vec<Value>] = if page.sparse && !same_columns {
            aligned = page.aligned(&plan.columns, &self.table.output, page_no)?;
            &aligned
        } else {
            &page.rows
        };
        if let Some(cols) = page.columns.as_ref().filter(|_| !page.sparse)
            && (cols.len() != plan.columns.len()
                || cols.iter().zip(&plan.columns).any(|(a, b)| *a != b.name))
        {
            bail!(
                "page {page_no} has columns {:?}, but the table was planned with {:?}: the table changed during the harvest; rerun with --restart",
                cols,
                plan.columns.iter().map(|c| &c.name).collect::<Vec<_>>()
            );
        }
        let rows: std::borrow::Cow<'_, [Vec<Value>]> = match self.tracker.as_mut() {
            None => std::borrow::Cow::Borrowed(page_rows),
            Some(tracker) => {
                let col = watermark_index(self.table, plan)?;
                let mut kept = Vec::with_capacity(page_rows.len());
                for r in page_rows {
                    if tracker.admit(r, col)? {
                        kept.push(r.clone());
                    }
                }
                std::borrow::Cow::Owned(kept)
            }
        };
        if !to_sink {
            return Ok(());
        }
        let stream = &mut self.streams[si];
        let Some(sink) = stream.sink.as_mut() else {
            unreachable!("a plan always comes with sinks")
        };
        sink.push_rows(&rows, page_no)?;
        stream.rows += rows.len() as u64;
        stream.taken = page_no;
        if sink.checkpoint_due() {
            if self.src.typing_from_pages() {
                // A part is recorded with its final types: the scan confirms them first.
                self.confirm_due = true;
            } else {
                self.checkpoint(si, manifest)?;
            }
        }
        Ok(())
    }

    /// Before a page's rows are taken, while typing from the pages: fold its values into the
    /// classes seen. A string or blob in a column declared numeric ends typing from the pages
    /// (the type scan decides); a real in a column planned as integer widens it to float.
    /// Either way, a changed plan encodes the open parts' pages again from their snapshots.
    async fn type_page(&mut self, si: usize, page: &Page) -> anyhow::Result<()> {
        if !self.src.typing_from_pages() {
            return Ok(());
        }
        match self.src.observe(page) {
            Observed::Same => Ok(()),
            Observed::New => self.replan(si),
            Observed::Inexact => {
                tracing::info!(
                    "{}: a string or blob arrived in a column declared numeric: scanning the table's storage classes",
                    self.table.output
                );
                self.end_typing_from_pages(si).await
            }
        }
    }

    /// After a page's rows were taken: a checkpoint that came due while typing from the pages
    /// runs the type scan first, so that the parts it records have their final types.
    async fn settle(&mut self, si: usize, manifest: &mut Manifest) -> anyhow::Result<()> {
        if !std::mem::take(&mut self.confirm_due) {
            return Ok(());
        }
        tracing::info!(
            "{}: first checkpoint: scanning the table's storage classes to confirm the column types before recording a part",
            self.table.output
        );
        self.end_typing_from_pages(si).await?;
        self.checkpoint(si, manifest)
    }

    /// Stop typing from the pages: the type scan decides, or, when the server does not answer
    /// it, the plan made so far stands (later values that contradict it stop the run, naming
    /// the override, as with declared types).
    async fn end_typing_from_pages(&mut self, si: usize) -> anyhow::Result<()> {
        if self.src.scan_types().await? {
            self.replan(si)?;
        } else {
            tracing::info!(
                "{}: the server did not answer the type scan; keeping the types planned so far",
                self.table.output
            );
        }
        self.first_page = None;
        self.open_pages.clear();
        Ok(())
    }

    /// Plan again from what the source knows now. When a column's type changes, the open
    /// parts (never recorded) are dropped and their pages encoded again from their
    /// hash-checked snapshots.
    fn replan(&mut self, si: usize) -> anyhow::Result<()> {
        let (Some(first), Some(plan)) = (self.first_page.as_ref(), self.plan.as_mut()) else {
            return Ok(());
        };
        let new = self.src.plan(first, plan.count)?;
        // The same first page plans the same columns; only their types can change.
        let changed: Vec<String> = plan
            .columns
            .iter()
            .zip(&new.columns)
            .filter(|(a, b)| a.ty != b.ty)
            .map(|(a, b)| format!("{} {:?} -> {:?}", a.name, a.ty, b.ty))
            .collect();
        plan.columns = new.columns;
        if changed.is_empty() {
            return Ok(());
        }
        let Some(plan) = self.plan.take() else {
            unreachable!("checked above")
        };
        let taken = self.streams[si].taken;
        let pages: Vec<RecordedPage> = self
            .open_pages
            .iter()
            .filter(|p| p.page <= taken)
            .cloned()
            .collect();
        tracing::info!(
            "{}: column types changed ({}): encoding the {} page(s) taken so far again from their snapshots",
            self.table.output,
            changed.join(", "),
            pages.len()
        );
        for s in &mut self.streams {
            s.sink = None; // its open parts were never recorded: their temp files go
        }
        self.set_plan(plan)?;
        let known = self.known_columns();
        for rp in &pages {
            let body = rp.read_snapshot(&self.ctx.settings.out)?;
            let page = self
                .src
                .parse_snapshot(&body, known.as_deref())
                .map_err(|why| anyhow::anyhow!("the snapshot {} is unusable: {why}", rp.path))?;
            let Some(sink) = self.streams[si].sink.as_mut() else {
                unreachable!("a plan always comes with sinks")
            };
            sink.push_rows(&page.rows, rp.page)?;
        }
        Ok(())
    }

    fn install_plan(&mut self, p: TablePlan, totals: &mut Totals) -> anyhow::Result<()> {
        if p.is_view && self.table.sort.is_none() {
            let w = format!(
                "{:?} is a view: Datasette pages views by offset with no guaranteed order, so rows can be skipped or repeated if the data changes during the harvest; set `sort` to a unique column",
                self.table.name
            );
            tracing::warn!("{w}");
            totals.warnings.push(w);
        }
        self.set_plan(p)
    }

    fn set_plan(&mut self, p: TablePlan) -> anyhow::Result<()> {
        // Open parts of all streams share the memory budget.
        let n = self.streams.len().max(1);
        let mut settings = self.ctx.settings.sink.clone();
        settings.memory_budget /= n;
        settings.max_open_parts = (settings.max_open_parts / n).max(1);
        for s in &mut self.streams {
            let tag = match s.slice {
                None => self.ctx.run_id.to_string(),
                Some(k) => format!("{}-s{k}", self.ctx.run_id),
            };
            let mut sink = TableSink::new(
                &self.ctx.settings.out,
                &self.table.output,
                &tag,
                &p.columns,
                self.table.partition_by.as_deref(),
                settings.clone(),
            )?;
            sink.continue_after_part(s.last_part);
            s.sink = Some(sink);
        }
        self.plan = Some(p);
        Ok(())
    }

    /// Close and record stream `si`'s open parts: all rows of its pages so far are durable.
    fn checkpoint(&mut self, si: usize, manifest: &mut Manifest) -> anyhow::Result<()> {
        let (Some(plan), stream) = (self.plan.as_ref(), &mut self.streams[si]) else {
            return Ok(());
        };
        let Some(sink) = stream.sink.as_mut() else {
            return Ok(());
        };
        let closed = sink.checkpoint()?;
        record_parts(
            manifest,
            self.ctx,
            self.table,
            plan,
            stream,
            &closed,
            self.delta.as_ref(),
        )?;
        stream.parts += closed.len() as u64;
        stream.first_page_since_checkpoint = stream.taken + 1;
        Ok(())
    }

    fn checkpoint_all(&mut self, manifest: &mut Manifest) -> anyhow::Result<()> {
        if self.src.typing_from_pages() {
            // The types are not final, so no part is recorded: the open parts' temp files go,
            // and a resumed run replays their pages from the recorded snapshots.
            for s in &mut self.streams {
                s.sink = None;
            }
            tracing::info!(
                "{}: stopped while the column types still came from the pages: no part recorded; a resumed run replays the recorded pages from their snapshots",
                self.table.output
            );
            return Ok(());
        }
        for si in 0..self.streams.len() {
            self.checkpoint(si, manifest)?;
        }
        Ok(())
    }

    /// Make a fetched page durable: its snapshot, then its manifest line. Its rows are taken
    /// next, by [`Self::accept`].
    async fn record_page(
        &mut self,
        f: FetchedPage,
        manifest: &mut Manifest,
    ) -> anyhow::Result<(usize, u64, Page)> {
        let ctx = self.ctx;
        let source = ctx.source;
        let FetchedPage {
            stream: si,
            page_no,
            url,
            cursor_in,
            fetched,
            paging,
            parsed,
            ..
        } = f;
        // A page whose rows do not parse is refused before anything records it.
        let page = parsed
            .await
            .context("the page parser stopped")?
            .map_err(|why| {
                anyhow::anyhow!(
                    "unexpected response from {}: {why}",
                    crate::http::display_url(&url)
                )
            })?;
        let s = &mut self.streams[si];
        debug_assert_eq!(page_no, s.page_no + 1, "walkers deliver pages in order");
        let snap_name = format!("page-{page_no:06}.json");
        let snap_rel = format!("{}/{snap_name}", s.raw_rel);
        atomic_write(&s.raw_dir.join(&snap_name), &fetched.body)
            .with_context(|| format!("cannot write the snapshot {snap_rel}"))?;
        let sha256 = sha256_hex(&fetched.body);
        if self.src.typing_from_pages() {
            self.open_pages.push(RecordedPage {
                page: page_no,
                path: snap_rel.clone(),
                sha256: sha256.clone(),
                cursor_out: page.next.clone(),
            });
        }
        let s = &mut self.streams[si];
        let mut rec = obj(json!({
            "source": crate::http::display_url(&source.base),
            "table": self.table.name,
            "output": self.table.output,
            "page": page_no,
            "url": crate::http::display_url(&url),
            "params": crate::http::query_params(&url),
            "status": fetched.status,
            "sha256": sha256,
            "bytes": fetched.body.len(),
            "path": snap_rel,
            "rows": page.rows.len(),
            "cursor_in": cursor_in,
            "cursor_out": page.next,
            "fetched_at": fetched.fetched_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "attempts": fetched.attempts,
            "elapsed_ms": fetched.elapsed_ms,
        }));
        if !source.database.is_empty() {
            rec.insert("database".into(), json!(source.database));
        }
        if let Some(p) = paging {
            rec.insert("paging".into(), p);
        }
        if let Some(k) = s.slice {
            rec.insert("slice".into(), json!(k));
        }
        if fetched.content_encoding.is_some() {
            rec.insert("wire_bytes".into(), json!(fetched.wire_bytes));
        }
        for (k, v) in [
            ("etag", &fetched.etag),
            ("last_modified", &fetched.last_modified),
            ("content_type", &fetched.content_type),
            ("content_encoding", &fetched.content_encoding),
        ] {
            if let Some(v) = v {
                rec.insert(k.into(), json!(v));
            }
        }
        // Page 1 records the row count to reconcile with (so a resumed run has it too).
        if page_no == 1
            && s.slice.is_none()
            && let Some(c) = page.count.or_else(|| self.src.table_count())
        {
            rec.insert("server_count".into(), json!(c));
            self.server_count = Some(c);
        }
        manifest.append("page", ctx.run_id, rec)?;
        s.page_no = page_no;
        s.cursor.clone_from(&page.next);
        s.fetched += 1;
        Ok((si, page_no, page))
    }

    /// Replay a page an earlier process recorded: its rows, from its hash-checked snapshot.
    async fn replay(
        &mut self,
        si: usize,
        rp: &RecordedPage,
        to_sink: bool,
        manifest: &mut Manifest,
        totals: &mut Totals,
    ) -> anyhow::Result<Page> {
        let body = rp.read_snapshot(&self.ctx.settings.out)?;
        let known = self.known_columns();
        let page = self
            .src
            .parse_snapshot(&body, known.as_deref())
            .map_err(|why| {
                anyhow::anyhow!("the recorded snapshot {} is unusable: {why}", rp.path)
            })?;
        let before = self.streams[si].rows;
        if to_sink {
            if self.src.typing_from_pages() {
                self.open_pages.push(rp.clone());
            }
            self.type_page(si, &page).await?;
        }
        self.accept(si, rp.page, &page, to_sink, manifest, totals)?;
        self.settle(si, manifest).await?;
        let s = &mut self.streams[si];
        s.rows_replayed += s.rows - before;
        Ok(page)
    }
}

/// Harvest one table of the run's current source.
pub(crate) async fn harvest_table(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    src: TableSource,
    mut progress: TableProgress,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (settings, source) = (ctx.settings, ctx.source);
    let delta = crate::delta::target(
        &settings.out,
        &format!("parquet/{}", sanitize_component(&table.output)),
        &table.output,
        settings.table_format,
        ctx.run_id,
        table.watermark.is_some(),
        shared_table(ctx, table, manifest),
    )?;
    // Incremental: the stored watermark gives an inclusive lower bound; its window, the rows
    // already written at the boundary.
    let store = crate::watermark::Store::new(&settings.home);
    let mut params = table.params.clone();
    let mut tracker = None;
    let mut prev_state = None;
    if let Some(wm) = &table.watermark {
        prev_state = store.load(&source.name, &table.output)?;
        if let Some(st) = prev_state.as_ref().filter(|st| st.column != wm.column) {
            return Err(UsageError::with_hint(
                format!(
                    "the stored watermark of {:?} is for column {:?}, not {:?}",
                    table.output, st.column, wm.column
                ),
                "use the original column, or give this table another `output` name (a new dataset and watermark)",
            )
            .into());
        }
        let lookback = wm.lookback_parsed.clone().unwrap_or(Lookback::None);
        // The bound as a typed value (compared with rows where the server may not filter) and
        // as the configured text (a configured initial value is sent as written).
        let (lower, lower_text) = match prev_state.as_ref().and_then(|s| Mark::from_json(&s.value))
        {
            Some(m) => {
                let l = m.minus(&lookback)?;
                let text = l.filter_text();
                (Some(l), Some(text))
            }
            None => (
                wm.initial.as_deref().map(crate::watermark::Mark::from_text),
                wm.initial.clone(),
            ),
        };
        let bound = src.watermark_params(&mut params, lower, lower_text, wm);
        let mut t = Tracker::new(prev_state.as_ref(), lookback, wm.max_window_rows);
        // Rows below the bound are not written, whether or not the server filtered them.
        t.skip_below(bound);
        tracker = Some(t);
        if progress.streams.is_empty() {
            remove_unfinished_parts(ctx, table, manifest, delta.as_ref())?;
        }
    }

    // --parallel: the recorded slice plan of a resumed run, or a new one (recorded first).
    let slices = match progress.slices.take() {
        Some(p) => Some(p),
        None if table.parallel > 1 && tracker.is_none() && progress.streams.is_empty() => {
            match src.plan_slices(&params).await? {
                Planned::Split(plan) => {
                    tracing::info!(
                        "{}: {} cursors over {} from {} to {}",
                        table.output,
                        plan.slices.len(),
                        plan.column,
                        plan.min,
                        plan.max
                    );
                    let mut rec = obj(json!({
                        "source": crate::http::display_url(&source.base),
                        "table": table.name,
                        "output": table.output,
                        "plan": plan,
                    }));
                    if let Some(share) = table.shard {
                        rec.insert("shard".into(), shard_json(share, &plan));
                    }
                    manifest.append("slices", ctx.run_id, rec)?;
                    Some(plan)
                }
                Planned::Sequential(why) if table.shard.is_some() => {
                    return Err(UsageError::with_hint(
                        format!(
                            "table {:?} cannot be split across shards: {why}",
                            table.name
                        ),
                        "give the table `parallel = 1` in the config so that --shard deals it out whole to one shard",
                    )
                    .into());
                }
                Planned::Sequential(why) => {
                    let w = format!(
                        "{}: --parallel {} not used, one cursor instead: {why}",
                        table.output, table.parallel
                    );
                    tracing::warn!("{w}");
                    totals.warnings.push(w);
                    None
                }
            }
        }
        None => None,
    };

    let raw_rel = format!(
        "raw/{}/{}/{}",
        sanitize_component(&source.name),
        sanitize_component(&table.output),
        ctx.run_id
    );
    // Rows in parts that earlier processes of this run recorded (before the streams below
    // take their progress out of `progress`).
    let rows_before = progress.rows_in_parts();
    let layout: Vec<Option<&crate::slices::Slice>> = match &slices {
        None => vec![None],
        Some(p) => p
            .slices
            .iter()
            .filter(|s| table.shard.is_none_or(|share| share.owns(s.index)))
            .map(Some)
            .collect(),
    };
    if layout.is_empty()
        && let (Some(share), Some(p)) = (table.shard, &slices)
    {
        bail!(
            "table {:?}: its key range {}..={} of {} gave only {} slice(s), none of them for shard {}/{}; harvest it with fewer shards, or without --shard",
            table.name,
            p.min,
            p.max,
            p.column,
            p.slices.len(),
            share.index,
            share.count
        );
    }
    let mut streams = Vec::with_capacity(layout.len());
    for sl in layout {
        let slice = sl.map(|s| s.index);
        let sp = progress.streams.remove(&slice).unwrap_or_default();
        let mut stream_params = params.clone();
        stream_params.extend(sl.iter().flat_map(|s| s.filters.iter().cloned()));
        let rel = match slice {
            None => raw_rel.clone(),
            Some(k) => format!("{raw_rel}/slice-{k}"),
        };
        let dir = settings.out.join(&rel);
        create_dir_all_durable(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        streams.push(Stream {
            slice,
            params: stream_params,
            raw_rel: rel,
            raw_dir: dir,
            sink: None,
            page_no: sp.checkpoint_page,
            taken: sp.checkpoint_page,
            cursor: sp.checkpoint_cursor.clone(),
            first_page_since_checkpoint: sp.checkpoint_page + 1,
            last_part: sp.last_part,
            rows: 0,
            rows_replayed: 0,
            parts: 0,
            fetched: 0,
            replayed: 0,
            progress: sp,
        });
    }
    let mut run = TableRun {
        ctx,
        table,
        plan: None,
        server_count: slices
            .as_ref()
            .map_or(progress.server_count, |s| s.server_count),
        rows_before,
        slices,
        streams,
        tracker,
        delta,
        src,
        first_page: None,
        open_pages: Vec::new(),
        confirm_due: false,
    };
    // Planning: the source prepares before any page is requested (Datasette's type probe,
    // which alone fits the server's SQL time limit far more often); the first page completes
    // the plan.
    if progress.plan.is_none() {
        run.src.prepare().await?;
    }
    if let Some(columns) = progress.plan.clone() {
        run.set_plan(TablePlan {
            columns,
            is_view: false,
            count: run.server_count,
        })?;
    }
    let bar = crate::progress::Progress::rows(&table.output, ctx.quiet);
    let mut signals = ctx.signals.clone();

    // 1. Replay recorded pages after each stream's checkpoint from their snapshots
    //    (incremental replays every recorded page, to rebuild its tracker; only those after
    //    the checkpoint are new).
    for si in 0..run.streams.len() {
        let sp = &run.streams[si].progress;
        let to_replay = if run.tracker.is_some() {
            sp.all_pages.clone()
        } else {
            sp.replay.clone()
        };
        let checkpoint_page = sp.checkpoint_page;
        for rp in &to_replay {
            if let Some(sig) = *signals.borrow() {
                run.checkpoint_all(manifest)?;
                return Err(Interrupted { signal: sig }.into());
            }
            let to_sink = rp.page > checkpoint_page;
            if to_sink {
                let s = &mut run.streams[si];
                s.page_no = rp.page;
                s.cursor.clone_from(&rp.cursor_out);
                s.replayed += 1;
            }
            let page = run.replay(si, rp, to_sink, manifest, totals).await?;
            if rp.page == 1 && run.streams[si].slice.is_none() {
                run.server_count = run.server_count.or(page.count);
            }
        }
    }
    let replayed: u64 = run.streams.iter().map(|s| s.replayed).sum();
    if replayed > 0 {
        tracing::info!(
            "{}: replayed {replayed} recorded page(s) from snapshots",
            table.output
        );
    }

    // 2. Fetch the rest of every stream whose last recorded page was not its last page.
    let known = run.known_columns();
    let walks: Vec<Walk> = run
        .streams
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.complete())
        .map(|(i, s)| Walk {
            stream: i,
            pager: run.src.pager(&s.params, s.progress.paging.as_ref()),
            start: Start {
                page: s.page_no,
                cursor: s.cursor.clone(),
                seen: s.progress.cursors.iter().cloned().collect(),
                columns: known.clone(),
            },
            shape: None,
        })
        .collect();
    let mut open = walks.len();
    let (walkers, mut rx) = cursor::spawn(ctx.client, walks, FETCH_AHEAD);
    let mut taken = 0u64;
    while open > 0 {
        if let Some(sig) = *signals.borrow() {
            // Abandon the pages in flight; everything taken so far is recorded.
            drop(walkers);
            run.checkpoint_all(manifest)?;
            return Err(Interrupted { signal: sig }.into());
        }
        let event = tokio::select! {
            biased;
            Ok(()) = signals.changed() => continue,
            e = rx.recv() => e,
        };
        match event {
            None => bail!(
                "the page fetchers of table {:?} stopped before it was complete; rerun to resume",
                table.name
            ),
            Some(Event::Failed { page_no, error, .. }) => {
                return Err(run.src.fetch_error(page_no, error));
            }
            Some(Event::Page(f)) => {
                let (si, page_no, page) = run.record_page(*f, manifest).await?;
                let known = run.known_columns();
                run.src
                    .check_page(page_no, &page, known, &mut totals.warnings)
                    .await?;
                totals.fetched_pages += 1;
                if run.streams[si].complete() {
                    open -= 1;
                }
                run.type_page(si, &page).await?;
                run.accept(si, page_no, &page, true, manifest, totals)?;
                run.settle(si, manifest).await?;
                taken += 1;
                bar.set(run.rows());
                if taken.is_multiple_of(100) {
                    tracing::info!(
                        table = %table.output,
                        pages = taken,
                        rows = run.rows(),
                        "{}: {taken} pages fetched, {} rows",
                        table.output,
                        run.rows()
                    );
                }
            }
        }
    }
    drop(walkers);
    finish_table(run, manifest, totals, &store, prev_state, started)
}

/// Close the table: final parts, the watermark (incremental), `table_end`, then supersede.
fn finish_table(
    mut run: TableRun<'_>,
    manifest: &mut Manifest,
    totals: &mut Totals,
    store: &crate::watermark::Store,
    prev_state: Option<crate::watermark::State>,
    started: Instant,
) -> anyhow::Result<()> {
    let (ctx, table) = (run.ctx, run.table);
    let (settings, source) = (ctx.settings, ctx.source);
    run.src.finish()?;
    let Some(plan) = run.plan.take() else {
        bail!(
            "no page of table {:?} was recorded; rerun with --restart",
            table.name
        );
    };
    let count = plan.count.or(run.server_count);
    let table_rel = format!("parquet/{}", sanitize_component(&table.output));
    // One run writes at least one part (an empty table still gets its schema), but no more
    // empty parts than that; later incremental runs without new rows add nothing.
    let wrote_any = run
        .streams
        .iter()
        .any(|s| s.last_part > 0 || s.parts > 0 || s.sink.as_ref().is_some_and(|k| !k.is_empty()));
    let adds_to_dataset =
        run.tracker.is_some() && dataset_has_parts(&settings.out.join(&table_rel));
    // A table with no columns (a REST table whose first page had no records and that declares
    // no `types`) gets no part: a Parquet file without columns is one DuckDB cannot read.
    let no_columns = plan.columns.is_empty();
    if no_columns && !wrote_any {
        tracing::warn!(
            "{}: no records and no columns known, so no Parquet part was written; declare the \
             columns with `types = {{ … }}` to get an empty table with its schema",
            table.output
        );
    }
    let keep_empty = !wrote_any && !adds_to_dataset && !no_columns;
    for (i, s) in run.streams.iter_mut().enumerate() {
        let Some(mut sink) = s.sink.take() else {
            unreachable!("a plan always comes with sinks")
        };
        if !(keep_empty && i == 0) {
            sink.skip_empty_part();
        }
        let closed = sink.finish()?;
        record_parts(manifest, ctx, table, &plan, s, &closed, run.delta.as_ref())?;
        s.parts += closed.len() as u64;
    }
    let rows = run.rows();
    let sum = |f: fn(&Stream) -> u64| run.streams.iter().map(f).sum::<u64>();
    let (pages, fetched, replayed, parts) = (
        sum(|s| s.page_no),
        sum(|s| s.fetched),
        sum(|s| s.replayed),
        sum(|s| s.parts),
    );
    let rows_replayed = sum(|s| s.rows_replayed);
    let rows_fetched = sum(|s| s.rows) - rows_replayed;
    // `pages` and `rows` are the table's totals for the run, whichever process did the work;
    // the other fields split them: fetched by this process, replayed by it from snapshots,
    // and (the rest) taken by earlier processes of the same run.
    let mut end = obj(json!({
        "source": crate::http::display_url(&source.base),
        "table": table.name,
        "output": table.output,
        "pages": pages,
        "rows": rows,
        "server_count": count,
        "fetched_pages": fetched,
        "replayed_pages": replayed,
        "earlier_pages": pages - fetched - replayed,
        "fetched_rows": rows_fetched,
        "replayed_rows": rows_replayed,
        "earlier_rows": run.rows_before,
    }));
    if let Some(p) = &run.slices {
        end.insert("slices".into(), json!(run.streams.len()));
        if let Some(share) = table.shard {
            end.insert("shard".into(), shard_json(share, p));
        }
    }
    if let Some(t) = &run.delta {
        end.insert("delta".into(), json!(t.mode.as_str()));
    }
    // Incremental: the new watermark is made durable (pending) after the parts it covers are
    // recorded, committed by table_end, then published.
    let committed = match (&table.watermark, &run.tracker) {
        (Some(wm), Some(tracker)) => {
            let base = prev_state
                .clone()
                .unwrap_or_else(|| crate::watermark::State {
                    version: crate::watermark::STATE_VERSION,
                    source: source.name.clone(),
                    table: table.name.clone(),
                    output: table.output.clone(),
                    column: wm.column.clone(),
                    value: Value::Null,
                    window: vec![],
                    set_by_run: None,
                    updated_at: None,
                    history: vec![],
                });
            let next = tracker.next_state(base, ctx.run_id, rows)?;
            crate::failpoint("incremental:before-watermark");
            store.write_pending(&next, ctx.run_id)?;
            let before = prev_state.as_ref().map_or(Value::Null, |s| s.value.clone());
            let wm_rec = json!({
                "output": table.output,
                "column": wm.column,
                "before": before,
                "after": next.value,
                "skipped_duplicates": tracker.skipped_dupes,
                "skipped_nulls": tracker.skipped_nulls,
                "skipped_below": tracker.skipped_below,
            });
            end.insert("watermark".into(), wm_rec.clone());
            totals.watermarks.push(wm_rec);
            if tracker.skipped_nulls > 0 {
                let w = format!(
                    "{}: {} row(s) with a NULL {} cannot be harvested incrementally",
                    table.output, tracker.skipped_nulls, wm.column
                );
                tracing::warn!("{w}");
                totals.warnings.push(w);
            }
            true
        }
        _ => false,
    };
    manifest.append("table_end", ctx.run_id, end)?;
    if committed {
        crate::failpoint("incremental:before-publish");
        store.publish(&source.name, &table.output, ctx.run_id)?;
    }
    totals.add_table(pages, rows, replayed);
    totals.parts += parts;

    // Incremental runs re-read boundary rows they skip as already written.
    let skipped = run
        .tracker
        .as_ref()
        .map_or(0, |t| t.skipped_dupes + t.skipped_nulls + t.skipped_below);
    let fetched_rows = rows + skipped;
    // A shard pages only its share of a split table; `verify` adds the shards up.
    let whole_table = table.shard.is_none() || run.slices.is_none();
    if let Some(expected) = count.filter(|_| whole_table)
        && expected != fetched_rows
    {
        let w = format!(
            "table {:?}: the server counted {expected} rows at the start but {fetched_rows} were received (the table changed during the run, or rows were lost to a pagination bug)",
            table.name
        );
        tracing::warn!("{w}");
        totals.warnings.push(w);
    }
    match &run.delta {
        Some(t) => finish_delta(manifest, ctx, table, t, !committed)?,
        None if !committed => {
            supersede_parts(
                &settings.out,
                &table_rel,
                ctx.run_id,
                &table.output,
                manifest,
            )?;
        }
        None => {}
    }
    tracing::info!(
        source = %crate::http::display_url(&source.base),
        table = %table.output,
        rows,
        pages,
        fetched_pages = fetched,
        replayed_pages = replayed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "{}: {rows} rows in {pages} pages ({fetched} fetched now, {replayed} replayed, {} by an earlier process), {:.1}s",
        table.output,
        pages - fetched - replayed,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// In a DIR shared by writers: what this writer knows of the table's Delta files, and whether
/// the table is split between writers (`--shard`).
pub(crate) fn shared_table<'m>(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    manifest: &'m Manifest,
) -> Option<crate::delta::Shared<'m>> {
    ctx.settings.writer.as_ref()?;
    Some(crate::delta::Shared {
        known: manifest
            .delta_ledger()
            .and_then(|l| l.outputs.get(&table.output))
            .map(|d| &d.known),
        split: table.shard.is_some(),
    })
}

/// What a shard records about its share of a split table: `index`/`count` as in
/// `--shard I/N`, and the slices it pages.
fn shard_json(share: crate::config::SliceShare, plan: &SlicePlan) -> Value {
    let mine: Vec<u32> = plan
        .slices
        .iter()
        .map(|s| s.index)
        .filter(|k| share.owns(*k))
        .collect();
    json!({ "index": share.index, "count": share.count, "slices": mine })
}

fn record_parts(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    plan: &TablePlan,
    stream: &Stream,
    closed: &[ClosedPart],
    delta: Option<&crate::delta::Target>,
) -> anyhow::Result<()> {
    let mut pages = json!({
        "raw_run": ctx.run_id,
        "first": stream.first_page_since_checkpoint,
        "last": stream.taken,
    });
    if let Some(k) = stream.slice {
        pages["slice"] = json!(k);
    }
    record_part_lines(manifest, ctx, table, &plan.columns, &pages, closed, delta)
}

/// One `parquet` manifest line per closed part: the pages (or batches) whose rows it holds,
/// the table's schema, and its partition. A Delta table written by appends then commits them.
pub(crate) fn record_part_lines(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    columns: &[crate::schema::ColumnPlan],
    pages: &Value,
    closed: &[ClosedPart],
    delta: Option<&crate::delta::Target>,
) -> anyhow::Result<()> {
    for part in closed {
        let mut rec = obj(json!({
            "path": part.rel_path,
            "sha256": part.sha256,
            "bytes": part.bytes,
            "rows": part.rows,
            "source": crate::http::display_url(&ctx.source.base),
            "table": table.name,
            "output": table.output,
            "pages": pages,
            "schema": columns,
        }));
        if let (Some(col), Some(v)) = (&table.partition_by, &part.partition) {
            rec.insert("partition".into(), json!({ col: v }));
        }
        if let Some(t) = delta {
            rec.insert("delta".into(), json!(t.mode.as_str()));
        }
        manifest.append("parquet", ctx.run_id, rec)?;
    }
    if let Some(t) = delta.filter(|t| t.mode == crate::delta::Mode::Append)
        && !closed.is_empty()
    {
        commit_delta(manifest, ctx, &table.output, t, pages)?;
    } else if let Some(r) = &ctx.settings.remote {
        // Object storage: the checkpoint's files, then its manifest lines.
        r.publish()?;
    }
    Ok(())
}

/// Commit to the table's Delta log what the manifest now says it holds (nothing when they
/// agree), and record the commit.
pub(crate) fn commit_delta(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    output: &str,
    target: &crate::delta::Target,
    pages: &Value,
) -> anyhow::Result<()> {
    let Some(desired) = manifest.delta_ledger().and_then(|l| l.outputs.get(output)) else {
        return Ok(());
    };
    // Object storage: the parts go up before the commit that names them.
    if let Some(r) = &ctx.settings.remote {
        r.publish()?;
    }
    crate::failpoint("delta:before-commit");
    let mut info = serde_json::Map::new();
    info.insert("harvest.run_id".into(), json!(ctx.run_id));
    info.insert("harvest.command".into(), json!(ctx.settings.command));
    info.insert("harvest.pages".into(), pages.clone());
    let done = crate::delta::sync(&ctx.settings.out, &target.table_rel, output, desired, info)?;
    crate::failpoint("delta:after-commit");
    if let Some(c) = done {
        tracing::info!(
            table = %output,
            version = c.version,
            "{output}: Delta version {} ({} file(s) added, {} removed)",
            c.version,
            c.added,
            c.removed
        );
        manifest.append(
            "delta_commit",
            ctx.run_id,
            obj(json!({
                "output": output,
                "table": target.table_rel,
                "delta_version": c.version,
                "mode": target.mode.as_str(),
                "added": c.added,
                "removed": c.removed,
            })),
        )?;
    }
    Ok(())
}

/// The end of a table written to a Delta log. An overwriting run records the files it
/// replaces as superseded (kept on disk: older versions still read them), then commits their
/// removal and its own parts together; an appending run has committed at its checkpoints. A
/// complete (not incremental) appending run also retires the parts earlier runs recorded that
/// the log does not hold (their dataset directory was removed by hand): this run replaces them.
pub(crate) fn finish_delta(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    target: &crate::delta::Target,
    complete: bool,
) -> anyhow::Result<()> {
    let desired = manifest
        .delta_ledger()
        .and_then(|l| l.outputs.get(&table.output));
    let (stale, kept, reason): (Vec<String>, bool, &str) = match (target.mode, desired) {
        (crate::delta::Mode::Overwrite, Some(d)) => {
            let state = crate::delta::load(&ctx.settings.out, &target.table_rel)?;
            let stale = state
                .files
                .keys()
                .filter(|p| d.known.contains(*p) && !d.files.contains_key(*p))
                .cloned()
                .collect();
            (
                stale,
                true,
                "a newer complete harvest of the table replaces these parts in a Delta commit; the files stay for time travel",
            )
        }
        (crate::delta::Mode::Append, Some(d)) if complete => (
            d.files
                .iter()
                .filter(|(_, w)| w.run_id != ctx.run_id)
                .map(|(p, _)| p.clone())
                .collect(),
            false,
            "parts of earlier runs that are no longer on disk nor in the Delta table; this complete harvest replaces them",
        ),
        _ => (vec![], false, ""),
    };
    if !stale.is_empty() {
        let mut rec = obj(json!({
            "output": table.output,
            "reason": reason,
            "paths": stale,
        }));
        if kept {
            rec.insert("kept".into(), json!(true));
        }
        manifest.append("supersede", ctx.run_id, rec)?;
    }
    commit_delta(
        manifest,
        ctx,
        &table.output,
        target,
        &json!({ "raw_run": ctx.run_id, "table_end": true }),
    )
}

/// After a complete harvest of a table, the parts earlier runs wrote for the same dataset are
/// stale: record their removal, then remove them, so readers see exactly one copy of each row.
pub(crate) fn supersede_parts(
    out: &Path,
    table_rel: &str,
    run_id: &str,
    output: &str,
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    let mine = format!("part-{run_id}-");
    let mut stale: Vec<PathBuf> = files_under(&out.join(table_rel))?
        .into_iter()
        .filter(|p| {
            is_part_file(p)
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&mine))
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    stale.sort();
    let rels: Vec<String> = stale.iter().map(|p| rel_path(out, p)).collect();
    manifest.append(
        "supersede",
        run_id,
        obj(json!({ "output": output, "reason": "a newer complete harvest of the table replaces these parts", "paths": rels })),
    )?;
    for p in &stale {
        std::fs::remove_file(p)
            .with_context(|| format!("cannot remove the superseded part {}", p.display()))?;
        if let Some(dir) = p.parent() {
            let _ = crate::fsutil::fsync_dir(dir);
            // Drop partition directories that are now empty.
            if dir != out.join(table_rel)
                && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
            {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    tracing::info!(
        "{output}: replaced {} part(s) from earlier runs",
        stale.len()
    );
    Ok(())
}

fn dataset_has_parts(dir: &Path) -> bool {
    files_under(dir).is_ok_and(|files| files.iter().any(|p| is_part_file(p)))
}

/// Incremental datasets accumulate parts, so parts recorded by an earlier run that never
/// finished this table (and is not being resumed) would duplicate rows: record, then remove.
fn remove_unfinished_parts(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    manifest: &mut Manifest,
    delta: Option<&crate::delta::Target>,
) -> anyhow::Result<()> {
    let paths = crate::resume::unfinished_parts(ctx.history, &table.output, ctx.run_id);
    let paths: Vec<String> = paths
        .into_iter()
        .filter(|p| ctx.settings.out.join(p).exists())
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    let mut rec = obj(
        json!({ "output": table.output, "reason": "parts of an unfinished run that is not being resumed", "paths": paths }),
    );
    if let Some(t) = delta {
        // Committed parts: a Delta commit removes them; the files stay for older versions.
        rec.insert("kept".into(), json!(true));
        manifest.append("supersede", ctx.run_id, rec)?;
        tracing::warn!(
            "{}: removing {} part(s) of an unfinished earlier run from the Delta table",
            table.output,
            paths.len()
        );
        return commit_delta(
            manifest,
            ctx,
            &table.output,
            t,
            &json!({ "raw_run": ctx.run_id, "removed_unfinished": true }),
        );
    }
    manifest.append("supersede", ctx.run_id, rec)?;
    for p in &paths {
        let full = ctx.settings.out.join(p);
        std::fs::remove_file(&full).with_context(|| format!("cannot remove {}", full.display()))?;
    }
    tracing::warn!(
        "{}: removed {} part(s) of an unfinished earlier run",
        table.output,
        paths.len()
    );
    Ok(())
}
