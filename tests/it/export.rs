//! `harvest export`: a partitioned dataset with every column type (sql-extract) and an
//! incremental dataset with several runs' parts (real Datasette 0.65.5), exported as CSV,
//! NDJSON and Parquet and read back with Python's csv and json, pyarrow, DuckDB and pandas,
//! value for value against the dataset itself; the content-addressed cache with `verify`;
//! every bad input.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// The table with every edge a rendering can get wrong.
const EDGES: &str = r#"
create table t(id integer, region text, name text, price real, data blob, ts text, day text);
insert into t values
 (1, 'north', 'plain', 1.5, x'00ff10', '2016-07-04 10:15:00', '2016-07-04'),
 (2, 'north', 'comma, "quote"' || char(10) || 'newline', -0.25, x'', '2016-07-04 10:15:00.123456', '1999-12-31'),
 (3, 'south', '', 1e300, NULL, NULL, NULL),
 (4, NULL, NULL, NULL, x'41', '1970-01-01 00:00:00', '1970-01-01'),
 (9223372036854775807, 'south', 'Ünïcödé «ß» 🦀', 0.1, x'c3', '2038-01-19 03:14:08', '2038-01-19'),
 (-9223372036854775807, 'a/b', 'tab	here', 123456789.125, x'ff', '1900-01-01 00:00:00', '1900-01-01');
"#;

/// Python: compare an export with the dataset directory, value for value, by the documented
/// rendering. Prints "ok <rows>" or raises.
const COMPARE: &str = r#"
import sys, csv, json, base64, io, glob
import pyarrow as pa, pyarrow.dataset as pds, pyarrow.parquet as pq, duckdb, pandas as pd
dataset, export, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
want = pds.dataset(dataset, format="parquet",
                   partitioning=pds.HivePartitioning.discover(infer_dictionary=False)).to_table()
floats = {f.name for f in want.schema if pa.types.is_floating(f.type)}

def canon(k, v):
    if v is None:
        return None
    if k in floats:
        return None if v == "" else float(v)
    if isinstance(v, bytes):
        c = base64.b64encode(v).decode()
    elif isinstance(v, bool):
        c = "true" if v else "false"
    elif hasattr(v, "isoformat"):
        c = v.isoformat()
    else:
        c = str(v)
    # Python's csv reader reads NULL (empty) and "" alike; the test on the text tells them apart.
    return None if fmt == "csv" and c == "" else c

def rows_of(dicts):
    return sorted(json.dumps({k: canon(k, v) for k, v in r.items()}, sort_keys=True) for r in dicts)

wrows = rows_of(want.to_pylist())
if fmt == "parquet":
    got = pq.read_table(export).to_pylist()
    assert duckdb.sql(f"select count(*) from '{export}'").fetchall()[0][0] == len(wrows)
    assert len(pd.read_parquet(export)) == len(wrows)
elif fmt == "ndjson":
    got = [json.loads(line) for line in open(export, encoding="utf-8")]
    assert len(pd.read_json(export, lines=True, dtype=False)) == len(wrows)
else:
    text = open(export, encoding="utf-8", newline="").read()
    rd = csv.reader(io.StringIO(text))
    header = next(rd)
    got = [dict(zip(header, r)) for r in rd]
    assert duckdb.sql(f"select count(*) from read_csv('{export}', header=true)").fetchall()[0][0] == len(wrows)
grows = rows_of(got)
if wrows != grows:
    for a, b in zip(wrows, grows):
        if a != b:
            raise SystemExit(f"differ:\n want {a}\n got  {b}")
    raise SystemExit(f"differ in count: {len(wrows)} vs {len(grows)}")
print("ok", len(grows))
"#;

#[track_caller]
fn compare(dataset: &Path, export: &Path, fmt: &str) {
    let o = python_c(&readers_python(), COMPARE)
        .arg(dataset)
        .arg(export)
        .arg(fmt)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{fmt}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn export(out: &Path, dataset: &str, fmt: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "export",
        "--out",
        out.to_str().unwrap(),
        "--dataset",
        dataset,
        "--format",
        fmt,
    ];
    args.extend_from_slice(extra);
    harvest(&args, &[])
}

fn edges_dataset(work: &TempDir) -> std::path::PathBuf {
    let db = make_db(work, "edges", EDGES);
    let out = work.path().join("out");
    extract_edges(&db, &out);
    out
}

