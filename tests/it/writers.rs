//! `--writer NAME`: several `harvest` processes share one DIR and commit into the same Delta
//! tables at once (a split table's shards), against a real Datasette; one of them is killed
//! with SIGKILL mid-run and rerun. The tables, read by the `deltalake` package, polars and
//! DuckDB's `delta` extension, hold every SQLite row exactly once; the Delta log adds each
//! part once and every add is a file on disk; no commit is lost; `verify DIR` checks every
//! writer and the shared tables; layouts that would mix are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// The tables `split_shard_args` harvests.
const TABLES: [&str; 2] = ["Order Details", "Orders"];

/// Shard `k` of 3 as writer `shard-k` of one Delta DIR (a checkpoint every 20,000 rows),
/// with `more` flags.
pub(crate) fn writer_args(ds: &Datasette, out: &str, k: usize, more: &[&str]) -> Vec<String> {
    let name = format!("shard-{k}");
    let mut extra = vec![
        "--table-format",
        "delta",
        "--part-rows",
        "20000",
        "--writer",
        &name,
    ];
    extra.extend_from_slice(more);
    crate::shard::split_shard_args(ds, out, k, &extra)
}

/// Every `add` in the table's log, in version order: (version, path).
fn log_adds(table: &Path) -> Vec<(u64, String)> {
    delta_log(table)
        .into_iter()
        .filter_map(|(v, a)| a["add"]["path"].as_str().map(|p| (v, p.to_string())))
        .collect()
}

#[test]
fn three_writers_commit_one_split_table_each_into_the_same_delta_tables() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let dir = TempDir::new("writers");
    let out = dir.path().join("lake");
    let out_s = out.to_str().unwrap().to_string();
    let log = |k: usize| dir.path().join(format!("writer-{k}.log"));
    let spawn = |k: usize| {
        let a = writer_args(&ds, &out_s, k, &[]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        crate::crash::spawn_harvest_logged(&a, &log(k))
    };
    // All three at once; writer 2 is killed with SIGKILL once it has recorded some pages.
    let mut children: Vec<_> = (1..=3).map(spawn).collect();
    let manifest2 = out.join("writers/shard-2/manifest.jsonl");
    assert!(
        kill_after_pages(&mut children[1], &manifest2, 30),
        "writer 2 finished before it could be killed"
    );
    for k in [0, 2] {
        let status = children[k].wait().unwrap();
        assert!(
            status.success(),
            "writer {} failed: {status:?}\n{}",
            k + 1,
            std::fs::read_to_string(log(k + 1)).unwrap_or_default()
        );
    }
    let a = writer_args(&ds, &out_s, 2, &[]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_exit(&harvest(&a, &[]), 0);

    // One manifest per writer in its home; nothing at the top of DIR.
    assert!(!out.join("manifest.jsonl").exists());
    let manifests: Vec<Vec<Value>> = (1..=3)
        .map(|k| manifest(&out.join(format!("writers/shard-{k}"))))
        .collect();
    // No lost commit: every version a writer recorded is in the log, and no two writers
    // recorded the same version of a table.
    let mut recorded: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for (k, m) in manifests.iter().enumerate() {
        for r in records(m, "delta_commit") {
            let key = (
                r["output"].as_str().unwrap().to_string(),
                r["delta_version"].as_u64().unwrap(),
            );
            assert!(recorded.insert(key.clone(), k).is_none(), "{key:?} twice");
        }
    }
    for t in TABLES {
        let table = out.join("parquet").join(t);
        let adds = log_adds(&table);
        let versions: BTreeSet<u64> = adds.iter().map(|(v, _)| *v).collect();
        for ((o, v), _) in recorded.iter().filter(|((o, _), _)| o == t) {
            assert!(
                versions.contains(v) || *v == 0,
                "{o}: recorded version {v} is not in the log"
            );
        }
        // Each part added once, and every add is a file on disk.
        let mut seen = BTreeSet::new();
        for (v, p) in &adds {
            assert!(
                seen.insert(p.clone()),
                "{t}: {p} added twice (again in version {v})"
            );
            assert!(
                table.join(p).is_file(),
                "{t}: version {v} adds {p}, not on disk"
            );
        }
        // Every writer committed to the table.
        let writers: BTreeSet<usize> = recorded
            .iter()
            .filter(|((o, _), _)| o == t)
            .map(|(_, k)| *k)
            .collect();
        assert_eq!(writers.len(), 3, "{t}: commits by {writers:?}");
        // Readers nobody here wrote: the table is the SQLite table, each row once.
        delta_readers_agree(table.to_str().unwrap(), &db, t, None);
    }

    // verify DIR: each writer, the shared tables, and the shards' coverage.
    let o = harvest(&["verify", "--json", "--out", &out_s], &[]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["dirs"].as_array().unwrap().len(),
        4,
        "three writers and the DIR"
    );
    for t in v["shards"]["tables"].as_array().unwrap() {
        assert_eq!(t["rows"], t["server_count"], "{t}");
    }
    // A file no writer's run wrote is an orphan of the DIR.
    let stray = out.join("parquet/Orders/part-20000101T000000Z-0000-00001.parquet");
    std::fs::write(&stray, b"not a part").unwrap();
    let o = harvest(&["verify", "--quick", "--out", &out_s], &[]);
    assert_exit_saying(&o, 3, "no writer's run wrote this file");
    std::fs::remove_file(&stray).unwrap();

    // Layouts that would mix are refused, naming the fix.
    let plain = |extra: &[&str]| {
        let mut a = vec!["--table", "Orders"];
        a.extend_from_slice(extra);
        run_job("harvest", &ds.url, &ds.db_name, &out_s, &a)
    };
    assert_exit_saying(
        &plain(&["--table-format", "delta"]),
        2,
        "pass --writer NAME",
    );
    assert_exit_saying(&plain(&["--writer", "w4"]), 2, "add --table-format delta");
    assert_exit_saying(
        &plain(&["--writer", "../up", "--table-format", "delta"]),
        2,
        "not a usable writer name",
    );
    // A fourth writer harvesting Orders whole would put its rows in twice.
    assert_exit_saying(
        &plain(&["--writer", "w4", "--table-format", "delta"]),
        2,
        "other writers committed",
    );
    // Another writer's Delta parts are on disk before its first commit creates the log: a
    // part nobody recorded does not make the table a plain dataset (the race CI once hit).
    let in_flight = out.join("parquet/Customers/part-20000101T000000Z-zz99-00001.parquet");
    // Its `_delta_log` may be there already, with no commit in it yet.
    std::fs::create_dir_all(out.join("parquet/Customers/_delta_log")).unwrap();
    std::fs::write(&in_flight, b"another writer's part, not yet committed").unwrap();
    assert_exit(
        &run_job(
            "harvest",
            &ds.url,
            &ds.db_name,
            &out_s,
            &[
                "--table",
                "Customers",
                "--writer",
                "w5",
                "--table-format",
                "delta",
            ],
        ),
        0,
    );
    std::fs::remove_file(&in_flight).unwrap();
    let customers = out.join("parquet/Customers");
    delta_readers_agree(customers.to_str().unwrap(), &db, "Customers", None);
    // history is per writer; export does not read shared DIRs yet.
    assert_exit_saying(
        &harvest(&["history", "--out", &out_s], &[]),
        2,
        "writers/shard-1",
    );
    let home = out.join("writers/shard-1");
    assert_exit(
        &harvest(&["history", "--out", home.to_str().unwrap()], &[]),
        0,
    );
    assert_exit_saying(
        &harvest(
            &[
                "export",
                "--out",
                &out_s,
                "--dataset",
                "Orders",
                "--format",
                "csv",
            ],
            &[],
        ),
        2,
        "does not read shared DIRs",
    );
    // sql-extract would put a top-level manifest into the shared DIR.
    let db_s = db.to_str().unwrap();
    assert_exit_saying(
        &harvest(
            &[
                "sql-extract",
                "--db",
                db_s,
                "--query",
                "select 1 as a",
                "--name",
                "one",
                "--out",
                &out_s,
            ],
            &[],
        ),
        2,
        "is shared by writers",
    );
    // A single writer's DIR takes no --writer.
    let single = dir.path().join("single");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        single.to_str().unwrap(),
        &["--table", "Categories", "--table-format", "delta"],
    );
    assert_exit(&o, 0);
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        single.to_str().unwrap(),
        &[
            "--table",
            "Categories",
            "--table-format",
            "delta",
            "--writer",
            "w1",
        ],
    );
    assert_exit_saying(&o, 2, "is a single writer's output");
}

