//! `verify` of one DIR (or one writer's manifest in a shared DIR): the manifest read line by
//! line, then each check in turn, every finding reported as it is found. The steps run in the
//! order of the report: manifest lines, files, orphans, Delta logs, row sums, slices,
//! request ids, runs.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use serde_json::Value;
use serde_json::json;

use crate::cli::VerifyArgs;
use crate::commands::verify::DirOutcome;
use crate::commands::verify::FileClaim;
use crate::commands::verify::Finding;
use crate::commands::verify::REPORT_VERSION;
use crate::commands::verify::Report;
use crate::commands::verify::RequestIds;
use crate::commands::verify::check_claim;
use crate::commands::verify::check_delta;
use crate::commands::verify::count_request_ids;
use crate::commands::verify::finding;
use crate::commands::verify::ledger_of;
use crate::commands::verify::run_and_output;
use crate::commands::verify::shard_claims;
use crate::error::UsageError;
use crate::printer::Printer;
use crate::store::manifest::FILE_NAME;
use crate::store::manifest::sha256_hex;

/// The manifest's records (with their line numbers), the row-driven batches' request ids,
/// and the number of lines.
struct Read {
    records: Vec<(u64, Value)>,
    requests: RequestIds,
    lines: u64,
}

/// The paths the records vouch for, and what they say about them.
struct Claimed<'a> {
    referenced: &'a HashSet<String>,
    superseded: &'a HashSet<String>,
    kept: &'a HashSet<String>,
}

/// Whether a record is of the run `--run` names (every record without `--run`).
fn in_scope(run: Option<&str>, r: &Value) -> bool {
    run.is_none_or(|id| r["run_id"] == id)
}

/// Verify one DIR on its own.
///
/// `home` holds the manifest (DIR itself, or a writer's home in a shared DIR); the paths the
/// manifest names are under `out`. In a shared DIR (`own`: the writer's runs) only files its
/// runs wrote can be its orphans, and the Delta tables are checked for all writers together.
pub(super) fn verify_dir(
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

    let run = args.run.as_deref();
    let Read {
        records,
        requests,
        lines,
    } = read_manifest(out, &text, args.quick, &report);
    // In a shared DIR: the runs whose files this writer answers for.
    let own = shared.then(|| crate::store::writers::runs_of(records.iter().map(|(_, r)| r)));
    let own = own.as_ref();
    let (superseded, kept) = superseded_and_kept(&records);
    let (claims, referenced) = file_claims(&records, run, &superseded, &kept);
    let hashed_bytes = check_files(out, &claims, args.quick, &report);
    let claimed = Claimed {
        referenced: &referenced,
        superseded: &superseded,
        kept: &kept,
    };
    check_orphans(out, run, own, &claimed, &report);
    // Delta tables: the log's current files are exactly the parts the manifest says the
    // table holds, with their sizes.
    if own.is_none() {
        let (ledger, versions) = ledger_of(&records);
        check_delta(out, &ledger, &versions, &report);
    }
    check_row_sums(&records, run, &report);
    check_slices(&records, run, &report);
    check_page_chains(&records, run, &report);
    check_request_ids(out, &requests, &claims, run, &report);
    check_runs(&records, run, &report);

    let findings = report.findings.into_inner().unwrap_or_default();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &findings {
        *by_kind.entry(f.kind).or_default() += 1;
    }
    let pages = records
        .iter()
        .filter(|(_, r)| r["kind"] == "page" && in_scope(run, r))
        .count();
    let parts = claims.iter().filter(|c| c.parquet.is_some()).count();
    let summary = format!(
        "verified {}: {lines} manifest lines, {pages} pages, {parts} parts, {:.1} MB hashed{} - {}",
        home.display(),
        hashed_bytes as f64 / 1e6,
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
            "bytes_hashed": hashed_bytes,
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

/// The manifest, line by line (a row-driven batch's entries checked as they come, then
/// dropped, so memory follows pages, not requests).
fn read_manifest(out: &Path, text: &[u8], quick: bool, report: &Report) -> Read {
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
            requests.check_batch(out, lineno, &v, &entries, quick, report);
        }
        records.push((lineno, v));
    }
    Read {
        records,
        requests,
        lines,
    }
}

