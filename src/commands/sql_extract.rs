//! `harvest sql-extract`: one parameterized SQL query against a SQLite file, streamed into
//! Parquet chunk by chunk.
//!
//! Guarantees: the database is opened read-only and parameters are bound, never spliced (see
//! [`crate::source::sqlite`]); memory is bounded by a few chunks whatever the result size; the
//! read side (one SQLite cursor) and the encode side (Arrow → zstd Parquet, hashing, writing)
//! run on two threads joined by a bounded channel; in DIR mode the output follows the same
//! layout, atomic parts and manifest records as `harvest` (`parquet` records carry the query
//! text and a digest of the parameters), and a complete extract replaces the dataset's older
//! parts. `--output FILE.parquet` writes one file atomically instead.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Instant;

use anyhow::{Context as _, bail};
use arrow::record_batch::RecordBatch;
use serde_json::json;

use crate::cli::SqlExtractArgs;
use crate::config::{load_config, parse_type_flags, parse_types, split_kv};
use crate::error::UsageError;
use crate::printer::Printer;
use crate::schema::{ColType, ColumnPlan};
use crate::source::sqlite::{self, KeyedBatch, Param, StreamOptions};
use crate::store::fsutil::{AtomicFile, create_dir_all_durable, parent_dir};
use crate::store::lock::DirLock;
use crate::store::manifest::{Manifest, sha256_hex};
use crate::store::parts::{ClosedPart, SinkSettings, TableSink, writer_properties};

use crate::run::context::{new_run_id, obj};
use crate::run::job::remove_leftover_temps;
use crate::store::manifest::now_rfc3339;

pub const DEFAULT_CHUNK_ROWS: usize = 65536;

/// One resolved extract.
#[derive(Debug, Clone)]
pub struct Extract {
    pub name: String,
    pub db: PathBuf,
    pub query: String,
    pub named: BTreeMap<String, Param>,
    pub positional: Vec<Param>,
    pub partition_by: Option<String>,
    pub types: BTreeMap<String, ColType>,
    pub output: Option<PathBuf>,
    pub chunk_rows: usize,
    /// Row checks: failed rows go to DIR/quarantine/<name>/.
    pub checks: Option<crate::schema::checks::Checks>,
}

impl Extract {
    fn params_digest(&self) -> String {
        sha256_hex(
            json!({"named": self.named, "positional": self.positional})
                .to_string()
                .as_bytes(),
        )
    }
}

struct Settings {
    quiet: bool,
    out: Option<PathBuf>,
    sink: SinkSettings,
    extracts: Vec<Extract>,
    wait_lock: bool,
}

fn toml_param(key: &str, v: &toml::Value) -> Result<Param, UsageError> {
    Param::from_toml(key, v)
}

fn read_query(query: Option<&str>, file: Option<&Path>) -> Result<String, UsageError> {
    match (query, file) {
        (Some(q), None) => Ok(q.to_string()),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| {
            UsageError::new(format!("cannot read the query file {}: {e}", f.display()))
        }),
        (Some(_), Some(_)) => Err(UsageError::new("give the query or a query file, not both")),
        (None, None) => Err(UsageError::with_hint(
            "no SQL query",
            "pass --query SQL or --query-file FILE",
        )),
    }
}

