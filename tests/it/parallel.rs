//! `--parallel N` against real Datasette servers: disjoint key-range cursors that together
//! deliver every row exactly once, with per-slice snapshots, manifest lines and parts that
//! `verify` accepts; tables that cannot be split fall back to one cursor and say why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::*;

/// Per table: slice index → (pages, rows) from the page records.
fn slice_pages(m: &[serde_json::Value], output: &str) -> BTreeMap<u64, (u64, u64)> {
    let mut out: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for p in records(m, "page")
        .into_iter()
        .filter(|p| p["output"] == output)
    {
        let e = out
            .entry(p["slice"].as_u64().expect("sliced pages carry `slice`"))
            .or_default();
        e.0 += 1;
        e.1 += p["rows"].as_u64().unwrap();
    }
    out
}

fn slice_plan<'a>(m: &'a [serde_json::Value], output: &str) -> &'a serde_json::Value {
    let plans: Vec<_> = records(m, "slices")
        .into_iter()
        .filter(|r| r["output"] == output)
        .collect();
    assert_eq!(plans.len(), 1, "{output}: one slice plan per run");
    &plans[0]["plan"]
}

#[track_caller]
fn assert_verify_clean(out: &Path) {
    let o = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&o, 0);
}

fn splits_tables_and_matches_sqlite(version: &str) {
    let db = fixture_db(1);
    let ds = Datasette::start(version, &db);
    let out = TempDir::new("parallel");
    let dir = out.path().to_str().unwrap();
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        dir,
        &[
            "--table",
            "Order Details",
            "--table",
            "Orders",
            "--table",
            "Order Subtotals",
            "--parallel",
            "3",
        ],
    );
    assert_exit(&o, 0);
    for t in ["Order Details", "Orders"] {
        assert_dataset_matches_table(out.path(), &db, t);
    }
    let m = manifest(out.path());
    // Order Details has a composite key (OrderID, ProductID): it splits on OrderID.
    let plan = slice_plan(&m, "Order Details");
    assert_eq!(plan["column"], "OrderID");
    assert_eq!(plan["slices"].as_array().unwrap().len(), 3);
    assert_eq!(slice_plan(&m, "Orders")["column"], "OrderID");
    for t in ["Order Details", "Orders"] {
        let per_slice = slice_pages(&m, t);
        assert_eq!(
            per_slice.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2],
            "{t}"
        );
        // Equal key widths of a uniform key: no slice is starved.
        let rows: Vec<u64> = per_slice.values().map(|v| v.1).collect();
        let (lo, hi) = (rows.iter().min().unwrap(), rows.iter().max().unwrap());
        assert!(*lo * 2 > *hi, "{t}: unbalanced slices {rows:?}");
        // Each slice's pages carry its filters, live in its own directory, feed its own parts.
        for p in records(&m, "page").into_iter().filter(|p| p["output"] == t) {
            let k = p["slice"].as_u64().unwrap();
            assert!(
                p["path"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("/slice-{k}/"))
            );
            for (f, v) in plan_filters(slice_plan(&m, t), k) {
                assert_eq!(p["params"][&f], v, "{t} slice {k} page params");
            }
        }
        for part in records(&m, "parquet")
            .into_iter()
            .filter(|p| p["output"] == t)
        {
            let k = part["pages"]["slice"].as_u64().unwrap();
            assert!(part["path"].as_str().unwrap().contains(&format!("-s{k}-")));
        }
        let end = records(&m, "table_end")
            .into_iter()
            .find(|r| r["output"] == t)
            .unwrap();
        assert_eq!(end["slices"], 3);
        assert_eq!(
            end["rows"].as_u64().unwrap(),
            per_slice.values().map(|v| v.1).sum::<u64>()
        );
    }
    // The view cannot be split: one cursor, and the run says why.
    assert!(
        records(&m, "page")
            .iter()
            .filter(|p| p["output"] == "Order Subtotals")
            .all(|p| p.get("slice").is_none())
    );
    let warnings = records(&m, "run_end")[0]["warnings"].to_string();
    assert!(
        warnings
            .contains("Order Subtotals: --parallel 3 not used, one cursor instead: it is a view"),
        "{warnings}"
    );
    // No row-count mismatch: the plan's count reconciles the slices together.
    assert!(!warnings.contains("the server counted"), "{warnings}");
    assert_verify_clean(out.path());
}