/// `sql-extract` the edges table into `out` as the dataset `edges`, partitioned by region.
fn extract_edges(db: &Path, out: &Path) {
    let o = harvest(
        &[
            "sql-extract",
            "--db",
            db.to_str().unwrap(),
            "--query",
            "select * from t",
            "--name",
            "edges",
            "--partition-by",
            "region",
            "--type",
            "ts=timestamp",
            "--type",
            "day=date",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&o, 0);
}

#[test]
fn every_format_round_trips_a_partitioned_dataset_with_every_type() {
    let work = TempDir::new("export-edges");
    let out = edges_dataset(&work);
    let dataset = out.join("parquet/edges");
    for fmt in ["csv", "ndjson", "parquet"] {
        let file = work.path().join(format!("edges.{fmt}"));
        let o = export(&out, "edges", fmt, &["--output", file.to_str().unwrap()]);
        assert_exit(&o, 0);
        compare(&dataset, &file, fmt);
        // The same bytes on stdout.
        let o = export(&out, "edges", fmt, &[]);
        assert_exit(&o, 0);
        assert_eq!(
            o.stdout,
            std::fs::read(&file).unwrap(),
            "{fmt}: stdout = file"
        );
    }
    // The documented rendering, literally.
    let csv = String::from_utf8(export(&out, "edges", "csv", &[]).stdout).unwrap();
    assert!(
        csv.starts_with("id,region,name,price,data,ts,day\n"),
        "{csv}"
    );
    assert!(
        csv.contains("\n3,south,\"\",1e300,,,\n"),
        "NULL empty, empty text quoted: {csv}"
    );
    assert!(csv.contains("2,north,\"comma, \"\"quote\"\"\nnewline\",-0.25,\"\",2016-07-04T10:15:00.123456,1999-12-31\n"), "{csv}");
    assert!(
        csv.contains("\n4,,,,QQ==,1970-01-01T00:00:00,1970-01-01\n"),
        "{csv}"
    );
    // --columns: a selection in its own order, the partition column included.
    let sel =
        String::from_utf8(export(&out, "edges", "csv", &["--columns", "day,region,id"]).stdout)
            .unwrap();
    assert!(
        sel.starts_with("day,region,id\n")
            && sel.contains("\n2038-01-19,south,9223372036854775807\n"),
        "{sel}"
    );
    assert_eq!(sel.lines().count(), 7);
    let o = export(&out, "edges", "csv", &["--columns", "id,nope"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("no column \"nope\"") && stderr(&o).contains("its columns: id, region"),
        "{}",
        stderr(&o)
    );
    let nd = String::from_utf8(export(&out, "edges", "ndjson", &[]).stdout).unwrap();
    assert!(nd.contains(r#"{"id":9223372036854775807,"region":"south","name":"Ünïcödé «ß» 🦀","price":0.1,"data":"ww==","ts":"2038-01-19T03:14:08","day":"2038-01-19"}"#), "{nd}");
    assert!(nd.contains(r#""id":4,"region":null,"name":null"#), "{nd}");
}

#[test]
fn an_incremental_dataset_exports_every_runs_parts_once() {
    let work = TempDir::new("export-incr");
    let db = make_db(
        &work,
        "events",
        "create table events(id integer primary key, kind text, amount integer);
         with recursive s(v) as (select 1 union all select v + 1 from s where v < 500)
         insert into events select v, 'k' || (v % 3), v * 10 from s;",
    );
    let ds = Datasette::start(V0_65, &db);
    let out = work.path().join("out");
    let run = || {
        let o = run_job(
            "incremental",
            &ds.url,
            &ds.db_name,
            out.to_str().unwrap(),
            &["--table", "events", "--watermark-column", "id"],
        );
        assert_exit(&o, 0);
    };
    run();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "with recursive s(v) as (select 501 union all select v + 1 from s where v < 730)
         insert into events select v, 'late', v from s;",
    )
    .unwrap();
    run();
    conn.execute_batch("insert into events values (731, NULL, NULL);")
        .unwrap();
    // The third run logs JSON: its table line carries the table's facts and its watermark
    // moved; its summary the run's.
    let o = run_job(
        "incremental",
        &ds.url,
        &ds.db_name,
        out.to_str().unwrap(),
        &[
            "--table",
            "events",
            "--watermark-column",
            "id",
            "--log-format",
            "json",
        ],
    );
    assert_exit(&o, 0);
    let lines: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let run_id = lines.last().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        lines.iter().skip(1).all(|l| l["run_id"] == run_id.as_str()),
        "{lines:?}"
    );
    let table = lines
        .iter()
        .find(|l| l["table"] == "events" && l["elapsed_ms"].is_u64())
        .unwrap();
    assert_eq!(table["rows"], 1, "only the new row");
    let summary = lines.iter().find(|l| l["summary"] == true).unwrap();
    assert_eq!(
        (summary["outcome"].clone(), summary["rows"].clone()),
        (serde_json::json!("ok"), serde_json::json!(1))
    );
    let parts = all_files(&out.join("parquet/events")).len();
    assert!(parts >= 3, "several runs' parts ({parts})");
    for fmt in ["csv", "ndjson", "parquet"] {
        let file = work.path().join(format!("events.{fmt}"));
        assert_exit(
            &export(&out, "events", fmt, &["--output", file.to_str().unwrap()]),
            0,
        );
        compare(&out.join("parquet/events"), &file, fmt);
    }
    let nd = String::from_utf8(export(&out, "events", "ndjson", &[]).stdout).unwrap();
    assert_eq!(nd.lines().count(), 731);
}

#[test]
fn the_cache_hits_misses_sweeps_and_verify_checks_it() {
    let work = TempDir::new("export-cache");
    let out = edges_dataset(&work);
    let path_of = |o: &std::process::Output| {
        String::from_utf8(o.stdout.clone())
            .unwrap()
            .trim()
            .to_string()
    };
    let first = export(&out, "edges", "csv", &["--cache"]);
    assert_exit(&first, 0);
    let p1 = path_of(&first);
    assert!(
        p1.contains("exports/edges/csv/") && p1.ends_with(".csv"),
        "{p1}"
    );
    let m = manifest(&out);
    let rec = records(&m, "export");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0]["rows"], 6);
    assert_eq!(rec[0]["dataset"], "edges");
    // Unchanged: a hit, nothing written.
    let again = export(&out, "edges", "csv", &["--cache"]);
    assert_exit(&again, 0);
    assert_eq!(path_of(&again), p1);
    assert!(stderr(&again).contains("cache hit"), "{}", stderr(&again));
    assert_eq!(records(&manifest(&out), "export").len(), 1);
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
    // Changed (a new harvest of the dataset): a miss, and the old export is swept.
    let db = work.path().join("edges.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("insert into t values (5, 'west', 'new', 2.0, NULL, NULL, NULL);")
        .unwrap();
    extract_edges(&db, &out);
    let third = export(&out, "edges", "csv", &["--cache"]);
    assert_exit(&third, 0);
    let p3 = path_of(&third);
    assert_ne!(p3, p1);
    assert!(!Path::new(&p1).exists(), "the old export was swept");
    assert!(
        String::from_utf8(std::fs::read(&p3).unwrap())
            .unwrap()
            .contains("\n5,west,new,2.0,")
    );
    let m = manifest(&out);
    assert_eq!(records(&m, "export_sweep").len(), 1);
    // Exports are not runs: the history lists the two sql-extract runs only.
    let h = harvest(&["history", "--out", out.to_str().unwrap(), "--json"], &[]);
    let doc: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(doc["summary"]["runs"], 2, "{doc}");
    assert_eq!(doc["summary"]["ok"], 2);
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
    // A tampered export fails verify.
    std::fs::write(&p3, b"id\n1\n").unwrap();
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 3);
    assert!(stderr(&v).contains("exports/edges/csv/"), "{}", stderr(&v));
}

#[test]
fn bad_inputs_are_named_and_a_closed_stdout_is_quiet() {
    let work = TempDir::new("export-bad");
    let out = edges_dataset(&work);
    // Unknown dataset: exit 2 listing the known ones.
    let o = export(&out, "nope", "csv", &[]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("its datasets: edges"), "{}", stderr(&o));
    // Not an output directory.
    let o = export(work.path(), "edges", "csv", &[]);
    assert_exit(&o, 2);
    // `| head`: the reader goes away after one line; no panic, exit 0.
    let mut child = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args([
            "export",
            "--out",
            out.to_str().unwrap(),
            "--dataset",
            "edges",
            "--format",
            "ndjson",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    // A broken part: exit 1 naming it, and no half-written file at --output.
    let part = all_files(&out.join("parquet/edges"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains("region=south"))
        .unwrap();
    std::fs::write(&part, b"PAR1 not really").unwrap();
    let dest = work.path().join("broken.csv");
    let o = export(&out, "edges", "csv", &["--output", dest.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("region=south") && stderr(&o).contains("harvest verify"),
        "{}",
        stderr(&o)
    );
    assert!(!dest.exists(), "no half-written export");
    // A dataset whose only parts belong to a run that never completed it: exit 1, saying so.
    let work2 = TempDir::new("export-unfinished");
    let out2 = edges_dataset(&work2);
    let m = std::fs::read_to_string(out2.join("manifest.jsonl")).unwrap();
    let kept: String = m
        .lines()
        .filter(|l| !l.contains("\"kind\":\"table_end\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(out2.join("manifest.jsonl"), kept).unwrap();
    let o = export(&out2, "edges", "csv", &[]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("no live parts") && stderr(&o).contains("left out"),
        "{}",
        stderr(&o)
    );
    assert!(
        !all_files(work.path())
            .iter()
            .any(|f| f.to_string_lossy().contains("harvest-tmp")),
        "no temp file left"
    );
}
