//! The Parquet writer shared by `harvest`, `incremental` and `sql-extract`.
//!
//! Guarantees:
//! - Streams: rows go into small Arrow batches, batches into a zstd-compressed `ArrowWriter`
//!   whose row group is flushed at a row count or when the buffered bytes of all open parts pass
//!   a budget. Memory is bounded by that budget, not by the table's size.
//! - Layout: `DIR/parquet/<table>/[<col>=<value>/]part-<run_id>-<n>.parquet` (quarantine
//!   parts: `DIR/quarantine/<table>/part-<run_id>-<n>.parquet`), path components sanitized; the partition column lives in the path (Hive style), not in the file.
//! - Atomic parts: a part is written under a temp name, hashed as it is written, fsynced and
//!   renamed only when complete ([`crate::store::fsutil::AtomicFile`]). [`TableSink::checkpoint`] closes
//!   every open part together, so a checkpoint is a clean page boundary: every row of every page
//!   before it is in a closed part, none after it.
//! - One schema per table: every part of a sink has the same Arrow schema; an empty result
//!   still yields one valid zero-row part with the table's columns.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::schema::{BatchBuilder, ColumnPlan, RowContext, arrow_schema};
use crate::store::fsutil::{AtomicFile, create_dir_all_durable, sanitize_component};

/// Hive's name for a NULL partition value (pyarrow and DuckDB read it as NULL).
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Rows per row group (at most).
    pub row_group_rows: usize,
    /// A checkpoint (all parts closed) is due after this many rows.
    pub part_rows: u64,
    pub zstd_level: i32,
    /// Rows buffered per partition before they are handed to the Parquet encoder.
    pub batch_rows: usize,
    /// Encoded-but-unflushed bytes allowed across all open parts.
    pub memory_budget: usize,
    /// A checkpoint is due when more parts than this are open (many partitions).
    pub max_open_parts: usize,
    /// Partition directories spelled in ASCII only ([`crate::store::fsutil::ascii_component`]), as
    /// Delta tables need: their readers disagree on how to decode anything else.
    pub ascii_paths: bool,
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self {
            row_group_rows: 128 * 1024,
            part_rows: 1_000_000,
            zstd_level: 3,
            batch_rows: 8192,
            memory_budget: 24 * 1024 * 1024,
            max_open_parts: 64,
            ascii_paths: false,
        }
    }
}

/// A part file that was closed, durable and visible under its final name.
#[derive(Debug, Clone)]
pub struct ClosedPart {
    /// Relative to DIR, with `/` separators.
    pub rel_path: String,
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
    /// The partition value (original text; `None` for NULL) when partitioned.
    pub partition: Option<Option<String>>,
}

