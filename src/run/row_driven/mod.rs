//! Row-driven tables: one request per input row (`for_each`), its response kept like any
//! page, its rows joined back to the input by a request id.
//!
//! Guarantees:
//! - Inputs are streamed ([`crate::source::rows::inputs`]); every placeholder of the path, parameters,
//!   headers and body is checked against the input's columns before any request is sent
//!   (exit 2 naming the placeholder and the columns).
//! - Each request has a deterministic id ([`crate::run::cursor::request_id`]: sha256 of method,
//!   URL and body). An input row whose first request id was already taken in this run (a
//!   duplicate input, or one recorded before a crash) is not sent again.
//! - At most `concurrency` requests are in flight. Responses are recorded in input order:
//!   every response that is ready is written, byte-exact, into one batch snapshot
//!   (`batch-NNNNNN.raw`, the bodies back to back), then one manifest `page` line lists each
//!   response (request id, input key, URL, status, offset, bytes, sha256, rows), then the rows
//!   go to Parquet. For a method other than GET, only then are more inputs sent, so at most
//!   `concurrency` of them are ever sent and not recorded; GET reads up to
//!   [`GET_READ_AHEAD`] responses ahead of the writer (repeating a GET only reads again).
//! - Exactly once in the output: a resumed run replays the batches after the last checkpoint
//!   from their snapshots and skips every input whose requests are all recorded; an input
//!   cut off between two pages of its own pagination continues from its recorded next URL.
//!   On the wire it is at least once: a request in flight at a crash may be sent again
//!   (`request_id_header` lets the server de-duplicate).
//! - SIGINT/SIGTERM: a GET table stops at once (clean checkpoint, exit 130); for other
//!   methods the requests already sent are answered and recorded first (a second signal
//!   stops at once), so an interrupted POST run repeats nothing on resume.
//! - Rows carry `_request_id`, `_status` and the input row as `_input__<column>`. A kept
//!   error status (`record_status`, 404 by default) gives one row with the input and
//!   status and no response fields; 401/403 stay fatal (exit 4), the retry budget exit 5.
//! - The set of taken input ids is kept as 16-byte prefixes of the ids in a hash set of
//!   17-byte slots (19–39 bytes per input, about 36 at a million); nothing else grows with
//!   the input.

pub(crate) mod requests;
mod row_run;

use self::requests::*;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

use crate::error::{Interrupted, UsageError};
use crate::run::context::{RunCtx, Totals, obj};
use crate::run::cursor::{Event, FetchedPage, Walkers};
use crate::run::resume::{RecordedPage, StreamProgress, TableProgress};
use crate::source::Page;
use crate::source::TablePlan;
use crate::source::rest::{Paging, RestTable};
use crate::source::rows::inputs::Inputs;
use crate::source::rows::{REQUEST_ID, RowDriven, STATUS, Templates};
use crate::source::settings::TableSettings;
use crate::store::fsutil::sanitize_component;
use crate::store::manifest::Manifest;
use crate::store::parts::TableSink;

/// Pages each request may fetch ahead of the writer (a paginating child).
const FETCH_AHEAD: usize = 1;
/// Rows of responses held before the table's columns are known (no response with records
/// yet); past this the plan is made from the input columns and `types` alone.
const MAX_UNPLANNED_ROWS: usize = 10_000;
/// GET responses that may wait for the writer beyond the requests in flight, so the next
/// requests go out while a batch is made durable (a GET repeated after a crash only reads
/// again). Other methods wait: at most `concurrency` inputs are ever sent and not recorded.
const GET_READ_AHEAD: usize = 256;
/// One input row's requests in flight.
struct Job {
    /// The id of the input's first request.
    input_id: String,
    /// Pages of this input taken so far (its own pagination).
    n: u64,
    key: Map<String, Value>,
    /// Held so that dropping the job aborts its requests.
    _walkers: Walkers,
    rx: tokio::sync::mpsc::Receiver<Event>,
}

/// One response on its way into a batch.
struct Response {
    /// This request's id (its own URL; the input's method and body).
    id: String,
    input_id: String,
    key: Map<String, Value>,
    /// The page within the input's own pagination (1 = its first request).
    n: u64,
    f: FetchedPage,
}