fn resolve(args: &SqlExtractArgs) -> Result<Settings, UsageError> {
    let file = match &args.config {
        Some(p) => Some(load_config(p)?),
        None => None,
    };
    let mut sink = SinkSettings::default();
    if let Some(f) = &file {
        if let Some(v) = f.parquet.part_rows {
            sink.part_rows = v.max(1);
        }
        if let Some(v) = f.parquet.row_group_rows {
            sink.row_group_rows = v.max(1);
        }
        if let Some(v) = f.parquet.zstd_level {
            sink.zstd_level = v;
        }
    }
    if let Some(v) = args.part_rows {
        sink.part_rows = v.max(1);
    }
    if let Some(v) = args.row_group_rows {
        sink.row_group_rows = v.max(1);
    }
    if let Some(v) = args.zstd_level {
        sink.zstd_level = v;
    }
    if !(1..=22).contains(&sink.zstd_level) {
        return Err(UsageError::new(format!(
            "zstd level must be 1 to 22, not {}",
            sink.zstd_level
        )));
    }
    let chunk_flag = args.chunk_rows.map(|c| c.max(1));
    let mut extracts = Vec::new();
    if args.db.is_some() || args.query.is_some() || args.query_file.is_some() {
        let db = args
            .db
            .clone()
            .ok_or_else(|| UsageError::with_hint("no database", "pass --db PATH"))?;
        let query = read_query(args.query.as_deref(), args.query_file.as_deref())?;
        let mut named = BTreeMap::new();
        for p in &args.params {
            let (k, v) = split_kv(p, "--param")?;
            named.insert(
                k.trim_start_matches([':', '@', '$']).to_string(),
                Param::parse(&v)?,
            );
        }
        let positional = args
            .args
            .iter()
            .map(|a| Param::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let types = parse_type_flags(&args.types)?;
        let name = match (&args.name, &args.output) {
            (Some(n), _) => n.clone(),
            (None, Some(o)) => o
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            (None, None) => {
                return Err(UsageError::with_hint(
                    "no dataset name",
                    "pass --name NAME (the output goes to DIR/parquet/NAME/) or --output FILE.parquet",
                ));
            }
        };
        extracts.push(Extract {
            name,
            db,
            query,
            named,
            positional,
            partition_by: args.partition_by.clone(),
            types,
            output: args.output.clone(),
            chunk_rows: chunk_flag.unwrap_or(DEFAULT_CHUNK_ROWS),
            checks: args
                .checks
                .as_deref()
                .map(crate::config::checks_file)
                .transpose()?,
        });
    } else if let Some(f) = &file {
        for e in &f.extracts {
            let base = args
                .config
                .as_ref()
                .and_then(|p| p.parent())
                .unwrap_or(Path::new("."));
            let query_file = e.query_file.as_ref().map(|q| base.join(q));
            extracts.push(Extract {
                name: e.name.clone(),
                db: e.db.clone(),
                query: read_query(e.query.as_deref(), query_file.as_deref())?,
                named: e
                    .params
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), toml_param(k, v)?)))
                    .collect::<Result<_, UsageError>>()?,
                positional: e
                    .args
                    .iter()
                    .enumerate()
                    .map(|(i, v)| toml_param(&format!("args[{i}]"), v))
                    .collect::<Result<_, _>>()?,
                partition_by: e.partition_by.clone(),
                types: parse_types(e.types.clone())?,
                output: e.output.clone(),
                chunk_rows: chunk_flag
                    .or(e.chunk_rows)
                    .unwrap_or(DEFAULT_CHUNK_ROWS)
                    .max(1),
                checks: match (&args.checks, &e.checks) {
                    (Some(f), _) => Some(crate::config::checks_file(f)?),
                    (None, Some(c)) => Some(crate::config::extract_checks(&e.name, c)?),
                    (None, None) => None,
                },
            });
        }
    }
    if extracts.is_empty() {
        return Err(UsageError::with_hint(
            "nothing to extract",
            "pass --db, --query and --name (or --output), or --config with [[extract]] sections",
        ));
    }
    let out = args
        .out
        .clone()
        .or(file.as_ref().and_then(|f| f.out.clone()));
    if let Some(o) = out.as_ref().filter(|o| crate::store::remote::is_remote(o)) {
        return Err(UsageError::with_hint(
            format!(
                "sql-extract writes to a local directory, not to {}",
                o.display()
            ),
            "extract into a local --out DIR (object storage is for harvest and incremental)",
        ));
    }
    if let Some(e) = extracts
        .iter()
        .find(|e| e.checks.is_some() && e.output.is_some())
    {
        return Err(UsageError::with_hint(
            format!(
                "extract {:?}: row checks need an output directory for the quarantine, and `output` writes one file",
                e.name
            ),
            "extract into --out DIR (rows that fail go to DIR/quarantine/NAME/)",
        ));
    }
    if out.is_none() && extracts.iter().any(|e| e.output.is_none()) {
        return Err(UsageError::with_hint(
            "no output directory",
            "pass --out DIR (or --output FILE.parquet for a single file)",
        ));
    }
    Ok(Settings {
        quiet: false,
        out,
        sink,
        extracts,
        wait_lock: args.wait_lock,
    })
}

