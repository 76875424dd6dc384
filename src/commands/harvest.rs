//! `harvest harvest`: page through Datasette tables into raw snapshots, the manifest and Parquet.
//!
//! Guarantees (DESIGN.md): per page, the body is saved byte-for-byte and durable *before* its
//! manifest line is appended; a Parquet part is recorded only once it is durable and visible;
//! a token that repeats stops the run; the table's row count is reconciled where the server
//! gave one; a completed table replaces the parts that earlier runs wrote for it (recorded as a
//! `supersede` record before anything is deleted). Runs on one DIR never interleave (lock).
//!
//! Resume: a run that did not end `ok` is continued by the next run with the same settings.
//! Tables it finished are skipped; for the others, the pages recorded after the last Parquet
//! checkpoint are replayed from their (hash-checked) snapshots and fetching continues from the
//! last recorded cursor, so no recorded page is fetched twice and every row lands once.
//! SIGINT/SIGTERM abandon the page in flight, close and record the open parts (a clean
//! checkpoint) and exit 130.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

use tokio::sync::watch;

use crate::config::{HarvestSettings, SourceSettings, TableSettings, resolve_harvest};
use crate::datasette::{self, BodyProblem, Flavor, Page, TableRequest};
use crate::error::Interrupted;
use crate::fsutil::{
    TEMP_SUFFIX, atomic_write, create_dir_all_durable, files_under, is_part_file, rel_path,
    sanitize_component,
};
use crate::http::{Client, Verdict};
use crate::lock::DirLock;
use crate::manifest::{Manifest, sha256_hex};
use crate::parquet_sink::{ClosedPart, TableSink};
use crate::printer::Printer;
use crate::resume::{ResumePoint, TableProgress};
use crate::schema::{Classes, ColType, ColumnPlan, plan_column};
use crate::watermark::{Lookback, Mark, Tracker};
use crate::{cli::HarvestArgs, error::UsageError};

