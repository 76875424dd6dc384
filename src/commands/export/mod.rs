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

mod formats;

use self::formats::*;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use serde_json::{Value, json};

use crate::cli::{ExportArgs, ExportFormat};
use crate::error::UsageError;
use crate::printer::Printer;
use crate::run::context::obj;
use crate::schema::{ColType, ColumnPlan, arrow_schema};
use crate::store::manifest::{Manifest, sha256_hex};

/// One live part of a dataset.
#[derive(Debug, Clone)]
pub struct LivePart {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
    /// The partition column and its value's text (`None`: NULL), for a partitioned dataset.
    pub partition: Option<(String, Option<String>)>,
    /// The columns its manifest line records (fewer than the dataset's when the schema
    /// evolved after it was written).
    pub columns: Vec<String>,
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
    live_parts(records, name, "parquet")
}

/// The live parts of `name`'s quarantine (rows that failed its checks).
pub fn live_quarantine(records: &[Value], name: &str) -> Option<Dataset> {
    live_parts(records, name, "quarantine")
}

/// The live parts of `name` that `kind` lines (`parquet` or `quarantine`) record.
fn live_parts(records: &[Value], name: &str, kind: &str) -> Option<Dataset> {
    let finished = crate::run::resume::finished_runs(records, name);
    let superseded = crate::run::resume::superseded_paths(records);
    let mut columns = None;
    let mut parts = vec![];
    let mut unfinished = vec![];
    let mut any = false;
    for r in records
        .iter()
        .filter(|r| r["kind"] == kind && r["output"] == name)
    {
        any = true;
        let Some(path) = r["path"].as_str() else {
            continue;
        };
        if superseded.contains(path) {
            continue;
        }
        // A run stopped by `max_failed` (exit 6) is unfinished, and its quarantine is what
        // its user needs to read: quarantine parts count whether or not their run ended.
        if kind == "parquet" && !r["run_id"].as_str().is_some_and(|id| finished.contains(id)) {
            unfinished.push(path.to_string());
            continue;
        }
        // The dataset's columns: every part's, in the order they first appeared (a schema
        // that evolved has parts without the later columns; they read as NULL there).
        let plan =
            serde_json::from_value::<Vec<ColumnPlan>>(r["schema"].clone()).unwrap_or_default();
        let part_columns: Vec<String> = plan.iter().map(|c| c.name.clone()).collect();
        let all: &mut Vec<ColumnPlan> = columns.get_or_insert_with(Vec::new);
        for c in plan {
            if !all.iter().any(|k| k.name == c.name) {
                all.push(c.restored());
            }
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
            columns: part_columns,
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
                    // A part written before the column was added (schema evolution).
                    _ if !part.columns.contains(&c.name) => {
                        arrow::array::new_null_array(&c.ty.arrow(), n)
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

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<parquet::errors::ParquetError>()
                .is_some_and(|p| p.to_string().contains("Broken pipe"))
    })
}

pub fn run(args: &ExportArgs, printer: Printer) -> anyhow::Result<()> {
    if !crate::store::remote::is_remote(&args.out) {
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
    let copy = crate::store::remote::local_copy(&args.out, &args.s3.options(), |rel| {
        rel.starts_with("parquet/")
    })?;
    run_on(args, copy.path(), printer)
}

fn run_on(args: &ExportArgs, out: &Path, printer: Printer) -> anyhow::Result<()> {
    let writers = crate::store::writers::list(out);
    if !writers.is_empty() && !out.join(crate::store::manifest::FILE_NAME).is_file() {
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
    if !out.join(crate::store::manifest::FILE_NAME).is_file() {
        return Err(UsageError::with_hint(
            format!(
                "{} has no {}: it is not a harvest output directory",
                args.out.display(),
                crate::store::manifest::FILE_NAME
            ),
            "pass the --out DIR of a harvest, incremental or sql-extract run",
        )
        .into());
    }
    // Exporting into the cache writes the manifest: one writer at a time.
    let _lock = if args.cache {
        Some(crate::store::lock::DirLock::acquire(out, args.wait_lock)?)
    } else {
        None
    };
    let records = crate::store::manifest::read_records(out)?;
    let found = if args.quarantine {
        live_quarantine(&records, &args.dataset)
    } else {
        live_dataset(&records, &args.dataset)
    };
    if args.quarantine && found.is_none() && live_dataset(&records, &args.dataset).is_some() {
        return Err(UsageError::with_hint(
            format!("dataset {:?} has no quarantined rows", args.dataset),
            "no run of it quarantined a row (only tables with `checks` quarantine); export the dataset itself without --quarantine",
        )
        .into());
    }
    let Some(mut ds) = found else {
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
    let settings = crate::store::parts::SinkSettings::default();
    let props = crate::store::parts::writer_properties(&settings)?;
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
    let dir_rel = format!(
        "exports/{}/{ext}",
        crate::store::fsutil::sanitize_component(name)
    );
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
    let run_id = crate::run::context::new_run_id();
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
        let _ = crate::store::fsutil::fsync_dir(&out.join(&dir_rel));
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