pub fn run(args: &SqlExtractArgs, printer: Printer) -> anyhow::Result<()> {
    let mut settings = resolve(args)?;
    settings.quiet = printer.quiet;
    let started = Instant::now();
    let mut total_rows = 0u64;
    // Single-file extracts need no directory, lock or manifest.
    let (dir_mode, file_mode): (Vec<&Extract>, Vec<&Extract>) =
        settings.extracts.iter().partition(|e| e.output.is_none());
    for e in &file_mode {
        let (rows, path) = extract_to_file(e, &settings.sink, settings.quiet)?;
        total_rows += rows;
        tracing::info!("{}: {rows} rows -> {}", e.name, path.display());
    }
    if let Some(out) = settings.out.as_ref().filter(|_| !dir_mode.is_empty()) {
        total_rows += extract_to_dir(out, &dir_mode, &settings)?;
    }
    printer.summary_with(
        &format!(
            "extracted {} quer{}: {total_rows} rows in {:.1}s",
            settings.extracts.len(),
            if settings.extracts.len() == 1 {
                "y"
            } else {
                "ies"
            },
            started.elapsed().as_secs_f64()
        ),
        json!({
            "outcome": "ok",
            "queries": settings.extracts.len(),
            "rows": total_rows,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }),
    );
    Ok(())
}

/// Prepare and bind the query (bad SQL and parameter problems are usage errors).
fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    e: &Extract,
) -> Result<rusqlite::Statement<'c>, UsageError> {
    let not_a_query = || {
        UsageError::new(format!(
            "extract {:?}: only a single read-only query is allowed (SELECT, WITH or VALUES)",
            e.name
        ))
    };
    let mut stmt = conn.prepare(&e.query).map_err(|err| match err {
        rusqlite::Error::MultipleStatement => not_a_query(),
        // The file opened (SQLite reads lazily) but its first read found no database.
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) =>
        {
            UsageError::with_hint(
                format!(
                    "extract {:?}: the database file is not a readable SQLite database: {err}",
                    e.name
                ),
                "check the --db path (or the config's `db`): it must be an SQLite 3 file",
            )
        }
        err => UsageError::with_hint(
            format!("extract {:?}: the SQL does not compile: {err}", e.name),
            "check the query against the database's tables and columns",
        ),
    })?;
    // SQLite calls ATTACH, DETACH, BEGIN and many PRAGMAs "read-only" (they change no
    // database file), so the statement must also be a query.
    if !stmt.readonly() || !sqlite::is_query(&e.query) {
        return Err(not_a_query());
    }
    sqlite::bind(&mut stmt, &e.named, &e.positional)?;
    Ok(stmt)
}

