//! `harvest export`: one dataset → one CSV, NDJSON or Parquet file (or stdout), streamed.
//!
//! Guarantees:
//! - The rows are exactly the dataset's live parts as the manifest says: parts recorded by a
//!   run that completed the dataset (`table_end`), not superseded, in manifest order (every
//!   incremental run's parts included). Parts of an unfinished run are left out (a rerun
//!   resumes or removes them) and the command says so. Hive partition columns are put back,
//!   typed and in their place.
//! - `--columns` exports a selection in its own order (only those columns are decoded).
//! - Memory is bounded whatever the size: parts are read a batch at a time and written as they
//!   come (Parquet: re-encoded into one file, a row group at a time).
//! - A file output (`--output FILE`, and every `--cache` export) appears only complete
//!   (temp + fsync + rename). Stdout closed early (`| head`) ends the export quietly, exit 0.
//! - `--cache` names the export by a digest of the format and the sha256 of every live part:
//!   an unchanged dataset is a cache hit (nothing re-exported); a new export is recorded in
//!   the manifest (`export`) and older exports of the dataset and format are recorded as
//!   removed (`export_sweep`) before they are deleted, so `verify` checks the live ones.
//!
//! Rendering (CSV and NDJSON): integers exact, floats as JSON writes them (shortest
//! round-trip: `2.0`, `-0.25`, `1e300`; non-finite as the strings `Infinity`, `-Infinity`,
//! `NaN`), booleans `true`/`false`, dates `YYYY-MM-DD`, timestamps ISO 8601 without a zone
//! (`2016-07-04T10:15:00`, with `.fff`/`.ffffff` when there is a fraction), binary as base64.
//! CSV: RFC 4180, one header line, rows ended by `\n`, a field quoted when it holds `,`, `"`,
//! CR or LF; NULL is an empty field, and empty text (or an empty blob) is `""`. NDJSON: one
//! object per line, keys in column order, NULL as `null`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::cli::{ExportArgs, ExportFormat};
use crate::commands::harvest::obj;
use crate::error::UsageError;
use crate::manifest::{Manifest, sha256_hex};
use crate::printer::Printer;
use crate::schema::{ColType, ColumnPlan, arrow_schema};

/// One live part of a dataset.
#[derive(Debug, Clone)]
pub struct LivePart {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
    /// The partition column and its value's text (`None`: NULL), for a partitioned dataset.
    pub partition: Option<(String, Option<String>)>,
}

/// A dataset as the manifest describes it.
pub struct Dataset {
    pub columns: Vec<ColumnPlan>,
    pub parts: Vec<LivePart>,
    /// Parts of runs that did not complete the dataset (left out).
    pub unfinished: Vec<String>,
}

/// Every dataset name the manifest knows (with at least one recorded part).
fn dataset_names(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| r["kind"] == "parquet")
        .filter_map(|r| r["output"].as_str().map(str::to_string))
        .collect()
}

/// The live parts of `name`.
pub fn live_dataset(records: &[Value], name: &str) -> Option<Dataset> {
    let finished = crate::resume::finished_runs(records, name);
    let superseded = crate::resume::superseded_paths(records);
    let mut columns = None;
    let mut parts = vec![];
    let mut unfinished = vec![];
    let mut any = false;
    for r in records
        .iter()
        .filter(|r| r["kind"] == "parquet" && r["output"] == name)
    {
        any = true;
        let Some(path) = r["path"].as_str() else {
            continue;
        };
        if superseded.contains(path) {
            continue;
        }
        if !r["run_id"].as_str().is_some_and(|id| finished.contains(id)) {
            unfinished.push(path.to_string());
            continue;
        }
        if columns.is_none() {
            columns = serde_json::from_value::<Vec<ColumnPlan>>(r["schema"].clone())
                .ok()
                .map(|p| p.into_iter().map(ColumnPlan::restored).collect());
        }
        let partition = r["partition"].as_object().and_then(|m| {
            m.iter()
                .next()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
        });
        parts.push(LivePart {
            path: path.to_string(),
            sha256: r["sha256"].as_str().unwrap_or_default().to_string(),
            rows: r["rows"].as_u64().unwrap_or(0),
            partition,
        });
    }
    any.then(|| Dataset {
        columns: columns.unwrap_or_default(),
        parts,
        unfinished,
    })
}

