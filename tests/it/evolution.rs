//! Schema evolution on a REST collection whose fields change on page 3 and whose `amount`
//! turns to text on page 5 ([`crate::api_shapes::evolving_record`]): harvested as Parquet
//! parts and as a Delta table, read back by name by pyarrow (unified schema), DuckDB
//! (`union_by_name`), pandas, polars, deltalake and `harvest export`; a crash at the change
//! resumes to the same parts and schema; `schema = "freeze"` stops as before.

use std::path::Path;

use serde_json::{Value, json};

use crate::api_shapes::{self, EVOLVING};
use crate::common::*;
use crate::rest::write_config;

fn config(dir: &Path, url: &str, extra: &str) -> String {
    write_config(
        dir,
        &format!(
            r#"
[[source]]
kind = "rest"
url = "{url}"

[[source.table]]
name = "evolving"
paginate = {{ kind = "page_number", param = "page", start = 1 }}
{extra}
"#
        ),
    )
}

/// Every record as the final schema holds it.
fn expected() -> Vec<Value> {
    (1..=EVOLVING)
        .map(|i| {
            let r = api_shapes::evolving_record(i);
            let text = r["amount"].is_string();
            json!({
                "id": i,
                "name": r["name"],
                "amount": if text { Value::Null } else { r["amount"].clone() },
                "tier": r.get("tier").cloned().unwrap_or(Value::Null),
                "meta__score": r.pointer("/meta/score").cloned().unwrap_or(Value::Null),
                "amount__v_text": if text { r["amount"].clone() } else { Value::Null },
            })
        })
        .collect()
}

fn readers_agree(py: &Path, mode: &str, dir: &Path, readers: &str, work: &Path) {
    let want = work.join("expected.json");
    std::fs::write(&want, serde_json::to_vec(&expected()).unwrap()).unwrap();
    let o = std::process::Command::new(py)
        .arg(repo_root().join("tests/it/read_evolved.py"))
        .args([mode, dir.to_str().unwrap(), readers, want.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{mode} {readers}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The parts the manifest records for the dataset: (rows, column names), in order.
fn parts(out: &Path) -> Vec<(u64, Vec<String>)> {
    records(&manifest(out), "parquet")
        .iter()
        .map(|p| {
            (
                p["rows"].as_u64().unwrap(),
                p["schema"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn schema_changes(out: &Path) -> Vec<(u64, Vec<String>)> {
    records(&manifest(out), "schema")
        .iter()
        .map(|s| {
            (
                s["page"].as_u64().unwrap(),
                s["added"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["name"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn new_fields_and_misfit_values_widen_the_schema_and_every_reader_reads_it() {
    let server = api_shapes::start(0);
    let work = TempDir::new("evolution");
    let cfg = config(work.path(), &server.url, "");
    let out = work.path().join("out");
    let o = harvest(
        &["harvest", "--config", &cfg, "--out", out.to_str().unwrap()],
        &[],
    );
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("page 3 widens the schema"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        schema_changes(&out),
        vec![
            (3, vec!["meta__score".to_string(), "tier".into()]),
            (5, vec!["amount__v_text".to_string()]),
        ]
    );
    let m = manifest(&out);
    let change = records(&m, "schema")[1];
    assert_eq!(change["added"][0]["variant_of"], "amount");
    assert_eq!(change["added"][0]["type"], "text");
    // Parts written before a change keep their schema.
    let p = parts(&out);
    // (the test server sends each record's fields sorted by name)
    assert_eq!(p.first().unwrap().1, ["amount", "id", "name"]);
    let last = [
        "amount",
        "id",
        "name",
        "meta__score",
        "tier",
        "amount__v_text",
    ];
    assert_eq!(p.last().unwrap().1, last);
    assert_eq!(p.iter().map(|(r, _)| r).sum::<u64>(), EVOLVING);
    readers_agree(
        &readers_python(),
        "parquet",
        &out.join("parquet/evolving"),
        "pyarrow,duckdb,pandas",
        work.path(),
    );
    readers_agree(
        &delta_readers_python(),
        "parquet",
        &out.join("parquet/evolving"),
        "polars",
        work.path(),
    );
    // harvest export reads it whole, NULL where a part lacks a column.
    let got: Vec<Value> = export_ndjson(&out, "evolving")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut want = expected();
    for w in &mut want {
        // export writes the dataset's floats as floats.
        if let Some(s) = w["meta__score"].as_f64() {
            w["meta__score"] = json!(s);
        }
    }
    assert_eq!(got, want);
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
    // history shows the changes.
    let h = harvest(&["history", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&h, 0);
    let text = String::from_utf8_lossy(&h.stdout);
    assert!(
        text.contains("evolving: page 5 added amount__v_text text (variant of amount)"),
        "{text}"
    );

    // A second run appends to the dataset with its columns and types as they are: page 1's
    // integer amounts still fit, and nothing is retyped.
    let o = harvest(
        &["harvest", "--config", &cfg, "--out", out.to_str().unwrap()],
        &[],
    );
    assert_exit(&o, 0);
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
}

#[test]
fn a_delta_table_commits_the_wider_schema() {
    let server = api_shapes::start(0);
    let work = TempDir::new("evolution-delta");
    let cfg = config(work.path(), &server.url, "");
    let out = work.path().join("out");
    let o = harvest(
        &[
            "harvest",
            "--config",
            &cfg,
            "--out",
            out.to_str().unwrap(),
            "--table-format",
            "delta",
        ],
        &[],
    );
    assert_exit(&o, 0);
    readers_agree(
        &delta_readers_python(),
        "delta",
        &out.join("parquet/evolving"),
        "deltalake,polars,duckdb",
        work.path(),
    );
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
}

/// A crash right at each change, then a resumed run: the same parts (rows and schemas) and
/// the same rows as an uninterrupted run.
#[test]
fn a_crash_at_a_schema_change_resumes_to_the_same_parts_and_schema() {
    let server = api_shapes::start(0);
    let work = TempDir::new("evolution-crash");
    let cfg = config(work.path(), &server.url, "");
    let run = |out: &Path, envs: &[(&str, &str)]| {
        harvest(
            &[
                "harvest",
                "--config",
                &cfg,
                "--out",
                out.to_str().unwrap(),
                "--part-rows",
                "15",
            ],
            envs,
        )
    };
    let whole = work.path().join("whole");
    assert_exit(&run(&whole, &[]), 0);
    for point in ["schema:before-change", "schema:after-change"] {
        let out = work.path().join(point.replace(':', "-"));
        let o = run(&out, &[("HARVEST_FAILPOINT", point)]);
        assert!(!o.status.success(), "{point}: the failpoint did not fire");
        let o = run(&out, &[]);
        assert_exit(&o, 0);
        assert_eq!(parts(&out), parts(&whole), "{point}");
        let mut rows = export_ndjson(&out, "evolving");
        let mut wrows = export_ndjson(&whole, "evolving");
        rows.sort();
        wrows.sort();
        assert_eq!(rows, wrows, "{point}");
        assert_exit(
            &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
            0,
        );
    }
}

#[test]
fn a_frozen_schema_stops_at_a_new_field_as_before() {
    let server = api_shapes::start(0);
    let work = TempDir::new("evolution-freeze");
    let cfg = config(work.path(), &server.url, "schema = \"freeze\"");
    let out = work.path().join("out");
    let o = harvest(
        &["harvest", "--config", &cfg, "--out", out.to_str().unwrap()],
        &[],
    );
    assert_exit_saying(&o, 1, "field \"meta__score\"");
    assert!(stderr(&o).contains("schema = \"freeze\""), "{}", stderr(&o));
}