/// Run one extract with an encoder thread fed by `make_writer` once the plans are known.
fn run_pipeline<W, R>(
    e: &Extract,
    quiet: bool,
    gate: Option<&mut sqlite::RowGate<'_>>,
    make_writer: impl FnOnce(&[ColumnPlan]) -> anyhow::Result<W>,
    writer_loop: impl FnOnce(W, std::sync::mpsc::Receiver<KeyedBatch>) -> anyhow::Result<R>
    + Send
    + 'static,
) -> anyhow::Result<(u64, Vec<ColumnPlan>, R)>
where
    W: Send + 'static,
    R: Send + 'static,
{
    let conn = sqlite::open_readonly(&e.db)?;
    let mut stmt = prepare(&conn, e)?;
    let what = format!("extract {:?}", e.name);
    let tx: RefCell<Option<SyncSender<KeyedBatch>>> = RefCell::new(None);
    let handle = RefCell::new(None);
    let plans_seen = RefCell::new(Vec::new());
    let mut make_writer = Some(make_writer);
    let mut writer_loop = Some(writer_loop);
    let mut plan_hook = |plans: &[ColumnPlan]| -> anyhow::Result<()> {
        let w = (make_writer.take().expect("plans arrive once"))(plans)?;
        let (s, r) = sync_channel(4);
        let lp = writer_loop.take().expect("plans arrive once");
        *handle.borrow_mut() = Some(
            std::thread::Builder::new()
                .name("parquet-encoder".into())
                .spawn(move || lp(w, r))
                .context("cannot start the encoder thread")?,
        );
        *tx.borrow_mut() = Some(s);
        *plans_seen.borrow_mut() = plans.to_vec();
        Ok(())
    };
    let mut emit = |key: Option<Option<String>>, batch: RecordBatch| -> anyhow::Result<()> {
        let guard = tx.borrow();
        let Some(s) = guard.as_ref() else {
            bail!("internal: batch before plan")
        };
        if s.send((key, batch)).is_err() {
            bail!("the Parquet encoder stopped");
        }
        Ok(())
    };
    let bar = crate::progress::Progress::rows(&e.name, quiet);
    let mut last_log = 0u64;
    let mut progress = |n: u64| {
        bar.set(n);
        if n >= last_log + 1_000_000 {
            last_log = n;
            tracing::info!("{}: {n} rows", e.name);
        }
    };
    let opts = StreamOptions {
        what: &what,
        overrides: &e.types,
        partition_by: e.partition_by.as_deref(),
        chunk_rows: e.chunk_rows,
    };
    let streamed = sqlite::stream(
        &mut stmt,
        &opts,
        &mut plan_hook,
        &mut emit,
        &mut progress,
        gate,
    );
    drop(tx.borrow_mut().take()); // close the channel: the encoder finishes
    let joined = handle.borrow_mut().take().map(|h| h.join());
    let rows = streamed?;
    let result = match joined {
        Some(Ok(r)) => r?,
        Some(Err(_)) => bail!("the Parquet encoder thread panicked"),
        None => bail!("internal: the query produced no plan"),
    };
    Ok((rows, plans_seen.into_inner(), result))
}

