//! The table pipeline shared by `harvest` and `incremental`: pages come in (replayed from
//! snapshots, or fetched by [`crate::run::cursor`] walkers), each becomes a durable snapshot and a
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
//! - Pages whose fields vary (REST) widen the plan instead of stopping, unless the table
//!   freezes its columns ([`evolve`]): the open parts are recorded with the old columns first,
//!   a new run continues the dataset's columns and types, and a resumed run takes its last
//!   part's columns and meets the same changes at the same pages.
//! - A Parquet part is recorded only once durable and visible; a checkpoint closes a stream's
//!   open parts at a page boundary, so "pages up to N of this stream are in recorded parts".
//! - A table is paged by one cursor, or with `--parallel N` by one cursor per disjoint key
//!   range ([`crate::source::datasette::slices`]), each with its own snapshots (`…/<run_id>/slice-<k>/`), page
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

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

mod evolve;
mod parts;
mod table_run;

use self::parts::*;
pub(crate) use self::parts::{
    finish_delta, record_checkpoint, remove_incomplete_checkpoint, remove_unfinished_parts,
    shared_table, supersede_parts,
};

use crate::error::{Interrupted, UsageError};
use crate::run::context::{RunCtx, Totals, obj};
use crate::run::cursor::{self, Event, Start, Walk};
use crate::run::resume::{RecordedPage, StreamProgress, TableProgress};
use crate::source::TablePlan;
use crate::source::datasette::slices::{Planned, SlicePlan};
use crate::source::settings::TableSettings;
use crate::source::{Page, TableSource};
use crate::store::fsutil::{create_dir_all_durable, sanitize_component};
use crate::store::manifest::Manifest;
use crate::store::parts::TableSink;
use crate::store::watermark::{Lookback, Mark, Tracker};

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
    /// Rows that failed the table's checks, kept aside until the next checkpoint.
    quarantine: crate::run::quarantine::Quarantine,
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
    delta: Option<crate::store::delta::Target>,
    /// The source kind's side of the table: planning, paging, parsing, checks.
    src: TableSource,
    /// While the types come from the values received ([`TableSource::typing_from_pages`]):
    /// the first page (planning again needs it) and the pages whose rows are in the open
    /// parts, to encode them again if a column's type changes.
    first_page: Option<Page>,
    open_pages: Vec<RecordedPage>,
    /// A checkpoint came due while typing from the pages: the type scan runs first.
    confirm_due: bool,
    /// The table's row checks (`None`: no checks; a value that does not fit stops the run).
    gate: Option<crate::run::quarantine::Gate>,
    /// Pages of one cursor fetched at once (`parallel` on an addressable REST table; else 1).
    window: usize,
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
    let settings = ctx.settings;
    let delta = crate::store::delta::target(
        &settings.out,
        &format!("parquet/{}", sanitize_component(&table.output)),
        &table.output,
        settings.table_format,
        ctx.run_id,
        table.watermark.is_some(),
        shared_table(ctx, table, manifest),
    )?;
    remove_incomplete_checkpoint(
        ctx,
        table,
        &progress.incomplete_parts,
        manifest,
        delta.as_ref(),
    )?;
    // Incremental: the stored watermark gives an inclusive lower bound; its window, the rows
    // already written at the boundary.
    let store = crate::store::watermark::Store::new(&settings.home);
    let mut params = table.params.clone();
    let (tracker, prev_state) = if table.watermark.is_some() {
        let resuming_nothing = progress.streams.is_empty();
        watermark_bound(
            ctx,
            table,
            &src,
            &store,
            &mut params,
            resuming_nothing,
            manifest,
            delta.as_ref(),
        )?
    } else {
        (None, None)
    };

    // --parallel: the recorded slice plan of a resumed run, or a new one (recorded first).
    let incremental = tracker.is_some();
    let slices = slice_plan(
        ctx,
        table,
        &src,
        &params,
        incremental,
        &mut progress,
        manifest,
        totals,
    )
    .await?;

    // Rows in parts that earlier processes of this run recorded (before the streams below
    // take their progress out of `progress`).
    let rows_before = progress.rows_in_parts();
    let gate = crate::run::quarantine::Gate::open(
        ctx,
        table,
        tracker.is_some(),
        rows_before,
        &progress.quarantined,
    )?;
    let streams = open_streams(ctx, table, &params, slices.as_ref(), &mut progress)?;
    // `parallel` on an unsplit table whose pages are addressable: fetched up to N at once.
    let window = if slices.is_none() && table.parallel > 1 && src.fetches_ahead() {
        table.parallel as usize
    } else {
        1
    };
    let mut run = TableRun {
        window,
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
        gate,
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

    replay_recorded(&mut run, &signals, manifest, totals).await?;
    fetch_remaining(&mut run, &mut signals, manifest, totals, &bar).await?;
    finish_table(run, manifest, totals, &store, prev_state, started)
}

