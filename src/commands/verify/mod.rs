//! `harvest verify`: re-derive everything the manifest claims about an output directory and
//! report every discrepancy (ripgrep style: report each as found, keep going, fail at the end).
//!
//! Guarantees: read-only (it never repairs); every line of `manifest.jsonl` is checked
//! (parse, version, strictly increasing `seq`, the `prev` hash chain); every `page` record's
//! snapshot and every live `parquet` record's part exist with the recorded size and sha256
//! (sha256 skipped with `--quick`), and each part's row count is read from its footer; files
//! under `raw/`, `parquet/` and `exports/` that no record vouches for are orphans (a cached
//! export is vouched for by its `export` record until an `export_sweep` removes it); per run and table the
//! rows of the pages equal the rows of the parts (less rows an incremental run skipped as
//! already written); a `--parallel` table's slice plan covers its key range exactly once and
//! each of its pages carries its slice's filters; every cursor's pages form an unbroken chain
//! (numbered from 1, each fetched with the cursor the one before returned, a finished table's
//! last page returning none); a row-driven batch's responses tile its
//! snapshot with their recorded hashes, request ids are unique per run and dataset, and the
//! live parts' `_request_id` values are exactly the recorded ids with their row counts; a column
//! holds one type in every part of its dataset (parts may hold different columns); a run
//! without an `ok` `run_end` is reported as unfinished, a kind distinct from corruption.
//! Given several DIRs (the shards of a `--shard I/N` job), each is checked on its own, then
//! every table split across them: one plan in all, every shard present once and finished,
//! every slice paged by exactly one shard. A DIR shared by writers (`--writer`) is checked
//! writer by writer (each manifest against its own runs' files), then as a whole: no file
//! without a writer, every Delta table as the union of the writers' manifests says, no table
//! written whole by two writers, and the split tables' shares as above.
//! Hashing streams files and uses every core. Exit 0 when clean, 3 when anything was found,
//! 2 for usage errors.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod delta;
mod dir;
mod requests;
mod shards;

use self::delta::*;
use self::dir::*;
use self::requests::*;
use self::shards::*;

use crate::cli::VerifyArgs;
use crate::error::{Discrepancies, UsageError};
use crate::printer::Printer;
use crate::store::manifest::FILE_NAME;

/// The JSON report's format version.
pub const REPORT_VERSION: u64 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// torn_line, malformed_line, unknown_version, seq_order, chain_break, missing_file,
    /// size_mismatch, hash_mismatch, row_count_mismatch, unreadable_parquet, schema_mismatch,
    /// row_sum_mismatch, slice_plan_invalid, slice_mismatch, page_chain, request_mismatch,
    /// request_id_mismatch, orphan_file, unfinished_run, delta_uncommitted, delta_stale,
    /// delta_unrecorded, delta_size_mismatch, delta_version_missing, delta_unreadable,
    /// shard_coverage, shard_plan_mismatch, writer_overlap
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub expected: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub actual: Value,
    pub message: String,
}

struct Report {
    findings: Mutex<Vec<Finding>>,
    printer: Printer,
    json: bool,
}

impl Report {
    fn add(&self, f: Finding) {
        if !self.json || !self.printer.quiet {
            // As found, on stderr (the JSON document goes to stdout at the end).
            let loc = match (&f.path, f.line) {
                (Some(p), _) => format!("{p}: "),
                (None, Some(l)) => format!("{FILE_NAME}:{l}: "),
                _ => String::new(),
            };
            tracing::warn!("{}: {loc}{}", f.kind, f.message);
        }
        if let Ok(mut v) = self.findings.lock() {
            v.push(f);
        }
    }
}

fn finding(kind: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        kind,
        path: None,
        line: None,
        run_id: None,
        expected: Value::Null,
        actual: Value::Null,
        message: message.into(),
    }
}

/// Stream a file through sha256 (1 MiB buffer): (bytes, hex digest).
fn hash_file(p: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, crate::store::manifest::hex(&h.finalize())))
}

/// One file the manifest vouches for.
struct FileClaim {
    rel: String,
    bytes: u64,
    sha256: String,
    /// Parquet parts: rows claimed, and the dataset (for the schema check).
    parquet: Option<(u64, String)>,
    run_id: String,
}

