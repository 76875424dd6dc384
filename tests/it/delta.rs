//! `--table-format delta` against a real Datasette: every dataset is a Delta Lake table that
//! readers nobody here wrote (the `deltalake` package, polars, DuckDB's `delta` extension) read
//! back row for row as SQLite holds it, at every version: appends per checkpoint, one
//! overwrite commit per full re-harvest (the old version still readable), incremental appends,
//! and a crash between a recorded part and its commit repaired by the rerun.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// Read `out/parquet/<table>` with the three Delta readers and compare with SQLite's `table`.
#[track_caller]
fn readers_agree(out: &Path, db: &Path, table: &str, version: Option<i64>) -> Value {
    let dir = out.join("parquet").join(table);
    delta_readers_agree(dir.to_str().unwrap(), db, table, version)
}

/// Run `harvest` until it aborts at `failpoint`.
#[track_caller]
fn run_until_failpoint(ds: &Datasette, out: &Path, extra: &[&str], failpoint: &str) {
    let o = run_delta(ds, out, extra, &[("HARVEST_FAILPOINT", failpoint)]);
    assert_aborted(&o);
}

/// The process died at its failpoint (abort: SIGABRT, or 134 through a shell).
#[track_caller]
fn assert_aborted(o: &std::process::Output) {
    assert!(
        o.status.code().is_none() || o.status.code() == Some(134),
        "expected an abort at the failpoint: {o:?}"
    );
}

#[track_caller]
fn verify_clean(out: &Path) {
    let o = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&o, 0);
}

