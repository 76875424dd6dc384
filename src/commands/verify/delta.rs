//! `verify` of Delta tables: the log read back and held against what the manifest says each
//! table holds (uncommitted, stale, unrecorded or resized files, missing versions).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use serde_json::json;

use crate::commands::verify::Finding;
use crate::commands::verify::Report;
use crate::commands::verify::finding;

/// What a manifest says its Delta tables hold, and the newest version it recorded for each.
pub(super) fn ledger_of(
    records: &[(u64, Value)],
) -> (crate::store::delta::Ledger, HashMap<String, i64>) {
    let mut ledger = crate::store::delta::Ledger::default();
    let mut versions: HashMap<String, i64> = HashMap::new();
    for (_, r) in records {
        ledger.feed(r);
        if r["kind"] == "delta_commit"
            && let (Some(o), Some(v)) = (r["output"].as_str(), r["delta_version"].as_i64())
        {
            let e = versions.entry(o.to_string()).or_insert(v);
            *e = (*e).max(v);
        }
    }
    (ledger, versions)
}

/// Every Delta table under DIR/parquet against what the manifest says it holds. `ledger`:
/// what the manifest (in a shared DIR, every writer's, merged) says each Delta table holds; `versions`: the newest commit it recorded per dataset.
pub(super) fn check_delta(
    out: &Path,
    ledger: &crate::store::delta::Ledger,
    versions: &HashMap<String, i64>,
    report: &Report,
) {
    // Delta tables on disk, by directory, with the dataset the manifest names for each.
    let mut tables: BTreeMap<String, Option<String>> = BTreeMap::new();
    for output in ledger.outputs.keys() {
        let rel = format!(
            "parquet/{}",
            crate::store::fsutil::sanitize_component(output)
        );
        tables.insert(rel, Some(output.clone()));
    }
    for entry in std::fs::read_dir(out.join("parquet"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if crate::store::delta::is_delta(&entry.path()) {
            let rel = format!("parquet/{}", entry.file_name().to_string_lossy());
            tables.entry(rel).or_insert(None);
        }
    }
    let empty = crate::store::delta::Desired::default();
    for (rel, output) in tables {
        let desired = output
            .as_ref()
            .and_then(|o| ledger.outputs.get(o))
            .unwrap_or(&empty);
        let state = match crate::store::delta::load(out, &rel) {
            Ok(s) => s,
            Err(e) => {
                report.add(Finding {
                    path: Some(rel.clone()),
                    ..finding(
                        "delta_unreadable",
                        format!("cannot read the Delta table: {e:#}"),
                    )
                });
                continue;
            }
        };
        if state.version < 0 && !desired.files.is_empty() {
            report.add(Finding {
                path: Some(rel.clone()),
                ..finding(
                    "delta_uncommitted",
                    "the manifest records Delta parts here, but there is no Delta log; rerun harvest with the same settings to commit them",
                )
            });
            continue;
        }
        if let Some(v) = output.as_ref().and_then(|o| versions.get(o))
            && *v > state.version
        {
            report.add(Finding {
                path: Some(rel.clone()),
                expected: json!(v),
                actual: json!(state.version),
                ..finding(
                    "delta_version_missing",
                    "the manifest records a Delta commit newer than the table's latest version (the log was rolled back or replaced)",
                )
            });
        }
        for (path, w) in &desired.files {
            match state.files.get(path) {
                None => report.add(Finding {
                    path: Some(path.clone()),
                    ..finding(
                        "delta_uncommitted",
                        "the manifest records this part, but the Delta table does not hold it; rerun harvest with the same settings to commit it",
                    )
                }),
                Some(size) if *size as u64 != w.bytes => report.add(Finding {
                    path: Some(path.clone()),
                    expected: json!(w.bytes),
                    actual: json!(size),
                    ..finding(
                        "delta_size_mismatch",
                        "the Delta log's size for this part differs from the manifest's",
                    )
                }),
                Some(_) => {}
            }
        }
        for path in state.files.keys() {
            if desired.files.contains_key(path) {
                continue;
            }
            let (kind, why) = if desired.known.contains(path) {
                (
                    "delta_stale",
                    "the Delta table still holds a part the manifest replaced; rerun harvest with the same settings to commit the removal",
                )
            } else {
                (
                    "delta_unrecorded",
                    "the Delta table holds a file no manifest record vouches for",
                )
            };
            report.add(Finding {
                path: Some(path.clone()),
                ..finding(kind, why)
            });
        }
    }
}