pub fn run(args: &VerifyArgs, printer: Printer) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    if let Some(dup) = args.out.iter().find(|d| !seen.insert(d.as_path())) {
        return Err(UsageError::with_hint(
            format!("{} is given twice", dup.display()),
            "pass each shard's DIR once",
        )
        .into());
    }
    let mut dirs = Vec::with_capacity(args.out.len());
    let mut copies = vec![];
    for given in &args.out {
        // Object storage: check a fresh copy of everything under the prefix, so what is
        // checked is what the store holds (the Delta log included), not a stage.
        let out = if crate::store::remote::is_remote(given) {
            let copy = crate::store::remote::local_copy(given, &args.s3.options(), |_| true)?;
            let path = copy.path().to_path_buf();
            copies.push(copy);
            path
        } else {
            given.clone()
        };
        let first = dirs.len();
        let writers = crate::store::writers::list(&out);
        if !writers.is_empty() && !out.join(FILE_NAME).is_file() {
            dirs.extend(verify_shared(&out, &writers, args, printer)?);
        } else {
            dirs.push(verify_dir(&out, &out, false, args, printer)?);
        }
        if &out != given {
            let (copy, shown) = (out.display().to_string(), given.display().to_string());
            for d in &mut dirs[first..] {
                let renamed = d.dir.display().to_string().replacen(&copy, &shown, 1);
                d.dir = PathBuf::from(renamed);
                d.summary = d.summary.replace(&copy, &shown);
                if let Some(v) = d.doc.get_mut("dir") {
                    *v = json!(v.as_str().unwrap_or_default().replacen(&copy, &shown, 1));
                }
            }
        }
    }
    let [one] = dirs.as_mut_slice() else {
        return verify_shards(args, printer, dirs);
    };
    if !one.shards.is_empty() {
        let tables: BTreeSet<String> = one.shards.iter().map(|c| c.output.clone()).collect();
        tracing::info!(
            "{} holds one shard's share of {}: pass every shard's DIR (--out DIR1 --out DIR2 ...) to check that the shards cover the key range exactly once",
            one.dir.display(),
            tables.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if args.json {
        printer.stdout(&format!("{}\n", serde_json::to_string_pretty(&one.doc)?));
    }
    printer.summary(&one.summary);
    if one.findings == 0 {
        Ok(())
    } else {
        let n = one.findings;
        Err(Discrepancies(
            n,
            if n == 1 { "y" } else { "ies" },
            one.dir.display().to_string(),
        )
        .into())
    }
}

/// What one DIR's verification found, and the shard shares of split tables it holds.
struct DirOutcome {
    dir: PathBuf,
    findings: usize,
    doc: Value,
    summary: String,
    shards: Vec<ShardClaim>,
    /// The manifest's records (kept for the checks across writers of a shared DIR).
    records: Vec<(u64, Value)>,
}

/// A DIR shared by writers (`--writer`): each writer's manifest checked against the files its
/// runs wrote, then the DIR as a whole: every file under `raw/` and `parquet/` written by some
/// writer's run, every Delta table holding exactly the union of what the writers' manifests
/// say, no table written whole by two writers; the split tables' shares are checked by the
/// caller, as for shard DIRs.
fn verify_shared(
    out: &Path,
    writers: &[String],
    args: &VerifyArgs,
    printer: Printer,
) -> anyhow::Result<Vec<DirOutcome>> {
    let mut outcomes = vec![];
    for w in writers {
        let home = crate::store::writers::home(out, w);
        outcomes.push(verify_dir(out, &home, true, args, printer)?);
    }
    let all_runs = crate::store::writers::runs_of(
        outcomes
            .iter()
            .flat_map(|o| o.records.iter().map(|(_, r)| r)),
    );
    let report = Report {
        findings: Mutex::new(vec![]),
        printer,
        json: args.json,
    };
    for sub in ["raw", "parquet"] {
        for p in crate::store::fsutil::files_under(&out.join(sub)).unwrap_or_default() {
            let rel = crate::store::fsutil::rel_path(out, &p);
            if rel.contains("/_delta_log/") || crate::store::writers::written_by(&rel, &all_runs) {
                continue;
            }
            report.add(Finding {
                path: Some(rel),
                ..finding(
                    "orphan_file",
                    "no writer's run wrote this file (no writer's manifest names its run)",
                )
            });
        }
    }
    // Each writer's ledger once: who holds which table, then their union against the logs.
    let mut union = crate::store::delta::Ledger::default();
    let mut versions: HashMap<String, i64> = HashMap::new();
    let mut holders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        let (ledger, v) = ledger_of(&o.records);
        for (output, d) in &ledger.outputs {
            if !d.files.is_empty() {
                holders.entry(output.clone()).or_default().push(i);
            }
        }
        for (output, v) in v {
            let e = versions.entry(output).or_insert(v);
            *e = (*e).max(v);
        }
        union.merge(ledger);
    }
    check_delta(out, &union, &versions, &report);
    // A table several writers hold files of must be split between them.
    for (output, who) in holders.iter().filter(|(_, w)| w.len() > 1) {
        let whole: Vec<&str> = who
            .iter()
            .filter(|i| !outcomes[**i].shards.iter().any(|c| &c.output == output))
            .map(|i| writers[*i].as_str())
            .collect();
        if !whole.is_empty() {
            report.add(Finding {
                path: Some(format!("parquet/{output}")),
                ..finding(
                    "writer_overlap",
                    format!(
                        "dataset {output:?} holds parts of {} writers, and {} wrote it whole, not as a shard's share: rows may be in the table twice",
                        who.len(),
                        whole.join(", ")
                    ),
                )
            });
        }
    }
    let findings = report.findings.into_inner().unwrap_or_default();
    let summary = format!(
        "verified {} as a DIR shared by {} writer(s) ({}): {}",
        out.display(),
        writers.len(),
        writers.join(", "),
        if findings.is_empty() {
            "every file written by a writer's run, every Delta table as the writers' manifests say"
                .to_string()
        } else {
            format!(
                "{} discrepanc{}",
                findings.len(),
                if findings.len() == 1 { "y" } else { "ies" }
            )
        }
    );
    outcomes.push(DirOutcome {
        dir: out.to_path_buf(),
        findings: findings.len(),
        doc: json!({
            "version": REPORT_VERSION,
            "dir": out.display().to_string(),
            "writers": writers,
            "ok": findings.is_empty(),
            "findings": findings,
        }),
        summary,
        shards: vec![],
        records: vec![],
    });
    Ok(outcomes)
}

/// The (run, dataset) a record belongs to.
fn run_and_output(r: &Value) -> (String, String) {
    (
        r["run_id"].as_str().unwrap_or("").to_string(),
        r["output"].as_str().unwrap_or("").to_string(),
    )
}