pub fn run(args: &HarvestArgs, printer: Printer) -> anyhow::Result<()> {
    let mut settings = resolve_harvest(args)?;
    // A full harvest takes every row: watermark keys in the config are for `incremental`.
    for s in &mut settings.sources {
        for t in &mut s.tables {
            t.watermark = None;
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_settings(settings, printer))
}

/// Totals for `run_end` and the summary line.
#[derive(Default, Debug)]
struct Totals {
    tables: u64,
    pages: u64,
    rows: u64,
    parts: u64,
    warnings: Vec<String>,
    /// Incremental runs: per table, the watermark before and after.
    watermarks: Vec<Value>,
}

pub(crate) fn new_run_id() -> String {
    use rand::RngExt;
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::rng().random::<u16>()
    )
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Remove temp files a crashed run left under DIR (they were never visible as real files).
pub(crate) fn remove_leftover_temps(out: &Path) -> anyhow::Result<u64> {
    let mut removed = 0;
    for sub in ["raw", "parquet", "state"] {
        let files = files_under(&out.join(sub))
            .with_context(|| format!("cannot clean temp files under {}", out.display()))?;
        for p in files
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(TEMP_SUFFIX))
        {
            std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::warn!("removed {removed} temp file(s) left by an interrupted run");
    }
    Ok(removed)
}

pub(crate) async fn run_settings(
    settings: HarvestSettings,
    printer: Printer,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let out = settings.out.clone();
    create_dir_all_durable(&out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))?;
    let _lock = DirLock::acquire(&out, settings.wait_lock)?;
    let (mut manifest, _) = Manifest::open(&out)?;
    remove_leftover_temps(&out)?;
    let history = crate::manifest::read_records(&out)?;
    let swept = crate::resume::sweep_parts(&out, &history).with_context(|| {
        format!(
            "cannot remove unrecorded Parquet parts under {}",
            out.display()
        )
    })?;
    if !swept.is_empty() {
        tracing::warn!(
            "removed {} Parquet part(s) the manifest does not record (left by an interrupted run): {}",
            swept.len(),
            swept.join(", ")
        );
    }
    if settings.command == "incremental" {
        let (fwd, back) = crate::watermark::Store::new(&out).recover(&history)?;
        if fwd + back > 0 {
            tracing::warn!(
                "watermark recovery after an interrupted run: {fwd} committed state(s) rolled forward, {back} uncommitted discarded"
            );
        }
    }
    let resume = match crate::resume::find_resumable(&history, &settings.config_digest) {
        Some(r) if settings.restart => {
            tracing::info!("--restart: not resuming the unfinished run {}", r.run_id);
            None
        }
        Some(r) => Some(r),
        None => {
            if let Some(last) = history.iter().rev().find(|r| r["kind"] == "run_start")
                && !history.iter().any(|r| {
                    r["kind"] == "run_end" && r["run_id"] == last["run_id"] && r["outcome"] == "ok"
                })
                && !settings.restart
            {
                tracing::warn!(
                    "the previous run {} did not finish, but the settings changed since, so this run starts over",
                    last["run_id"].as_str().unwrap_or("?")
                );
            }
            None
        }
    };
    let run_id = match &resume {
        Some(r) => {
            let replay: usize = r.tables.values().map(|t| t.replay.len()).sum();
            let done = r.tables.values().filter(|t| t.done).count();
            tracing::info!(
                "resuming run {}: {done} table(s) already done, {replay} recorded page(s) to replay from snapshots",
                r.run_id
            );
            manifest.append(
                "run_resume",
                &r.run_id,
                obj(json!({
                    "tool_version": env!("CARGO_PKG_VERSION"),
                    "config_digest": settings.config_digest,
                    "resumed_at": now_rfc3339(),
                    "replay_pages": replay,
                })),
            )?;
            r.run_id.clone()
        }
        None => {
            let run_id = new_run_id();
            manifest.append(
                "run_start",
                &run_id,
                obj(json!({
                    "command": settings.command,
                    "tool_version": env!("CARGO_PKG_VERSION"),
                    "config_digest": settings.config_digest,
                    "settings": settings.described,
                    "started_at": now_rfc3339(),
                })),
            )?;
            run_id
        }
    };
    tracing::info!("run {run_id} started; writing to {}", out.display());
    let signals = watch_signals();

    let mut totals = Totals::default();
    let mut retries = 0u64;
    let mut bytes = 0u64;
    let mut result = Ok(());
    for source in &settings.sources {
        let mut http = settings.http.clone();
        http.auth = source.auth.clone();
        let client = Client::new(http)?;
        let ctx = RunCtx {
            settings: &settings,
            source,
            client: &client,
            run_id: &run_id,
            resume: resume.as_ref(),
            signals: signals.clone(),
            quiet: printer.quiet,
            history: &history,
        };
        let r = harvest_source(&ctx, &mut manifest, &mut totals).await;
        let st = client.stats();
        retries += st.retries;
        bytes += st.bytes;
        if r.is_err() {
            result = r;
            break;
        }
    }
    let elapsed = started.elapsed();
    let outcome = match &result {
        Ok(()) => json!("ok"),
        Err(e) if e.chain().any(|c| c.is::<Interrupted>()) => json!("interrupted"),
        Err(e) => json!(format!("failed: {e:#}")),
    };
    manifest.append(
        "run_end",
        &run_id,
        obj(json!({
            "outcome": outcome,
            "ended_at": now_rfc3339(),
            "totals": {
                "tables": totals.tables,
                "pages": totals.pages,
                "rows": totals.rows,
                "bytes": bytes,
                "parts": totals.parts,
                "retries": retries,
                "wall_ms": elapsed.as_millis() as u64,
            },
            "warnings": totals.warnings,
            "watermarks": totals.watermarks,
        })),
    )?;
    result?;
    printer.summary(&format!(
        "harvested {} table(s): {} pages, {} rows, {:.1} MB, {} retries in {:.1}s -> {}",
        totals.tables,
        totals.pages,
        totals.rows,
        bytes as f64 / 1e6,
        retries,
        elapsed.as_secs_f64(),
        out.display()
    ));
    Ok(())
}

/// What every table of one source shares.
struct RunCtx<'a> {
    settings: &'a HarvestSettings,
    source: &'a SourceSettings,
    client: &'a Client,
    run_id: &'a str,
    resume: Option<&'a ResumePoint>,
    signals: watch::Receiver<Option<&'static str>>,
    quiet: bool,
    /// The manifest as read at start: other runs' records, which this run does not change.
    history: &'a [Value],
}