/// Counters for `table_end`.
#[derive(Default)]
struct Counts {
    inputs: u64,
    duplicate_inputs: u64,
    already_recorded: u64,
    responses: u64,
    statuses: BTreeMap<u16, u64>,
}

/// An input whose last recorded page has a next page.
struct Partial {
    /// The id of the input's first request.
    input_id: String,
    key: Map<String, Value>,
    /// The input's last recorded page (its own numbering).
    n: u64,
    next: String,
    paging: Option<Value>,
}

/// What an earlier process of this run recorded for the table, read from the manifest.
#[derive(Default)]
struct Recorded {
    /// Inputs whose last page is recorded.
    done: HashSet<u128>,
    /// An input cut off between two of its pages.
    partial: Option<Partial>,
    /// Entries of the batches after the checkpoint (batch number → entries).
    batches: BTreeMap<u64, Vec<Value>>,
    /// Entries recorded, and per status.
    responses: u64,
    statuses: BTreeMap<u16, u64>,
}

fn recorded(ctx: &RunCtx<'_>, output: &str, checkpoint: u64) -> anyhow::Result<Recorded> {
    let mut r = Recorded::default();
    let mut open: BTreeMap<String, Partial> = BTreeMap::new();
    crate::store::manifest::for_each_record(&ctx.settings.out, |v| {
        if v["kind"] != "page" || v["run_id"] != ctx.run_id || v["output"] != output {
            return;
        }
        let batch = v["page"].as_u64().unwrap_or(0);
        let entries = v["requests"].as_array().cloned().unwrap_or_default();
        for e in &entries {
            let id = e["id"].as_str().unwrap_or_default().to_string();
            let input = e["input"].as_str().map_or(id.clone(), str::to_string);
            r.responses += 1;
            *r.statuses
                .entry(e["status"].as_u64().unwrap_or(0) as u16)
                .or_default() += 1;
            match e["next"].as_str() {
                Some(next) => {
                    open.insert(
                        input.clone(),
                        Partial {
                            input_id: input,
                            key: e["key"].as_object().cloned().unwrap_or_default(),
                            n: e["n"].as_u64().unwrap_or(1),
                            next: next.to_string(),
                            paging: e.get("paging").cloned(),
                        },
                    );
                }
                None => {
                    open.remove(&input);
                    r.done.insert(short_id(&input));
                }
            }
        }
        if batch > checkpoint {
            r.batches.insert(batch, entries);
        }
    })?;
    r.partial = open.into_values().next();
    if let Some(p) = &r.partial {
        r.done.insert(short_id(&p.input_id));
    }
    Ok(r)
}

/// The table's run: plan, sink, batches.
struct RowRun<'a> {
    ctx: &'a RunCtx<'a>,
    table: &'a TableSettings,
    /// `--table-format delta`: the table's Delta log and how this run writes it.
    delta: Option<crate::store::delta::Target>,
    raw_rel: String,
    raw_dir: PathBuf,
    input_columns: Vec<String>,
    plan: Option<TablePlan>,
    sink: Option<TableSink>,
    /// Rows waiting for the plan (no response with records yet), with their batch.
    unplanned: Vec<(u64, Page)>,
    unplanned_rows: usize,
    batch_no: u64,
    /// The last batch whose rows are in the sink, and the first since the last checkpoint.
    taken: u64,
    first_since_checkpoint: u64,
    last_part: u64,
    rows: u64,
    rows_before: u64,
    parts: u64,
    fetched_batches: u64,
    replayed_batches: u64,
    counts: Counts,
    /// The table's row checks, and the rows that failed them since the last checkpoint.
    gate: Option<crate::run::quarantine::Gate>,
    quarantine: crate::run::quarantine::Quarantine,
}

