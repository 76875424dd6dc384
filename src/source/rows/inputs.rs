//! The input rows of a row-driven table (`for_each`): a SQLite query, a Parquet dataset, or
//! a parent table harvested earlier in the same run.
//!
//! Guarantees:
//! - Rows are streamed from a blocking thread over a bounded channel ([`CHANNEL_ROWS`]), never
//!   loaded whole: a million input rows cost the same memory as a thousand.
//! - The column names are known before the first row, so every placeholder is checked before
//!   any request is sent; problems found then (no such file, bad SQL, a missing or unused
//!   parameter, an unknown column, a parent with no recorded pages) are usage errors (exit 2).
//! - SQLite: opened read-only, the query must be a query, parameters are bound (never
//!   spliced), one read transaction. Values keep their type as JSON: INTEGER a number, REAL a
//!   number (±Infinity/NaN refused), TEXT a string, BLOB base64 text, NULL null.
//! - Parquet: every `*.parquet` file under the path, in path order (hidden and temporary
//!   files skipped), only the chosen columns decoded; Hive `col=value` directories give back
//!   their partition column as text.
//! - Parent: the parent's records exactly as its snapshots of this run hold them (hash-checked,
//!   in page order), each field read by JSON Pointer (absent → null).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use arrow::array::{Array, AsArray};
use base64::Engine as _;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::UsageError;
use crate::source::sqlite::Param;

/// Input rows buffered between the reader thread and the requests.
pub const CHANNEL_ROWS: usize = 1024;

/// Where a row-driven table's input rows come from.
#[derive(Debug, Clone, serde::Serialize)]
pub enum InputSpec {
    Sqlite {
        db: PathBuf,
        query: String,
        params: BTreeMap<String, Param>,
    },
    Parquet {
        path: PathBuf,
        /// Empty: every column.
        columns: Vec<String>,
    },
    /// A table of the same source harvested earlier in the run.
    Parent {
        /// The parent's dataset (`output`) name.
        table: String,
        /// The parent's `records` pointer.
        records: Option<String>,
        /// (column name, JSON Pointer into a parent record).
        fields: Vec<(String, String)>,
    },
}

impl InputSpec {
    /// The dataset of the parent table whose records are the input, if that is the input.
    pub fn parent_table(&self) -> Option<&str> {
        match self {
            InputSpec::Parent { table, .. } => Some(table),
            _ => None,
        }
    }

    /// What to call the input in messages.
    pub fn describe(&self) -> String {
        match self {
            InputSpec::Sqlite { db, .. } => format!("the query on {}", db.display()),
            InputSpec::Parquet { path, .. } => format!("the Parquet dataset {}", path.display()),
            InputSpec::Parent { table, .. } => format!("the records of table {table:?}"),
        }
    }
}

/// A running input: its columns and a stream of rows (`Err` ends it).
pub struct Inputs {
    pub columns: Vec<String>,
    rx: mpsc::Receiver<Result<Vec<Value>, String>>,
    /// Input rows handed out so far.
    pub read: u64,
}

impl Inputs {
    /// The next input row; `Ok(None)` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        match self.rx.recv().await {
            None => Ok(None),
            Some(Ok(row)) => {
                self.read += 1;
                Ok(Some(row))
            }
            Some(Err(why)) => anyhow::bail!("reading input row {}: {why}", self.read + 1),
        }
    }
}

/// What the reader thread says first.
type Opened = Result<Vec<String>, anyhow::Error>;

/// Start reading `spec`. `out` and `run_id` locate a parent's snapshots.
pub async fn open(spec: &InputSpec, out: &Path, run_id: &str) -> anyhow::Result<Inputs> {
    let (tx, rx) = mpsc::channel(CHANNEL_ROWS);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Opened>();
    let spec = spec.clone();
    let out = out.to_path_buf();
    let run_id = run_id.to_string();
    tokio::task::spawn_blocking(move || {
        let mut ready = Some(ready_tx);
        let r = match &spec {
            InputSpec::Sqlite { db, query, params } => {
                read_sqlite(db, query, params, &mut ready, &tx)
            }
            InputSpec::Parquet { path, columns } => read_parquet(path, columns, &mut ready, &tx),
            InputSpec::Parent {
                table,
                records,
                fields,
            } => read_parent(
                &out,
                &run_id,
                table,
                records.as_deref(),
                fields,
                &mut ready,
                &tx,
            ),
        };
        if let Err(e) = r {
            match ready.take() {
                Some(r) => {
                    let _ = r.send(Err(e));
                }
                None => {
                    let _ = tx.blocking_send(Err(format!("{e:#}")));
                }
            }
        }
    });
    let columns = ready_rx
        .await
        .context("the input reader stopped before it started")??;
    Ok(Inputs {
        columns,
        rx,
        read: 0,
    })
}