/// Parts replaced by a later harvest, and cached exports replaced by a later export; and
/// parts a Delta commit removed but older versions still read (kept on disk, still checked).
fn superseded_and_kept(records: &[(u64, Value)]) -> (HashSet<String>, HashSet<String>) {
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

    let kept: HashSet<String> = records
        .iter()
        .filter(|(_, r)| r["kind"] == "supersede" && r["kept"] == true)
        .flat_map(|(_, r)| r["paths"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    (superseded, kept)
}

/// What the records claim about files (in scope), and every path any record names.
fn file_claims(
    records: &[(u64, Value)],
    run: Option<&str>,
    superseded: &HashSet<String>,
    kept: &HashSet<String>,
) -> (Vec<FileClaim>, HashSet<String>) {
    let mut claims: Vec<FileClaim> = Vec::new();
    let mut referenced: HashSet<String> = HashSet::new();
    for (_, r) in records {
        let kind = r["kind"].as_str().unwrap_or("");
        if kind != "page" && kind != "parquet" && kind != "quarantine" && kind != "export" {
            continue;
        }
        let Some(path) = r["path"].as_str() else {
            continue;
        };
        referenced.insert(path.to_string());
        if in_scope(run, r) && kind == "parquet" && kept.contains(path) {
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
        if !in_scope(run, r) || (kind != "page" && superseded.contains(path)) {
            continue;
        }
        claims.push(FileClaim {
            rel: path.to_string(),
            bytes: r["bytes"].as_u64().unwrap_or(u64::MAX),
            sha256: r["sha256"].as_str().unwrap_or("").to_string(),
            parquet: (kind == "parquet" || kind == "quarantine").then(|| {
                let output = r["output"].as_str().unwrap_or("");
                (
                    r["rows"].as_u64().unwrap_or(u64::MAX),
                    // A quarantine's columns are all text: its own schema group.
                    if kind == "quarantine" {
                        format!("{output} (quarantine)")
                    } else {
                        output.to_string()
                    },
                )
            }),
            run_id: r["run_id"].as_str().unwrap_or("").to_string(),
        });
    }
    (claims, referenced)
}

/// Check every claimed file, on all cores, and that one dataset's parts share one schema;
/// returns the bytes hashed.
fn check_files(out: &Path, claims: &[FileClaim], quick: bool, report: &Report) -> u64 {
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
                    check_claim(out, c, quick, report, &schemas, &hashed_bytes);
                }
            });
        }
    });
    // Columns only ever widen (schema evolution), so parts may hold different columns; but
    // a column holds one type in every part of its dataset.
    for (output, mut parts) in schemas.into_inner().unwrap_or_default() {
        parts.sort();
        let mut first_seen: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (path, schema) in &parts {
            for field in schema.lines().filter(|f| !f.is_empty()) {
                let (name, ty) = field.split_once(':').unwrap_or((field, ""));
                match first_seen.get(name) {
                    None => {
                        first_seen.insert(name.to_string(), (ty.to_string(), path.clone()));
                    }
                    Some((t, other)) if t != ty => report.add(Finding {
                        path: Some(path.clone()),
                        expected: json!(format!("{name}:{t}")),
                        actual: json!(format!("{name}:{ty}")),
                        ..finding(
                            "schema_mismatch",
                            format!(
                                "column {name:?} of dataset {output:?} is {ty} here but {t} in {other}"
                            ),
                        )
                    }),
                    Some(_) => {}
                }
            }
        }
    }
    hashed_bytes.into_inner()
}

/// Orphans: files under raw/, parquet/, quarantine/ and exports/ no record vouches for.
fn check_orphans(
    out: &Path,
    run: Option<&str>,
    own: Option<&HashSet<String>>,
    claimed: &Claimed<'_>,
    report: &Report,
) {
    for sub in ["raw", "parquet", "quarantine", "exports"] {
        for p in crate::store::fsutil::files_under(&out.join(sub)).unwrap_or_default() {
            let rel = crate::store::fsutil::rel_path(out, &p);
            let in_run = run.is_none_or(|id| rel.contains(id))
                && own.is_none_or(|runs| crate::store::writers::written_by(&rel, runs));
            if rel.contains("/_delta_log/") || claimed.kept.contains(&rel) {
                continue; // checked against the manifest below, as a whole
            }
            if in_run && (!claimed.referenced.contains(&rel) || claimed.superseded.contains(&rel)) {
                report.add(Finding {
                    path: Some(rel),
                    ..finding("orphan_file", "no manifest record vouches for this file")
                });
            }
        }
    }
}