/// SIGINT/SIGTERM set the watched value; the page loop checks it between pages and while a
/// request is in flight.
fn watch_signals() -> watch::Receiver<Option<&'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(None);
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
    ] {
        let tx = tx.clone();
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    if s.recv().await.is_some() {
                        tracing::warn!("{name} received: finishing with a clean checkpoint");
                        let _ = tx.send(Some(name));
                    }
                });
            }
            Err(e) => tracing::warn!("cannot listen for {name}: {e}"),
        }
    }
    rx
}

async fn harvest_source(
    ctx: &RunCtx<'_>,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let source = ctx.source;
    let flavor = match datasette::detect_flavor(ctx.client, &source.base).await? {
        Some((f, v)) => {
            tracing::info!(
                "source {:?}: Datasette {v} at {}",
                source.name,
                crate::http::display_url(&source.base)
            );
            Some(f)
        }
        None => {
            tracing::warn!(
                "source {:?}: /-/versions.json did not say the Datasette version; detecting from the first page",
                source.name
            );
            None
        }
    };
    for table in &source.tables {
        let progress = ctx
            .resume
            .and_then(|r| r.tables.get(&table.output))
            .cloned();
        if progress.as_ref().is_some_and(|p| p.done) {
            tracing::info!("{}: already complete in the resumed run", table.output);
            totals.tables += 1;
            continue;
        }
        harvest_table(
            ctx,
            table,
            flavor,
            progress.unwrap_or_default(),
            manifest,
            totals,
        )
        .await
        .with_context(|| {
            format!(
                "harvesting table {:?} of source {:?}",
                table.name, source.name
            )
        })?;
        totals.tables += 1;
    }
    Ok(())
}

/// Everything the planner learned about a table before the first row is written.
struct TablePlan {
    columns: Vec<ColumnPlan>,
    is_view: bool,
    count: Option<u64>,
}

/// One table being harvested: pages come in (fetched or replayed), rows go to the sink.
struct TableRun<'a> {
    ctx: &'a RunCtx<'a>,
    table: &'a TableSettings,
    plan: Option<TablePlan>,
    sink: Option<TableSink>,
    last_part: u64,
    first_page_since_checkpoint: u64,
    rows: u64,
    parts: u64,
    /// Incremental: decides which rows are new, tracks the next watermark.
    tracker: Option<crate::watermark::Tracker>,
}