type Ready = Option<tokio::sync::oneshot::Sender<Opened>>;
type Tx = mpsc::Sender<Result<Vec<Value>, String>>;

fn announce(ready: &mut Ready, columns: Vec<String>) -> anyhow::Result<()> {
    if let Some(r) = ready.take() {
        r.send(Ok(columns))
            .map_err(|_| anyhow::anyhow!("the table stopped before its input opened"))?;
    }
    Ok(())
}

fn read_sqlite(
    db: &Path,
    query: &str,
    params: &BTreeMap<String, Param>,
    ready: &mut Ready,
    tx: &Tx,
) -> anyhow::Result<()> {
    use rusqlite::types::ValueRef;
    let conn = crate::source::sqlite::open_readonly(db)?;
    let mut stmt = conn.prepare(query).map_err(|e| {
        UsageError::with_hint(
            format!("for_each: the query on {} is not valid: {e}", db.display()),
            "check the SQL in `for_each.query`",
        )
    })?;
    if !stmt.readonly() || !crate::source::sqlite::is_query(query) {
        return Err(UsageError::new(
            "for_each: the query must be a SELECT, WITH or VALUES query (it would change the database)",
        )
        .into());
    }
    crate::source::sqlite::bind(&mut stmt, params, &[])
        .map_err(|e| UsageError::new(format!("for_each: {e}")))?;
    let columns: Vec<String> = stmt.column_names().map(str::to_string).collect();
    announce(ready, columns.clone())?;
    let n = columns.len();
    let mut rows = stmt.raw_query();
    let mut row_no = 0u64;
    while let Some(row) = rows.next().context("the input query failed")? {
        row_no += 1;
        let mut values = Vec::with_capacity(n);
        for (i, col) in columns.iter().enumerate() {
            let v = match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::from(i),
                ValueRef::Real(f) => serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "input row {row_no}, column {col:?}: {f} has no JSON form; cast it to text in the query"
                        )
                    })?,
                ValueRef::Text(t) => Value::String(
                    std::str::from_utf8(t)
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "input row {row_no}, column {col:?}: the text is not valid UTF-8; select hex({col}) or cast it to a blob"
                            )
                        })?
                        .to_string(),
                ),
                ValueRef::Blob(b) => {
                    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
                }
            };
            values.push(v);
        }
        if tx.blocking_send(Ok(values)).is_err() {
            return Ok(()); // the table stopped reading
        }
    }
    Ok(())
}

/// `*.parquet` files under `path` (or `path` itself), sorted; hidden and temporary files are
/// skipped.
fn parquet_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(UsageError::with_hint(
            format!("for_each: {} does not exist", path.display()),
            "point `for_each.parquet` at a Parquet file or a dataset directory (e.g. OUT/parquet/TABLE)",
        )
        .into());
    }
    let mut files: Vec<PathBuf> = crate::store::fsutil::files_under(path)?
        .into_iter()
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_')
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(UsageError::with_hint(
            format!("for_each: {} holds no .parquet files", path.display()),
            "harvest the input table first, or point `for_each.parquet` at its dataset",
        )
        .into());
    }
    Ok(files)
}