/// The filters slice `k` of a recorded plan adds.
fn plan_filters(plan: &serde_json::Value, k: u64) -> Vec<(String, serde_json::Value)> {
    plan["slices"][k as usize]["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f[0].as_str().unwrap().to_string(), f[1].clone()))
        .collect()
}

#[test]
fn v0_65_parallel_cursors_split_by_key_and_match_sqlite() {
    splits_tables_and_matches_sqlite(V0_65);
}

#[test]
fn v1_0_parallel_cursors_split_by_key_and_match_sqlite() {
    splits_tables_and_matches_sqlite(V1_0);
}

/// Keys SQLite allows but a naive range split would lose: NULLs in a composite primary key,
/// a real between two integers; and a table without a declared key (split on `rowid`).
#[test]
fn v0_65_parallel_keeps_null_and_real_keys_and_splits_rowid_tables() {
    let tmp = TempDir::new("oddkeys");
    let db = make_db(
        &tmp,
        "oddkeys",
        "create table odd (k INTEGER, v TEXT NOT NULL, PRIMARY KEY (k, v));
         create table plain (x TEXT);
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 400)
         insert into plain select 'x' || i from n;
         insert into odd select rowid, 'r' || rowid from plain where rowid <= 300;
         insert into odd values (2.5, 'half');
         insert into odd select NULL, 'null' || rowid from plain where rowid <= 5;",
    );
    let ds = Datasette::start(V0_65, &db);
    let out = TempDir::new("oddkeys-out");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        out.path().to_str().unwrap(),
        &[
            "--table",
            "odd",
            "--table",
            "plain",
            "--page-size",
            "20",
            "--parallel",
            "3",
        ],
    );
    assert_exit(&o, 0);
    assert_dataset_matches_table(out.path(), &db, "odd");
    assert_dataset_matches_table(out.path(), &db, "plain");
    let m = manifest(out.path());
    let odd = slice_plan(&m, "odd");
    assert_eq!(odd["column"], "k");
    let filters: BTreeSet<String> = odd["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["filters"].to_string())
        .collect();
    assert!(
        filters.contains(r#"[["k__isnull","1"]]"#),
        "a NULL-key slice: {filters:?}"
    );
    assert_eq!(odd["slices"].as_array().unwrap().len(), 4);
    assert_eq!(slice_plan(&m, "plain")["column"], "rowid");
    assert_eq!(slice_pages(&m, "plain").len(), 3);
    assert_verify_clean(out.path());

    // Tampering with the plan (slice 1 now overlaps slice 0) and with one page's slice is
    // reported, besides the broken chain.
    let path = out.path().join("manifest.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let i = lines
        .iter()
        .position(|l| l.contains(r#""kind":"slices""#) && l.contains(r#""output":"odd""#))
        .unwrap();
    let mut rec: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
    let cut = rec["plan"]["slices"][1]["filters"][0][1]
        .as_str()
        .unwrap()
        .to_string();
    let lower = (cut.parse::<i64>().unwrap() - 10).to_string();
    rec["plan"]["slices"][1]["filters"][0][1] = serde_json::json!(lower);
    lines[i] = rec.to_string();
    let j = lines
        .iter()
        .position(|l| l.contains(r#""kind":"page""#) && l.contains(r#""output":"plain""#))
        .unwrap();
    lines[j] = lines[j].replace(r#""slice":0"#, r#""slice":7"#);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let o = harvest(
        &["verify", "--json", "--out", out.path().to_str().unwrap()],
        &[],
    );
    assert_exit(&o, 3);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: BTreeSet<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    for k in ["chain_break", "slice_plan_invalid", "slice_mismatch"] {
        assert!(kinds.contains(k), "{k} not in {kinds:?}");
    }
}

#[test]
fn parallel_is_refused_for_incremental_and_bounded() {
    let out = TempDir::new("par-usage");
    let dir = out.path().to_str().unwrap();
    let base = [
        "--url",
        "http://127.0.0.1:9",
        "--db",
        "d",
        "--table",
        "t",
        "--out",
        dir,
    ];
    let mut inc = vec!["incremental", "--watermark-column", "id", "--parallel", "2"];
    inc.extend(base);
    let o = harvest(&inc, &[]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("--parallel is for full harvests"),
        "{}",
        stderr(&o)
    );
    for n in ["0", "17"] {
        let mut h = vec!["harvest", "--parallel", n];
        h.extend(base);
        let o = harvest(&h, &[]);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains("outside 1..=16"), "{}", stderr(&o));
    }
}
