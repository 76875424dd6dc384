//! `harvest harvest`: page through Datasette tables and REST APIs into raw snapshots, the
//! manifest and Parquet.
//! This file owns the run (`incremental` shares it); each table goes through
//! [`crate::run::pipeline`].
//!
//! Guarantees (DESIGN.md): runs on one DIR never interleave (lock); before anything else a run
//! repairs a torn manifest line and removes temp files and Parquet parts the manifest does not
//! vouch for; every run is bracketed by `run_start` (or `run_resume`) and `run_end` with its
//! outcome and totals. Resume: a run that did not end `ok` is continued by the next run with
//! the same settings (config digest) under the same `run_id`; tables it finished are skipped.
//! SIGINT/SIGTERM end the run with a clean checkpoint and exit 130. With `--writer NAME` the
//! lock, manifest and state are the writer's own (`DIR/writers/NAME/`, [`crate::store::writers`])
//! and the start-up clean-up touches only files of its own runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::error::Interrupted;
use crate::error::UsageError;
use crate::http::Client;
use crate::printer::Printer;
use crate::run::context::{RunCtx, Totals, new_run_id, obj};
use crate::run::resume::ResumePoint;
use crate::run::settings::HarvestSettings;
use crate::source::TableSource;
use crate::source::datasette;
use crate::source::datasette::table::{DatasetteFacts, DatasetteTable};
use crate::source::rest::RestSource;
use crate::source::settings::TableSettings;
use crate::store::fsutil::{TEMP_SUFFIX, create_dir_all_durable, files_under};
use crate::store::lock::DirLock;
use crate::store::manifest::Manifest;
use crate::store::manifest::now_rfc3339;

/// The runtime for `harvest` and `incremental`: the writer runs on the calling thread (its
/// file writes and fsyncs block only itself) while page fetches run on two worker threads.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Remove temp files a crashed run left under DIR (they were never visible as real files):
/// under `raw/`, `parquet/` and `quarantine/` (only those of `own` runs, when DIR is shared by writers) and
/// under the writer's `state/`.
pub(crate) fn remove_leftover_temps(
    out: &Path,
    home: &Path,
    own: Option<&std::collections::HashSet<String>>,
) -> anyhow::Result<u64> {
    let mut removed = 0;
    for (root, sub) in [
        (out, "raw"),
        (out, "parquet"),
        (out, "quarantine"),
        (home, "state"),
    ] {
        let files = files_under(&root.join(sub))
            .with_context(|| format!("cannot clean temp files under {}", root.display()))?;
        let mine = |p: &Path| {
            root != out
                || own.is_none_or(|runs| {
                    crate::store::writers::written_by(&crate::store::fsutil::rel_path(out, p), runs)
                })
        };
        for p in files
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(TEMP_SUFFIX) && mine(p))
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

/// Stops the lease renewal when a run returns early (the lease then expires on the store, or
/// the next run on this stage takes it over).
struct LeaseGuard(Arc<crate::store::remote::Remote>);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.0.stop_renewal();
    }
}

