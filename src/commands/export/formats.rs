//! The output formats of `export`: CSV, NDJSON and Parquet writers fed Arrow batches, each
//! value written straight into the output line; the file written under a temp name and
//! hashed on the way.

use std::io::BufWriter;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use anyhow::bail;
use arrow::array::Array;
use arrow::array::AsArray;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use base64::Engine;

use crate::cli::ExportFormat;
use crate::commands::export::Dataset;
use crate::commands::export::stream;

/// Where the rows go.
pub(super) trait Sink {
    fn start(&mut self, schema: &SchemaRef) -> std::io::Result<()>;
    fn batch(&mut self, b: &RecordBatch) -> anyhow::Result<()>;
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

pub(super) fn csv_field(out: &mut Vec<u8>, s: &str) {
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
pub(super) enum Col<'a> {
    Int(&'a arrow::array::Int64Array),
    Float(&'a arrow::array::Float64Array),
    Bool(&'a arrow::array::BooleanArray),
    Text(&'a arrow::array::StringArray),
    Bin(&'a arrow::array::BinaryArray),
    Date(&'a arrow::array::Date32Array),
    Ts(&'a arrow::array::TimestampMicrosecondArray),
}

impl<'a> Col<'a> {
    pub(super) fn of(a: &'a dyn Array) -> anyhow::Result<Self> {
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

    pub(super) fn is_null(&self, i: usize) -> bool {
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
    pub(super) fn write(
        &self,
        i: usize,
        out: &mut Vec<u8>,
        scratch: &mut String,
    ) -> anyhow::Result<bool> {
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

pub(super) fn columns_of(b: &RecordBatch) -> anyhow::Result<Vec<Col<'_>>> {
    b.columns().iter().map(|a| Col::of(a.as_ref())).collect()
}

/// Quote `out[start..]` in place as one CSV field when it needs quoting (or is empty text).
pub(super) fn csv_quote_tail(out: &mut Vec<u8>, start: usize, text: bool) {
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
pub(super) fn json_escape_tail(out: &mut Vec<u8>, start: usize) {
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
pub(super) fn flush_lines(w: &mut impl Write, line: &mut Vec<u8>, all: bool) -> anyhow::Result<()> {
    if all || line.len() >= 1 << 16 {
        w.write_all(line)?;
        line.clear();
    }
    Ok(())
}

pub(super) struct CsvSink<W: Write> {
    pub(super) w: W,
    pub(super) line: Vec<u8>,
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

pub(super) struct NdjsonSink<W: Write> {
    pub(super) w: W,
    /// Each column's `"name":` prefix, JSON-escaped once.
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) line: Vec<u8>,
    pub(super) cell: Vec<u8>,
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

pub(super) struct ParquetSink<W: Write + Send> {
    pub(super) w: Option<W>,
    pub(super) writer: Option<parquet::arrow::ArrowWriter<W>>,
    pub(super) props: parquet::file::properties::WriterProperties,
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

pub(super) fn extension(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Csv => "csv",
        ExportFormat::Ndjson => "ndjson",
        ExportFormat::Parquet => "parquet",
    }
}

pub(super) fn make_sink<'a, W: Write + Send + 'a>(
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
pub(super) fn export_to_file(
    out: &Path,
    ds: &Dataset,
    f: ExportFormat,
    dest: &Path,
    props: &parquet::file::properties::WriterProperties,
    hash: bool,
) -> anyhow::Result<(u64, u64, Option<String>)> {
    if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::store::fsutil::create_dir_all_durable(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = crate::store::fsutil::AtomicFile::create(dest)
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
        hasher.map(|h| crate::store::manifest::hex(&sha2::Digest::finalize(h))),
    ))
}

pub(super) struct Hashing<W: Write> {
    pub(super) inner: W,
    pub(super) hasher: Option<sha2::Sha256>,
    pub(super) bytes: u64,
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
