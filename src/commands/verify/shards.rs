//! `verify` of several DIRs, the shards of one `--shard I/N` job: each DIR on its own, then
//! every table split across them (one plan in all, every shard present once and finished,
//! every slice paged by exactly one shard).

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::Value;
use serde_json::json;

use crate::cli::VerifyArgs;
use crate::commands::verify::DirOutcome;
use crate::commands::verify::Finding;
use crate::commands::verify::REPORT_VERSION;
use crate::commands::verify::Report;
use crate::commands::verify::finding;
use crate::error::Discrepancies;
use crate::printer::Printer;

/// One shard's share of a split table, as its DIR's last run of the table recorded it.
pub(super) struct ShardClaim {
    pub(super) dir: PathBuf,
    pub(super) output: String,
    pub(super) run_id: String,
    pub(super) index: u64,
    pub(super) count: u64,
    pub(super) slices: Vec<u64>,
    pub(super) plan: Option<crate::source::datasette::slices::SlicePlan>,
    /// The run's `table_end` rows, when the table finished in that run.
    pub(super) rows: Option<u64>,
}

/// The split tables' shares in one DIR's manifest: per dataset, the last run that recorded
/// it, when that run paged a shard's share.
pub(super) fn shard_claims(dir: &Path, records: &[(u64, Value)]) -> Vec<ShardClaim> {
    // One pass: per dataset, the last run that recorded it, with that run's last `slices`
    // and `table_end` (a later run starts the dataset's entry afresh).
    #[derive(Default)]
    struct Last<'a> {
        run_id: &'a str,
        slices: Option<&'a Value>,
        end: Option<&'a Value>,
    }
    let mut last: BTreeMap<&str, Last<'_>> = BTreeMap::new();
    for (_, r) in records {
        let kind = r["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "slices" | "table_end" | "page") {
            continue;
        }
        let (Some(o), Some(id)) = (r["output"].as_str(), r["run_id"].as_str()) else {
            continue;
        };
        let e = last.entry(o).or_default();
        if e.run_id != id {
            *e = Last {
                run_id: id,
                ..Last::default()
            };
        }
        match kind {
            "slices" => e.slices = Some(r),
            "table_end" => e.end = Some(r),
            _ => {}
        }
    }
    last.into_iter()
        .filter_map(|(output, e)| {
            let rec = e.slices.filter(|r| r["shard"].is_object())?;
            let sh = &rec["shard"];
            Some(ShardClaim {
                dir: dir.to_path_buf(),
                output: output.to_string(),
                run_id: e.run_id.to_string(),
                index: sh["index"].as_u64().unwrap_or(0),
                count: sh["count"].as_u64().unwrap_or(0),
                slices: sh["slices"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
                plan: serde_json::from_value(rec["plan"].clone()).ok(),
                rows: e.end.and_then(|r| r["rows"].as_u64()),
            })
        })
        .collect()
}