impl<'a> TableRun<'a> {
    /// Take one page whose snapshot and manifest line are durable.
    /// `to_sink: false` only feeds the watermark tracker (pages already in recorded parts).
    async fn accept(
        &mut self,
        page_no: u64,
        page: &Page,
        to_sink: bool,
        manifest: &mut Manifest,
        totals: &mut Totals,
    ) -> anyhow::Result<()> {
        if self.plan.is_none() {
            let p = plan_table(
                self.ctx.client,
                &self.ctx.source.base,
                &self.ctx.source.database,
                self.table,
                page,
            )
            .await?;
            if p.is_view && self.table.sort.is_none() {
                let w = format!(
                    "{:?} is a view: Datasette pages views by offset with no guaranteed order, so rows can be skipped or repeated if the data changes during the harvest; set `sort` to a unique column",
                    self.table.name
                );
                tracing::warn!("{w}");
                totals.warnings.push(w);
            }
            self.set_plan(p)?;
        }
        let (Some(plan), Some(sink)) = (self.plan.as_ref(), self.sink.as_mut()) else {
            unreachable!("planned above")
        };
        if let Some(cols) = &page.columns
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
            None => std::borrow::Cow::Borrowed(&page.rows),
            Some(tracker) => {
                let col = watermark_index(self.table, plan)?;
                let mut kept = Vec::with_capacity(page.rows.len());
                for r in &page.rows {
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
        sink.push_rows(&rows, page_no)?;
        self.rows += rows.len() as u64;
        if sink.checkpoint_due() {
            self.checkpoint(manifest, page_no)?;
        }
        Ok(())
    }

    fn set_plan(&mut self, p: TablePlan) -> anyhow::Result<()> {
        let mut sink = TableSink::new(
            &self.ctx.settings.out,
            &self.table.output,
            self.ctx.run_id,
            &p.columns,
            self.table.partition_by.as_deref(),
            self.ctx.settings.sink.clone(),
        )?;
        sink.continue_after_part(self.last_part);
        self.sink = Some(sink);
        self.plan = Some(p);
        Ok(())
    }

    /// Close and record every open part: all rows of pages up to `last_page` are durable.
    fn checkpoint(&mut self, manifest: &mut Manifest, last_page: u64) -> anyhow::Result<()> {
        let (Some(plan), Some(sink)) = (self.plan.as_ref(), self.sink.as_mut()) else {
            return Ok(());
        };
        let closed = sink.checkpoint()?;
        record_parts(
            manifest,
            self.ctx,
            self.table,
            plan,
            &closed,
            self.first_page_since_checkpoint,
            last_page,
        )?;
        self.parts += closed.len() as u64;
        self.first_page_since_checkpoint = last_page + 1;
        Ok(())
    }
}

async fn harvest_table(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    detected: Option<Flavor>,
    progress: TableProgress,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (settings, source) = (ctx.settings, ctx.source);
    // Incremental: the stored watermark gives an inclusive lower bound; its window, the rows
    // already written at the boundary.
    let store = crate::watermark::Store::new(&settings.out);
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
        let lower = match prev_state.as_ref().and_then(|s| Mark::from_json(&s.value)) {
            Some(m) => Some(m.minus(&lookback)?.filter_text()),
            None => wm.initial.clone(),
        };
        match &lower {
            Some(l) => {
                tracing::info!("{}: rows with {} >= {l:?}", table.output, wm.column);
                params.push((format!("{}__gte", wm.column), l.clone()));
            }
            None => tracing::info!(
                "{}: no stored watermark and no initial value: taking every row",
                table.output
            ),
        }
        tracker = Some(Tracker::new(
            prev_state.as_ref(),
            lookback,
            wm.max_window_rows,
        ));
        if progress.all_pages.is_empty() {
            remove_unfinished_parts(ctx, table, manifest)?;
        }
    }
    let req = TableRequest {
        base: source.base.clone(),
        database: source.database.clone(),
        table: table.name.clone(),
        params,
        page_size: table.page_size,
        sort: table.sort.clone(),
    };
    let raw_rel = format!(
        "raw/{}/{}/{}",
        sanitize_component(&source.name),
        sanitize_component(&table.output),
        ctx.run_id
    );
    let raw_dir = settings.out.join(&raw_rel);
    create_dir_all_durable(&raw_dir)
        .with_context(|| format!("cannot create {}", raw_dir.display()))?;

    let mut run = TableRun {
        ctx,
        table,
        plan: None,
        sink: None,
        last_part: progress.last_part,
        first_page_since_checkpoint: progress.checkpoint_page + 1,
        rows: 0,
        parts: 0,
        tracker,
    };
    if let Some(columns) = progress.plan.clone() {
        run.set_plan(TablePlan {
            columns,
            is_view: false,
            count: progress.server_count,
        })?;
    }
    let bar = crate::progress::Progress::rows(&table.output, ctx.quiet);
    let mut signals = ctx.signals.clone();
    let mut page_no = progress.checkpoint_page;
    let mut cursor = progress.checkpoint_cursor.clone();
    let mut seen_tokens: HashSet<String> = progress.cursors.iter().cloned().collect();
    let mut replayed = 0u64;
    let mut server_count = progress.server_count;

    // 1. Replay recorded pages after the checkpoint from their snapshots (incremental replays
    //    every recorded page, to rebuild its tracker; only those after the checkpoint are new).
    let to_replay = if run.tracker.is_some() {
        &progress.all_pages
    } else {
        &progress.replay
    };
    for rp in to_replay {
        if let Some(sig) = *signals.borrow() {
            run.checkpoint(manifest, page_no)?;
            return Err(Interrupted { signal: sig }.into());
        }
        let body = std::fs::read(settings.out.join(&rp.path)).with_context(|| {
            format!(
                "cannot read the snapshot {} to resume; rerun with --restart",
                rp.path
            )
        })?;
        if sha256_hex(&body) != rp.sha256 {
            bail!(
                "the snapshot {} no longer matches the sha256 its manifest line records, so it cannot be replayed; rerun with --restart",
                rp.path
            );
        }
        let known: Option<Vec<String>> = run
            .plan
            .as_ref()
            .map(|p| p.columns.iter().map(|c| c.name.clone()).collect());
        let page = match datasette::parse_page(&body, known.as_deref()) {
            Ok(p) => p,
            Err(BodyProblem::Truncated(w) | BodyProblem::Wrong(w)) => {
                bail!("the recorded snapshot {} is unusable: {w}", rp.path)
            }
        };
        if rp.page == 1 {
            server_count = server_count.or(page.count);
        }
        let to_sink = rp.page > progress.checkpoint_page;
        run.accept(rp.page, &page, to_sink, manifest, totals)
            .await?;
        page_no = rp.page;
        cursor = rp.cursor_out.clone();
        replayed += u64::from(to_sink);
    }
    if replayed > 0 {
        tracing::info!(
            "{}: replayed {replayed} recorded page(s) from snapshots",
            table.output
        );
    }

    // 2. Fetch the rest (unless the last recorded page was the table's last).
    let mut flavor = detected.unwrap_or(Flavor::V1);
    let mut more_to_fetch = page_no == 0 || cursor.is_some();
    let mut fetched_pages = 0u64;
    while more_to_fetch {
        if let Some(sig) = *signals.borrow() {
            run.checkpoint(manifest, page_no)?;
            return Err(Interrupted { signal: sig }.into());
        }
        page_no += 1;
        let url = req.page_url(flavor, cursor.as_deref(), page_no == 1);
        let known: Option<Vec<String>> = run
            .plan
            .as_ref()
            .map(|p| p.columns.iter().map(|c| c.name.clone()).collect());
        let fetch = ctx.client.get(&url, |f| {
            match datasette::parse_page(&f.body, known.as_deref()) {
                Ok(p) => Verdict::Accept(p),
                Err(BodyProblem::Truncated(why)) => Verdict::Retry(why),
                Err(BodyProblem::Wrong(why)) => Verdict::Reject(why),
            }
        });
        let result = tokio::select! {
            r = fetch => r,
            _ = signals.changed() => {
                // Abandon the page in flight; everything before it is recorded.
                run.checkpoint(manifest, page_no - 1)?;
                let sig = (*signals.borrow()).unwrap_or("a signal");
                return Err(Interrupted { signal: sig }.into());
            }
        };
        let (fetched, page) = result.map_err(|e| match e.status() {
            Some(404) if page_no == 1 => anyhow::Error::new(UsageError::with_hint(
                format!(
                    "table {:?} was not found in database {:?} at {} (HTTP 404)",
                    table.name,
                    source.database,
                    crate::http::display_url(&source.base)
                ),
                "check the table and database names (they are case-sensitive)",
            )),
            Some(400) => anyhow::Error::new(e).context(format!(
                "the server refused the request; if the page size {} is above its max_returned_rows, lower --page-size",
                table.page_size
            )),
            _ => anyhow::Error::new(e),
        })?;
        if page_no == 1 {
            server_count = page.count;
            if detected.is_none() && page.flavor != flavor {
                // Undetected server and a 0.6x reply: carry on with 0.6x parameters.
                flavor = page.flavor;
            }
        }

        // The snapshot, durable before anything refers to it; then its manifest line.
        let snap_name = format!("page-{page_no:06}.json");
        let snap_rel = format!("{raw_rel}/{snap_name}");
        atomic_write(&raw_dir.join(&snap_name), &fetched.body)
            .with_context(|| format!("cannot write the snapshot {snap_rel}"))?;
        let mut rec = obj(json!({
            "source": crate::http::display_url(&source.base),
            "database": source.database,
            "table": table.name,
            "output": table.output,
            "page": page_no,
            "url": crate::http::display_url(&url),
            "params": datasette::query_params(&url),
            "status": fetched.status,
            "sha256": sha256_hex(&fetched.body),
            "bytes": fetched.body.len(),
            "path": snap_rel,
            "rows": page.rows.len(),
            "cursor_in": cursor,
            "cursor_out": page.next,
            "fetched_at": fetched.fetched_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "attempts": fetched.attempts,
            "elapsed_ms": fetched.elapsed_ms,
        }));
        for (k, v) in [
            ("etag", &fetched.etag),
            ("last_modified", &fetched.last_modified),
            ("content_type", &fetched.content_type),
        ] {
            if let Some(v) = v {
                rec.insert(k.into(), json!(v));
            }
        }
        if page_no == 1
            && let Some(c) = page.count
        {
            rec.insert("server_count".into(), json!(c));
        }
        manifest.append("page", ctx.run_id, rec)?;
        run.accept(page_no, &page, true, manifest, totals).await?;
        totals.pages += 1;
        fetched_pages += 1;
        bar.set(progress.rows_in_parts + run.rows);
        if page_no.is_multiple_of(100) {
            tracing::info!(
                "{}: {page_no} pages, {} rows",
                table.output,
                progress.rows_in_parts + run.rows
            );
        }
        match page.next {
            None => more_to_fetch = false,
            Some(tok) => {
                if !seen_tokens.insert(tok.clone()) {
                    bail!(
                        "the server sent the pagination token {tok:?} a second time (page {page_no}); following it would loop forever. \
This is a known Datasette bug with some sort orders and primary keys; harvest with a different `sort` or filters"
                    );
                }
                cursor = Some(tok);
            }
        }
    }

    // 3. Close the table: final parts, then the table_end marker.
    let Some(plan) = run.plan.as_ref() else {
        bail!(
            "no page of table {:?} was recorded; rerun with --restart",
            table.name
        );
    };
    let count = plan.count.or(server_count);
    let Some(mut sink) = run.sink.take() else {
        unreachable!("a plan always comes with a sink")
    };
    let table_rel = sink.table_rel().to_string();
    if run.tracker.is_some() && dataset_has_parts(&settings.out.join(&table_rel)) {
        // Later incremental runs add to the dataset; one without new rows adds nothing.
        sink.skip_empty_part();
    }
    let closed = sink.finish()?;
    record_parts(
        manifest,
        ctx,
        table,
        plan,
        &closed,
        run.first_page_since_checkpoint,
        page_no,
    )?;
    run.parts += closed.len() as u64;
    let rows = progress.rows_in_parts + run.rows;
    let mut end = obj(json!({
        "source": crate::http::display_url(&source.base),
        "table": table.name,
        "output": table.output,
        "pages": page_no,
        "rows": rows,
        "server_count": count,
        "replayed_pages": replayed,
        "fetched_pages": fetched_pages,
    }));
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
    totals.rows += rows;
    totals.parts += run.parts;

    // Incremental runs re-read boundary rows they skip as already written.
    let skipped = run
        .tracker
        .as_ref()
        .map_or(0, |t| t.skipped_dupes + t.skipped_nulls);
    let fetched_rows = rows + skipped;
    if let Some(expected) = count
        && expected != fetched_rows
    {
        let w = format!(
            "table {:?}: the server counted {expected} rows at the start but {fetched_rows} were received (the table changed during the run, or rows were lost to a pagination bug)",
            table.name
        );
        tracing::warn!("{w}");
        totals.warnings.push(w);
    }
    if !committed {
        supersede_parts(
            &settings.out,
            &table_rel,
            ctx.run_id,
            &table.output,
            manifest,
        )?;
    }
    tracing::info!(
        "{}: {rows} rows in {page_no} pages ({fetched_pages} fetched now, {replayed} replayed), {:.1}s",
        table.output,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record_parts(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    plan: &TablePlan,
    closed: &[ClosedPart],
    first_page: u64,
    last_page: u64,
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
            "pages": { "raw_run": ctx.run_id, "first": first_page, "last": last_page },
            "schema": plan.columns,
        }));
        if let (Some(col), Some(v)) = (&table.partition_by, &part.partition) {
            rec.insert("partition".into(), json!({ col: v }));
        }
        manifest.append("parquet", ctx.run_id, rec)?;
    }
    Ok(())
}