struct HashingWriter {
    inner: AtomicFile,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct OpenPart {
    writer: ArrowWriter<HashingWriter>,
    builder: BatchBuilder,
    rows: u64,
    rel_path: String,
    partition: Option<Option<String>>,
}

pub struct TableSink {
    out_dir: PathBuf,
    table: String,
    table_rel: String,
    run_id: String,
    settings: SinkSettings,
    file_plans: Vec<ColumnPlan>,
    file_schema: SchemaRef,
    /// Index (in the full row) of the partition column, and the other columns' indexes.
    partition_idx: Option<usize>,
    partition_name: Option<String>,
    keep_idx: Vec<usize>,
    open: BTreeMap<Option<String>, OpenPart>,
    next_part: u64,
    rows_since_checkpoint: u64,
    parts_closed: u64,
    /// Write a zero-row part when the run wrote none (off when the dataset already has parts).
    empty_part: bool,
}

impl TableSink {
    /// `plans` are the table's full column list; `partition_by` names one of them.
    pub fn new(
        out_dir: &Path,
        table: &str,
        run_id: &str,
        plans: &[ColumnPlan],
        partition_by: Option<&str>,
        settings: SinkSettings,
    ) -> anyhow::Result<Self> {
        let partition_idx = match partition_by {
            None => None,
            Some(col) => Some(plans.iter().position(|p| p.name == col).ok_or_else(|| {
                crate::error::UsageError::with_hint(
                    format!("cannot partition table {table:?} by {col:?}: it has no such column"),
                    format!(
                        "its columns are: {}",
                        plans
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?),
        };
        let keep_idx: Vec<usize> = (0..plans.len())
            .filter(|i| Some(*i) != partition_idx)
            .collect();
        let file_plans: Vec<ColumnPlan> = keep_idx.iter().map(|i| plans[*i].clone()).collect();
        Ok(Self {
            out_dir: out_dir.to_path_buf(),
            table: table.to_string(),
            table_rel: format!("parquet/{}", sanitize_component(table)),
            run_id: run_id.to_string(),
            settings,
            file_schema: arrow_schema(&file_plans),
            file_plans,
            partition_idx,
            partition_name: partition_by.map(str::to_string),
            keep_idx,
            open: BTreeMap::new(),
            next_part: 1,
            rows_since_checkpoint: 0,
            parts_closed: 0,
            empty_part: true,
        })
    }

    /// Take the table's widened column list (`plans`: the old columns, then new ones) for the
    /// parts opened from now on. Only between checkpoints: an open part keeps its schema.
    pub fn widen(&mut self, plans: &[ColumnPlan]) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.open.is_empty(),
            "internal: the columns of {:?} changed while a part was open",
            self.table
        );
        self.keep_idx = (0..plans.len())
            .filter(|i| Some(*i) != self.partition_idx)
            .collect();
        self.file_plans = self.keep_idx.iter().map(|i| plans[*i].clone()).collect();
        self.file_schema = arrow_schema(&self.file_plans);
        Ok(())
    }

    /// Write the parts under `root/<table>/` instead of `parquet/<table>/` (quarantine parts).
    /// Only before the first row.
    pub fn under(mut self, root: &str) -> Self {
        debug_assert!(self.open.is_empty());
        self.table_rel = format!("{root}/{}", sanitize_component(&self.table));
        self
    }

    /// Do not write a zero-row part for a run without rows (the dataset has parts already).
    pub fn skip_empty_part(&mut self) {
        self.empty_part = false;
    }

    /// Continue the part numbering of a resumed run whose last recorded part was `last_part`.
    pub fn continue_after_part(&mut self, last_part: u64) {
        self.next_part = last_part + 1;
        self.parts_closed = last_part;
    }

    /// True while no row and no part has gone into this sink.
    pub fn is_empty(&self) -> bool {
        self.parts_closed == 0 && self.open.is_empty()
    }

    /// The directory (relative to DIR) holding this table's parts.
    pub fn table_rel(&self) -> &str {
        &self.table_rel
    }

    /// The Arrow schema of every part file.
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    /// Add one page of rows (each in full-column order).
    pub fn push_rows(&mut self, rows: &[Vec<Value>], page: u64) -> anyhow::Result<()> {
        let mut refs: Vec<&Value> = Vec::with_capacity(self.keep_idx.len());
        for (i, row) in rows.iter().enumerate() {
            let key = match self.partition_idx {
                None => None,
                Some(p) => Some(partition_key(&row[p]).map_err(|why| {
                    anyhow::anyhow!(
                        "table {:?}, page {page}, row {}: cannot partition by this value: {why}",
                        self.table,
                        i + 1
                    )
                })?),
            };
            let map_key = key.clone().flatten();
            if !self.open.contains_key(&map_key) {
                let part = self.open_part(key)?;
                self.open.insert(map_key.clone(), part);
            }
            let part = self.open.get_mut(&map_key).expect("inserted above");
            refs.clear();
            refs.extend(self.keep_idx.iter().map(|k| &row[*k]));
            let ctx = RowContext {
                table: &self.table,
                page,
                row: i,
            };
            part.builder.push(&refs, &ctx).map_err(anyhow::Error::msg)?;
            part.rows += 1;
            if part.builder.len() >= self.settings.batch_rows {
                let batch = part.builder.finish()?;
                part.writer
                    .write(&batch)
                    .context("Parquet encoding failed")?;
            }
        }
        self.rows_since_checkpoint += rows.len() as u64;
        self.enforce_memory_budget()
    }

    /// Write a ready batch (file columns only) to the part of partition `key` (`None` when not
    /// partitioned; `Some(None)` for a NULL partition value).
    pub fn write_batch(
        &mut self,
        key: Option<Option<String>>,
        batch: &arrow::record_batch::RecordBatch,
    ) -> anyhow::Result<()> {
        let map_key = key.clone().flatten();
        if !self.open.contains_key(&map_key) {
            let part = self.open_part(key)?;
            self.open.insert(map_key.clone(), part);
        }
        let part = self.open.get_mut(&map_key).expect("inserted above");
        part.writer
            .write(batch)
            .context("Parquet encoding failed")?;
        part.rows += batch.num_rows() as u64;
        self.rows_since_checkpoint += batch.num_rows() as u64;
        self.enforce_memory_budget()
    }

    /// The plans of the columns stored in the files (the partition column excluded).
    pub fn file_plans(&self) -> &[ColumnPlan] {
        &self.file_plans
    }

    /// The index of the partition column in the full row, if partitioned.
    pub fn partition_index(&self) -> Option<usize> {
        self.partition_idx
    }

    /// True when enough rows or open parts have accumulated that a checkpoint is due.
    pub fn checkpoint_due(&self) -> bool {
        self.rows_since_checkpoint >= self.settings.part_rows
            || self.open.len() > self.settings.max_open_parts
    }

    /// Close every open part: each becomes durable and visible. Returns what was closed.
    pub fn checkpoint(&mut self) -> anyhow::Result<Vec<ClosedPart>> {
        let open = std::mem::take(&mut self.open);
        let mut closed = Vec::with_capacity(open.len());
        for (_, part) in open {
            closed.push(self.close_part(part)?);
        }
        self.rows_since_checkpoint = 0;
        Ok(closed)
    }

    /// Close everything; if this run wrote no part at all, write one empty part so that the
    /// table exists with its schema.
    pub fn finish(mut self) -> anyhow::Result<Vec<ClosedPart>> {
        let mut closed = self.checkpoint()?;
        if self.parts_closed == 0 && self.empty_part {
            let part = self.open_part(None)?;
            closed.push(self.close_part(part)?);
        }
        Ok(closed)
    }

    fn open_part(&mut self, key: Option<Option<String>>) -> anyhow::Result<OpenPart> {
        let dir_rel = match &key {
            None => self.table_rel.clone(),
            Some(v) => {
                let col = self.partition_name.as_deref().unwrap_or_default();
                let name: fn(&str) -> String = if self.settings.ascii_paths {
                    crate::store::fsutil::ascii_component
                } else {
                    sanitize_component
                };
                let val = match v {
                    None => NULL_PARTITION.to_string(),
                    Some(s) => name(s),
                };
                format!("{}/{}={}", self.table_rel, name(col), val)
            }
        };
        let name = format!("part-{}-{:05}.parquet", self.run_id, self.next_part);
        self.next_part += 1;
        let dir = self.out_dir.join(&dir_rel);
        create_dir_all_durable(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dest = dir.join(&name);
        let file = AtomicFile::create(&dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(
                self.settings.zstd_level,
            )?))
            .set_max_row_group_row_count(Some(self.settings.row_group_rows))
            .set_created_by(concat!("harvest ", env!("CARGO_PKG_VERSION")).to_string())
            .build();
        let writer = ArrowWriter::try_new(
            HashingWriter {
                inner: file,
                hasher: Sha256::new(),
                bytes: 0,
            },
            self.file_schema.clone(),
            Some(props),
        )?;
        Ok(OpenPart {
            writer,
            builder: BatchBuilder::new(&self.file_plans),
            rows: 0,
            rel_path: format!("{dir_rel}/{name}"),
            partition: key,
        })
    }

    fn close_part(&mut self, mut part: OpenPart) -> anyhow::Result<ClosedPart> {
        if !part.builder.is_empty() {
            let batch = part.builder.finish()?;
            part.writer
                .write(&batch)
                .context("Parquet encoding failed")?;
        }
        let hw = part
            .writer
            .into_inner()
            .context("cannot finish the Parquet file")?;
        let sha256 = crate::store::manifest::hex(&hw.hasher.finalize());
        let bytes = hw.bytes;
        hw.inner
            .commit()
            .with_context(|| format!("cannot publish {}", part.rel_path))?;
        self.parts_closed += 1;
        Ok(ClosedPart {
            rel_path: part.rel_path,
            sha256,
            bytes,
            rows: part.rows,
            partition: part.partition,
        })
    }

    /// Flush the row group of the part holding the most buffered bytes until under budget.
    fn enforce_memory_budget(&mut self) -> anyhow::Result<()> {
        loop {
            let total: usize = self
                .open
                .values()
                .map(|p| p.writer.in_progress_size())
                .sum();
            if total <= self.settings.memory_budget {
                return Ok(());
            }
            let Some(biggest) = self
                .open
                .values_mut()
                .max_by_key(|p| p.writer.in_progress_size())
            else {
                return Ok(());
            };
            biggest
                .writer
                .flush()
                .context("Parquet row-group flush failed")?;
        }
    }
}

/// The Parquet writer settings every part uses: zstd, bounded row groups, our name.
pub fn writer_properties(settings: &SinkSettings) -> anyhow::Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(settings.zstd_level)?))
        .set_max_row_group_row_count(Some(settings.row_group_rows))
        .set_created_by(concat!("harvest ", env!("CARGO_PKG_VERSION")).to_string())
        .build())
}

/// The text of a partition value (`None` for NULL).
fn partition_key(v: &Value) -> Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err("blobs cannot name a partition"),
    }
}