fn extract_to_file(
    e: &Extract,
    sink: &SinkSettings,
    quiet: bool,
) -> anyhow::Result<(u64, PathBuf)> {
    let path = e.output.clone().expect("file mode");
    let dir = parent_dir(&path);
    create_dir_all_durable(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let props = writer_properties(sink)?;
    let p2 = path.clone();
    let (rows, _, file) = run_pipeline(
        e,
        quiet,
        None,
        move |plans| {
            let file = AtomicFile::create(&p2)
                .with_context(|| format!("cannot create {}", p2.display()))?;
            Ok(parquet::arrow::ArrowWriter::try_new(
                file,
                crate::schema::arrow_schema(plans),
                Some(props),
            )?)
        },
        |mut w, rx| {
            for (_, batch) in rx {
                w.write(&batch).context("Parquet encoding failed")?;
            }
            // Published only once the whole result was read (below): a query that fails
            // part-way drops the temp file.
            w.into_inner().context("cannot finish the Parquet file")
        },
    )?;
    file.commit()
        .with_context(|| format!("cannot publish {}", path.display()))?;
    Ok((rows, path))
}

fn extract_to_dir(out: &Path, extracts: &[&Extract], settings: &Settings) -> anyhow::Result<u64> {
    crate::store::writers::check_layout(out, None)?;
    create_dir_all_durable(out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))?;
    let _lock = DirLock::acquire(out, settings.wait_lock)?;
    let (mut manifest, _) = Manifest::open(out)?;
    remove_leftover_temps(out, out, None)?;
    let history = crate::store::manifest::read_records(out)?;
    let swept = crate::run::resume::sweep_parts(out, &history, None)?;
    if !swept.is_empty() {
        tracing::warn!(
            "removed {} Parquet part(s) the manifest does not record: {}",
            swept.len(),
            swept.join(", ")
        );
    }
    let run_id = new_run_id();
    crate::printer::set_run_id(&run_id);
    let described = json!({
        "out": out.display().to_string(),
        "parquet": {"part_rows": settings.sink.part_rows, "row_group_rows": settings.sink.row_group_rows, "zstd_level": settings.sink.zstd_level},
        "extracts": extracts.iter().map(|e| json!({
            "name": e.name, "db": e.db.display().to_string(), "query": e.query,
            "params_digest": e.params_digest(), "partition_by": e.partition_by, "chunk_rows": e.chunk_rows,
            "types": e.types,
        })).collect::<Vec<_>>(),
    });
    manifest.append(
        "run_start",
        &run_id,
        obj(json!({
            "command": "sql-extract",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "config_digest": sha256_hex(described.to_string().as_bytes()),
            "settings": described,
            "started_at": now_rfc3339(),
        })),
    )?;
    let started = Instant::now();
    let mut total = 0u64;
    let mut parts_total = 0u64;
    let mut result = Ok(());
    for e in extracts {
        match extract_one(out, e, &run_id, settings, &mut manifest, &history) {
            Ok((rows, parts)) => {
                total += rows;
                parts_total += parts;
            }
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    manifest.append(
        "run_end",
        &run_id,
        obj(json!({
            "outcome": match &result { Ok(()) => "ok".to_string(), Err(e) => format!("failed: {e:#}") },
            "ended_at": now_rfc3339(),
            "totals": {"queries": extracts.len(), "rows": total, "parts": parts_total, "wall_ms": started.elapsed().as_millis() as u64},
        })),
    )?;
    result.map(|()| total)
}

/// Parts an extract published while it streamed, not yet recorded in the manifest. Dropped
/// unrecorded (the query failed part-way, or encoding did), they are removed at once, so no
/// reader sees part of a result.
struct Unrecorded {
    out: PathBuf,
    parts: Vec<ClosedPart>,
}

impl Unrecorded {
    /// The parts, to be recorded now: from here on they are the caller's.
    fn recorded(mut self) -> Vec<ClosedPart> {
        std::mem::take(&mut self.parts)
    }
}

impl Drop for Unrecorded {
    fn drop(&mut self) {
        for p in &self.parts {
            if let Err(e) = std::fs::remove_file(self.out.join(&p.rel_path)) {
                tracing::warn!("cannot remove the unrecorded part {}: {e}", p.rel_path);
            }
        }
    }
}

/// An extract's row checks: the gate, its quarantine, and the checkpoint id its keys wait
/// under until the extract's lines are written.
struct Checked {
    gate: crate::run::quarantine::Gate,
    quarantine: crate::run::quarantine::Quarantine,
    checkpoint: String,
}

/// A SQLite value as the JSON value the checks (and quarantine) read.
fn cell_value(c: &crate::schema::CellRef<'_>) -> serde_json::Value {
    use base64::Engine as _;
    use serde_json::Value;
    match *c {
        crate::schema::CellRef::Null => Value::Null,
        crate::schema::CellRef::Int(i) => Value::from(i),
        crate::schema::CellRef::Real(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None => json!({ crate::schema::json::NON_FINITE_KEY: crate::schema::float_text(f) }),
        },
        crate::schema::CellRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        crate::schema::CellRef::Blob(b) => json!({
            "$base64": true,
            "encoded": base64::engine::general_purpose::STANDARD.encode(b),
        }),
    }
}

fn extract_one(
    out: &Path,
    e: &Extract,
    run_id: &str,
    settings: &Settings,
    manifest: &mut Manifest,
    history: &[serde_json::Value],
) -> anyhow::Result<(u64, u64)> {
    let started = Instant::now();
    // Every extract replaces its dataset, so its `unique` keys are its own.
    let mut checked = match &e.checks {
        None => None,
        Some(c) => Some(Checked {
            gate: crate::run::quarantine::Gate::open_at(
                out,
                history,
                &e.name,
                run_id,
                c.clone(),
                &Default::default(),
                Default::default(),
            )?,
            quarantine: crate::run::quarantine::Quarantine::new(
                out,
                &settings.sink,
                run_id,
                run_id.to_string(),
                0,
            ),
            checkpoint: crate::store::unique::checkpoint_id(run_id, None, 1),
        }),
    };
    let mut row_gate = |plans: &[ColumnPlan], n: u64, cells: &[crate::schema::CellRef<'_>]| {
        let Some(k) = checked.as_mut() else {
            return Ok(true);
        };
        let row: Vec<serde_json::Value> = cells.iter().map(cell_value).collect();
        let kept = k.gate.judge(
            &e.name,
            &mut k.quarantine,
            plans,
            std::slice::from_ref(&row),
            0..1,
            &crate::run::quarantine::PageOrigin {
                page: 0,
                snapshot: "",
                checkpoint: &k.checkpoint,
                row_base: n - 1,
            },
        )?;
        if let Some(too_many) = k.gate.over_limit(&e.name, false) {
            return Err(too_many.into());
        }
        Ok(!kept.is_empty())
    };
    let (out2, out3, name, run2, sink_settings, part_by) = (
        out.to_path_buf(),
        out.to_path_buf(),
        e.name.clone(),
        run_id.to_string(),
        settings.sink.clone(),
        e.partition_by.clone(),
    );
    let gate: Option<&mut sqlite::RowGate<'_>> = if e.checks.is_some() {
        Some(&mut row_gate)
    } else {
        None
    };
    let (rows, plans, (closed, table_rel)) = run_pipeline(
        e,
        settings.quiet,
        gate,
        move |plans| {
            TableSink::new(
                &out2,
                &name,
                &run2,
                plans,
                part_by.as_deref(),
                sink_settings,
            )
        },
        move |mut sink: TableSink, rx| {
            let mut closed = Unrecorded {
                out: out3,
                parts: Vec::new(),
            };
            for (key, batch) in rx {
                sink.write_batch(key, &batch)?;
                if sink.checkpoint_due() {
                    closed.parts.extend(sink.checkpoint()?);
                }
            }
            let rel = sink.table_rel().to_string();
            closed.parts.extend(sink.finish()?);
            Ok((closed, rel))
        },
    )
    .with_context(|| format!("extract {:?} from {}", e.name, e.db.display()))?;
    // Row checks: the quarantine's parts, the share limit, the keys made durable.
    let (quarantined, rows) = match checked.as_mut() {
        None => (vec![], rows),
        Some(k) => {
            let q = k.quarantine.close()?;
            if let Some(too_many) = k.gate.over_limit(&e.name, true) {
                for p in &q {
                    let _ = std::fs::remove_file(out.join(&p.rel_path));
                }
                return Err(too_many.into());
            }
            k.gate.before_lines()?;
            (q, rows - k.gate.counts.quarantined)
        }
    };
    let closed = closed.recorded();
    let of = closed.len() + quarantined.len();
    for part in &closed {
        let mut rec = obj(json!({
            "path": part.rel_path,
            "sha256": part.sha256,
            "bytes": part.bytes,
            "rows": part.rows,
            "table": e.name,
            "output": e.name,
            "db": e.db.display().to_string(),
            "query": e.query,
            "params_digest": e.params_digest(),
            "schema": plans,
            "of": of,
        }));
        if let (Some(col), Some(v)) = (&e.partition_by, &part.partition) {
            rec.insert("partition".into(), json!({ col: v }));
        }
        manifest.append("parquet", run_id, rec)?;
    }
    let mut end =
        obj(json!({"output": e.name, "rows": rows, "parts": closed.len(), "query": e.query}));
    if let Some(k) = checked.as_mut() {
        crate::run::quarantine::record_quarantine_lines(
            manifest,
            run_id,
            (&e.db.display().to_string(), &e.name, &e.name),
            &json!({ "raw_run": run_id, "first": 1, "last": 1 }),
            &quarantined,
            &k.quarantine.since,
            &plans,
            of,
        )?;
        k.gate.end_fields(&mut end);
    }
    manifest.append("table_end", run_id, end)?;
    if let Some(k) = checked.as_mut() {
        k.gate.after_lines(&k.checkpoint)?;
        if k.gate.counts.quarantined > 0 {
            tracing::warn!(
                "{}: {} row(s) failed their checks ({}) and are in quarantine/{}/",
                e.name,
                k.gate.counts.quarantined,
                k.gate.counts.describe(),
                crate::store::fsutil::sanitize_component(&e.name)
            );
        }
    }
    crate::run::pipeline::supersede_parts(out, &table_rel, run_id, &e.name, manifest)?;
    crate::run::pipeline::supersede_parts(
        out,
        &format!(
            "quarantine/{}",
            crate::store::fsutil::sanitize_component(&e.name)
        ),
        run_id,
        &e.name,
        manifest,
    )?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        table = %e.name,
        rows,
        parts = closed.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "{}: {rows} rows, {} part(s), {:.1}s ({:.0} rows/s)",
        e.name,
        closed.len(),
        secs,
        rows as f64 / secs.max(1e-9)
    );
    Ok((rows, closed.len() as u64))
}
