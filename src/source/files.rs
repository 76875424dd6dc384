//! Files as a source (`kind = "files"`): local CSV, NDJSON and Parquet files matched by a
//! glob, each read as a stream of row chunks.
//!
//! Guarantees:
//! - Listing is deterministic: the matches of a glob, sorted by path. A glob's wildcards
//!   (`*`, `?`, `[…]`) are allowed in its last path component only, so a listing never walks
//!   a tree. A file whose name does not match `name_pattern` is reported, not read.
//! - Reading never holds a whole file: [`Chunks`] yields at most `max_rows` rows at a time
//!   (CSV through the `csv` crate's streaming reader, NDJSON line by line, Parquet batch by
//!   batch), so memory is bounded whatever the file's size.
//! - Values: CSV fields are text, an empty field is NULL, and a column `types` declares
//!   `integer`, `float` or `boolean` is converted (a field that does not convert stays text,
//!   for the writer or the `type` check to name). NDJSON records are flattened as REST records
//!   are (`a__b`). Parquet values keep their file's types.
//! - A CSV row with a different number of fields than the header, an NDJSON line that is not
//!   JSON, or an unreadable Parquet file is an error naming the file and the row or line.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::schema::{ColType, ColumnPlan};
use crate::source::Page;

/// How a file's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Ndjson,
    Parquet,
}

impl FileFormat {
    /// The format a file name's extension says (`.csv`, `.ndjson`/`.jsonl`, `.parquet`).
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(FileFormat::Csv)
        } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
            Some(FileFormat::Ndjson)
        } else if lower.ends_with(".parquet") {
            Some(FileFormat::Parquet)
        } else {
            None
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Ndjson => "ndjson",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// A `files` table: which files, how to read them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileTable {
    /// A path whose last component may hold wildcards (`data/hired_employees*.csv`).
    pub glob: String,
    /// The format of every file (`None`: each file's extension says).
    pub format: Option<FileFormat>,
    /// Only files whose name matches are read; the others are reported.
    #[serde(serialize_with = "regex_text")]
    pub name_pattern: Option<regex::Regex>,
}

fn regex_text<S: serde::Serializer>(r: &Option<regex::Regex>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_str(r.as_str()),
        None => s.serialize_none(),
    }
}

/// Whether `pattern` has glob wildcards.
fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A glob's last component as a regex (anchored).
pub fn glob_regex(pattern: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    re.push('^');
                }
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    if c == '\\' || c == '^' {
                        re.push('\\');
                    }
                    re.push(c);
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("the glob {pattern:?} is not usable ({e})"))
}

/// The files a glob names, sorted by path.
pub fn list(glob: &str) -> Result<Vec<PathBuf>, String> {
    let path = Path::new(glob);
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => return Err(format!("{glob:?} names no file")),
    };
    if has_wildcards(&dir.to_string_lossy()) {
        return Err(format!(
            "{glob:?} has wildcards in a directory; only the file name may have them (e.g. data/2024/*.csv)"
        ));
    }
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    if !has_wildcards(&name) {
        return Ok(if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            vec![]
        });
    }
    let re = glob_regex(&name)?;
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list the directory {} ({e})", dir.display()))?;
    let mut out = vec![];
    for e in entries {
        let e = e.map_err(|e| format!("cannot list the directory {} ({e})", dir.display()))?;
        let n = e.file_name().to_string_lossy().into_owned();
        // Temp and hidden files are not data (an upload still being written, an editor's).
        if n.starts_with('.') || !re.is_match(&n) {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_file()) {
            out.push(dir.join(n));
        }
    }
    out.sort();
    Ok(out)
}

/// The rows of one file, a chunk at a time.
pub struct Chunks {
    reader: Reader,
    path: String,
    /// Rows read so far (for messages: CSV rows count the header as row 1).
    read: u64,
}

enum Reader {
    Csv {
        rows: csv::Reader<File>,
        header: Vec<String>,
        types: Vec<Option<ColType>>,
    },
    Ndjson(BufReader<File>),
    Parquet(parquet::arrow::arrow_reader::ParquetRecordBatchReader),
}

