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
//! each of its pages carries its slice's filters; a row-driven batch's responses tile its
//! snapshot with their recorded hashes, request ids are unique per run and dataset, and the
//! live parts' `_request_id` values are exactly the recorded ids with their row counts; one
//! dataset's parts share one schema; a run
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
mod requests;
mod shards;

use delta::*;
use requests::*;
use shards::*;

use crate::cli::VerifyArgs;
use crate::error::{Discrepancies, UsageError};
use crate::printer::Printer;
use crate::store::manifest::{FILE_NAME, sha256_hex};

/// The JSON report's format version.
pub const REPORT_VERSION: u64 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// torn_line, malformed_line, unknown_version, seq_order, chain_break, missing_file,
    /// size_mismatch, hash_mismatch, row_count_mismatch, unreadable_parquet, schema_mismatch,
    /// row_sum_mismatch, slice_plan_invalid, slice_mismatch, request_mismatch,
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

/// Verify one DIR on its own.
///
/// `home` holds the manifest (DIR itself, or a writer's home in a shared DIR); the paths the
/// manifest names are under `out`. In a shared DIR (`own`: the writer's runs) only files its
/// runs wrote can be its orphans, and the Delta tables are checked for all writers together.
fn verify_dir(
    out: &Path,
    home: &Path,
    shared: bool,
    args: &VerifyArgs,
    printer: Printer,
) -> anyhow::Result<DirOutcome> {
    if !out.is_dir() {
        return Err(UsageError::with_hint(
            format!("{} is not a directory", out.display()),
            "pass the --out DIR of a harvest, incremental or sql-extract run",
        )
        .into());
    }
    let manifest_path = home.join(FILE_NAME);
    let text = std::fs::read(&manifest_path).map_err(|_| {
        UsageError::with_hint(
            format!(
                "{} has no {FILE_NAME}: it is not a harvest output directory",
                out.display()
            ),
            "pass the --out DIR of a harvest, incremental or sql-extract run",
        )
    })?;
    let report = Report {
        findings: Mutex::new(vec![]),
        printer,
        json: args.json,
    };
    let mut checks = vec![
        "manifest_lines",
        "hash_chain",
        "seq_order",
        "files_exist",
        "sizes",
        "orphans",
        "parquet_rows",
        "schemas",
        "row_sums",
        "slices",
        "request_ids",
        "delta_logs",
        "runs",
    ];
    if !args.quick {
        checks.push("sha256");
    }

    // 1. The manifest, line by line (a row-driven batch's entries checked as they come, then
    //    dropped, so memory follows pages, not requests).
    let mut requests = RequestIds::default();
    let mut records: Vec<(u64, Value)> = Vec::new();
    let mut prev: Option<String> = None;
    let mut last_seq: Option<u64> = None;
    let mut lines = 0u64;
    for (i, raw) in text.split_inclusive(|b| *b == b'\n').enumerate() {
        let lineno = i as u64 + 1;
        lines += 1;
        let Some(body) = raw.strip_suffix(b"\n") else {
            report.add(Finding {
                line: Some(lineno),
                ..finding(
                    "torn_line",
                    format!(
                        "the last line ({} bytes) has no newline: a write was cut off",
                        raw.len()
                    ),
                )
            });
            break;
        };
        let v: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                report.add(Finding {
                    line: Some(lineno),
                    ..finding("malformed_line", "the line is not a JSON object")
                });
                prev = Some(sha256_hex(body));
                continue;
            }
        };
        if v["version"] != 1 {
            report.add(Finding {
                line: Some(lineno),
                actual: v["version"].clone(),
                expected: json!(1),
                ..finding("unknown_version", "the record's version is not 1")
            });
        }
        let expected_prev = prev.clone().map_or(Value::Null, Value::String);
        if v["prev"] != expected_prev {
            report.add(Finding {
                line: Some(lineno),
                expected: if expected_prev.is_null() { json!("null") } else { expected_prev },
                actual: v["prev"].clone(),
                ..finding("chain_break", "`prev` is not the sha256 of the previous line: a line was edited, removed, inserted or moved")
            });
        }
        match v["seq"].as_u64() {
            Some(s) if last_seq.is_none_or(|l| s > l) => last_seq = Some(s),
            s => report.add(Finding {
                line: Some(lineno),
                expected: last_seq.map_or(Value::Null, |l| json!(format!("> {l}"))),
                actual: s.map_or(Value::Null, Value::from),
                ..finding("seq_order", "`seq` does not increase strictly")
            }),
        }
        prev = Some(sha256_hex(body));
        let mut v = v;
        if let Some(Value::Array(entries)) = v.as_object_mut().and_then(|m| m.remove("requests")) {
            requests.check_batch(out, lineno, &v, &entries, args.quick, &report);
        }
        records.push((lineno, v));
    }

    let in_scope = |r: &Value| args.run.as_deref().is_none_or(|id| r["run_id"] == id);
    // In a shared DIR: the runs whose files this writer answers for.
    let own = shared.then(|| crate::store::writers::runs_of(records.iter().map(|(_, r)| r)));
    let own = own.as_ref();
    // Parts replaced by a later harvest, and cached exports replaced by a later export.
    let superseded: HashSet<String> = records
        .iter()
        .filter(|(_, r)| r["kind"] == "supersede" || r["kind"] == "export_sweep")
        .flat_map(|(_, r)| {
            r["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();

    // Parts a Delta commit removed but older versions still read: kept on disk, still checked.
    let kept: HashSet<String> = records
        .iter()
        .filter(|(_, r)| r["kind"] == "supersede" && r["kept"] == true)
        .flat_map(|(_, r)| r["paths"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();

    // 2. What the records claim about files.
    let mut claims: Vec<FileClaim> = Vec::new();
    let mut referenced: HashSet<String> = HashSet::new();
    for (_, r) in &records {
        let kind = r["kind"].as_str().unwrap_or("");
        if kind != "page" && kind != "parquet" && kind != "export" {
            continue;
        }
        let Some(path) = r["path"].as_str() else {
            continue;
        };
        referenced.insert(path.to_string());
        if in_scope(r) && kind == "parquet" && kept.contains(path) {
            // Only its bytes: its schema may be an older one of the table's.
            claims.push(FileClaim {
                rel: path.to_string(),
                bytes: r["bytes"].as_u64().unwrap_or(u64::MAX),
                sha256: r["sha256"].as_str().unwrap_or("").to_string(),
                parquet: None,
                run_id: r["run_id"].as_str().unwrap_or("").to_string(),
            });
            continue;
        }
        if !in_scope(r) || (kind != "page" && superseded.contains(path)) {
            continue;
        }
        claims.push(FileClaim {
            rel: path.to_string(),
            bytes: r["bytes"].as_u64().unwrap_or(u64::MAX),
            sha256: r["sha256"].as_str().unwrap_or("").to_string(),
            parquet: (kind == "parquet").then(|| {
                (
                    r["rows"].as_u64().unwrap_or(u64::MAX),
                    r["output"].as_str().unwrap_or("").to_string(),
                )
            }),
            run_id: r["run_id"].as_str().unwrap_or("").to_string(),
        });
    }

    // 3. Check every claimed file, on all cores.
    let schemas: Mutex<BTreeMap<String, Vec<(String, String)>>> = Mutex::new(BTreeMap::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let hashed_bytes = std::sync::atomic::AtomicU64::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(c) = claims.get(i) else { break };
                    check_claim(out, c, args.quick, &report, &schemas, &hashed_bytes);
                }
            });
        }
    });
    for (output, parts) in schemas.into_inner().unwrap_or_default() {
        let first = &parts[0].1;
        for (path, schema) in &parts[1..] {
            if schema != first {
                report.add(Finding {
                    path: Some(path.clone()),
                    expected: json!(first),
                    actual: json!(schema),
                    ..finding(
                        "schema_mismatch",
                        format!(
                            "this part's schema differs from the other parts of dataset {output:?}"
                        ),
                    )
                });
            }
        }
    }

    // 4. Orphans: files under raw/ and parquet/ no record vouches for.
    for sub in ["raw", "parquet", "exports"] {
        for p in crate::store::fsutil::files_under(&out.join(sub)).unwrap_or_default() {
            let rel = crate::store::fsutil::rel_path(out, &p);
            let in_run = args.run.as_deref().is_none_or(|id| rel.contains(id))
                && own.is_none_or(|runs| crate::store::writers::written_by(&rel, runs));
            if rel.contains("/_delta_log/") || kept.contains(&rel) {
                continue; // checked against the manifest below, as a whole
            }
            if in_run && (!referenced.contains(&rel) || superseded.contains(&rel)) {
                report.add(Finding {
                    path: Some(rel),
                    ..finding("orphan_file", "no manifest record vouches for this file")
                });
            }
        }
    }

    // 4b. Delta tables: the log's current files are exactly the parts the manifest says the
    //     table holds, with their sizes.
    if own.is_none() {
        let (ledger, versions) = ledger_of(&records);
        check_delta(out, &ledger, &versions, &report);
    }

    // 5. Per run and dataset: page rows (less rows skipped as already written, NULL, or below
    //    the watermark where the API could not filter) = part rows.
    let mut page_rows: HashMap<(String, String), u64> = HashMap::new();
    let mut part_rows: HashMap<(String, String), u64> = HashMap::new();
    let mut skipped: HashMap<(String, String), u64> = HashMap::new();
    // What each `table_end` claims: the rows in the run's parts (and, for paged tables, pages).
    let mut ended: HashMap<(String, String), (Option<u64>, Option<u64>)> = HashMap::new();
    let mut pages_of: HashMap<(String, String), u64> = HashMap::new();
    for (_, r) in records.iter().filter(|(_, r)| in_scope(r)) {
        let key = run_and_output(r);
        match r["kind"].as_str() {
            Some("page") => {
                *pages_of.entry(key.clone()).or_default() += 1;
                *page_rows.entry(key).or_default() += r["rows"].as_u64().unwrap_or(0)
            }
            Some("parquet") => {
                *part_rows.entry(key).or_default() += r["rows"].as_u64().unwrap_or(0)
            }
            Some("table_end") => {
                let w = &r["watermark"];
                *skipped.entry(key.clone()).or_default() +=
                    w["skipped_duplicates"].as_u64().unwrap_or(0)
                        + w["skipped_nulls"].as_u64().unwrap_or(0)
                        + w["skipped_below"].as_u64().unwrap_or(0);
                ended.insert(key, (r["rows"].as_u64(), r["pages"].as_u64()));
            }
            _ => {}
        }
    }
    for (key, (rows, pages)) in &ended {
        let got = part_rows.get(key).copied().unwrap_or(0);
        let recorded_pages = pages_of.get(key).copied().unwrap_or(0);
        let claims = [
            (*rows, got, "rows", "its parts hold"),
            (
                pages.filter(|_| recorded_pages > 0),
                recorded_pages,
                "pages",
                "the manifest records",
            ),
        ];
        for (claim, actual, what, holds) in claims {
            if let Some(claim) = claim
                && claim != actual
            {
                report.add(Finding {
                    run_id: Some(key.0.clone()),
                    expected: json!(claim),
                    actual: json!(actual),
                    ..finding(
                        "row_sum_mismatch",
                        format!(
                            "dataset {:?}: table_end says {claim} {what} but {holds} {actual}",
                            key.1
                        ),
                    )
                });
            }
        }
    }
    for (key, pages) in &page_rows {
        if !ended.contains_key(key) {
            continue; // an unfinished table is reported with its run
        }
        let want = pages - skipped.get(key).copied().unwrap_or(0).min(*pages);
        let got = part_rows.get(key).copied().unwrap_or(0);
        if want != got {
            report.add(Finding {
                run_id: Some(key.0.clone()),
                expected: json!(want),
                actual: json!(got),
                ..finding(
                    "row_sum_mismatch",
                    format!(
                        "dataset {:?}: the pages hold {want} rows but the parts hold {got}",
                        key.1
                    ),
                )
            });
        }
    }

    // 5b. `--parallel` tables: the slice plan is a partition of the key range, and every page
    //     of the table in that run belongs to one of its slices and carries its filters.
    let mut plans: HashMap<(String, String), crate::source::datasette::slices::SlicePlan> =
        HashMap::new();
    for (lineno, r) in records.iter().filter(|(_, r)| in_scope(r)) {
        if r["kind"] != "slices" {
            continue;
        }
        let key = run_and_output(r);
        match serde_json::from_value::<crate::source::datasette::slices::SlicePlan>(r["plan"].clone()) {
            Ok(p) if crate::source::datasette::slices::is_partition(&p) => {
                plans.insert(key, p);
            }
            _ => report.add(Finding {
                line: Some(*lineno),
                run_id: Some(key.0),
                ..finding(
                    "slice_plan_invalid",
                    format!(
                        "dataset {:?}: the slice plan does not split the key range into disjoint ranges covering it exactly once",
                        key.1
                    ),
                )
            }),
        }
    }
    for (lineno, r) in records
        .iter()
        .filter(|(_, r)| r["kind"] == "page" && in_scope(r))
    {
        let key = run_and_output(r);
        let problem = match (plans.get(&key), r.get("slice").map(Value::as_u64)) {
            (None, None) => None,
            (None, Some(_)) => Some(
                "the page names a slice, but its run recorded no valid slice plan for the table"
                    .to_string(),
            ),
            (Some(_), None | Some(None)) => {
                Some("the table was split into slices, but the page names none".to_string())
            }
            (Some(p), Some(Some(k))) => match p.slices.iter().find(|s| u64::from(s.index) == k) {
                None => Some(format!(
                    "the page names slice {k}, which the plan does not have"
                )),
                Some(s) => s
                    .filters
                    .iter()
                    .find(|(f, v)| r["params"][f.as_str()] != v.as_str())
                    .map(|(f, v)| {
                        format!("the page of slice {k} was not fetched with its filter {f}={v}")
                    }),
            },
        };
        if let Some(message) = problem {
            report.add(Finding {
                line: Some(*lineno),
                run_id: Some(key.0),
                path: r["path"].as_str().map(str::to_string),
                ..finding("slice_mismatch", message)
            });
        }
    }

    // 5c. Row-driven tables: the rows of each run's live parts carry exactly the request ids
    //     (and as many rows per id) as its batches record.
    for ((run_id, output), want) in &requests.rows {
        let parts: Vec<&FileClaim> = claims
            .iter()
            .filter(|c| c.run_id == *run_id && c.parquet.as_ref().is_some_and(|(_, o)| o == output))
            .collect();
        if parts.is_empty() || !in_scope(&json!({ "run_id": run_id })) {
            continue; // superseded by a later run, or out of scope
        }
        let mut got: HashMap<u128, u64> = HashMap::new();
        let mut unreadable = None;
        for c in &parts {
            if let Err(e) = count_request_ids(&out.join(&c.rel), &mut got) {
                unreadable = Some(format!("{}: {e}", c.rel));
                break;
            }
        }
        let mismatch = if let Some(e) = unreadable {
            Some(format!(
                "cannot read the {} column: {e}",
                crate::source::rows::REQUEST_ID
            ))
        } else if got != *want {
            let missing = want.keys().filter(|k| !got.contains_key(k)).count();
            let unknown = got.keys().filter(|k| !want.contains_key(k)).count();
            let differ = want
                .iter()
                .filter(|(k, n)| got.get(k).is_some_and(|g| g != *n))
                .count();
            Some(format!(
                "{missing} recorded request id(s) have no rows, {unknown} id(s) in the rows were never recorded, {differ} id(s) have another number of rows than recorded"
            ))
        } else {
            None
        };
        if let Some(m) = mismatch {
            report.add(Finding {
                run_id: Some(run_id.clone()),
                ..finding("request_id_mismatch", format!("dataset {output:?}: {m}"))
            });
        }
    }

    // 6. Runs: every run_start needs a final `ok` run_end.
    let mut last_end: BTreeMap<String, Value> = BTreeMap::new();
    let mut started: Vec<String> = vec![];
    for (_, r) in records.iter().filter(|(_, r)| in_scope(r)) {
        let id = r["run_id"].as_str().unwrap_or("").to_string();
        match r["kind"].as_str() {
            Some("run_start") => started.push(id),
            Some("run_end") => {
                last_end.insert(id, r["outcome"].clone());
            }
            _ => {}
        }
    }
    // Only the latest run can be resumed; an earlier unfinished one was given up (a later run
    // started over, after a settings change or --restart).
    let latest = started.last().cloned();
    for id in &started {
        match last_end.get(id) {
            Some(o) if o == "ok" => {}
            other => report.add(Finding {
                run_id: Some(id.clone()),
                expected: json!("ok"),
                actual: other.cloned().unwrap_or(json!("no run_end")),
                ..finding(
                    "unfinished_run",
                    if latest.as_ref() == Some(id) {
                        "the run did not finish (killed, failed or interrupted); a rerun with the same settings resumes it"
                    } else {
                        "the run did not finish, and a later run started over instead of resuming it (settings changed, or --restart): the datasets only it wrote may be partial; rerun those tables to rewrite them"
                    },
                )
            }),
        }
    }

    let findings = report.findings.into_inner().unwrap_or_default();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &findings {
        *by_kind.entry(f.kind).or_default() += 1;
    }
    let pages = records
        .iter()
        .filter(|(_, r)| r["kind"] == "page" && in_scope(r))
        .count();
    let parts = claims.iter().filter(|c| c.parquet.is_some()).count();
    let summary = format!(
        "verified {}: {lines} manifest lines, {pages} pages, {parts} parts, {:.1} MB hashed{} - {}",
        home.display(),
        hashed_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
        if args.quick {
            " (--quick: sizes only)"
        } else {
            ""
        },
        if findings.is_empty() {
            "no discrepancies".to_string()
        } else {
            by_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let doc = json!({
        "version": REPORT_VERSION,
        "dir": home.display().to_string(),
        "run": args.run,
        "quick": args.quick,
        "checks": checks,
        "ok": findings.is_empty(),
        "totals": {
            "manifest_lines": lines,
            "pages": pages,
            "parts": parts,
            "bytes_hashed": hashed_bytes.load(std::sync::atomic::Ordering::Relaxed),
            "findings": findings.len(),
            "by_kind": by_kind,
        },
        "findings": findings,
    });
    Ok(DirOutcome {
        dir: home.to_path_buf(),
        findings: findings.len(),
        doc,
        summary,
        shards: shard_claims(home, &records),
        records,
    })
}

/// The (run, dataset) a record belongs to.
fn run_and_output(r: &Value) -> (String, String) {
    (
        r["run_id"].as_str().unwrap_or("").to_string(),
        r["output"].as_str().unwrap_or("").to_string(),
    )
}
