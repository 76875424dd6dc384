//! Delta Lake tables (`--table-format delta`): the dataset directory `DIR/parquet/<table>/` is a
//! Delta table; delta-rs writes its transaction log (`_delta_log/`), harvest writes the Parquet
//! parts itself exactly as for plain datasets.
//!
//! Guarantees:
//! - The manifest stays the source of truth. A part is committed to the Delta log only after its
//!   `parquet` line is durable, and every commit is the difference between the files the manifest
//!   says the table holds ([`Desired`]) and the files the log says it holds. A commit lost to a
//!   crash is therefore made by the next run ([`reconcile`]); one repeated adds nothing.
//! - A table's writes are either appends (its first harvest, every incremental run: each
//!   checkpoint's parts are committed as `add` actions) or one overwrite (a full re-harvest of a
//!   table that already holds files: at the table's end, `remove` of the old files and `add` of
//!   the new in a single commit). Readers see one consistent version at any moment.
//! - Files a commit removes stay on disk for time travel; the manifest records them as
//!   superseded with `kept: true`, and no sweep deletes them.
//! - delta-rs is asynchronous and harvest's writer is not: each call runs on its own thread with
//!   a small runtime, so a commit never blocks (or nests inside) the fetching runtime.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context as _, bail};
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{
    Action, Add, DataType, MetadataExt as _, PrimitiveType, Remove, StructField, StructType,
};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder};
use serde_json::{Value, json};

use crate::error::UsageError;
use crate::schema::{ColType, ColumnPlan};

/// How a dataset is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Parquet parts in Hive-style directories, vouched for by the manifest.
    #[default]
    Parquet,
    /// The same parts, committed to a Delta Lake transaction log.
    Delta,
}

impl TableFormat {
    pub fn parse(s: &str) -> Result<Self, UsageError> {
        match s {
            "parquet" => Ok(Self::Parquet),
            "delta" => Ok(Self::Delta),
            other => Err(UsageError::with_hint(
                format!("unknown table format {other:?}"),
                "use `parquet` (plain Hive-style Parquet datasets) or `delta` (Delta Lake tables)",
            )),
        }
    }
}

/// How one run writes one Delta table (recorded as `delta` on its `parquet` lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each checkpoint's parts are committed as they are recorded.
    Append,
    /// The run's parts replace the table's files in one commit at the table's end.
    Overwrite,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Append => "append",
            Mode::Overwrite => "overwrite",
        }
    }
}

/// The Delta side of one table in one run.
#[derive(Debug, Clone)]
pub struct Target {
    /// `parquet/<sanitized output>`, relative to DIR.
    pub table_rel: String,
    pub mode: Mode,
}

/// True when `dir` (a dataset directory) holds a Delta transaction log with a commit in it.
/// A `_delta_log` with no commit yet is another writer creating the table, not a table.
pub fn is_delta(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("_delta_log")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
    })
}

/// Whether the table at `DIR/<table_rel>` has a Delta log: on disk, or on the object store
/// whose stage `out` is ([`crate::store::remote`]).
pub fn has_log(out: &Path, table_rel: &str) -> anyhow::Result<bool> {
    match crate::store::remote::mounted(out) {
        Some(r) => r.retrying(&format!("look for the Delta log of {table_rel}"), || {
            r.has_delta_log(table_rel)
        }),
        None => Ok(is_delta(&out.join(table_rel))),
    }
}

/// A table in a DIR that several writers share (`--writer`).
pub struct Shared {
    /// The Delta parts this writer's manifest ever recorded for the dataset.
    pub known: Option<HashSet<String>>,
    /// The table is split across shards (`--parallel` with `--shard`): other writers hold the
    /// other shares. Otherwise another writer's files mean the table would be written twice.
    pub split: bool,
}