/// Harvest one row-driven table of the run's current (REST) source.
pub(crate) async fn harvest_rows(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    mut progress: TableProgress,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let out_name = &table.output;
    let (Some(rd), Some(rest)) = (table.rows.as_ref(), table.rest.as_ref()) else {
        bail!("table {out_name:?} is not a row-driven REST table");
    };
    let (templates, mut inputs) = open_inputs(ctx, table, rd, rest).await?;
    let (requests, window) = requests(ctx, out_name, rd, rest, templates);
    let sp = progress.streams.remove(&None).unwrap_or_default();
    let resumed = !sp.all_pages.is_empty() || sp.last_part > 0;
    let rec = if resumed {
        recorded(ctx, out_name, sp.checkpoint_page)?
    } else {
        Recorded::default()
    };
    let mut run = start_run(ctx, table, &inputs.columns, &sp, &rec, manifest)?;
    // A row-driven table is harvested whole: its keys are its own run's.
    run.gate = crate::run::quarantine::Gate::open(
        ctx,
        table,
        false,
        sp.rows_in_parts,
        &progress.quarantined,
    )?;
    crate::run::pipeline::remove_incomplete_checkpoint(
        ctx,
        table,
        &progress.incomplete_parts,
        manifest,
        run.delta.as_ref(),
    )?;
    if let Some(columns) = progress.plan.take() {
        run.set_plan(TablePlan {
            columns,
            is_view: false,
            count: None,
        })?;
    }

    replay_batches(&mut run, &sp.replay, &rec, rest, manifest)?;

    // 2. The rest of the inputs, `concurrency` in flight, recorded in input order.
    let mut jobs: VecDeque<Job> = VecDeque::new();
    let mut earlier: HashSet<u128> = rec.done;
    let mut seen: HashSet<u128> = HashSet::new();
    if let Some(partial) = rec.partial {
        jobs.push_back(resume_partial(&run, &requests, partial)?);
    }
    let mut signals = ctx.signals.clone();
    let bar = crate::progress::Progress::rows(out_name, ctx.quiet);
    let mut inputs_done = false;
    let method_is_get = requests.method == reqwest::Method::GET;
    let (mut draining, mut abandon) = (false, false);
    loop {
        // Marked seen, so that only a further signal wakes `changed()` below.
        let signal = *signals.borrow_and_update();
        if let Some(sig) = signal {
            // GET: stop at once (a repeated GET only reads again). Other methods: the requests
            // already sent are answered and recorded first, so a rerun does not send them
            // twice; a second signal abandons them.
            if method_is_get || jobs.is_empty() || abandon {
                drop(jobs);
                run.checkpoint(manifest)?;
                return Err(Interrupted { signal: sig }.into());
            }
            if !draining {
                tracing::warn!(
                    "{out_name}: {sig}: recording the {} request(s) already sent before stopping (send it again to stop at once)",
                    jobs.len()
                );
                draining = true;
            }
        }
        while !draining && !inputs_done && jobs.len() < window {
            let Some(values) = inputs
                .next()
                .await
                .with_context(|| format!("table {out_name:?}: reading {}", rd.input.describe()))?
            else {
                inputs_done = true;
                break;
            };
            run.counts.inputs += 1;
            let built = requests.build(&run.input_columns, &values).map_err(|why| {
                anyhow::anyhow!("table {out_name:?}, input row {}: {why}", inputs.read)
            })?;
            let sid = short_id(&built.id);
            if earlier.remove(&sid) {
                run.counts.already_recorded += 1;
                seen.insert(sid);
                continue;
            }
            if !seen.insert(sid) {
                run.counts.duplicate_inputs += 1;
                continue;
            }
            let key: Map<String, Value> = run.input_columns.iter().cloned().zip(values).collect();
            let (walkers, rx) = requests.start(ctx.client, &built, 0, None, None);
            jobs.push_back(Job {
                input_id: built.id,
                n: 0,
                key,
                _walkers: walkers,
                rx,
            });
        }
        let Some(head) = jobs.front_mut() else { break };
        let event = tokio::select! {
            biased;
            Ok(()) = signals.changed() => {
                abandon = draining;
                continue;
            }
            e = head.rx.recv() => e,
        };
        let mut batch = Vec::new();
        let mut failed = take_event(event, &mut jobs, &mut batch).err();
        // Everything else already answered, in input order, joins the batch.
        while failed.is_none()
            && let Some(head) = jobs.front_mut()
        {
            let step = match head.rx.try_recv() {
                Ok(ev) => take_event(Some(ev), &mut jobs, &mut batch),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    take_event(None, &mut jobs, &mut batch)
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
            };
            failed = step.err();
        }
        // What was answered before a failure is recorded first, so a rerun skips it.
        if let Some(e) = failed {
            drop(jobs);
            if !batch.is_empty() {
                run.record_batch(batch, manifest).await?;
            }
            run.checkpoint(manifest)?;
            return Err(e);
        }
        if !batch.is_empty() {
            run.record_batch(batch, manifest).await?;
            bar.set(run.rows_before + run.rows);
            if run.fetched_batches.is_multiple_of(500) {
                tracing::info!(
                    table = %out_name,
                    rows = run.rows_before + run.rows,
                    responses = run.counts.responses,
                    "{out_name}: {} inputs read, {} responses, {} rows",
                    run.counts.inputs,
                    run.counts.responses,
                    run.rows_before + run.rows
                );
            }
        }
    }
    drop(inputs);
    finish(run, manifest, totals, started)
}