/// `incremental` with writers: each writer keeps its tables' watermarks in its own home, and
/// a second round after new rows appends exactly the new rows to the shared Delta tables.
#[test]
fn incremental_writers_keep_their_own_watermarks() {
    let work = TempDir::new("writers-inc");
    let fill = |from: u32, to: u32| {
        format!(
            "with recursive n(i) as (select {from} union all select i + 1 from n where i < {to})
             insert into a select i, 'a' || i from n;
             with recursive n(i) as (select {from} union all select i + 1 from n where i < {to})
             insert into b select i, 'b' || i from n;"
        )
    };
    let db = make_db(
        &work,
        "inc",
        &format!(
            "create table a (id integer primary key, v text);
             create table b (id integer primary key, v text); {}",
            fill(1, 2500)
        ),
    );
    let ds = Datasette::start(V1_0, &db);
    let out = work.path().join("lake");
    let round = || {
        for k in 1..=2 {
            let (spec, name) = (format!("{k}/2"), format!("w{k}"));
            let o = run_job(
                "incremental",
                &ds.url,
                &ds.db_name,
                out.to_str().unwrap(),
                &[
                    "--table",
                    "a",
                    "--table",
                    "b",
                    "--watermark-column",
                    "id",
                    "--table-format",
                    "delta",
                    "--shard",
                    &spec,
                    "--writer",
                    &name,
                    "--page-size",
                    "500",
                ],
            );
            assert_exit(&o, 0);
        }
    };
    round();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&fill(2501, 3100))
        .unwrap();
    round();
    for (k, t) in [(1, "a"), (2, "b")] {
        // Each table's watermark is in its writer's home, at the last id.
        let state = out.join(format!("writers/w{k}/state/watermarks"));
        let files = all_files(&state);
        assert_eq!(files.len(), 1, "{files:?}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
        assert_eq!(v["value"], 3100, "{v}");
        // Two commits (one per round), the second only the 600 new rows.
        let m = manifest(&out.join(format!("writers/w{k}")));
        let ends: Vec<u64> = records(&m, "table_end")
            .iter()
            .map(|r| r["rows"].as_u64().unwrap())
            .collect();
        assert_eq!(ends, vec![2500, 600], "{t}");
        delta_readers_agree(out.join("parquet").join(t).to_str().unwrap(), &db, t, None);
    }
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
}