/// Per run and dataset: page rows (less rows skipped as already written, NULL, or below
/// the watermark where the API could not filter) = part rows + quarantined rows, and the
/// rows `table_end` says were quarantined are those its quarantine parts hold.
fn check_row_sums(records: &[(u64, Value)], run: Option<&str>, report: &Report) {
    let mut page_rows: HashMap<(String, String), u64> = HashMap::new();
    let mut part_rows: HashMap<(String, String), u64> = HashMap::new();
    // Rows that failed the table's checks: in quarantine parts, not in the dataset's.
    let mut quarantine_rows: HashMap<(String, String), u64> = HashMap::new();
    let mut claimed_quarantined: HashMap<(String, String), u64> = HashMap::new();
    let mut skipped: HashMap<(String, String), u64> = HashMap::new();
    // What each `table_end` claims: the rows in the run's parts (and, for paged tables, pages).
    let mut ended: HashMap<(String, String), (Option<u64>, Option<u64>)> = HashMap::new();
    let mut pages_of: HashMap<(String, String), u64> = HashMap::new();
    // Parts a run removed itself (a checkpoint a crash cut short: its pages were replayed
    // into new parts) hold none of the run's rows.
    let own_removed: std::collections::HashSet<(String, String)> = records
        .iter()
        .filter(|(_, r)| r["kind"] == "supersede")
        .flat_map(|(_, r)| {
            let run = r["run_id"].as_str().unwrap_or_default().to_string();
            r["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str())
                .map(move |p| (run.clone(), p.to_string()))
        })
        .collect();
    for (_, r) in records.iter().filter(|(_, r)| in_scope(run, r)) {
        let key = run_and_output(r);
        match r["kind"].as_str() {
            Some("page") => {
                *pages_of.entry(key.clone()).or_default() += 1;
                *page_rows.entry(key).or_default() += r["rows"].as_u64().unwrap_or(0)
            }
            Some("parquet") => {
                let path = r["path"].as_str().unwrap_or_default().to_string();
                if own_removed.contains(&(key.0.clone(), path)) {
                    continue;
                }
                *part_rows.entry(key).or_default() += r["rows"].as_u64().unwrap_or(0)
            }
            Some("quarantine") => {
                let path = r["path"].as_str().unwrap_or_default().to_string();
                if own_removed.contains(&(key.0.clone(), path)) {
                    continue;
                }
                *quarantine_rows.entry(key).or_default() += r["rows"].as_u64().unwrap_or(0)
            }
            Some("table_end") => {
                if let Some(q) = r["rows_quarantined"].as_u64() {
                    claimed_quarantined.insert(key.clone(), q);
                }
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
    for (key, claim) in &claimed_quarantined {
        let got = quarantine_rows.get(key).copied().unwrap_or(0);
        if *claim != got {
            report.add(Finding {
                run_id: Some(key.0.clone()),
                expected: json!(claim),
                actual: json!(got),
                ..finding(
                    "row_sum_mismatch",
                    format!(
                        "dataset {:?}: table_end says {claim} rows were quarantined but its quarantine parts hold {got}",
                        key.1
                    ),
                )
            });
        }
    }
    for (key, pages) in &page_rows {
        if !ended.contains_key(key) {
            continue; // an unfinished table is reported with its run
        }
        let want = pages - skipped.get(key).copied().unwrap_or(0).min(*pages);
        let got = part_rows.get(key).copied().unwrap_or(0)
            + quarantine_rows.get(key).copied().unwrap_or(0);
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
}

/// Every cursor of a paged table (a table, or one slice of it) is a chain: per run its pages
/// are numbered 1, 2, … without a gap or a repeat, each page was fetched with the cursor the
/// page before it returned (page 1 with none), and a table the run finished ends on a page
/// that returned no cursor. So a page missing from the middle or the end of a cursor, pages
/// fetched ahead (`parallel`) included, is found even when the rows still add up.
fn check_page_chains(records: &[(u64, Value)], run: Option<&str>, report: &Report) {
    type Key = (String, String, Option<u64>);
    let mut chains: BTreeMap<Key, Vec<(u64, &Value)>> = BTreeMap::new();
    let mut ended: HashSet<(String, String)> = HashSet::new();
    for (lineno, r) in records.iter().filter(|(_, r)| in_scope(run, r)) {
        match r["kind"].as_str() {
            // A files table's pages are files, not a cursor's pages.
            Some("page") if r.get("file").is_none() && r.get("cursor_in").is_some() => {
                let (run_id, output) = run_and_output(r);
                chains
                    .entry((run_id, output, r["slice"].as_u64()))
                    .or_default()
                    .push((*lineno, r));
            }
            Some("table_end") => {
                ended.insert(run_and_output(r));
            }
            _ => {}
        }
    }
    for ((run_id, output, slice), mut pages) in chains {
        pages.sort_by_key(|(_, p)| p["page"].as_u64().unwrap_or(0));
        let cursor = match slice {
            None => format!("dataset {output:?}"),
            Some(k) => format!("dataset {output:?}, slice {k}"),
        };
        let add = |line: u64, path: Option<&str>, message: String| {
            report.add(Finding {
                line: Some(line),
                run_id: Some(run_id.clone()),
                path: path.map(str::to_string),
                ..finding("page_chain", message)
            });
        };
        let mut want = 1u64;
        let mut prev_out = &Value::Null;
        for (lineno, p) in &pages {
            let no = p["page"].as_u64().unwrap_or(0);
            let path = p["path"].as_str();
            if no != want {
                add(
                    *lineno,
                    path,
                    if no < want {
                        format!("{cursor}: page {no} is recorded twice in the run")
                    } else {
                        format!(
                            "{cursor}: page {no} follows page {}: {} page(s) of the cursor are missing",
                            want - 1,
                            no - want
                        )
                    },
                );
            } else if p["cursor_in"] != *prev_out {
                add(
                    *lineno,
                    path,
                    format!(
                        "{cursor}: page {no} was not fetched with the cursor page {} returned",
                        no.saturating_sub(1)
                    ),
                );
            }
            want = no + 1;
            prev_out = &p["cursor_out"];
        }
        if ended.contains(&(run_id.clone(), output.clone()))
            && !prev_out.is_null()
            && let Some((lineno, p)) = pages.last()
        {
            add(
                *lineno,
                p["path"].as_str(),
                format!(
                    "{cursor}: the run finished the table, but its last recorded page (page {}) returned a cursor to a page that is not recorded",
                    p["page"].as_u64().unwrap_or(0)
                ),
            );
        }
    }
}

/// `--parallel` tables: the slice plan is a partition of the key range, and every page
/// of the table in that run belongs to one of its slices and carries its filters.
fn check_slices(records: &[(u64, Value)], run: Option<&str>, report: &Report) {
    let mut plans: HashMap<(String, String), crate::source::datasette::slices::SlicePlan> =
        HashMap::new();
    for (lineno, r) in records.iter().filter(|(_, r)| in_scope(run, r)) {
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
        .filter(|(_, r)| r["kind"] == "page" && in_scope(run, r))
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
}

/// Row-driven tables: the rows of each run's live parts (dataset and quarantine) carry exactly
/// the request ids (and as many rows per id) as its batches record.
fn check_request_ids(
    out: &Path,
    requests: &RequestIds,
    claims: &[FileClaim],
    run: Option<&str>,
    report: &Report,
) {
    for ((run_id, output), want) in &requests.rows {
        let parts: Vec<&FileClaim> = claims
            .iter()
            .filter(|c| {
                // A quarantined row keeps its `_request_id` too.
                c.run_id == *run_id
                    && c.parquet.as_ref().is_some_and(|(_, o)| {
                        o == output || o.strip_suffix(" (quarantine)") == Some(output)
                    })
            })
            .collect();
        if parts.is_empty() || !in_scope(run, &json!({ "run_id": run_id })) {
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
}

/// Runs: every run_start needs a final `ok` run_end.
fn check_runs(records: &[(u64, Value)], run: Option<&str>, report: &Report) {
    let mut last_end: BTreeMap<String, Value> = BTreeMap::new();
    let mut started: Vec<String> = vec![];
    for (_, r) in records.iter().filter(|(_, r)| in_scope(run, r)) {
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
}