/// Incremental: the stored watermark gives an inclusive lower bound; its window, the rows
/// already written at the boundary.
/// Returns the tracker that decides which rows are new, and the stored state.
#[allow(clippy::too_many_arguments)]
fn watermark_bound(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    src: &TableSource,
    store: &crate::store::watermark::Store,
    params: &mut Vec<(String, String)>,
    resuming_nothing: bool,
    manifest: &mut Manifest,
    delta: Option<&crate::store::delta::Target>,
) -> anyhow::Result<(Option<Tracker>, Option<crate::store::watermark::State>)> {
    let source = ctx.source;
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
                wm.initial
                    .as_deref()
                    .map(crate::store::watermark::Mark::from_text),
                wm.initial.clone(),
            ),
        };
        let bound = src.watermark_params(params, lower, lower_text, wm);
        let mut t = Tracker::new(prev_state.as_ref(), lookback, wm.max_window_rows);
        // Rows below the bound are not written, whether or not the server filtered them.
        t.skip_below(bound);
        tracker = Some(t);
        if resuming_nothing {
            remove_unfinished_parts(ctx, table, manifest, delta)?;
        }
    }
    Ok((tracker, prev_state))
}

/// --parallel: the recorded slice plan of a resumed run, or a new one (recorded first).
#[allow(clippy::too_many_arguments)]
async fn slice_plan(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    src: &TableSource,
    params: &[(String, String)],
    incremental: bool,
    progress: &mut TableProgress,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<Option<SlicePlan>> {
    Ok(match progress.slices.take() {
        Some(p) => Some(p),
        None if table.parallel > 1 && !incremental && progress.streams.is_empty() => {
            match src.plan_slices(params).await? {
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
                        "source": crate::http::display_url(&ctx.source.base),
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
                Planned::Ahead => {
                    tracing::info!(
                        "{}: one cursor, up to {} pages fetched at once",
                        table.output,
                        table.parallel
                    );
                    None
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
    })
}

/// The table's streams (one cursor, or this shard's slices of a `--parallel` plan), each
/// starting at its recorded checkpoint, with its snapshot directory created.
fn open_streams(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    params: &[(String, String)],
    slices: Option<&SlicePlan>,
    progress: &mut TableProgress,
) -> anyhow::Result<Vec<Stream>> {
    let (settings, source) = (ctx.settings, ctx.source);
    let raw_rel = format!(
        "raw/{}/{}/{}",
        sanitize_component(&source.name),
        sanitize_component(&table.output),
        ctx.run_id
    );
    let layout: Vec<Option<&crate::source::datasette::slices::Slice>> = match slices {
        None => vec![None],
        Some(p) => p
            .slices
            .iter()
            .filter(|s| table.shard.is_none_or(|share| share.owns(s.index)))
            .map(Some)
            .collect(),
    };
    if layout.is_empty()
        && let (Some(share), Some(p)) = (table.shard, slices)
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
        let mut stream_params = params.to_vec();
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
            quarantine: crate::run::quarantine::Quarantine::new(
                &ctx.settings.out,
                &ctx.settings.sink,
                ctx.run_id,
                match slice {
                    None => ctx.run_id.to_string(),
                    Some(k) => format!("{}-s{k}", ctx.run_id),
                },
                sp.last_quarantine_part,
            ),
            progress: sp,
        });
    }
    Ok(streams)
}

/// Replay recorded pages after each stream's checkpoint from their snapshots
/// (incremental replays every recorded page, to rebuild its tracker; only those after
/// the checkpoint are new).
async fn replay_recorded(
    run: &mut TableRun<'_>,
    signals: &tokio::sync::watch::Receiver<Option<&'static str>>,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let table = run.table;
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
    Ok(())
}

/// Fetch the rest of every stream whose last recorded page was not its last page.
async fn fetch_remaining(
    run: &mut TableRun<'_>,
    signals: &mut tokio::sync::watch::Receiver<Option<&'static str>>,
    manifest: &mut Manifest,
    totals: &mut Totals,
    bar: &crate::progress::Progress,
) -> anyhow::Result<()> {
    let table = run.table;
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
            window: run.window,
        })
        .collect();
    let mut open = walks.len();
    let (walkers, mut rx) = cursor::spawn(run.ctx.client, walks, FETCH_AHEAD);
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
    Ok(())
}

