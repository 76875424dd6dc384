//! `verify` of row-driven batches: request ids unique per run and dataset, the responses
//! tiling each batch's snapshot, and the live parts' `_request_id` values exactly the
//! recorded ids with their row counts.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::Value;
use serde_json::json;

use crate::commands::verify::FileClaim;
use crate::commands::verify::Finding;
use crate::commands::verify::Report;
use crate::commands::verify::finding;
use crate::commands::verify::hash_file;
use crate::commands::verify::run_and_output;
use crate::store::manifest::sha256_hex;

/// Row-driven batches: each entry's place in its snapshot, its hash, the uniqueness of its
/// request id, and (for the Parquet check) the rows recorded per id. Ids are kept as their
/// first 16 bytes.
#[derive(Default)]
pub(super) struct RequestIds {
    /// Per (run, dataset): rows recorded per request id (ids with rows only).
    pub(super) rows: HashMap<(String, String), HashMap<u128, u64>>,
    /// Per (run, dataset): every request id seen.
    pub(super) seen: HashMap<(String, String), HashSet<u128>>,
}

pub(super) fn short_id(hex: &str) -> Option<u128> {
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(&hex[..32], 16).ok())
        .flatten()
}

impl RequestIds {
    pub(super) fn check_batch(
        &mut self,
        out: &Path,
        lineno: u64,
        r: &Value,
        entries: &[Value],
        quick: bool,
        report: &Report,
    ) {
        let key = run_and_output(r);
        let path = r["path"].as_str().unwrap_or_default().to_string();
        let bad = |m: String| Finding {
            line: Some(lineno),
            path: Some(path.clone()),
            run_id: Some(key.0.clone()),
            ..finding("request_mismatch", m)
        };
        let body = if quick {
            None
        } else {
            std::fs::read(out.join(&path)).ok()
        };
        let (mut offset, mut rows) = (0u64, 0u64);
        for (i, e) in entries.iter().enumerate() {
            let (off, len) = (e["offset"].as_u64(), e["bytes"].as_u64());
            if off != Some(offset) || len.is_none() {
                report.add(bad(format!(
                    "response {} of the batch does not start where the previous one ends (offset {offset})",
                    i + 1
                )));
                return;
            }
            let len = len.unwrap_or(0);
            if let Some(b) = &body {
                let slice = b.get(offset as usize..(offset + len) as usize);
                if slice.map(sha256_hex).as_deref() != e["sha256"].as_str() {
                    report.add(bad(format!(
                        "response {} ({} bytes at offset {offset}) does not match its recorded sha256",
                        i + 1,
                        len
                    )));
                }
            }
            offset += len;
            let n = e["rows"].as_u64().unwrap_or(0);
            rows += n;
            let Some(id) = e["id"].as_str().and_then(short_id) else {
                report.add(bad(format!("response {} has no valid request id", i + 1)));
                continue;
            };
            if !self.seen.entry(key.clone()).or_default().insert(id) {
                report.add(bad(format!(
                    "request id {} is recorded twice in run {} of dataset {:?}",
                    e["id"].as_str().unwrap_or_default(),
                    key.0,
                    key.1
                )));
            }
            if n > 0 {
                *self
                    .rows
                    .entry(key.clone())
                    .or_default()
                    .entry(id)
                    .or_default() += n;
            }
        }
        if Some(offset) != r["bytes"].as_u64() || Some(rows) != r["rows"].as_u64() {
            report.add(bad(format!(
                "the batch's responses add up to {offset} bytes and {rows} rows, but the line records {} and {}",
                r["bytes"], r["rows"]
            )));
        }
    }
}

/// Count the `_request_id` values of one part.
pub(super) fn count_request_ids(p: &Path, counts: &mut HashMap<u128, u64>) -> anyhow::Result<()> {
    use arrow::array::AsArray;
    let f = std::fs::File::open(p)?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?;
    let idx = b.schema().index_of(crate::source::rows::REQUEST_ID)?;
    let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), [idx]);
    for batch in b.with_projection(mask).build()? {
        let batch = batch?;
        let col = batch.column(0).as_string::<i32>();
        for v in col.iter() {
            let id = v.and_then(short_id).unwrap_or(0);
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(())
}

pub(super) fn check_claim(
    out: &Path,
    c: &FileClaim,
    quick: bool,
    report: &Report,
    schemas: &Mutex<BTreeMap<String, Vec<(String, String)>>>,
    hashed: &std::sync::atomic::AtomicU64,
) {
    let path: PathBuf = out.join(&c.rel);
    let base = |kind, msg: String| Finding {
        path: Some(c.rel.clone()),
        run_id: Some(c.run_id.clone()),
        ..finding(kind, msg)
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            report.add(base(
                "missing_file",
                "the manifest records this file but it is not there".into(),
            ));
            return;
        }
    };
    if meta.len() != c.bytes {
        report.add(Finding {
            expected: json!(c.bytes),
            actual: json!(meta.len()),
            ..base(
                "size_mismatch",
                format!("{} bytes recorded, {} on disk", c.bytes, meta.len()),
            )
        });
    }
    if !quick {
        match hash_file(&path) {
            Ok((n, h)) => {
                hashed.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                if h != c.sha256 {
                    report.add(Finding {
                        expected: json!(c.sha256),
                        actual: json!(h),
                        ..base(
                            "hash_mismatch",
                            "the content differs from what was recorded".into(),
                        )
                    });
                }
            }
            Err(e) => report.add(base("missing_file", format!("cannot read it: {e}"))),
        }
    }
    if let Some((rows, output)) = &c.parquet {
        let footer = std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&f, Default::default())
                    .map_err(|e| e.to_string())
            });
        match footer {
            Ok(md) => {
                let actual = md.metadata().file_metadata().num_rows() as u64;
                if actual != *rows {
                    report.add(Finding {
                        expected: json!(rows),
                        actual: json!(actual),
                        ..base(
                            "row_count_mismatch",
                            format!("{rows} rows recorded, the footer says {actual}"),
                        )
                    });
                }
                let schema = md
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| format!("{}:{}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join("\n");
                if let Ok(mut s) = schemas.lock() {
                    s.entry(output.clone())
                        .or_default()
                        .push((c.rel.clone(), schema));
                }
            }
            Err(e) => report.add(base(
                "unreadable_parquet",
                format!("not a readable Parquet file: {e}"),
            )),
        }
    }
}