/// `--columns a,b`: those columns, in that order; an unknown or repeated name is exit 2.
fn select_columns(
    all: &[ColumnPlan],
    wanted: &[String],
    dataset: &str,
) -> anyhow::Result<Vec<ColumnPlan>> {
    let mut out: Vec<ColumnPlan> = Vec::with_capacity(wanted.len());
    for w in wanted {
        let Some(c) = all.iter().find(|c| c.name == *w) else {
            return Err(UsageError::with_hint(
                format!("dataset {dataset:?} has no column {w:?}"),
                format!(
                    "its columns: {}",
                    all.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into());
        };
        if out.iter().any(|o| o.name == *w) {
            return Err(UsageError::new(format!("--columns names {w:?} twice")).into());
        }
        out.push(c.clone());
    }
    Ok(out)
}

/// A constant column: the partition value of a part, typed as its column.
fn partition_array(ty: ColType, value: Option<&str>, len: usize) -> anyhow::Result<ArrayRef> {
    use arrow::array::*;
    let Some(v) = value else {
        return Ok(arrow::array::new_null_array(&ty.arrow(), len));
    };
    let bad = || anyhow::anyhow!("the partition value {v:?} does not parse as its column's type");
    Ok(match ty {
        ColType::Integer => Arc::new(Int64Array::from(vec![
            v.parse::<i64>().map_err(|_| bad())?;
            len
        ])),
        ColType::Float => Arc::new(Float64Array::from(vec![
            v.parse::<f64>()
                .map_err(|_| bad())?;
            len
        ])),
        ColType::Boolean => Arc::new(BooleanArray::from(vec![
            v.parse::<bool>()
                .map_err(|_| bad())?;
            len
        ])),
        ColType::Date => Arc::new(Date32Array::from(vec![
            crate::schema::parse_date(v)
                .ok_or_else(bad)?;
            len
        ])),
        ColType::Timestamp => Arc::new(TimestampMicrosecondArray::from(vec![
            crate::schema::parse_timestamp(v).ok_or_else(bad)?;
            len
        ])),
        ColType::Text => Arc::new(StringArray::from(vec![v; len])),
        ColType::Blob => bail!("a blob column cannot name a partition"),
    })
}

/// Where the rows go.
trait Sink {
    fn start(&mut self, schema: &SchemaRef) -> std::io::Result<()>;
    fn batch(&mut self, b: &RecordBatch) -> anyhow::Result<()>;
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() || s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// One column of a batch, downcast once, rendered cell by cell straight into a line buffer.
enum Col<'a> {
    Int(&'a arrow::array::Int64Array),
    Float(&'a arrow::array::Float64Array),
    Bool(&'a arrow::array::BooleanArray),
    Text(&'a arrow::array::StringArray),
    Bin(&'a arrow::array::BinaryArray),
    Date(&'a arrow::array::Date32Array),
    Ts(&'a arrow::array::TimestampMicrosecondArray),
}

impl<'a> Col<'a> {
    fn of(a: &'a dyn Array) -> anyhow::Result<Self> {
        use arrow::datatypes::*;
        Ok(match a.data_type() {
            DataType::Int64 => Col::Int(a.as_primitive::<Int64Type>()),
            DataType::Float64 => Col::Float(a.as_primitive::<Float64Type>()),
            DataType::Boolean => Col::Bool(a.as_boolean()),
            DataType::Utf8 => Col::Text(a.as_string::<i32>()),
            DataType::Binary => Col::Bin(a.as_binary::<i32>()),
            DataType::Date32 => Col::Date(a.as_primitive::<Date32Type>()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Col::Ts(a.as_primitive::<TimestampMicrosecondType>())
            }
            other => bail!("the column type {other} has no export rendering"),
        })
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Col::Int(a) => a.is_null(i),
            Col::Float(a) => a.is_null(i),
            Col::Bool(a) => a.is_null(i),
            Col::Text(a) => a.is_null(i),
            Col::Bin(a) => a.is_null(i),
            Col::Date(a) => a.is_null(i),
            Col::Ts(a) => a.is_null(i),
        }
    }

    /// Append the value's text (not NULL); `Some(true)` when it is text that CSV/JSON must
    /// treat as a string (quoted), `Some(false)` for a bare number or boolean.
    fn write(&self, i: usize, out: &mut Vec<u8>, scratch: &mut String) -> anyhow::Result<bool> {
        use std::fmt::Write as _;
        Ok(match self {
            Col::Int(a) => {
                out.extend_from_slice(itoa::Buffer::new().format(a.value(i)).as_bytes());
                false
            }
            Col::Float(a) => {
                let f = a.value(i);
                if f.is_finite() {
                    out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
                    false
                } else {
                    out.extend_from_slice(crate::schema::float_text(f).as_bytes());
                    true
                }
            }
            Col::Bool(a) => {
                out.extend_from_slice(if a.value(i) { b"true" } else { b"false" });
                false
            }
            Col::Text(a) => {
                out.extend_from_slice(a.value(i).as_bytes());
                true
            }
            Col::Bin(a) => {
                scratch.clear();
                base64::engine::general_purpose::STANDARD.encode_string(a.value(i), scratch);
                out.extend_from_slice(scratch.as_bytes());
                true
            }
            Col::Date(a) => {
                let day = chrono::NaiveDate::from_num_days_from_ce_opt(a.value(i) + 719_163)
                    .context("a date out of range")?;
                scratch.clear();
                let _ = write!(scratch, "{}", day.format("%Y-%m-%d"));
                out.extend_from_slice(scratch.as_bytes());
                true
            }
            Col::Ts(a) => {
                let t = chrono::DateTime::from_timestamp_micros(a.value(i))
                    .context("a timestamp out of range")?
                    .naive_utc();
                scratch.clear();
                let _ = write!(scratch, "{}", t.format("%Y-%m-%dT%H:%M:%S%.f"));
                out.extend_from_slice(scratch.as_bytes());
                true
            }
        })
    }
}

fn columns_of(b: &RecordBatch) -> anyhow::Result<Vec<Col<'_>>> {
    b.columns().iter().map(|a| Col::of(a.as_ref())).collect()
}

/// Quote `out[start..]` in place as one CSV field when it needs quoting (or is empty text).
fn csv_quote_tail(out: &mut Vec<u8>, start: usize, text: bool) {
    if !text {
        return; // numbers and booleans never need quotes
    }
    let field = &out[start..];
    let needs = (text && field.is_empty())
        || field
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !needs {
        return;
    }
    let raw: Vec<u8> = out.drain(start..).collect();
    out.push(b'"');
    for b in raw {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Escape `out[start..]` in place as the body of a JSON string (without the quotes).
fn json_escape_tail(out: &mut Vec<u8>, start: usize) {
    if !out[start..]
        .iter()
        .any(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
    {
        return;
    }
    let raw: Vec<u8> = out.drain(start..).collect();
    for b in raw {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            c => out.push(c),
        }
    }
}

/// Hand the rendered lines to the writer in 64 KiB pieces (all of them when `all`).
fn flush_lines(w: &mut impl Write, line: &mut Vec<u8>, all: bool) -> anyhow::Result<()> {
    if all || line.len() >= 1 << 16 {
        w.write_all(line)?;
        line.clear();
    }
    Ok(())
}

struct CsvSink<W: Write> {
    w: W,
    line: Vec<u8>,
}

impl<W: Write> Sink for CsvSink<W> {
    fn start(&mut self, schema: &SchemaRef) -> std::io::Result<()> {
        self.line.clear();
        for (i, f) in schema.fields().iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            csv_field(&mut self.line, f.name());
        }
        self.line.push(b'\n');
        self.w.write_all(&self.line)
    }
    fn batch(&mut self, b: &RecordBatch) -> anyhow::Result<()> {
        let cols = columns_of(b)?;
        let mut scratch = String::new();
        self.line.clear();
        for row in 0..b.num_rows() {
            for (c, col) in cols.iter().enumerate() {
                if c > 0 {
                    self.line.push(b',');
                }
                if !col.is_null(row) {
                    let start = self.line.len();
                    let text = col.write(row, &mut self.line, &mut scratch)?;
                    csv_quote_tail(&mut self.line, start, text);
                }
            }
            self.line.push(b'\n');
            flush_lines(&mut self.w, &mut self.line, false)?;
        }
        flush_lines(&mut self.w, &mut self.line, true)
    }
    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.w.flush()?;
        Ok(())
    }
}

struct NdjsonSink<W: Write> {
    w: W,
    /// Each column's `"name":` prefix, JSON-escaped once.
    keys: Vec<Vec<u8>>,
    line: Vec<u8>,
    cell: Vec<u8>,
}

impl<W: Write> Sink for NdjsonSink<W> {
    fn start(&mut self, schema: &SchemaRef) -> std::io::Result<()> {
        self.keys = schema
            .fields()
            .iter()
            .map(|f| {
                let mut k = serde_json::to_vec(f.name()).unwrap_or_default();
                k.push(b':');
                k
            })
            .collect();
        Ok(())
    }
    fn batch(&mut self, b: &RecordBatch) -> anyhow::Result<()> {
        let cols = columns_of(b)?;
        let mut scratch = String::new();
        self.line.clear();
        for row in 0..b.num_rows() {
            self.line.push(b'{');
            for (c, col) in cols.iter().enumerate() {
                if c > 0 {
                    self.line.push(b',');
                }
                self.line.extend_from_slice(&self.keys[c]);
                if col.is_null(row) {
                    self.line.extend_from_slice(b"null");
                    continue;
                }
                self.cell.clear();
                if col.write(row, &mut self.cell, &mut scratch)? {
                    self.line.push(b'"');
                    let start = self.line.len();
                    self.line.extend_from_slice(&self.cell);
                    json_escape_tail(&mut self.line, start);
                    self.line.push(b'"');
                } else {
                    self.line.extend_from_slice(&self.cell);
                }
            }
            self.line.extend_from_slice(b"}\n");
            flush_lines(&mut self.w, &mut self.line, false)?;
        }
        flush_lines(&mut self.w, &mut self.line, true)
    }
    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.w.flush()?;
        Ok(())
    }
}

struct ParquetSink<W: Write + Send> {
    w: Option<W>,
    writer: Option<parquet::arrow::ArrowWriter<W>>,
    props: parquet::file::properties::WriterProperties,
}

impl<W: Write + Send> Sink for ParquetSink<W> {
    fn start(&mut self, schema: &SchemaRef) -> std::io::Result<()> {
        let w = self
            .w
            .take()
            .ok_or_else(|| std::io::Error::other("started twice"))?;
        self.writer = Some(
            parquet::arrow::ArrowWriter::try_new(w, schema.clone(), Some(self.props.clone()))
                .map_err(std::io::Error::other)?,
        );
        Ok(())
    }
    fn batch(&mut self, b: &RecordBatch) -> anyhow::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.write(b)?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        if let Some(w) = self.writer.take() {
            let mut inner = w.into_inner()?;
            inner.flush()?;
        }
        Ok(())
    }
}

/// Stream `ds` into `sink`; the number of rows written.
fn stream(out: &Path, ds: &Dataset, sink: &mut dyn Sink) -> anyhow::Result<u64> {
    let schema = arrow_schema(&ds.columns);
    sink.start(&schema)?;
    // Decoding the parts (one thread) runs ahead of rendering or encoding them (this one), at
    // most a few batches: two cores, bounded memory.
    let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(4);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_batches(out, ds, &schema, tx));
        let mut failed = None;
        for batch in rx.iter() {
            if let Err(e) = sink.batch(&batch) {
                failed = Some(e);
                break;
            }
        }
        drop(rx);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the part reader panicked"))?;
        match failed {
            Some(e) => Err(e),
            None => read,
        }
    })
}

/// Every batch of the dataset's live parts, with partition columns put back, in order, into
/// `tx` (stops early, without error, when the receiver goes away). The rows read.
fn read_batches(
    out: &Path,
    ds: &Dataset,
    schema: &SchemaRef,
    tx: std::sync::mpsc::SyncSender<RecordBatch>,
) -> anyhow::Result<u64> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut rows = 0u64;
    for part in &ds.parts {
        let path = out.join(&part.path);
        let file = std::fs::File::open(&path).with_context(|| {
            format!(
                "cannot open the part {} (removed since the manifest was read? `harvest verify` checks the directory)",
                part.path
            )
        })?;
        // Only the exported columns are decoded.
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| {
                let roots: Vec<usize> = ds
                    .columns
                    .iter()
                    .filter_map(|c| b.schema().index_of(&c.name).ok())
                    .collect();
                let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
                b.with_projection(mask).with_batch_size(8192).build()
            })
            .with_context(|| {
                format!(
                    "the part {} is not readable Parquet; run `harvest verify`",
                    part.path
                )
            })?;
        let mut part_rows = 0u64;
        for batch in reader {
            let batch = batch.with_context(|| {
                format!("cannot read the part {}; run `harvest verify`", part.path)
            })?;
            let n = batch.num_rows();
            let mut arrays: Vec<ArrayRef> = Vec::with_capacity(ds.columns.len());
            for c in &ds.columns {
                let a = match (&part.partition, batch.column_by_name(&c.name)) {
                    (_, Some(a)) => a.clone(),
                    (Some((col, v)), None) if *col == c.name => {
                        partition_array(c.ty, v.as_deref(), n)
                            .with_context(|| format!("part {}", part.path))?
                    }
                    _ => bail!(
                        "the part {} has no column {:?}; run `harvest verify`",
                        part.path,
                        c.name
                    ),
                };
                if a.data_type() != &c.ty.arrow() {
                    bail!(
                        "the part {} holds {:?} as {}, not {} as recorded; run `harvest verify`",
                        part.path,
                        c.name,
                        a.data_type(),
                        c.ty.arrow()
                    );
                }
                arrays.push(a);
            }
            let full = RecordBatch::try_new(schema.clone(), arrays)?;
            if tx.send(full).is_err() {
                return Ok(rows + part_rows); // the writer stopped; it reports why
            }
            part_rows += n as u64;
        }
        if part_rows != part.rows {
            bail!(
                "the part {} holds {part_rows} rows but its manifest record says {}; run `harvest verify`",
                part.path,
                part.rows
            );
        }
        rows += part_rows;
    }
    Ok(rows)
}