/// The table's run state, from its recorded checkpoint: the snapshot directory of this
/// run created, the Delta target found, the counts the manifest already holds.
fn start_run<'a>(
    ctx: &'a RunCtx<'a>,
    table: &'a TableSettings,
    input_columns: &[String],
    sp: &StreamProgress,
    rec: &Recorded,
    manifest: &Manifest,
) -> anyhow::Result<RowRun<'a>> {
    let (raw_rel, raw_dir) = ctx.raw_dir(&table.output)?;
    let delta = crate::store::delta::target(
        &ctx.settings.out,
        &format!("parquet/{}", sanitize_component(&table.output)),
        &table.output,
        ctx.settings.table_format,
        ctx.run_id,
        false,
        crate::run::pipeline::shared_table(ctx, table, manifest),
    )?;
    Ok(RowRun {
        ctx,
        table,
        delta,
        raw_rel,
        raw_dir,
        input_columns: input_columns.to_vec(),
        plan: None,
        sink: None,
        unplanned: vec![],
        unplanned_rows: 0,
        batch_no: sp.checkpoint_page,
        taken: sp.checkpoint_page,
        first_since_checkpoint: sp.checkpoint_page + 1,
        last_part: sp.last_part,
        rows: 0,
        rows_before: sp.rows_in_parts,
        parts: 0,
        fetched_batches: 0,
        replayed_batches: 0,
        counts: Counts {
            responses: rec.responses,
            statuses: rec.statuses.clone(),
            ..Counts::default()
        },
        gate: None,
        quarantine: crate::run::quarantine::Quarantine::new(
            &ctx.settings.out,
            &ctx.settings.sink,
            ctx.run_id,
            ctx.run_id.to_string(),
            sp.last_quarantine_part,
        ),
    })
}

/// The table's input, opened, with every placeholder of its templates checked against the
/// input's columns before any request is sent.
async fn open_inputs(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    rd: &RowDriven,
    rest: &RestTable,
) -> anyhow::Result<(Templates, Inputs)> {
    let out_name = &table.output;
    let templates = rd
        .templates(&rest.path, &table.params)
        .map_err(|why| UsageError::new(format!("table {out_name:?}: {why}")))?;
    let inputs: Inputs =
        crate::source::rows::inputs::open(&rd.input, &ctx.settings.out, ctx.run_id)
            .await
            .with_context(|| format!("table {out_name:?}: opening {}", rd.input.describe()))?;
    for (place, slot) in templates.slots() {
        if !inputs.columns.iter().any(|c| c == slot) {
            return Err(UsageError::with_hint(
                format!(
                    "table {out_name:?}: {place} uses the placeholder {{{slot}}}, but {} has no column {slot:?}",
                    rd.input.describe()
                ),
                format!("its columns are: {}", inputs.columns.join(", ")),
            )
            .into());
        }
    }
    Ok((templates, inputs))
}