/// Decide the table's column types: overrides, then a storage-class probe, then declared types,
/// then the first page (see [`crate::schema::plan_column`]).
async fn plan_table(
    client: &Client,
    base: &url::Url,
    database: &str,
    table: &TableSettings,
    first: &Page,
) -> anyhow::Result<TablePlan> {
    let Some(columns) = first.columns.clone() else {
        bail!(
            "the first page did not list the table's columns; is this a Datasette table endpoint?"
        );
    };
    for (col, what) in table
        .types
        .keys()
        .map(|c| (c, "--type/types"))
        .chain(table.partition_by.iter().map(|c| (c, "partition_by")))
    {
        if !columns.contains(col) {
            return Err(UsageError::with_hint(
                format!(
                    "{what} names column {col:?}, which table {:?} does not have",
                    table.name
                ),
                format!("its columns are: {}", columns.join(", ")),
            )
            .into());
        }
    }
    // Declared types and whether it is a view (best effort: the SQL endpoint may be off).
    let declared: BTreeMap<String, String> = datasette::sql_rows(
        client,
        base,
        database,
        "select name, type from pragma_table_info(:t)",
        &[("t", &table.name)],
    )
    .await?
    .unwrap_or_default()
    .into_iter()
    .filter_map(|r| {
        Some((
            r.get("name")?.as_str()?.to_string(),
            r.get("type")?.as_str()?.to_string(),
        ))
    })
    .collect();
    let is_view = match first.is_view {
        Some(v) => v,
        None => datasette::sql_rows(
            client,
            base,
            database,
            "select type from sqlite_master where name = :t",
            &[("t", &table.name)],
        )
        .await?
        .and_then(|rows| {
            rows.first()
                .and_then(|r| r.get("type").and_then(Value::as_str).map(|t| t == "view"))
        })
        .unwrap_or(false),
    };
    // Which storage classes each column really holds, in one scan (may time out on big tables).
    let probed: Vec<&String> = columns
        .iter()
        .filter(|c| !table.types.contains_key(*c) && c.as_str() != "rowid")
        .collect();
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut sql = String::from("select count(*) as n");
    for (i, c) in probed.iter().enumerate() {
        let q = quote(c);
        for (cls, tag) in [
            ("integer", 'i'),
            ("real", 'r'),
            ("text", 't'),
            ("blob", 'b'),
        ] {
            sql.push_str(&format!(", max(typeof({q}) = '{cls}') as {tag}{i}"));
        }
    }
    sql.push_str(&format!(" from {}", quote(&table.name)));
    let probe = datasette::sql_rows(client, base, database, &sql, &[]).await?;
    let probe_row = probe.as_ref().and_then(|r| r.first());
    if probe_row.is_none() {
        tracing::info!(
            "{}: the server did not answer the type probe (SQL disabled or over its time limit); typing from declared types and the first page",
            table.name
        );
    }
    let flag =
        |row: &Map<String, Value>, key: String| row.get(&key).and_then(Value::as_i64) == Some(1);
    let mut plans = Vec::with_capacity(columns.len());
    for (idx, name) in columns.iter().enumerate() {
        let mut sample = Classes::default();
        for r in &first.rows {
            if let Some(v) = r.get(idx) {
                sample.observe(v);
            }
        }
        let override_ty = table
            .types
            .get(name)
            .copied()
            .or((name == "rowid").then_some(ColType::Integer));
        let probe_classes = probed.iter().position(|c| *c == name).and_then(|i| {
            probe_row.map(|row| Classes {
                integer: flag(row, format!("i{i}")),
                real: flag(row, format!("r{i}")),
                text: flag(row, format!("t{i}")),
                blob: flag(row, format!("b{i}")),
            })
        });
        let p = plan_column(
            name,
            override_ty,
            declared.get(name).map(String::as_str),
            probe_classes,
            sample,
        )
        .map_err(|m| UsageError::new(format!("table {:?}: {m}", table.name)))?;
        tracing::debug!("{}.{name}: {:?} ({})", table.name, p.ty, p.reason);
        plans.push(p);
    }
    // A row count to reconcile with: the first page's exact count, else the probe's when the
    // request has no filters (the probe counts the whole table).
    let count = first.count.or_else(|| {
        let filtered = table.params.iter().any(|(k, _)| !k.starts_with('_'));
        if filtered {
            None
        } else {
            probe_row.and_then(|r| r.get("n").and_then(Value::as_u64))
        }
    });
    Ok(TablePlan {
        columns: plans,
        is_view,
        count,
    })
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

/// The index of the incremental watermark column in the planned columns.
fn watermark_index(table: &TableSettings, plan: &TablePlan) -> anyhow::Result<usize> {
    let col = table
        .watermark
        .as_ref()
        .map(|w| w.column.as_str())
        .unwrap_or_default();
    plan.columns
        .iter()
        .position(|c| c.name == col)
        .ok_or_else(|| {
            UsageError::with_hint(
                format!("table {:?} has no watermark column {col:?}", table.name),
                format!(
                    "its columns are: {}",
                    plan.columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into()
        })
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
) -> anyhow::Result<()> {
    let paths = crate::resume::unfinished_parts(ctx.history, &table.output, ctx.run_id);
    let paths: Vec<String> = paths
        .into_iter()
        .filter(|p| ctx.settings.out.join(p).exists())
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    manifest.append(
        "supersede",
        ctx.run_id,
        obj(json!({ "output": table.output, "reason": "parts of an unfinished run that is not being resumed", "paths": paths })),
    )?;
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

pub(crate) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