fn extension(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Csv => "csv",
        ExportFormat::Ndjson => "ndjson",
        ExportFormat::Parquet => "parquet",
    }
}

fn make_sink<'a, W: Write + Send + 'a>(
    f: ExportFormat,
    w: W,
    props: &parquet::file::properties::WriterProperties,
) -> Box<dyn Sink + 'a> {
    match f {
        ExportFormat::Csv => Box::new(CsvSink {
            w,
            line: Vec::new(),
        }),
        ExportFormat::Ndjson => Box::new(NdjsonSink {
            w,
            keys: vec![],
            line: Vec::new(),
            cell: Vec::new(),
        }),
        ExportFormat::Parquet => Box::new(ParquetSink {
            w: Some(w),
            writer: None,
            props: props.clone(),
        }),
    }
}

/// Write the export to `dest` atomically; (rows, bytes, sha256 when `hash`: the cache records
/// it; a plain `--output` is not hashed).
fn export_to_file(
    out: &Path,
    ds: &Dataset,
    f: ExportFormat,
    dest: &Path,
    props: &parquet::file::properties::WriterProperties,
    hash: bool,
) -> anyhow::Result<(u64, u64, Option<String>)> {
    if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsutil::create_dir_all_durable(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = crate::fsutil::AtomicFile::create(dest)
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let mut hashing = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: hash.then(<sha2::Sha256 as sha2::Digest>::new),
        bytes: 0,
    };
    let rows = {
        let mut sink = make_sink(f, &mut hashing, props);
        let rows = stream(out, ds, sink.as_mut())?;
        sink.finish()?;
        rows
    };
    let Hashing {
        inner,
        hasher,
        bytes,
    } = hashing;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.commit()
        .with_context(|| format!("cannot publish {}", dest.display()))?;
    Ok((
        rows,
        bytes,
        hasher.map(|h| crate::manifest::hex(&sha2::Digest::finalize(h))),
    ))
}