/// Decide how this run writes the dataset, refusing layouts that cannot be mixed: a plain
/// dataset under `--table-format delta`, a Delta table under plain Parquet, or (in a shared
/// DIR) a whole table that another writer also writes. In a shared DIR a run replaces only
/// this writer's own earlier files.
pub fn target(
    out: &Path,
    table_rel: &str,
    output: &str,
    format: TableFormat,
    run_id: &str,
    appends: bool,
    shared: Option<Shared>,
) -> anyhow::Result<Option<Target>> {
    let dir = out.join(table_rel);
    let has_log = has_log(out, table_rel)?;
    // Only a Delta run needs to know whether a plain dataset is there already. A shared DIR
    // holds Delta tables only (`--writer` needs `--table-format delta`), and another writer's
    // parts are on disk before its first commit creates the log: they are no plain dataset.
    let has_parts = || {
        shared.is_none()
            && crate::store::fsutil::files_under(&dir)
                .is_ok_and(|files| files.iter().any(|p| crate::store::fsutil::is_part_file(p)))
    };
    match format {
        TableFormat::Parquet if has_log => Err(UsageError::with_hint(
            format!("dataset {output:?} ({}) is a Delta table", dir.display()),
            "pass --table-format delta (or `table_format = \"delta\"` in the config) to keep writing it as one",
        )
        .into()),
        TableFormat::Parquet => Ok(None),
        TableFormat::Delta if !has_log && has_parts() => Err(UsageError::with_hint(
            format!(
                "dataset {output:?} ({}) holds plain Parquet parts, not a Delta table",
                dir.display()
            ),
            "write the Delta table to another --out (or another `output` name), or drop --table-format delta",
        )
        .into()),
        TableFormat::Delta => {
            let mine = format!("part-{run_id}-");
            let of_other_runs = |rel: &String| {
                !rel.rsplit('/')
                    .next()
                    .is_some_and(|name| name.starts_with(&mine))
            };
            let others = if has_log {
                let state = load(out, table_rel)?;
                match shared {
                    None => state.files.keys().any(of_other_runs),
                    Some(sh) => {
                        let own = |rel: &String| sh.known.as_ref().is_some_and(|k| k.contains(rel));
                        let foreign = state
                            .files
                            .keys()
                            .filter(|rel| of_other_runs(rel) && !own(rel))
                            .count();
                        if foreign > 0 && !sh.split {
                            return Err(UsageError::with_hint(
                                format!(
                                    "dataset {output:?} ({}) holds {foreign} part(s) other writers committed: a second writer harvesting the whole table would put its rows in twice",
                                    dir.display()
                                ),
                                "harvest each table from one writer (the same --writer name as before), or split it across writers with --parallel N and --shard I/N",
                            )
                            .into());
                        }
                        state.files.keys().any(|rel| of_other_runs(rel) && own(rel))
                    }
                }
            } else {
                false
            };
            let mode = if appends || !others {
                Mode::Append
            } else {
                Mode::Overwrite
            };
            Ok(Some(Target {
                table_rel: table_rel.to_string(),
                mode,
            }))
        }
    }
}

/// The files a Delta table holds at its latest version.
#[derive(Debug, Default)]
pub struct TableState {
    pub version: i64,
    /// Paths relative to DIR (`parquet/<table>/…`, decoded) → size in bytes.
    pub files: BTreeMap<String, i64>,
    pub partition_columns: Vec<String>,
}

/// Run a delta-rs future to completion on a thread of its own (on the object store's runtime
/// when `out` is a stage, so its connections outlive one commit).
fn block_on<T: Send>(
    out: &Path,
    f: impl Future<Output = anyhow::Result<T>> + Send,
) -> anyhow::Result<T> {
    if let Some(r) = crate::store::remote::mounted(out) {
        return r.run(f);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the Delta Lake runtime")?;
            rt.block_on(f)
        })
        .join()
        .unwrap_or_else(|_| bail!("the Delta Lake commit thread panicked"))
    })
}

fn table_url(out: &Path, table_rel: &str) -> anyhow::Result<url::Url> {
    if let Some(r) = crate::store::remote::mounted(out) {
        return r.url_of_dir(table_rel);
    }
    let dir = out.join(table_rel);
    let abs = std::path::absolute(&dir)
        .with_context(|| format!("cannot resolve the path {}", dir.display()))?;
    url::Url::from_directory_path(&abs)
        .map_err(|()| anyhow::anyhow!("cannot make a URL of {}", abs.display()))
}