/// How the table's requests are built and how many inputs may be sent and not yet recorded:
/// in flight, plus (GET only) answered and waiting.
fn requests(
    ctx: &RunCtx<'_>,
    out_name: &str,
    rd: &RowDriven,
    rest: &RestTable,
    templates: Templates,
) -> (Requests, usize) {
    let requests = Requests::new(ctx.source, out_name, rd, rest, templates);
    let concurrency = rd.concurrency.max(1) as usize;
    // Inputs sent and not yet recorded: in flight, plus (GET only) answered and waiting.
    let window = if requests.method == reqwest::Method::GET {
        concurrency + GET_READ_AHEAD
    } else {
        concurrency
    };
    (requests, window)
}

/// Batches recorded after the last checkpoint: their rows again, from the snapshots.
fn replay_batches(
    run: &mut RowRun<'_>,
    replay: &[RecordedPage],
    rec: &Recorded,
    rest: &RestTable,
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    let (ctx, out_name) = (run.ctx, &run.table.output);
    for rp in replay {
        let body = rp.read_snapshot(&ctx.settings.out)?;
        for e in rec.batches.get(&rp.page).into_iter().flatten() {
            let (off, len) = (
                e["offset"].as_u64().unwrap_or(0) as usize,
                e["bytes"].as_u64().unwrap_or(0) as usize,
            );
            let Some(slice) = body.get(off..off + len) else {
                bail!(
                    "the snapshot {} is shorter than its manifest line says; rerun with --restart",
                    rp.path
                );
            };
            let status = e["status"].as_u64().unwrap_or(0) as u16;
            let page = if (200..300).contains(&status) {
                crate::source::rest::snapshot_page(rest, &BTreeMap::new(), slice).map_err(
                    |why| {
                        anyhow::anyhow!("the recorded response in {} is unusable: {why}", rp.path)
                    },
                )?
            } else {
                Page::default()
            };
            let key = e["key"].as_object().cloned().unwrap_or_default();
            let id = e["id"].as_str().unwrap_or_default();
            let p = run.response_page(id, status, &key, page)?;
            run.take(rp.page, p)?;
        }
        run.batch_no = rp.page;
        run.replayed_batches += 1;
        run.batch_taken(rp.page, manifest)?;
    }
    if run.replayed_batches > 0 {
        tracing::info!(
            "{out_name}: replayed {} recorded batch(es) from snapshots; {} input(s) already answered are skipped",
            run.replayed_batches,
            rec.done.len()
        );
    }
    Ok(())
}

/// An input cut off between two of its pages: its job, continued from its recorded next URL.
fn resume_partial(run: &RowRun<'_>, requests: &Requests, partial: Partial) -> anyhow::Result<Job> {
    let (ctx, out_name) = (run.ctx, &run.table.output);
    let Partial {
        input_id: id,
        key,
        n,
        next,
        paging,
    } = partial;
    // An input cut off between two of its pages: continue it from its next URL.
    let values: Vec<Value> = run
        .input_columns
        .iter()
        .map(|c| key.get(c).cloned().unwrap_or(Value::Null))
        .collect();
    let built = requests
        .build(&run.input_columns, &values)
        .map_err(|why| anyhow::anyhow!("table {out_name:?}: resuming input {key:?}: {why}"))?;
    if built.id != id {
        bail!(
            "table {out_name:?}: the input {} no longer builds the request it was recorded with; rerun with --restart",
            Value::Object(key)
        );
    }
    let paging = paging.as_ref().and_then(Paging::from_json);
    let (walkers, rx) = requests.start(ctx.client, &built, n, Some(next), paging);
    Ok(Job {
        input_id: id,
        n,
        key,
        _walkers: walkers,
        rx,
    })
}

/// Take what the head job reported: a page joins the batch; the end of its pages retires it;
/// a failure stops the table.
fn take_event(
    event: Option<Event>,
    jobs: &mut VecDeque<Job>,
    batch: &mut Vec<Response>,
) -> anyhow::Result<()> {
    let Some(job) = jobs.front_mut() else {
        return Ok(());
    };
    match event {
        None => {
            jobs.pop_front();
        }
        Some(Event::Page(f)) => {
            job.n += 1;
            batch.push(Response {
                id: f
                    .request_id
                    .clone()
                    .context("a row-driven page came without its request id")?,
                input_id: job.input_id.clone(),
                key: job.key.clone(),
                n: job.n,
                f: *f,
            });
        }
        Some(Event::Failed { page_no, error, .. }) => {
            let key = Value::Object(job.key.clone());
            return Err(error.context(format!(
                "the request for input {key} (its page {page_no}) failed; every response recorded so far is kept, and a rerun resumes"
            )));
        }
    }
    Ok(())
}

