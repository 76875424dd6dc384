//! `verify`: a clean harvest verifies clean; each tampering is detected with the right finding.

use std::path::Path;

use crate::common::*;
use crate::fault_server::*;
use crate::faults::{ROWS, run};

/// A fresh, clean harvest of the synthetic table (3 pages) into a new directory.
fn clean_output(tag: &str) -> (FaultServer, TempDir) {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |_| None);
    let out = TempDir::new(tag);
    assert_exit(&run(&server, &out, &[]), 0);
    (server, out)
}

/// Run verify --json: (exit code, findings' kinds, the document).
fn verify(out: &Path, extra: &[&str]) -> (i32, Vec<String>, serde_json::Value) {
    let mut args = vec!["verify", "--json", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = harvest(&args, &[]);
    let doc: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    let kinds = doc["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["kind"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    (o.status.code().unwrap_or(-1), kinds, doc)
}

fn page_path(out: &Path, n: usize) -> std::path::PathBuf {
    let m = manifest(out);
    out.join(records(&m, "page")[n]["path"].as_str().unwrap())
}

fn manifest_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(out: &Path, lines: &[String]) {
    std::fs::write(out.join("manifest.jsonl"), lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_clean_harvest_verifies_clean_and_the_json_is_complete() {
    let (_s, out) = clean_output("v-clean");
    let (code, kinds, doc) = verify(out.path(), &[]);
    assert_eq!((code, kinds.len()), (0, 0), "{doc}");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["totals"]["pages"], 3);
    assert_eq!(doc["totals"]["parts"], 1);
    assert!(doc["totals"]["bytes_hashed"].as_u64().unwrap() > 0);
    assert!(
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "sha256")
    );
    let run_id = records(&manifest(out.path()), "run_start")[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(verify(out.path(), &["--run", &run_id]).0, 0);
}

#[test]
fn a_flipped_byte_in_a_snapshot_is_a_hash_mismatch_and_quick_skips_it() {
    let (_s, out) = clean_output("v-flip");
    let p = page_path(out.path(), 1);
    let mut b = std::fs::read(&p).unwrap();
    b[20] ^= 0x01;
    std::fs::write(&p, b).unwrap();
    let (code, kinds, _) = verify(out.path(), &[]);
    assert_eq!((code, kinds), (3, vec!["hash_mismatch".to_string()]));
    assert_eq!(
        verify(out.path(), &["--quick"]).0,
        0,
        "--quick checks sizes, not content"
    );
}

#[test]
fn a_truncated_snapshot_is_a_size_mismatch() {
    let (_s, out) = clean_output("v-trunc");
    let p = page_path(out.path(), 0);
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    let (code, kinds, _) = verify(out.path(), &[]);
    assert_eq!(code, 3);
    assert!(
        kinds.contains(&"size_mismatch".to_string())
            && kinds.contains(&"hash_mismatch".to_string()),
        "{kinds:?}"
    );
    assert!(
        verify(out.path(), &["--quick"])
            .1
            .contains(&"size_mismatch".to_string())
    );
}

#[test]
fn a_deleted_snapshot_is_missing() {
    let (_s, out) = clean_output("v-del");
    std::fs::remove_file(page_path(out.path(), 2)).unwrap();
    let (code, kinds, doc) = verify(out.path(), &[]);
    assert_eq!((code, kinds), (3, vec!["missing_file".to_string()]));
    assert!(
        doc["findings"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("page-000003.json")
    );
}

#[test]
fn an_added_file_is_an_orphan() {
    let (_s, out) = clean_output("v-orphan");
    let dir = page_path(out.path(), 0).parent().unwrap().to_path_buf();
    std::fs::write(dir.join("page-000099.json"), b"{}").unwrap();
    std::fs::write(out.path().join("parquet/items/extra.parquet"), b"PAR1").unwrap();
    let (code, kinds, _) = verify(out.path(), &[]);
    assert_eq!(
        (code, kinds.clone()),
        (
            3,
            vec!["orphan_file".to_string(), "orphan_file".to_string()]
        ),
        "{kinds:?}"
    );
}

#[test]
fn an_edited_rows_field_breaks_the_chain_and_the_row_sums() {
    let (_s, out) = clean_output("v-rows");
    let mut lines = manifest_lines(out.path());
    let i = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"page\""))
        .unwrap();
    lines[i] = lines[i].replace("\"rows\":100", "\"rows\":101");
    write_lines(out.path(), &lines);
    let (code, kinds, doc) = verify(out.path(), &[]);
    assert_eq!(code, 3);
    assert!(kinds.contains(&"chain_break".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"row_sum_mismatch".to_string()), "{kinds:?}");
    let brk = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "chain_break")
        .unwrap();
    assert_eq!(
        brk["line"].as_u64().unwrap() as usize,
        i + 2,
        "the line after the edited one"
    );
}

#[test]
fn a_deleted_middle_line_breaks_the_chain() {
    let (_s, out) = clean_output("v-delline");
    let mut lines = manifest_lines(out.path());
    let i = lines.iter().position(|l| l.contains("\"page\":2")).unwrap();
    lines.remove(i);
    write_lines(out.path(), &lines);
    let (code, kinds, _) = verify(out.path(), &[]);
    assert_eq!(code, 3);
    assert!(kinds.contains(&"chain_break".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"orphan_file".to_string()),
        "its snapshot is now unaccounted for: {kinds:?}"
    );
}

#[test]
fn two_reordered_lines_break_seq_and_chain() {
    let (_s, out) = clean_output("v-reorder");
    let mut lines = manifest_lines(out.path());
    lines.swap(2, 3);
    write_lines(out.path(), &lines);
    let (code, kinds, _) = verify(out.path(), &[]);
    assert_eq!(code, 3);
    assert!(
        kinds.contains(&"seq_order".to_string()) && kinds.contains(&"chain_break".to_string()),
        "{kinds:?}"
    );
}

#[test]
fn a_replaced_part_with_another_row_count_is_caught() {
    let (_s, out) = clean_output("v-part");
    let m = manifest(out.path());
    let ours = out
        .path()
        .join(records(&m, "parquet")[0]["path"].as_str().unwrap());
    // Another valid Parquet file with the same columns and one row.
    let small = TempDir::new("v-part-small");
    let o = harvest(
        &[
            "sql-extract",
            "--db",
            fixture_db(1).to_str().unwrap(),
            "--query",
            "select 1 as id, 'x' as name, 1.5 as price, null as category",
            "--output",
            small.path().join("p.parquet").to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&o, 0);
    std::fs::copy(small.path().join("p.parquet"), &ours).unwrap();
    let (code, kinds, doc) = verify(out.path(), &[]);
    assert_eq!(code, 3);
    for k in ["row_count_mismatch", "hash_mismatch", "size_mismatch"] {
        assert!(kinds.contains(&k.to_string()), "{k} missing: {doc}");
    }
}

#[test]
fn an_interrupted_run_is_reported_as_unfinished_not_corrupt() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |req| {
        (req.param("_next") == Some("200")).then(|| json(503, "{}"))
    });
    let out = TempDir::new("v-unfinished");
    assert_exit(&run(&server, &out, &["--max-attempts", "1"]), 5);
    let (code, kinds, doc) = verify(out.path(), &[]);
    assert_eq!((code, kinds), (3, vec!["unfinished_run".to_string()]));
    assert!(
        doc["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("resumes it"),
        "{doc}"
    );
    // Started over instead of resumed (--restart): the failed run can no longer be resumed,
    // and the finding says so instead of promising a resume.
    assert_exit(
        &run(&server, &out, &["--max-attempts", "1", "--restart"]),
        5,
    );
    let (code, kinds, doc) = verify(out.path(), &[]);
    assert_eq!(code, 3);
    assert_eq!(kinds, ["unfinished_run", "unfinished_run"]);
    let messages: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("started over instead of resuming"))
            && messages.iter().any(|m| m.contains("resumes it")),
        "{messages:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let d = TempDir::new("v-usage");
    let o = harvest(
        &["verify", "--out", d.path().join("nope").to_str().unwrap()],
        &[],
    );
    assert_exit(&o, 2);
    let o = harvest(&["verify", "--out", d.path().to_str().unwrap()], &[]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("not a harvest output directory"),
        "{}",
        stderr(&o)
    );
}