/// Several DIRs: each verified on its own, then the shards of every split table together
/// (one plan, every shard present once and finished, every slice paged by exactly one).
pub(super) fn verify_shards(
    args: &VerifyArgs,
    printer: Printer,
    dirs: Vec<DirOutcome>,
) -> anyhow::Result<()> {
    let report = Report {
        findings: Mutex::new(vec![]),
        printer,
        json: args.json,
    };
    let mut by_output: BTreeMap<&str, Vec<&ShardClaim>> = BTreeMap::new();
    for c in dirs.iter().flat_map(|d| &d.shards) {
        by_output.entry(c.output.as_str()).or_default().push(c);
    }
    let mut tables = vec![];
    for (output, claims) in &by_output {
        if let Some(t) = check_split_table(output, claims, &report) {
            tables.push(t);
        }
    }
    let shard_findings = report.findings.into_inner().unwrap_or_default();
    let findings = dirs.iter().map(|d| d.findings).sum::<usize>() + shard_findings.len();
    if args.json {
        let doc = json!({
            "version": REPORT_VERSION,
            "ok": findings == 0,
            "dirs": dirs.iter().map(|d| &d.doc).collect::<Vec<_>>(),
            "shards": { "tables": tables, "findings": shard_findings },
        });
        printer.stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    for d in &dirs {
        printer.summary(&d.summary);
    }
    let names: Vec<String> = dirs.iter().map(|d| d.dir.display().to_string()).collect();
    // Writers' homes are reports of their own; count what the user named.
    let manifests = dirs.iter().filter(|d| !d.records.is_empty()).count();
    printer.summary(&format!(
        "checked {} manifest(s) in {} DIR(s) together: {} split table(s), {}",
        manifests,
        args.out.len(),
        tables.len(),
        if shard_findings.is_empty() {
            "every slice paged by exactly one shard".to_string()
        } else {
            format!(
                "{} shard discrepanc{}",
                shard_findings.len(),
                if shard_findings.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            )
        }
    ));
    if findings == 0 {
        Ok(())
    } else {
        Err(Discrepancies(
            findings,
            if findings == 1 { "y" } else { "ies" },
            names.join(", "),
        )
        .into())
    }
}

/// One table split across shards: one plan in all, the same N, every shard present once and
/// finished, every slice paged by exactly one shard. Returns the table's line of the report
/// (none when the shards disagree on the plan or on N: nothing else can be checked).
fn check_split_table(output: &str, claims: &[&ShardClaim], report: &Report) -> Option<Value> {
    let shard_finding = |message: String| Finding {
        path: Some(format!("parquet/{output}")),
        ..finding("shard_coverage", message)
    };
    let name = |c: &ShardClaim| format!("shard {}/{} ({})", c.index, c.count, c.dir.display());
    let first = claims[0];
    let plan = |c: &ShardClaim| {
        c.plan
            .as_ref()
            .map(|p| (p.column.clone(), p.min, p.max, p.slices.clone()))
    };
    if let Some(c) = claims.iter().find(|c| plan(c) != plan(first)) {
        let show = |c: &ShardClaim| match &c.plan {
            Some(p) => format!(
                "{} slices of {} over {}..={}",
                p.slices.len(),
                p.column,
                p.min,
                p.max
            ),
            None => "no readable plan".into(),
        };
        report.add(Finding {
            path: Some(format!("parquet/{output}")),
            expected: json!(show(first)),
            actual: json!(show(c)),
            ..finding(
                "shard_plan_mismatch",
                format!(
                    "dataset {output:?}: {} planned {} but {} planned {}: the table's key range changed between the shards' starts, so their slices do not tile it; rerun every shard with --restart while the table holds still",
                    name(first),
                    show(first),
                    name(c),
                    show(c)
                ),
            )
        });
        return None;
    }
    if let Some(c) = claims.iter().find(|c| c.count != first.count) {
        report.add(shard_finding(format!(
            "dataset {output:?}: {} and {} were run with different shard counts; run every shard with the same N",
            name(first),
            name(c)
        )));
        return None;
    }
    let mut holders: BTreeMap<u64, Vec<&ShardClaim>> = BTreeMap::new();
    for c in claims {
        holders.entry(c.index).or_default().push(c);
    }
    for i in 1..=first.count {
        match holders.get(&i).map(Vec::as_slice) {
            None | Some([]) => report.add(shard_finding(format!(
                "dataset {output:?}: shard {i}/{} is missing: pass its DIR too, or run `--shard {i}/{}` with the same config",
                first.count, first.count
            ))),
            Some([_]) => {}
            Some(many) => report.add(shard_finding(format!(
                "dataset {output:?}: shard {i}/{} is in {} DIRs ({}): its rows are there twice; pass one of them",
                first.count,
                many.len(),
                many.iter()
                    .map(|c| c.dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
    for c in claims.iter().filter(|c| c.rows.is_none()) {
        report.add(Finding {
            run_id: Some(c.run_id.clone()),
            ..shard_finding(format!(
                "dataset {output:?}: {} has not finished the table (run {}); rerun that shard to resume it",
                name(c),
                c.run_id
            ))
        });
    }
    if let Some(p) = &first.plan {
        for s in &p.slices {
            let k = u64::from(s.index);
            let n = claims.iter().filter(|c| c.slices.contains(&k)).count();
            if n != 1 {
                report.add(Finding {
                    expected: json!(1),
                    actual: json!(n),
                    ..shard_finding(format!(
                        "dataset {output:?}: slice {k} ({}) was paged by {n} shards, not exactly one",
                        s.filters
                            .iter()
                            .map(|(f, v)| format!("{f}={v}"))
                            .collect::<Vec<_>>()
                            .join("&")
                    ))
                });
            }
        }
    }
    let rows: Option<u64> = claims.iter().map(|c| c.rows).sum();
    Some(json!({
        "dataset": output,
        "shards": claims.len(),
        "count": first.count,
        "rows": rows,
        "server_count": first.plan.as_ref().and_then(|p| p.server_count),
    }))
}