/// Hive `col=value` directories between `root` and `file`.
fn hive_values(root: &Path, file: &Path) -> Vec<(String, String)> {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.parent()
        .into_iter()
        .flat_map(|p| p.components())
        .filter_map(|c| {
            let s = c.as_os_str().to_string_lossy();
            let (k, v) = s.split_once('=')?;
            let decode = |x: &str| {
                url::form_urlencoded::parse(format!("x={}", x.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            };
            Some((decode(k), decode(v)))
        })
        .collect()
}

fn read_parquet(path: &Path, wanted: &[String], ready: &mut Ready, tx: &Tx) -> anyhow::Result<()> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let files = parquet_files(path)?;
    let open = |f: &Path| -> anyhow::Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
        let file =
            std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
        ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{} is not a readable Parquet file", f.display()))
    };
    // The columns: as asked, else the first file's columns and its partition keys.
    let first = open(&files[0])?;
    let file_cols: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let first_hive = hive_values(path, &files[0]);
    let columns: Vec<String> = if wanted.is_empty() {
        file_cols
            .iter()
            .cloned()
            .chain(
                first_hive
                    .iter()
                    .map(|(k, _)| k.clone())
                    .filter(|k| !file_cols.contains(k)),
            )
            .collect()
    } else {
        for c in wanted {
            if !file_cols.contains(c) && !first_hive.iter().any(|(k, _)| k == c) {
                return Err(UsageError::with_hint(
                    format!("for_each: {} has no column {c:?}", files[0].display()),
                    format!("its columns are: {}", file_cols.join(", ")),
                )
                .into());
            }
        }
        wanted.to_vec()
    };
    announce(ready, columns.clone())?;
    drop(first);
    for f in &files {
        let builder = open(f)?;
        let schema = builder.schema().clone();
        let hive = hive_values(path, f);
        let roots: Vec<usize> = columns
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(1024)
            .build()?;
        for batch in reader {
            let batch = batch.with_context(|| format!("cannot read {}", f.display()))?;
            let arrays: Vec<Option<&dyn Array>> = columns
                .iter()
                .map(|c| batch.column_by_name(c).map(|a| a.as_ref()))
                .collect();
            for row in 0..batch.num_rows() {
                let mut values = Vec::with_capacity(columns.len());
                for (c, a) in columns.iter().zip(&arrays) {
                    let v = match a {
                        Some(a) => arrow_json(*a, row).map_err(|why| {
                            anyhow::anyhow!("{}: column {c:?}: {why}", f.display())
                        })?,
                        None => hive
                            .iter()
                            .find(|(k, _)| k == c)
                            .map_or(Value::Null, |(_, v)| Value::String(v.clone())),
                    };
                    values.push(v);
                }
                if tx.blocking_send(Ok(values)).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// One Arrow value as JSON: integers exact, floats as numbers, text, booleans, dates and
/// timestamps as ISO 8601 text, binary as base64.
fn arrow_json(a: &dyn Array, i: usize) -> Result<Value, String> {
    use arrow::datatypes::*;
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    let float = |f: f64| {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} has no JSON form"))
    };
    Ok(match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => float(f64::from(a.as_primitive::<Float32Type>().value(i)))?,
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i))?,
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::Binary => Value::String(
            base64::engine::general_purpose::STANDARD.encode(a.as_binary::<i32>().value(i)),
        ),
        DataType::LargeBinary => Value::String(
            base64::engine::general_purpose::STANDARD.encode(a.as_binary::<i64>().value(i)),
        ),
        DataType::Date32 => {
            let d = a.as_primitive::<Date32Type>().value(i);
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("bad epoch")?;
            Value::String(
                (epoch + chrono::Duration::days(i64::from(d)))
                    .format("%Y-%m-%d")
                    .to_string(),
            )
        }
        DataType::Timestamp(unit, tz) => {
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i) * 1_000_000,
                TimeUnit::Millisecond => {
                    a.as_primitive::<TimestampMillisecondType>().value(i) * 1_000
                }
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => {
                    a.as_primitive::<TimestampNanosecondType>().value(i) / 1_000
                }
            };
            let t = chrono::DateTime::from_timestamp_micros(v).ok_or("timestamp out of range")?;
            Value::String(if tz.is_some() {
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            } else {
                t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()
            })
        }
        other => return Err(format!("the Arrow type {other} cannot feed a request")),
    })
}

/// The pages the parent table recorded in run `run_id`: (page, snapshot path, sha256).
fn parent_pages(
    out: &Path,
    run_id: &str,
    table: &str,
) -> anyhow::Result<Vec<(u64, String, String)>> {
    let mut pages = Vec::new();
    crate::store::manifest::for_each_record(out, |r| {
        if r["kind"] == "page" && r["run_id"] == run_id && r["output"] == table {
            pages.push((
                r["page"].as_u64().unwrap_or(0),
                r["path"].as_str().unwrap_or_default().to_string(),
                r["sha256"].as_str().unwrap_or_default().to_string(),
            ));
        }
    })?;
    pages.sort();
    Ok(pages)
}

fn read_parent(
    out: &Path,
    run_id: &str,
    table: &str,
    records: Option<&str>,
    fields: &[(String, String)],
    ready: &mut Ready,
    tx: &Tx,
) -> anyhow::Result<()> {
    let pages = parent_pages(out, run_id, table)?;
    if pages.is_empty() {
        return Err(UsageError::with_hint(
            format!("for_each: table {table:?} recorded no pages in this run"),
            "list the parent table before its child in the config, and harvest both in one run",
        )
        .into());
    }
    announce(ready, fields.iter().map(|(n, _)| n.clone()).collect())?;
    for (page, rel, sha) in pages {
        let body = std::fs::read(out.join(&rel))
            .with_context(|| format!("cannot read the parent's snapshot {rel}"))?;
        if crate::store::manifest::sha256_hex(&body) != sha {
            anyhow::bail!(
                "the parent's snapshot {rel} no longer matches its recorded sha256; rerun with --restart"
            );
        }
        let doc = crate::source::rest::records::decode(&body)
            .map_err(|p| anyhow::anyhow!("parent page {page}: {}", p.into_reason()))?;
        let recs = crate::source::rest::records::take_records(doc, records)
            .map_err(|p| anyhow::anyhow!("parent page {page}: {}", p.into_reason()))?;
        for r in recs {
            let values = fields
                .iter()
                .map(|(_, ptr)| r.pointer(ptr).cloned().unwrap_or(Value::Null))
                .collect();
            if tx.blocking_send(Ok(values)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