/// The table at `DIR/<table_rel>`, at its latest version.
async fn open_loaded(out: &Path, table_rel: &str) -> anyhow::Result<DeltaTable> {
    let url = table_url(out, table_rel)?;
    let mut table = DeltaTableBuilder::from_url(url.clone())
        .map(|b| match crate::store::remote::mounted(out) {
            Some(r) => b.with_storage_backend(r.store(), url),
            None => b,
        })
        .and_then(|b| b.build())
        .with_context(|| format!("cannot open the Delta table {table_rel}"))?;
    table.load().await.with_context(|| {
        format!(
            "cannot load the Delta table {table_rel} (a damaged or foreign _delta_log?); `harvest verify` lists what the manifest says it holds"
        )
    })?;
    Ok(table)
}

fn state_of(table: &DeltaTable, table_rel: &str) -> anyhow::Result<TableState> {
    let snap = table
        .snapshot()
        .with_context(|| format!("cannot read the Delta table {table_rel}"))?;
    let mut files = BTreeMap::new();
    for f in snap.log_data().iter() {
        files.insert(format!("{table_rel}/{}", f.path()), f.size());
    }
    Ok(TableState {
        version: snap.version() as i64,
        files,
        partition_columns: snap.metadata().partition_columns().to_vec(),
    })
}

/// The latest version of the Delta table at `DIR/<table_rel>` (empty when it has no log yet).
pub fn load(out: &Path, table_rel: &str) -> anyhow::Result<TableState> {
    if !has_log(out, table_rel)? {
        return Ok(TableState {
            version: -1,
            ..TableState::default()
        });
    }
    let once = || {
        block_on(out, async move {
            state_of(&open_loaded(out, table_rel).await?, table_rel)
        })
    };
    match crate::store::remote::mounted(out) {
        Some(r) => r.retrying(&format!("read the Delta table {table_rel}"), once),
        None => once(),
    }
}

/// One part as the manifest records it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub bytes: u64,
    pub rows: u64,
    /// `(column, value)` when the dataset is partitioned (`None` value: NULL).
    pub partition: Option<(String, Option<String>)>,
    pub run_id: String,
}

/// What the manifest says one Delta dataset holds, built by feeding it records in order.
#[derive(Debug, Default, Clone)]
pub struct Desired {
    pub files: BTreeMap<String, Wanted>,
    /// Parts of overwriting runs that have not finished the table yet.
    pending: HashMap<String, BTreeMap<String, Wanted>>,
    /// Every Delta part path the manifest ever recorded for the dataset.
    pub known: HashSet<String>,
    /// The schema of the most recently recorded part.
    pub columns: Vec<ColumnPlan>,
    pub partition_by: Option<String>,
}

/// [`Desired`] for every Delta dataset the manifest names, by output name.
#[derive(Debug, Default)]
pub struct Ledger {
    pub outputs: BTreeMap<String, Desired>,
}

impl crate::store::manifest::Follower for Ledger {
    fn wants(&self, kind: &str) -> bool {
        matches!(kind, "parquet" | "table_end" | "supersede")
    }

    fn feed(&mut self, record: &Value) {
        Ledger::feed(self, record);
    }
}

impl Ledger {
    /// Add another writer's ledger (a DIR shared by writers): their files are their own, so
    /// a table holds the union.
    pub fn merge(&mut self, other: Ledger) {
        for (output, d) in other.outputs {
            let mine = self.outputs.entry(output).or_default();
            mine.files.extend(d.files);
            mine.known.extend(d.known);
            if !d.columns.is_empty() {
                mine.columns = d.columns;
            }
            if d.partition_by.is_some() {
                mine.partition_by = d.partition_by;
            }
        }
    }