/// Close the table: final parts, the watermark (incremental), `table_end`, then supersede.
fn finish_table(
    mut run: TableRun<'_>,
    manifest: &mut Manifest,
    totals: &mut Totals,
    store: &crate::store::watermark::Store,
    prev_state: Option<crate::store::watermark::State>,
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
    close_parts(&mut run, &plan, &table_rel, manifest)?;
    // A share of failed rows is judged over the whole table: its parts are recorded, and
    // the run stops before `table_end` (raising `max_failed` lets a rerun resume and end it).
    if let Some(too_many) = run
        .gate
        .as_ref()
        .and_then(|g| g.over_limit(&table.output, true))
    {
        return Err(too_many.into());
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
    if let Some(g) = &run.gate {
        g.end_fields(&mut end);
        totals.add_checks(&table.output, g.counts.quarantined, &g.counts.by_check);
    }
    // Incremental: the new watermark is made durable (pending) after the parts it covers are
    // recorded, committed by table_end, then published.
    let committed = next_watermark(&run, rows, prev_state.as_ref(), store, &mut end, totals)?;
    manifest.append("table_end", ctx.run_id, end)?;
    if committed {
        crate::store::fsutil::failpoint("incremental:before-publish");
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
    if !committed {
        // The dataset's quarantine is replaced with it.
        supersede_parts(
            &settings.out,
            &format!("quarantine/{}", sanitize_component(&table.output)),
            ctx.run_id,
            &table.output,
            manifest,
        )?;
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

/// Close the table's open parts and record them. One run writes at least one part (an empty
/// table still gets its schema), but no more empty parts than that; later incremental runs
/// without new rows add nothing.
fn close_parts(
    run: &mut TableRun<'_>,
    plan: &TablePlan,
    table_rel: &str,
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    let (ctx, table, settings) = (run.ctx, run.table, run.ctx.settings);
    let wrote_any = run
        .streams
        .iter()
        .any(|s| s.last_part > 0 || s.parts > 0 || s.sink.as_ref().is_some_and(|k| !k.is_empty()));
    let adds_to_dataset = run.tracker.is_some() && dataset_has_parts(&settings.out.join(table_rel));
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
        record_parts(
            manifest,
            ctx,
            table,
            plan,
            s,
            &closed,
            run.gate.as_mut(),
            run.delta.as_ref(),
        )?;
        s.parts += closed.len() as u64;
    }
    Ok(())
}

/// Incremental: the new watermark is made durable (pending) after the parts it covers are
/// recorded, committed by table_end, then published.
/// Returns whether there is a new watermark to commit.
fn next_watermark(
    run: &TableRun<'_>,
    rows: u64,
    prev_state: Option<&crate::store::watermark::State>,
    store: &crate::store::watermark::Store,
    end: &mut serde_json::Map<String, Value>,
    totals: &mut Totals,
) -> anyhow::Result<bool> {
    let (ctx, table, source) = (run.ctx, run.table, run.ctx.source);
    Ok(match (&table.watermark, &run.tracker) {
        (Some(wm), Some(tracker)) => {
            let base = prev_state
                .cloned()
                .unwrap_or_else(|| crate::store::watermark::State {
                    version: crate::store::watermark::STATE_VERSION,
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
            crate::store::fsutil::failpoint("incremental:before-watermark");
            store.write_pending(&next, ctx.run_id)?;
            let before = prev_state.map_or(Value::Null, |s| s.value.clone());
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
    })
}