/// Close the table: the plan if no response had records, final parts, `table_end`, then
/// supersede earlier runs' parts.
fn finish(
    mut run: RowRun<'_>,
    manifest: &mut Manifest,
    totals: &mut Totals,
    started: Instant,
) -> anyhow::Result<()> {
    let (ctx, table) = (run.ctx, run.table);
    if run.plan.is_none() {
        run.plan_pending(None)?;
    }
    let Some(mut sink) = run.sink.take() else {
        unreachable!("planned above")
    };
    let wrote_any = run.last_part > 0 || run.parts > 0 || !sink.is_empty();
    if wrote_any {
        sink.skip_empty_part();
    }
    let closed = sink.finish()?;
    run.record_parts(manifest, &closed)?;
    if let Some(too_many) = run
        .gate
        .as_ref()
        .and_then(|g| g.over_limit(&table.output, true))
    {
        return Err(too_many.into());
    }
    let rows = run.rows_before + run.rows;
    let pages = run.batch_no;
    let c = &run.counts;
    let statuses: Map<String, Value> = c
        .statuses
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let recorded_errors: u64 = c
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let mut end = obj(json!({
            "source": crate::http::display_url(&ctx.source.base),
            "table": table.name,
            "output": table.output,
            "pages": pages,
            "rows": rows,
            "server_count": null,
            "fetched_pages": run.fetched_batches,
            "replayed_pages": run.replayed_batches,
            "earlier_pages": pages - run.fetched_batches - run.replayed_batches,
            "row_driven": {
                "inputs_read": c.inputs,
                "responses": c.responses,
                "statuses": statuses,
                "duplicate_inputs": c.duplicate_inputs,
                "already_recorded": c.already_recorded,
            },
    }));
    if let Some(t) = &run.delta {
        end.insert("delta".into(), json!(t.mode.as_str()));
    }
    if let Some(g) = &run.gate {
        g.end_fields(&mut end);
        totals.add_checks(&table.output, g.counts.quarantined, &g.counts.by_check);
    }
    manifest.append("table_end", ctx.run_id, end)?;
    totals.add_table(pages, rows, run.replayed_batches);
    totals.fetched_pages += run.fetched_batches;
    totals.parts += run.parts;
    if recorded_errors > 0 {
        let w = format!(
            "{}: {recorded_errors} request(s) answered with a recorded error status ({}); their rows have only {REQUEST_ID}, {STATUS} and the input",
            table.output,
            c.statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(s, n)| format!("{n}× {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::warn!("{w}");
        totals.warnings.push(w);
    }
    if c.duplicate_inputs > 0 {
        let w = format!(
            "{}: {} input row(s) repeated an earlier row's request and were not sent again",
            table.output, c.duplicate_inputs
        );
        tracing::warn!("{w}");
        totals.warnings.push(w);
    }
    let table_rel = format!("parquet/{}", sanitize_component(&table.output));
    match &run.delta {
        Some(t) => crate::run::pipeline::finish_delta(manifest, ctx, table, t, true)?,
        None => crate::run::pipeline::supersede_parts(
            &ctx.settings.out,
            &table_rel,
            ctx.run_id,
            &table.output,
            manifest,
        )?,
    }
    crate::run::pipeline::supersede_parts(
        &ctx.settings.out,
        &format!("quarantine/{}", sanitize_component(&table.output)),
        ctx.run_id,
        &table.output,
        manifest,
    )?;
    tracing::info!(
        source = %crate::http::display_url(&ctx.source.base),
        table = %table.output,
        rows,
        pages,
        responses = c.responses,
        inputs = c.inputs,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "{}: {} responses to {} input rows, {rows} rows in {pages} batches ({} fetched now, {} replayed), {:.1}s",
        table.output,
        c.responses,
        c.inputs,
        run.fetched_batches,
        run.replayed_batches,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