    pub fn feed(&mut self, r: &Value) {
        let Some(output) = r["output"].as_str() else {
            return;
        };
        let run = r["run_id"].as_str().unwrap_or_default();
        match r["kind"].as_str() {
            Some("parquet") => {
                let Some(mode) = r["delta"].as_str() else {
                    return;
                };
                let (Some(path), Some(bytes), Some(rows)) =
                    (r["path"].as_str(), r["bytes"].as_u64(), r["rows"].as_u64())
                else {
                    return;
                };
                let d = self.outputs.entry(output.to_string()).or_default();
                let partition = r["partition"].as_object().and_then(|m| {
                    m.iter()
                        .next()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                });
                d.partition_by = partition.as_ref().map(|(k, _)| k.clone());
                if let Ok(cols) = serde_json::from_value::<Vec<ColumnPlan>>(r["schema"].clone()) {
                    d.columns = cols;
                }
                let w = Wanted {
                    bytes,
                    rows,
                    partition,
                    run_id: run.to_string(),
                };
                d.known.insert(path.to_string());
                if mode == Mode::Overwrite.as_str() {
                    d.pending
                        .entry(run.to_string())
                        .or_default()
                        .insert(path.to_string(), w);
                } else {
                    d.files.insert(path.to_string(), w);
                }
            }
            Some("table_end") if r["delta"] == Mode::Overwrite.as_str() => {
                if let Some(d) = self.outputs.get_mut(output) {
                    d.files = d.pending.remove(run).unwrap_or_default();
                }
            }
            Some("supersede") => {
                if let Some(d) = self.outputs.get_mut(output) {
                    for p in r["paths"].as_array().into_iter().flatten() {
                        if let Some(p) = p.as_str() {
                            d.files.remove(p);
                            for pend in d.pending.values_mut() {
                                pend.remove(p);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The Delta type of a column.
fn delta_type(ty: ColType) -> DataType {
    DataType::Primitive(match ty {
        ColType::Integer => PrimitiveType::Long,
        ColType::Float => PrimitiveType::Double,
        ColType::Text => PrimitiveType::String,
        ColType::Blob => PrimitiveType::Binary,
        ColType::Date => PrimitiveType::Date,
        ColType::Timestamp => PrimitiveType::TimestampNtz,
        ColType::Boolean => PrimitiveType::Boolean,
    })
}

fn delta_schema(columns: &[ColumnPlan]) -> anyhow::Result<StructType> {
    StructType::try_new(
        columns
            .iter()
            .map(|c| StructField::new(c.name.clone(), delta_type(c.ty), true)),
    )
    .context("cannot build the Delta schema")
}

/// What one commit did.
#[derive(Debug)]
pub struct Committed {
    pub version: i64,
    pub added: usize,
    pub removed: usize,
}

/// Bring the Delta table of `output` in line with what the manifest wants: add the wanted files
/// the log lacks, remove the files the manifest recorded that it no longer wants, in one commit
/// (none when they already agree). Files the manifest never recorded are left alone.
///
/// Another writer committing to the same table in between (a shared DIR) is resolved by
/// delta-rs's conflict checks; a commit they refuse, or a lost race to create the table, is
/// recomputed from the table's new version and tried again (the difference only ever names
/// this manifest's files, so a retry is safe).
pub fn sync(
    out: &Path,
    table_rel: &str,
    output: &str,
    desired: &Desired,
    info: serde_json::Map<String, Value>,
) -> anyhow::Result<Option<Committed>> {
    const ATTEMPTS: u32 = 25;
    let mut attempt = 1;
    loop {
        match sync_once(out, table_rel, output, desired, info.clone()) {
            // A transient store failure (on S3) is retried too: the difference is recomputed
            // from what the table holds now, so a commit that happened although its answer
            // was lost is not made twice.
            Err(e) if attempt < ATTEMPTS && crate::store::remote::is_transient(&e) => {
                tracing::warn!(
                    "{output}: the commit failed ({}); retrying (attempt {} of {ATTEMPTS})",
                    e.root_cause(),
                    attempt + 1
                );
                std::thread::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)));
                attempt += 1;
            }
            Err(e) if attempt < ATTEMPTS && is_conflict(&e) => {
                use rand::RngExt as _;
                let wait = std::time::Duration::from_millis(
                    rand::rng().random_range(20..=100) * u64::from(attempt),
                );
                tracing::info!(
                    "{output}: another writer committed to the Delta table first; retrying the commit on its new version (attempt {} of {ATTEMPTS})",
                    attempt + 1
                );
                std::thread::sleep(wait);
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// delta-rs does not retry a commit itself: a version taken first (by another writer, or by
/// this very commit when an S3 PUT succeeded but its answer was lost and the retried PUT
/// found the version there) comes back to [`sync`], which recomputes the difference from the
/// table's new version — files this writer already committed are then not added again.
fn commit_properties(app: HashMap<String, Value>) -> CommitProperties {
    CommitProperties::default()
        .with_metadata(app)
        .with_max_retries(0)
}

/// Another writer created the table between our look and our create.
#[derive(Debug, thiserror::Error)]
#[error("another writer created the Delta table first")]
struct LostCreateRace(#[source] deltalake_core::DeltaTableError);

/// A commit lost to another writer's: the table was created first, the version was taken, or
/// delta-rs's conflict checks refused it against the winning commit.
fn is_conflict(e: &anyhow::Error) -> bool {
    use deltalake_core::DeltaTableError as E;
    use deltalake_core::kernel::transaction::TransactionError as T;
    e.chain().any(|c| {
        c.is::<LostCreateRace>()
            || matches!(
                c.downcast_ref::<E>(),
                Some(
                    E::VersionAlreadyExists(_)
                        | E::Transaction {
                            source: T::CommitConflict(_)
                                | T::VersionAlreadyExists(_)
                                | T::MaxCommitAttempts(_)
                        }
                )
            )
            || matches!(
                c.downcast_ref::<T>(),
                Some(T::CommitConflict(_) | T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_))
            )
    })
}

fn sync_once(
    out: &Path,
    table_rel: &str,
    output: &str,
    desired: &Desired,
    info: serde_json::Map<String, Value>,
) -> anyhow::Result<Option<Committed>> {
    let now = chrono::Utc::now().timestamp_millis();
    let remote = crate::store::remote::mounted(out);
    let log_exists = has_log(out, table_rel)?;
    block_on(out, async move {
        // No log yet: the first commit creates the table.
        let table = match log_exists {
            true => Some(open_loaded(out, table_rel).await?),
            false => None,
        };
        let state = match &table {
            Some(t) => state_of(t, table_rel)?,
            None => TableState::default(),
        };
        let (adds, removes) = adds_and_removes(
            out,
            remote.as_deref(),
            table_rel,
            output,
            desired,
            &state,
            now,
        );
        let schema = delta_schema(&desired.columns)?;
        let partition_cols: Vec<String> = desired.partition_by.iter().cloned().collect();
        let (added, removed) = (adds.len(), removes.len());
        let mut app: HashMap<String, Value> = info.into_iter().collect();
        app.insert("harvest.output".into(), json!(output));
        let overwrite = removed > 0;
        let Some(table) = table else {
            if desired.columns.is_empty() || adds.is_empty() {
                return Ok(None);
            }
            let create = match &remote {
                Some(r) => {
                    let url = table_url(out, table_rel)?;
                    let store = deltalake_core::logstore::logstore_with(
                        r.store(),
                        &url,
                        deltalake_core::logstore::StorageConfig::default(),
                    )?;
                    deltalake_core::operations::create::CreateBuilder::new().with_log_store(store)
                }
                None => deltalake_core::operations::create::CreateBuilder::new()
                    .with_location(table_url(out, table_rel)?.to_string()),
            };
            let table = create
                .with_table_name(output)
                .with_columns(schema.fields().cloned())
                .with_partition_columns(partition_cols)
                .with_actions(adds)
                .with_commit_properties(commit_properties(app))
                .await
                .map_err(|e| {
                    // Another writer created it first: commit on its version instead.
                    let e = if has_log(out, table_rel).unwrap_or(false) {
                        anyhow::Error::new(LostCreateRace(e))
                    } else {
                        anyhow::Error::new(e)
                    };
                    e.context(format!(
                        "cannot create the Delta table {table_rel}; its parts are recorded in the manifest, and a rerun with the same settings commits them first"
                    ))
                })?;
            return Ok(Some(Committed {
                version: table.version().unwrap_or(0) as i64,
                added,
                removed,
            }));
        };
        let snap = table
            .snapshot()
            .with_context(|| format!("cannot read the Delta table {table_rel}"))?;
        let mut actions = Vec::new();
        if !desired.columns.is_empty() && snap.schema().as_ref() != &schema {
            if state.partition_columns != partition_cols {
                bail!(
                    "the Delta table {table_rel} is partitioned by {:?}, the run wrote parts partitioned by {:?}: write to another --out or output name",
                    state.partition_columns,
                    partition_cols
                );
            }
            let meta = snap
                .metadata()
                .clone()
                .with_schema(&schema)
                .context("cannot update the Delta table's schema")?;
            actions.push(Action::Metadata(meta));
        }
        if adds.is_empty() && removes.is_empty() && actions.is_empty() {
            return Ok(None);
        }
        actions.extend(removes);
        actions.extend(adds);
        let op = DeltaOperation::Write {
            mode: if overwrite {
                SaveMode::Overwrite
            } else {
                SaveMode::Append
            },
            partition_by: (!partition_cols.is_empty()).then_some(partition_cols),
            predicate: None,
        };
        let done = CommitBuilder::from(commit_properties(app))
            .with_actions(actions)
            .build(Some(snap), table.log_store(), op)
            .await
            .with_context(|| {
                format!(
                    "cannot commit to the Delta table {table_rel}; its parts are recorded in the manifest, and a rerun with the same settings commits them first"
                )
            })?;
        Ok(Some(Committed {
            version: done.version() as i64,
            added,
            removed,
        }))
    })
}

/// The actions that bring the log from `state` to `desired`: an `add` for every recorded part
/// it lacks, a `remove` for every file it holds that the manifest superseded.
fn adds_and_removes(
    out: &Path,
    remote: Option<&crate::store::remote::Remote>,
    table_rel: &str,
    output: &str,
    desired: &Desired,
    state: &TableState,
    now: i64,
) -> (Vec<Action>, Vec<Action>) {
    let prefix = format!("{table_rel}/");
    // A recorded part that is gone from disk (a dataset directory removed by hand) is
    // never committed: the table would point at a file no reader can open.
    let (present, gone): (Vec<_>, Vec<_>) = desired
        .files
        .iter()
        .filter(|(rel, _)| !state.files.contains_key(*rel))
        .partition(|(rel, _)| match remote {
            Some(r) => r.is_published(rel),
            None => out.join(rel).is_file(),
        });
    if !gone.is_empty() {
        tracing::warn!(
            "{output}: {} recorded part(s) are missing from disk and were not committed to the Delta table (first: {}); `harvest verify` lists them",
            gone.len(),
            gone[0].0
        );
    }
    let adds: Vec<Action> = present
        .into_iter()
        .map(|(rel, w)| {
            let inner = rel.strip_prefix(&prefix).unwrap_or(rel);
            Action::Add(Add {
                path: inner.to_string(),
                partition_values: w.partition.iter().cloned().collect(),
                size: w.bytes as i64,
                modification_time: now,
                data_change: true,
                stats: Some(json!({ "numRecords": w.rows }).to_string()),
                ..Default::default()
            })
        })
        .collect();
    let removes: Vec<Action> = state
        .files
        .iter()
        .filter(|(rel, _)| desired.known.contains(*rel) && !desired.files.contains_key(*rel))
        .map(|(rel, size)| {
            let inner = rel.strip_prefix(&prefix).unwrap_or(rel);
            Action::Remove(Remove {
                path: inner.to_string(),
                data_change: true,
                deletion_timestamp: Some(now),
                extended_file_metadata: Some(false),
                size: Some(*size),
                ..Default::default()
            })
        })
        .collect();
    (adds, removes)
}

/// Startup repair: commit what the manifest recorded but the log lacks (a crash between a
/// `parquet` line and its commit, or between a `supersede` and its commit), for every Delta
/// dataset the manifest names. Returns the commits made.
pub fn reconcile(out: &Path, ledger: &Ledger) -> anyhow::Result<Vec<(String, Committed)>> {
    let mut made = vec![];
    for (output, desired) in &ledger.outputs {
        let table_rel = format!(
            "parquet/{}",
            crate::store::fsutil::sanitize_component(output)
        );
        let mut info = serde_json::Map::new();
        info.insert(
            "harvest.reason".into(),
            json!("repair: parts recorded in the manifest before an interruption"),
        );
        if let Some(c) = sync(out, &table_rel, output, desired, info)? {
            made.push((output.clone(), c));
        }
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(run: &str, path: &str, mode: &str) -> Value {
        json!({"kind": "parquet", "run_id": run, "output": "t", "path": path, "bytes": 10,
               "rows": 2, "delta": mode, "pages": {"first": 1, "last": 2},
               "schema": [{"name": "id", "type": "integer", "reason": "declared"}]})
    }

    #[test]
    fn overwrite_parts_replace_the_table_only_when_the_run_ends_it() {
        let mut l = Ledger::default();
        l.feed(&part("r1", "parquet/t/part-r1-1.parquet", "append"));
        l.feed(&part("r2", "parquet/t/part-r2-1.parquet", "overwrite"));
        let files = |l: &Ledger| l.outputs["t"].files.keys().cloned().collect::<Vec<_>>();
        assert_eq!(files(&l), ["parquet/t/part-r1-1.parquet"]);
        l.feed(&json!({"kind": "table_end", "run_id": "r2", "output": "t", "delta": "overwrite"}));
        assert_eq!(files(&l), ["parquet/t/part-r2-1.parquet"]);
        l.feed(&part("r3", "parquet/t/part-r3-1.parquet", "append"));
        l.feed(&json!({"kind": "supersede", "run_id": "r4", "output": "t",
                       "paths": ["parquet/t/part-r3-1.parquet"], "kept": true}));
        assert_eq!(files(&l), ["parquet/t/part-r2-1.parquet"]);
        assert_eq!(l.outputs["t"].known.len(), 3);
    }

    /// Writers sharing a table (`--writer`) race to create it and to commit: every commit
    /// lands, the loser of a race recomputing on the winner's version.
    #[test]
    fn racing_writers_all_commit() {
        const WRITERS: usize = 4;
        for round in 0..4 {
            let out = std::env::temp_dir()
                .join(format!("harvest-delta-race-{}-{round}", std::process::id()));
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(out.join("parquet/t")).unwrap();
            let barrier = std::sync::Barrier::new(WRITERS);
            std::thread::scope(|s| {
                for w in 0..WRITERS {
                    let (out, barrier) = (&out, &barrier);
                    s.spawn(move || {
                        let mut ledger = Ledger::default();
                        barrier.wait();
                        for n in 1..=3 {
                            let rel = format!("parquet/t/part-r{w}-{n}.parquet");
                            std::fs::write(out.join(&rel), b"0123456789").unwrap();
                            ledger.feed(&part(&format!("r{w}"), &rel, "append"));
                            sync(
                                out,
                                "parquet/t",
                                "t",
                                &ledger.outputs["t"],
                                Default::default(),
                            )
                            .unwrap();
                        }
                    });
                }
            });
            let state = load(&out, "parquet/t").unwrap();
            assert_eq!(
                state.files.len(),
                WRITERS * 3,
                "round {round}: {:?}",
                state.files
            );
            let _ = std::fs::remove_dir_all(&out);
        }
    }

    #[test]
    fn plain_parts_are_not_delta_files() {
        let mut l = Ledger::default();
        let mut p = part("r1", "parquet/t/part-r1-1.parquet", "append");
        p.as_object_mut().map(|m| m.remove("delta"));
        l.feed(&p);
        assert!(l.outputs.is_empty());
    }

    #[test]
    fn partition_directories_are_spelled_as_delta_rs_spells_them() {
        // delta-rs's own writer names the directory so (and percent-encodes it once more in
        // the log, which it does itself when it writes an `add`).
        let dir = crate::store::fsutil::ascii_component("Côte d'Ivoire");
        assert_eq!(dir, "C%C3%B4te%20d%27Ivoire");
        assert_eq!(
            crate::store::fsutil::ascii_component(".x/y=z"),
            "%2Ex%2Fy%3Dz"
        );
        assert_eq!(
            crate::store::fsutil::ascii_component("A-b_c~1.2"),
            "A-b_c~1.2"
        );
    }
}