/// `verify --json` findings by kind.
fn findings(out: &Path) -> Vec<String> {
    let o = harvest(&["verify", "--json", "--out", out.to_str().unwrap()], &[]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("verify --json");
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

fn delta_commits(out: &Path, output: &str) -> Vec<Value> {
    manifest(out)
        .into_iter()
        .filter(|r| r["kind"] == "delta_commit" && r["output"] == output)
        .collect()
}

/// The commitInfo lines of a table's log, in version order.
fn commit_infos(out: &Path, table: &str) -> Vec<Value> {
    let log = delta_log(&out.join("parquet").join(table));
    let versions: std::collections::BTreeSet<u64> = log.iter().map(|(v, _)| *v).collect();
    let infos: Vec<Value> = log
        .into_iter()
        .filter_map(|(_, a)| a.get("commitInfo").cloned())
        .collect();
    assert_eq!(
        infos.len(),
        versions.len(),
        "every commit carries one commitInfo"
    );
    infos
}

fn run_delta(
    ds: &Datasette,
    out: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Output {
    run_delta_as("harvest", ds, out, extra, envs)
}

/// `harvest COMMAND --url … --db … --out OUT --table-format delta EXTRA…`.
fn run_delta_as(
    command: &str,
    ds: &Datasette,
    out: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Output {
    let mut args = vec![
        command,
        "--url",
        &ds.url,
        "--db",
        &ds.db_name,
        "--out",
        out.to_str().unwrap(),
        "--table-format",
        "delta",
    ];
    args.extend_from_slice(extra);
    harvest(&args, envs)
}

#[test]
fn harvest_appends_per_checkpoint_then_overwrites_in_one_commit_with_time_travel() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let dir = TempDir::new("delta");
    let out = dir.path().join("out");
    // Orders (16,000 rows) is partitioned by ShipCountry, with a timestamp (Delta
    // `timestamp_ntz`) and a date column; Order Details (587,830 rows) checkpoints every
    // 200,000 rows.
    let o = run_delta(
        &ds,
        &out,
        &[
            "--table",
            "Orders",
            "--partition-by",
            "ShipCountry",
            "--part-rows",
            "4000",
            "--type",
            "OrderDate=timestamp",
            "--type",
            "RequiredDate=date",
        ],
        &[],
    );
    assert_exit(&o, 0);
    for _ in 0..2 {
        let o = run_delta(
            &ds,
            &out,
            &["--table", "Order Details", "--part-rows", "200000"],
            &[],
        );
        assert_exit(&o, 0);
    }

    let first = readers_agree(&out, &db, "Orders", None);
    assert_eq!(first["rows"]["duckdb"], first["rows"]["deltalake"]);
    assert_eq!(first["types"]["OrderDate"], "timestamp_ntz", "{first}");
    assert_eq!(first["types"]["RequiredDate"], "date", "{first}");
    let details = readers_agree(&out, &db, "Order Details", None);
    let n = details["rows"]["deltalake"].as_u64().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let want: i64 = conn
        .query_row("select count(*) from [Order Details]", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as i64, want, "{details}");
    // The first harvest of Order Details appended one version per checkpoint (its first
    // commit created the table), then the second harvest replaced every file in one commit.
    let commits = delta_commits(&out, "Order Details");
    let appends: Vec<_> = commits.iter().filter(|c| c["mode"] == "append").collect();
    let overwrites: Vec<_> = commits
        .iter()
        .filter(|c| c["mode"] == "overwrite")
        .collect();
    assert!(appends.len() >= 3, "{commits:?}");
    assert_eq!(overwrites.len(), 1, "{commits:?}");
    let ow = overwrites[0];
    let before = ow["delta_version"].as_i64().unwrap() - 1;
    assert_eq!(
        ow["removed"],
        appends
            .iter()
            .map(|c| c["added"].as_u64().unwrap())
            .sum::<u64>()
    );
    // Time travel: the version before the overwrite holds the first run's rows, exactly.
    let old = readers_agree(&out, &db, "Order Details", Some(before));
    assert_eq!(old["version"], before);
    // Commit info names the run and the pages each append covered.
    let infos = commit_infos(&out, "Order Details");
    assert_eq!(
        infos.len() as i64,
        ow["delta_version"].as_i64().unwrap() + 1
    );
    let runs: std::collections::BTreeSet<_> = manifest(&out)
        .iter()
        .filter(|r| r["kind"] == "run_start")
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    for info in &infos {
        assert!(
            runs.contains(info["harvest.run_id"].as_str().unwrap()),
            "{info}"
        );
        assert_eq!(info["harvest.output"], "Order Details");
    }
    assert!(infos[1]["harvest.pages"]["first"].is_u64(), "{}", infos[1]);
    // Replaced files stay on disk for time travel, recorded as kept; verify checks them.
    let kept: Vec<_> = manifest(&out)
        .into_iter()
        .filter(|r| r["kind"] == "supersede" && r["kept"] == true)
        .collect();
    assert_eq!(kept.len(), 1);
    for p in kept[0]["paths"].as_array().unwrap() {
        assert!(out.join(p.as_str().unwrap()).exists(), "{p}");
    }
    verify_clean(&out);

    // A re-harvest with another schema commits it with its overwrite; the version before
    // keeps the old one.
    let o = run_delta(
        &ds,
        &out,
        &[
            "--table",
            "Order Details",
            "--part-rows",
            "200000",
            "--type",
            "Quantity=float",
        ],
        &[],
    );
    assert_exit(&o, 0);
    let retyped = readers_agree(&out, &db, "Order Details", None);
    let schema_of = |v: i64| -> Value {
        let log = out.join(format!("parquet/Order Details/_delta_log/{v:020}.json"));
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|a| a.get("metaData").cloned())
            .map_or(Value::Null, |m| {
                serde_json::from_str(m["schemaString"].as_str().unwrap()).unwrap()
            })
    };
    let new_schema = schema_of(retyped["version"].as_i64().unwrap());
    let quantity = |s: &Value| {
        s["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "Quantity")
            .unwrap()["type"]
            .clone()
    };
    assert_eq!(quantity(&new_schema), "double");
    assert_eq!(quantity(&schema_of(0)), "long");
    readers_agree(&out, &db, "Order Details", Some(before));
    verify_clean(&out);

    // A Delta table is not silently written as plain Parquet, nor a plain dataset as Delta.
    let plain_orders = |dir: &Path| {
        let d = dir.to_str().unwrap();
        run_job("harvest", &ds.url, &ds.db_name, d, &["--table", "Orders"])
    };
    let o = plain_orders(&out);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("is a Delta table"), "{}", stderr(&o));
    let plain = dir.path().join("plain");
    let o = plain_orders(&plain);
    assert_exit(&o, 0);
    let o = run_delta(&ds, &plain, &["--table", "Orders"], &[]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("holds plain Parquet parts"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_crash_between_record_and_commit_is_committed_by_the_rerun() {
    let db = fixture_db(1);
    let ds = Datasette::start(V1_0, &db);
    let dir = TempDir::new("delta-crash");
    let out = dir.path().join("out");
    // Order Details has 587,830 rows at scale 1: a checkpoint (and commit) every 150,000.
    let args = ["--table", "Order Details", "--part-rows", "150000"];
    // Append mode: the first checkpoint's part is recorded, then the process dies.
    run_until_failpoint(&ds, &out, &args, "delta:before-commit");
    assert!(findings(&out).contains(&"delta_uncommitted".to_string()));
    let o = run_delta(&ds, &out, &args, &[]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("had recorded but not committed"),
        "{}",
        stderr(&o)
    );
    readers_agree(&out, &db, "Order Details", None);
    verify_clean(&out);

    // Overwrite mode: the re-harvest records its end and the replaced files, then dies before
    // its one commit. Readers still see the old version whole; the rerun commits the new one.
    run_until_failpoint(&ds, &out, &args, "delta:before-commit");
    let mid = readers_agree(&out, &db, "Order Details", None);
    let found = findings(&out);
    assert!(
        found.contains(&"delta_uncommitted".to_string()),
        "{found:?}"
    );
    let o = run_delta(&ds, &out, &args, &[]);
    assert_exit(&o, 0);
    let after = readers_agree(&out, &db, "Order Details", None);
    assert!(after["version"].as_i64() > mid["version"].as_i64());
    verify_clean(&out);

    // The commit made but not recorded (killed right after it): nothing to repair.
    run_until_failpoint(
        &ds,
        &out,
        &[
            "--restart",
            "--table",
            "Order Details",
            "--part-rows",
            "150000",
        ],
        "delta:after-commit",
    );
    let o = run_delta(&ds, &out, &args, &[]);
    assert_exit(&o, 0);
    readers_agree(&out, &db, "Order Details", None);
    verify_clean(&out);
}

#[test]
fn incremental_runs_append_new_rows_as_new_versions() {
    let dir = TempDir::new("delta-inc");
    let db = dir.path().join("shop.db");
    std::fs::copy(fixture_db(1), &db).unwrap();
    let ds = Datasette::start(V0_65, &db);
    let out = dir.path().join("out");
    let run = |extra: &[&str], envs: &[(&str, &str)]| {
        let table = ["--table", "Orders", "--watermark-column", "OrderID"];
        run_delta_as(
            "incremental",
            &ds,
            &out,
            &[&table[..], extra].concat(),
            envs,
        )
    };
    assert_exit(&run(&[], &[]), 0);
    let v1 = readers_agree(&out, &db, "Orders", None);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "insert into Orders (OrderID, CustomerID, OrderDate, ShipCountry) values (990001, 'NEW1', '2026-11-01', 'USA'), (990002, 'NEW2', '2026-11-02', 'Peru');",
    )
    .unwrap();
    assert_exit(&run(&[], &[]), 0);
    let v2 = readers_agree(&out, &db, "Orders", None);
    assert!(v2["version"].as_i64() > v1["version"].as_i64());
    // A run with nothing new commits nothing.
    assert_exit(&run(&[], &[]), 0);
    let v3 = readers_agree(&out, &db, "Orders", None);
    assert_eq!(v3["version"], v2["version"]);
    assert!(
        delta_commits(&out, "Orders")
            .iter()
            .all(|c| c["mode"] == "append")
    );
    verify_clean(&out);

    // An incremental run killed after committing its first new rows, then not resumed
    // (--restart): its committed part is removed from the table by a commit (the file stays
    // for the versions that read it), and the rerun takes the rows again, each once.
    conn.execute_batch(
        "insert into Orders (OrderID, CustomerID, OrderDate, ShipCountry) values (990003, 'NEW3', '2026-11-03', 'USA'), (990004, 'NEW4', '2026-11-04', 'Chile');",
    )
    .unwrap();
    let o = run(
        &["--part-rows", "1"],
        &[("HARVEST_FAILPOINT", "delta:after-commit")],
    );
    assert_aborted(&o);
    let killed = rows_beyond_990002(&out, &db, "Orders");
    assert!(
        killed >= 1,
        "the killed run committed its first new rows: {killed}"
    );
    let o = run(&["--restart"], &[]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("unfinished earlier run"),
        "{}",
        stderr(&o)
    );
    readers_agree(&out, &db, "Orders", None);
    // The abandoned run stays on record as unfinished; the Delta log agrees with the manifest.
    assert_eq!(findings(&out), ["unfinished_run"]);
}

/// Rows the Delta table holds beyond SQLite's rows with `OrderID < 990003` (the rows a killed
/// run had committed), read with the `deltalake` package.
fn rows_beyond_990002(out: &Path, db: &Path, table: &str) -> i64 {
    let code = r#"
import sys, sqlite3, deltalake
t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table()
n = sqlite3.connect(sys.argv[2]).execute(f"select count(*) from [{sys.argv[3]}] where OrderID < 990003").fetchone()[0]
print(t.num_rows - n)
"#;
    let o = python_c(&delta_readers_python(), code)
        .arg(out.join("parquet").join(table))
        .arg(db)
        .arg(table)
        .output()
        .expect("run python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// A commit that fails (here: `_delta_log` is a file, so no log can be written) stops the run
/// with exit 1 naming the table and the remedy; the recorded parts are not lost: once the
/// cause is gone, the rerun commits them and finishes. A dataset directory removed by hand is
/// harvested anew without committing the lost files.
#[test]
fn a_failed_commit_is_a_clear_error_and_the_rerun_commits() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let dir = TempDir::new("delta-fail");
    let out = dir.path().join("out");
    let blocker = out.join("parquet/Orders/_delta_log");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "not a directory").unwrap();
    let o = run_delta(&ds, &out, &["--table", "Orders"], &[]);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("parquet/Orders") && e.contains("rerun with the same settings commits them"),
        "{e}"
    );
    assert_eq!(records(&manifest(&out), "parquet").len(), 1);
    std::fs::remove_file(&blocker).unwrap();
    let o = run_delta(&ds, &out, &["--table", "Orders"], &[]);
    assert_exit(&o, 0);
    readers_agree(&out, &db, "Orders", None);
    verify_clean(&out);

    // The dataset directory removed by hand: nothing missing is committed (a table pointing
    // at absent files would fail every reader), and the next complete harvest replaces the
    // lost parts in the manifest too.
    std::fs::remove_dir_all(out.join("parquet/Orders")).unwrap();
    let o = run_delta(&ds, &out, &["--table", "Orders"], &[]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("missing from disk"), "{}", stderr(&o));
    readers_agree(&out, &db, "Orders", None);
    verify_clean(&out);
}