pub(crate) async fn run_settings(
    settings: HarvestSettings,
    printer: Printer,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let out = settings.out.clone();
    let home = settings.home.clone();
    crate::store::writers::check_layout(&out, settings.writer.as_deref())?;
    create_dir_all_durable(&home)
        .with_context(|| format!("cannot create the output directory {}", home.display()))?;
    let _lock = DirLock::acquire(&home, settings.wait_lock)?;
    // Object storage: hold the store's lease, and bring the stage up to what the store holds.
    let _lease = match &settings.remote {
        Some(r) => {
            r.acquire_lease(settings.wait_lock)?;
            let guard = LeaseGuard(r.clone());
            r.attach()?;
            crate::store::remote::mount(r.clone());
            tracing::info!("writing to {} through the stage {}", r.url(), out.display());
            Some(guard)
        }
        None => None,
    };
    let (mut manifest, _) = Manifest::open(&home)?;
    let history = crate::store::manifest::read_records(&home)?;
    clean_up(&settings, &history, &mut manifest)?;
    let (resume, run_id) = begin(&settings, &history, &mut manifest)?;
    crate::printer::set_run_id(&run_id);
    let shown = match &settings.remote {
        Some(r) => r.url().to_string(),
        None => out.display().to_string(),
    };
    tracing::info!(out = %shown, "run {run_id} started; writing to {shown}");
    let (stop, signals) = watch_signals();

    let mut totals = Totals::default();
    let mut traffic = crate::http::HttpStats::default();
    let mut result = Ok(());
    for source in &settings.sources {
        let client = Arc::new(Client::new(source_http(&settings.http, source))?);
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
        let r = harvest_source(&ctx, &mut manifest, &mut totals, &stop).await;
        let st = client.stats();
        traffic.retries += st.retries;
        traffic.bytes += st.bytes;
        traffic.wire_bytes += st.wire_bytes;
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
    // The run's totals: in `run_end`, and as the fields of the summary log line.
    let counts = obj(json!({
        "tables": totals.tables,
        "pages": totals.pages,
        "rows": totals.rows,
        "fetched_pages": totals.fetched_pages,
        "replayed_pages": totals.replayed_pages,
        "bytes": traffic.bytes,
        "wire_bytes": traffic.wire_bytes,
        "retries": traffic.retries,
    }));
    let mut counts = counts;
    if totals.quarantined > 0 || !totals.checks.is_empty() {
        counts.insert("rows_quarantined".into(), json!(totals.quarantined));
        counts.insert("checks".into(), json!(totals.checks));
    }
    let mut run_totals = counts.clone();
    run_totals.insert("parts".into(), json!(totals.parts));
    run_totals.insert("wall_ms".into(), json!(elapsed.as_millis() as u64));
    manifest.append(
        "run_end",
        &run_id,
        obj(json!({
            "outcome": outcome,
            "ended_at": now_rfc3339(),
            "totals": run_totals,
            "warnings": totals.warnings,
            "watermarks": totals.watermarks,
        })),
    )?;
    // Everything durable in the stage (also after a failure: a rerun resumes from it).
    if let Some(r) = &settings.remote {
        let published = r.publish();
        if let (Err(e), Ok(())) = (&published, &result) {
            tracing::error!("{e:#}");
        }
        result = result.and(published.map(|_| ()));
        if let Err(e) = r.release_lease() {
            tracing::warn!("{e:#}");
        }
    }
    result?;
    print_summary(printer, &totals, traffic, counts, &shown, elapsed);
    Ok(())
}

/// Before anything else: remove what an interrupted run left unrecorded (temp files, Parquet
/// parts), commit what it recorded but did not commit to a Delta table, publish what is
/// durable (object storage) and recover watermarks (`incremental`).
fn clean_up(
    settings: &HarvestSettings,
    history: &[Value],
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    let (out, home) = (&settings.out, &settings.home);
    // In a shared DIR, clean-up touches only this writer's files.
    let own = settings
        .writer
        .is_some()
        .then(|| crate::store::writers::runs_of(history));
    remove_leftover_temps(out, home, own.as_ref())?;
    let swept = crate::run::resume::sweep_parts(out, history, own.as_ref()).with_context(|| {
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
    // Delta tables: follow what the manifest wants them to hold, and first commit whatever an
    // interrupted run recorded but did not commit.
    let mut ledger = crate::store::delta::Ledger::default();
    for r in history {
        ledger.feed(r);
    }
    if !ledger.outputs.is_empty()
        || settings.table_format == crate::store::delta::TableFormat::Delta
    {
        for (output, c) in crate::store::delta::reconcile(out, &ledger)? {
            tracing::warn!(
                "{output}: committed Delta version {} with {} part(s) added and {} removed that an interrupted run had recorded but not committed",
                c.version,
                c.added,
                c.removed
            );
        }
        manifest.follow(Box::new(ledger));
    }
    if let Some(r) = &settings.remote {
        r.publish()?;
    }
    if settings.command == "incremental" {
        let (fwd, back) = crate::store::watermark::Store::new(home).recover(history)?;
        if fwd + back > 0 {
            tracing::warn!(
                "watermark recovery after an interrupted run: {fwd} committed state(s) rolled forward, {back} uncommitted discarded"
            );
        }
    }
    Ok(())
}

/// The run this process continues (an unfinished run with the same settings, unless
/// `--restart`), recorded as `run_resume`; or a new run, recorded as `run_start`. Returns it
/// with its id.
fn begin(
    settings: &HarvestSettings,
    history: &[Value],
    manifest: &mut Manifest,
) -> anyhow::Result<(Option<ResumePoint>, String)> {
    let resume = match crate::run::resume::find_resumable(history, &settings.config_digest) {
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
            crate::printer::set_run_id(&r.run_id);
            let replay: usize = r
                .tables
                .values()
                .flat_map(|t| t.streams.values())
                .map(|s| s.replay.len())
                .sum();
            let done = r.tables.values().filter(|t| t.done.is_some()).count();
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
    Ok((resume, run_id))
}

/// The summary line of a run that succeeded (its counts as fields with `--log-format json`).
fn print_summary(
    printer: Printer,
    totals: &Totals,
    traffic: crate::http::HttpStats,
    counts: Map<String, Value>,
    shown: &str,
    elapsed: std::time::Duration,
) {
    let crate::http::HttpStats {
        bytes,
        wire_bytes,
        retries,
        ..
    } = traffic;
    let resumed = if totals.pages == totals.fetched_pages {
        String::new()
    } else {
        format!(
            " ({} fetched now, {} replayed from snapshots, {} by an earlier process)",
            totals.fetched_pages,
            totals.replayed_pages,
            totals.pages - totals.fetched_pages - totals.replayed_pages
        )
    };
    let wire = if wire_bytes == bytes {
        String::new()
    } else {
        format!(" ({:.1} MB on the wire)", wire_bytes as f64 / 1e6)
    };
    let rows = if totals.quarantined == 0 {
        format!("{} rows", totals.rows)
    } else {
        let by: Vec<String> = totals
            .checks
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "{} rows written, {} quarantined ({}) in {}",
            totals.rows,
            totals.quarantined,
            by.join(", "),
            totals.quarantine_dirs.join(", ")
        )
    };
    printer.summary_with(
        &format!(
            "harvested {} table(s): {} pages{resumed}, {rows}, {:.1} MB{wire}, {} retries in {:.1}s -> {}",
            totals.tables,
            totals.pages,
            bytes as f64 / 1e6,
            retries,
            elapsed.as_secs_f64(),
            shown
        ),
        {
            let mut f = counts;
            f.insert("outcome".into(), json!("ok"));
            f.insert("elapsed_ms".into(), json!(elapsed.as_millis() as u64));
            Value::Object(f)
        },
    );
}

/// SIGINT/SIGTERM set the watched value (as does a failed table under `--jobs`, through the
/// returned sender); the page loop checks it between pages and while a request is in flight.
fn watch_signals() -> (
    watch::Sender<Option<&'static str>>,
    watch::Receiver<Option<&'static str>>,
) {
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
    (tx, rx)
}

/// How a source's tables are made into table sources: what was learned about the server once.
pub(crate) enum Kit {
    Rest,
    Datasette {
        facts: DatasetteFacts,
        max_rows: Option<u32>,
    },
}

async fn harvest_source(
    ctx: &RunCtx<'_>,
    manifest: &mut Manifest,
    totals: &mut Totals,
    stop: &watch::Sender<Option<&'static str>>,
) -> anyhow::Result<()> {
    let source = ctx.source;
    if source.kind == crate::source::settings::SourceKind::Files {
        for table in &source.tables {
            let Some(progress) = unfinished(ctx, table, totals) else {
                continue;
            };
            crate::run::files::harvest_files(ctx, table, progress, manifest, totals).with_context(
                || {
                    format!(
                        "harvesting table {:?} of source {:?}",
                        table.output, source.name
                    )
                },
            )?;
        }
        return Ok(());
    }
    let kit = if source.kind == crate::source::settings::SourceKind::Rest {
        tracing::info!(
            "source {:?}: REST API at {}",
            source.name,
            crate::http::display_url(&source.base)
        );
        Kit::Rest
    } else {
        datasette_kit(ctx.client, ctx.source).await?
    };
    let jobs = ctx.settings.jobs.max(1);
    if jobs == 1 || source.tables.len() < 2 {
        for table in &source.tables {
            let (t, r) = harvest_one(ctx, &kit, table, manifest.clone()).await;
            totals.merge(t);
            r?;
        }
        return Ok(());
    }
    run_concurrently(ctx, &kit, jobs, manifest, totals, stop).await
}

/// `--jobs N`: up to N tables of the source in flight on this task, each appending through
/// its own handle of the one manifest. A row-driven table starts once its parent table (in
/// this run) has finished. The first failure stops the others at a clean checkpoint (as a
/// signal would) and is the run's error.
async fn run_concurrently(
    ctx: &RunCtx<'_>,
    kit: &Kit,
    jobs: usize,
    manifest: &mut Manifest,
    totals: &mut Totals,
    stop: &watch::Sender<Option<&'static str>>,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let tables = &ctx.source.tables;
    // A table's parent, when the parent is harvested by this run.
    let parent_of = |t: &TableSettings| -> Option<usize> {
        let name = t.rows.as_ref()?.input.parent_table()?;
        tables.iter().position(|p| p.output == name)
    };
    // Bars of concurrent tables would write over each other: their counts go to the log.
    let ctx = RunCtx {
        quiet: true,
        signals: ctx.signals.clone(),
        ..*ctx
    };
    let ctx = &ctx;
    let mut waiting: Vec<usize> = (0..tables.len()).collect();
    let mut done = vec![false; tables.len()];
    let mut running = futures::stream::FuturesUnordered::new();
    let mut first_error: Option<anyhow::Error> = None;
    tracing::info!(
        "source {:?}: {} tables, up to {jobs} at once",
        ctx.source.name,
        tables.len()
    );
    loop {
        if first_error.is_none() {
            let mut i = 0;
            while running.len() < jobs && i < waiting.len() {
                let t = waiting[i];
                if parent_of(&tables[t]).is_some_and(|p| !done[p]) {
                    i += 1;
                    continue;
                }
                waiting.remove(i);
                let handle = manifest.clone();
                running.push(async move {
                    let (totals, r) = harvest_one(ctx, kit, &tables[t], handle).await;
                    (t, totals, r)
                });
            }
        }
        let Some((t, got, r)) = running.next().await else {
            break;
        };
        totals.merge(got);
        match r {
            Ok(()) => done[t] = true,
            Err(e) => {
                if first_error.is_none() {
                    let signalled = e.chain().any(|c| c.is::<Interrupted>());
                    if !signalled {
                        tracing::warn!(
                            "{}: failed; stopping the other tables at a clean checkpoint",
                            tables[t].output
                        );
                        let _ = stop.send(Some("another table's failure"));
                    }
                    first_error = Some(e);
                } else {
                    tracing::debug!("{}: stopped: {e:#}", tables[t].output);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            if let Some(&t) = waiting.first() {
                anyhow::bail!(
                    "table {:?} waited for a parent table that never finished",
                    tables[t].output
                );
            }
            Ok(())
        }
    }
}

/// The HTTP settings of `source`'s client: the run's, with the source's credentials and headers.
pub(crate) fn source_http(
    http: &crate::http::HttpSettings,
    source: &crate::source::settings::SourceSettings,
) -> crate::http::HttpSettings {
    let mut http = http.clone();
    http.auth = source.auth.clone();
    http.headers = source.headers.clone();
    http.credentials = source.sends_credentials();
    http
}

/// What a Datasette source's tables share: the server's flavor, how it sends ±Infinity, and
/// its row limit per request.
pub(crate) async fn datasette_kit(
    client: &Client,
    source: &crate::source::settings::SourceSettings,
) -> anyhow::Result<Kit> {
    let flavor = match datasette::detect_flavor(client, &source.base).await? {
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
    let sends_infinity = datasette::sends_infinity(client, &source.base, &source.database).await?;
    if sends_infinity == Some(false) {
        tracing::warn!(
            "source {:?}: the server sends ±Infinity as null even when asked (_json_infinity=on); tables holding them will be refused",
            source.name
        );
    }
    let facts = DatasetteFacts {
        flavor,
        sends_infinity,
    };
    let max_rows = datasette::max_returned_rows(client, &source.base).await?;
    Ok(Kit::Datasette { facts, max_rows })
}

/// Harvest one table of the source, start to end, appending through `manifest` (a handle of
/// the run's one manifest). Returns what it adds to the run's totals, also when it failed.
async fn harvest_one(
    ctx: &RunCtx<'_>,
    kit: &Kit,
    table: &TableSettings,
    mut manifest: Manifest,
) -> (Totals, anyhow::Result<()>) {
    let mut totals = Totals::default();
    let r = harvest_one_inner(ctx, kit, table, &mut manifest, &mut totals).await;
    let source = &ctx.source.name;
    let what = match kit {
        Kit::Rest => table.output.as_str(),
        Kit::Datasette { .. } => table.name.as_str(),
    };
    (
        totals,
        r.with_context(|| format!("harvesting table {what:?} of source {source:?}")),
    )
}

async fn harvest_one_inner(
    ctx: &RunCtx<'_>,
    kit: &Kit,
    table: &TableSettings,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let source = ctx.source;
    let (facts, max_rows) = match kit {
        Kit::Rest => {
            let Some(progress) = unfinished(ctx, table, totals) else {
                return Ok(());
            };
            if table.rows.is_some() {
                return crate::run::row_driven::harvest_rows(
                    ctx, table, progress, manifest, totals,
                )
                .await;
            }
            let Some(rest) = RestSource::new(source, table) else {
                anyhow::bail!(
                    "table {:?} of a REST source has no REST settings",
                    table.output
                );
            };
            let src = TableSource::Rest(Box::new(rest));
            return crate::run::pipeline::harvest_table(
                ctx, table, src, progress, manifest, totals,
            )
            .await;
        }
        Kit::Datasette { facts, max_rows } => (*facts, *max_rows),
    };
    let table_source = |table: &TableSettings| {
        TableSource::Datasette(Box::new(DatasetteTable::new(
            ctx.client,
            &source.base,
            &source.database,
            table,
            facts,
        )))
    };
    let mut table = fit_page_size(table, max_rows)?;
    let Some(progress) = unfinished(ctx, &table, totals) else {
        return Ok(());
    };
    let fresh = progress.streams.is_empty() && progress.slices.is_none();
    let lines_before = manifest.appended();
    let mut result = crate::run::pipeline::harvest_table(
        ctx,
        &table,
        table_source(&table),
        progress.clone(),
        manifest,
        totals,
    )
    .await;
    // A server that would not show its settings names its limit when it refuses the first
    // page; a defaulted page size then drops to it. (Only for a table that had recorded
    // nothing, so the retry starts clean.)
    if let Err(e) = &result
        && fresh
        && table.parallel <= 1
        && !table.page_size_given
        && let Some(limit) = refused_page_size(e).filter(|l| *l < table.page_size)
        && manifest.appended() == lines_before
    {
        tracing::info!(
            "{}: the server refused pages of {} and returns at most {limit} rows per request; using pages of {limit}",
            table.output,
            table.page_size
        );
        table.page_size = limit;
        let src = table_source(&table);
        result =
            crate::run::pipeline::harvest_table(ctx, &table, src, progress, manifest, totals).await;
    }
    result
}

/// Where `table` stands in the resumed run (nothing recorded for a new run); `None` when the
/// resumed run already completed it (its totals are counted).
fn unfinished(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    totals: &mut Totals,
) -> Option<crate::run::resume::TableProgress> {
    let progress = ctx
        .resume
        .and_then(|r| r.tables.get(&table.output))
        .cloned()
        .unwrap_or_default();
    if let Some(done) = progress.done {
        tracing::info!("{}: already complete in the resumed run", table.output);
        totals.add_table(done.pages, done.rows, 0);
        return None;
    }
    Some(progress)
}

/// The page size limit a server named when it refused a request with 400 (Datasette:
/// `_size must be <= 1000`).
fn refused_page_size(e: &anyhow::Error) -> Option<u32> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<crate::http::HttpError>() {
            Some(crate::http::HttpError::Status {
                status: 400,
                detail,
                ..
            }) => {
                let rest = &detail[detail.find("_size must be <= ")? + "_size must be <= ".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok().filter(|n| *n > 0)
            }
            _ => None,
        })
}

/// The table with a page size the server accepts: a defaulted one above the server's
/// `max_returned_rows` becomes that limit (logged); a given one is a usage error.
pub(crate) fn fit_page_size(
    table: &TableSettings,
    max_rows: Option<u32>,
) -> anyhow::Result<TableSettings> {
    let mut t = table.clone();
    let Some(max) = max_rows.filter(|m| *m < table.page_size) else {
        return Ok(t);
    };
    if table.page_size_given {
        return Err(UsageError::with_hint(
            format!(
                "table {:?}: the page size {} is above the server's max_returned_rows ({max})",
                table.name, table.page_size
            ),
            format!("pass --page-size {max} or less (or leave it out to use the server's limit)"),
        )
        .into());
    }
    tracing::info!(
        "{}: the server returns at most {max} rows per request (max_returned_rows); using pages of {max}",
        table.output
    );
    t.page_size = max;
    Ok(t)
}