impl Chunks {
    /// Open `path` (a snapshot) as `format`; `types` converts CSV fields.
    pub fn open(
        path: &Path,
        format: FileFormat,
        types: &BTreeMap<String, ColType>,
    ) -> Result<Self, String> {
        let shown = path.display().to_string();
        let open = || File::open(path).map_err(|e| format!("cannot open {shown} ({e})"));
        let reader = match format {
            FileFormat::Csv => {
                let mut file = open()?;
                // A UTF-8 byte order mark (spreadsheet exports write one) is not data.
                let mut bom = [0u8; 3];
                use std::io::{Read, Seek};
                let n = file
                    .read(&mut bom)
                    .map_err(|e| format!("cannot read {shown} ({e})"))?;
                if !(n == 3 && bom == *b"\xEF\xBB\xBF") {
                    file.rewind()
                        .map_err(|e| format!("cannot read {shown} ({e})"))?;
                }
                let mut rows = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .from_reader(file);
                let header: Vec<String> = rows
                    .headers()
                    .map_err(|e| format!("{shown}: the CSV header row is unreadable ({e})"))?
                    .iter()
                    .map(str::to_string)
                    .collect();
                let mut seen = std::collections::HashSet::new();
                if let Some(dup) = header.iter().find(|h| !seen.insert(h.as_str())) {
                    return Err(format!(
                        "{shown}: the CSV header names the column {dup:?} twice"
                    ));
                }
                let types = header.iter().map(|h| types.get(h).copied()).collect();
                Reader::Csv {
                    rows,
                    header,
                    types,
                }
            }
            FileFormat::Ndjson => Reader::Ndjson(BufReader::new(open()?)),
            FileFormat::Parquet => {
                let b =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open()?)
                        .map_err(|e| format!("{shown} is not a readable Parquet file ({e})"))?;
                Reader::Parquet(
                    b.with_batch_size(8192)
                        .build()
                        .map_err(|e| format!("{shown} is not a readable Parquet file ({e})"))?,
                )
            }
        };
        Ok(Self {
            reader,
            path: shown,
            read: 0,
        })
    }

    /// The columns a Parquet file declares, typed by the file (for the plan).
    pub fn parquet_columns(path: &Path) -> Result<Vec<ColumnPlan>, String> {
        let f = File::open(path).map_err(|e| format!("cannot open {} ({e})", path.display()))?;
        let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| format!("{} is not a readable Parquet file ({e})", path.display()))?;
        Ok(b.schema()
            .fields()
            .iter()
            .map(|f| ColumnPlan {
                name: f.name().clone(),
                ty: arrow_col_type(f.data_type()),
                reason: "the Parquet file's type".into(),
                numbers_as_text: false,
            })
            .collect())
    }

    /// The next chunk of at most `max_rows` rows (`None` at the end), as a sparse page: its
    /// columns, and rows in their order.
    pub fn next_chunk(&mut self, max_rows: usize) -> Result<Option<Page>, String> {
        let page = match &mut self.reader {
            Reader::Csv {
                rows,
                header,
                types,
            } => {
                let mut out = Vec::new();
                let mut rec = csv::StringRecord::new();
                while out.len() < max_rows {
                    let more = rows.read_record(&mut rec).map_err(|e| {
                        format!(
                            "{}: CSV row {} is unreadable ({e})",
                            self.path,
                            self.read + out.len() as u64 + 2
                        )
                    })?;
                    if !more {
                        break;
                    }
                    out.push(
                        rec.iter()
                            .zip(types.iter())
                            .map(|(f, t)| crate::source::rest::formats::csv_value(f, t.as_ref()))
                            .collect(),
                    );
                }
                Page {
                    columns: Some(header.clone()),
                    rows: out,
                    sparse: true,
                    ..Page::default()
                }
            }
            Reader::Ndjson(lines) => {
                let mut array = Vec::from(&b"["[..]);
                let mut n = 0usize;
                let mut line = String::new();
                while n < max_rows {
                    line.clear();
                    let got = lines
                        .read_line(&mut line)
                        .map_err(|e| format!("cannot read {} ({e})", self.path))?;
                    if got == 0 {
                        break;
                    }
                    let text = line.trim().trim_start_matches('\u{feff}');
                    if text.is_empty() {
                        continue;
                    }
                    if let Err(e) = serde_json::from_str::<&serde_json::value::RawValue>(text) {
                        return Err(format!(
                            "{}: NDJSON record {} is not JSON ({e})",
                            self.path,
                            self.read + n as u64 + 1
                        ));
                    }
                    if n > 0 {
                        array.push(b',');
                    }
                    array.extend_from_slice(text.as_bytes());
                    n += 1;
                }
                array.push(b']');
                if n == 0 {
                    return Ok(None);
                }
                crate::source::rest::records::parse_snapshot(&array, None)
                    .map_err(|why| format!("{}: {why}", self.path))?
            }
            Reader::Parquet(batches) => match batches.next() {
                None => return Ok(None),
                Some(b) => {
                    let b = b.map_err(|e| format!("cannot read {} ({e})", self.path))?;
                    batch_page(&b)?
                }
            },
        };
        if page.rows.is_empty() {
            return Ok(None);
        }
        self.read += page.rows.len() as u64;
        Ok(Some(page))
    }
}