struct Hashing<W: Write> {
    inner: W,
    hasher: Option<sha2::Sha256>,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            sha2::Digest::update(h, &buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<parquet::errors::ParquetError>()
                .is_some_and(|p| p.to_string().contains("Broken pipe"))
    })
}

pub fn run(args: &ExportArgs, printer: Printer) -> anyhow::Result<()> {
    if !crate::remote::is_remote(&args.out) {
        return run_on(args, &args.out, printer);
    }
    // Object storage: read a copy of the manifests and the Parquet parts (not the snapshots).
    if args.cache {
        return Err(UsageError::with_hint(
            format!(
                "--cache writes into the output directory, and {} is object storage",
                args.out.display()
            ),
            "export to a file with --output FILE (or to stdout)",
        )
        .into());
    }
    let copy = crate::remote::local_copy(&args.out, &args.s3.options(), |rel| {
        rel.starts_with("parquet/")
    })?;
    run_on(args, copy.path(), printer)
}

fn run_on(args: &ExportArgs, out: &Path, printer: Printer) -> anyhow::Result<()> {
    let writers = crate::writers::list(out);
    if !writers.is_empty() && !out.join(crate::manifest::FILE_NAME).is_file() {
        return Err(UsageError::with_hint(
            format!(
                "{} is shared by writers ({}), and export does not read shared DIRs yet",
                args.out.display(),
                writers.join(", ")
            ),
            "its datasets are Delta tables: read them with a Delta reader (deltalake, polars, DuckDB's delta_scan)",
        )
        .into());
    }
    if !out.join(crate::manifest::FILE_NAME).is_file() {
        return Err(UsageError::with_hint(
            format!(
                "{} has no {}: it is not a harvest output directory",
                args.out.display(),
                crate::manifest::FILE_NAME
            ),
            "pass the --out DIR of a harvest, incremental or sql-extract run",
        )
        .into());
    }
    // Exporting into the cache writes the manifest: one writer at a time.
    let _lock = if args.cache {
        Some(crate::lock::DirLock::acquire(out, args.wait_lock)?)
    } else {
        None
    };
    let records = crate::manifest::read_records(out)?;
    let Some(mut ds) = live_dataset(&records, &args.dataset) else {
        let names = dataset_names(&records);
        return Err(UsageError::with_hint(
            format!("{} has no dataset {:?}", args.out.display(), args.dataset),
            if names.is_empty() {
                "it holds no dataset yet".to_string()
            } else {
                format!(
                    "its datasets: {}",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                )
            },
        )
        .into());
    };
    if !ds.unfinished.is_empty() {
        tracing::warn!(
            "{}: {} part(s) of a run that has not completed the dataset are left out (a rerun resumes or removes them)",
            args.dataset,
            ds.unfinished.len()
        );
    }
    if ds.parts.is_empty() {
        bail!(
            "dataset {:?} has no live parts: every recorded part belongs to an unfinished run; rerun the harvest to complete it",
            args.dataset
        );
    }
    if let Some(wanted) = &args.columns {
        ds.columns = select_columns(&ds.columns, wanted, &args.dataset)?;
    }
    let settings = crate::parquet_sink::SinkSettings::default();
    let props = crate::parquet_sink::writer_properties(&settings)?;
    let f = args.format;
    if args.cache {
        return export_cached(out, &args.dataset, &ds, f, &props, &records, printer);
    }
    let started = std::time::Instant::now();
    match args.output.as_deref().filter(|p| *p != Path::new("-")) {
        Some(dest) => {
            let (rows, bytes, _) = export_to_file(out, &ds, f, dest, &props, false)?;
            printer.summary(&format!(
                "exported {} ({} parts, {rows} rows) as {} to {}: {:.1} MB in {:.1}s",
                args.dataset,
                ds.parts.len(),
                extension(f),
                dest.display(),
                bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            ));
        }
        None => {
            // The data itself, not a log line: straight to stdout, unredacted, byte for byte.
            let w = BufWriter::with_capacity(1 << 20, std::io::stdout());
            let result = (|| {
                let mut sink = make_sink(f, w, &props);
                let rows = stream(out, &ds, sink.as_mut())?;
                sink.finish()?;
                Ok::<u64, anyhow::Error>(rows)
            })();
            match result {
                Ok(rows) => tracing::info!("exported {} ({rows} rows) to stdout", args.dataset),
                // The reader went away (`| head`): that is its choice, not a failure.
                Err(e) if is_broken_pipe(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `--cache`: the export named by its digest, reused while the dataset is unchanged.
fn export_cached(
    out: &Path,
    name: &str,
    ds: &Dataset,
    f: ExportFormat,
    props: &parquet::file::properties::WriterProperties,
    records: &[Value],
    printer: Printer,
) -> anyhow::Result<()> {
    let ext = extension(f);
    let mut key = format!("harvest-export-v1\nformat={ext}\n");
    // The columns exported (all of them, or a --columns selection), in order.
    key.push_str(&format!(
        "columns={}\n",
        ds.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    ));
    if f == ExportFormat::Parquet {
        key.push_str("zstd=3;row_group_rows=131072\n");
    }
    for p in &ds.parts {
        key.push_str(&format!("{} {}\n", p.path, p.sha256));
    }
    let digest = sha256_hex(key.as_bytes());
    let dir_rel = format!("exports/{}/{ext}", crate::fsutil::sanitize_component(name));
    let rel = format!("{dir_rel}/{digest}.{ext}");
    let dest = out.join(&rel);
    // Recorded exports of this dataset and format that no sweep removed.
    let swept: HashSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "export_sweep")
        .flat_map(|r| r["paths"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let live: BTreeMap<&str, &Value> = records
        .iter()
        .filter(|r| r["kind"] == "export" && r["dataset"] == name && r["format"] == ext)
        .filter_map(|r| r["path"].as_str().map(|p| (p, r)))
        .filter(|(p, _)| !swept.contains(p))
        .collect();
    if let Some(rec) = live.get(rel.as_str())
        && dest.is_file()
        && std::fs::metadata(&dest).map(|m| m.len()).ok() == rec["bytes"].as_u64()
    {
        tracing::info!("{name}: cache hit, the dataset is unchanged since this export");
        printer.summary(&format!(
            "cache hit: {} (not exported again)",
            dest.display()
        ));
        printer.stdout(&format!("{}\n", dest.display()));
        return Ok(());
    }
    let started = std::time::Instant::now();
    let (rows, bytes, sha) = export_to_file(out, ds, f, &dest, props, true)?;
    let (mut manifest, _) = Manifest::open(out)?;
    let run_id = crate::commands::harvest::new_run_id();
    manifest.append(
        "export",
        &run_id,
        obj(json!({
            "dataset": name,
            "format": ext,
            "path": rel,
            "sha256": sha,
            "bytes": bytes,
            "rows": rows,
            "digest": digest,
            "parts": ds.parts.iter().map(|p| p.path.clone()).collect::<Vec<_>>(),
            "exported_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })),
    )?;
    // Older exports of the same dataset and format: recorded as removed, then removed.
    let stale: Vec<String> = live
        .keys()
        .filter(|p| **p != rel)
        .map(|p| p.to_string())
        .collect();
    if !stale.is_empty() {
        manifest.append(
            "export_sweep",
            &run_id,
            obj(json!({ "dataset": name, "format": ext, "paths": stale })),
        )?;
        for p in &stale {
            let _ = std::fs::remove_file(out.join(p));
        }
        let _ = crate::fsutil::fsync_dir(&out.join(&dir_rel));
    }
    printer.summary(&format!(
        "exported {name} ({} parts, {rows} rows) as {ext} to {}: {:.1} MB in {:.1}s{}",
        ds.parts.len(),
        dest.display(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        if stale.is_empty() {
            String::new()
        } else {
            format!("; removed {} older export(s)", stale.len())
        }
    ));
    printer.stdout(&format!("{}\n", dest.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let mut v = vec![];
        for s in ["plain", "a,b", "say \"hi\"", "two\nlines", ""] {
            csv_field(&mut v, s);
            v.push(b'|');
        }
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|\"\"|"
        );
    }
}