fn arrow_col_type(t: &arrow::datatypes::DataType) -> ColType {
    use arrow::datatypes::DataType as D;
    match t {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            ColType::Integer
        }
        D::Float16 | D::Float32 | D::Float64 | D::Decimal128(..) | D::Decimal256(..) => {
            ColType::Float
        }
        D::Boolean => ColType::Boolean,
        D::Date32 | D::Date64 => ColType::Date,
        D::Timestamp(..) => ColType::Timestamp,
        D::Binary | D::LargeBinary | D::FixedSizeBinary(_) | D::BinaryView => ColType::Blob,
        _ => ColType::Text,
    }
}

/// A Parquet batch's rows as JSON values the writer reads back into the same types.
fn batch_page(b: &arrow::record_batch::RecordBatch) -> Result<Page, String> {
    use arrow::array::Array;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use base64::Engine as _;
    let opts = FormatOptions::default();
    let mut rows: Vec<Vec<Value>> = vec![Vec::with_capacity(b.num_columns()); b.num_rows()];
    for col in b.columns() {
        let ty = arrow_col_type(col.data_type());
        let fmt = ArrayFormatter::try_new(col.as_ref(), &opts).map_err(|e| e.to_string())?;
        let as_f64 = arrow::compute::cast(col, &arrow::datatypes::DataType::Float64).ok();
        let as_i64 = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64).ok();
        for (i, row) in rows.iter_mut().enumerate() {
            if col.is_null(i) {
                row.push(Value::Null);
                continue;
            }
            let text = fmt.value(i).to_string();
            row.push(match ty {
                ColType::Integer => as_i64
                    .as_ref()
                    .and_then(|a| a.as_any().downcast_ref::<arrow::array::Int64Array>())
                    .map_or(Value::String(text), |a| Value::from(a.value(i))),
                ColType::Float => as_f64
                    .as_ref()
                    .and_then(|a| a.as_any().downcast_ref::<arrow::array::Float64Array>())
                    .and_then(|a| serde_json::Number::from_f64(a.value(i)))
                    .map_or(Value::String(text), Value::Number),
                ColType::Boolean => Value::Bool(text == "true"),
                ColType::Blob => {
                    let bytes = arrow::compute::cast(col, &arrow::datatypes::DataType::Binary)
                        .ok()
                        .and_then(|a| {
                            a.as_any()
                                .downcast_ref::<arrow::array::BinaryArray>()
                                .map(|a| a.value(i).to_vec())
                        })
                        .unwrap_or_default();
                    serde_json::json!({
                        "$base64": true,
                        "encoded": base64::engine::general_purpose::STANDARD.encode(bytes),
                    })
                }
                // Dates and timestamps as their ISO text, which the writer parses back.
                _ => Value::String(text),
            });
        }
    }
    Ok(Page {
        columns: Some(
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        ),
        rows,
        sparse: true,
        ..Page::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_the_last_component_only_and_list_sorted() {
        let re = glob_regex("hired_employees*.csv").unwrap();
        assert!(re.is_match("hired_employees_2021.csv"));
        assert!(!re.is_match("hired_employees_2021.csv.bak"));
        assert!(glob_regex("f[!a].csv").unwrap().is_match("fb.csv"));
        assert!(
            list("data/*/x.csv")
                .unwrap_err()
                .contains("only the file name")
        );
        let d = std::env::temp_dir().join(format!("harvest-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for n in ["b.csv", "a.csv", ".a.csv.harvest-tmp", "c.txt"] {
            std::fs::write(d.join(n), "x\n1\n").unwrap();
        }
        let got = list(&format!("{}/*.csv", d.display())).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.csv", "b.csv"]);
    }

    #[test]
    fn csv_chunks_are_bounded_and_typed_by_declaration() {
        let d = std::env::temp_dir().join(format!("harvest-chunks-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("e.csv");
        std::fs::write(&p, "\u{feff}id,name\n1,\"a, b\"\n2,\n3,c\n").unwrap();
        let types = BTreeMap::from([("id".to_string(), ColType::Integer)]);
        let mut c = Chunks::open(&p, FileFormat::Csv, &types).unwrap();
        let first = c.next_chunk(2).unwrap().unwrap();
        assert_eq!(first.columns.as_deref().unwrap(), ["id", "name"]);
        assert_eq!(
            first.rows,
            [vec![1.into(), "a, b".into()], vec![2.into(), Value::Null]]
        );
        assert_eq!(c.next_chunk(2).unwrap().unwrap().rows.len(), 1);
        assert!(c.next_chunk(2).unwrap().is_none());
        std::fs::write(&p, "id,name\n1,a,extra\n").unwrap();
        let mut c = Chunks::open(&p, FileFormat::Csv, &types).unwrap();
        assert!(c.next_chunk(10).unwrap_err().contains("CSV row 2"));
    }
}
