//! Harvests through real Datasette servers — 0.65.x and 1.0a, each from its own venv — compared
//! value for value with the rows read directly from the fixture SQLite database.

use std::path::Path;

use crate::common::*;

const ALL_TABLES: &[&str] = &[
    "Orders",
    "Order Details",
    "Products",
    "Categories",
    "Customers",
    "CustomerCustomerDemo",
    "Shipment Events",
    "Order Subtotals",
];

/// The manifest is a valid chain and every page/part record matches the file it names.
fn assert_manifest_consistent(out: &Path) {
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    // Parts a later complete run replaced are expected to be gone.
    let superseded: std::collections::HashSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "supersede")
        .flat_map(|v| {
            v["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut prev: Option<String> = None;
    let mut last_seq = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["version"], 1);
        let seq = v["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "seq must increase");
        last_seq = seq;
        assert_eq!(v["prev"].as_str().map(str::to_string), prev, "hash chain");
        prev = Some(harvest::manifest::sha256_hex(line.as_bytes()));
        if v["kind"] == "parquet" && superseded.contains(v["path"].as_str().unwrap()) {
            assert!(
                !out.join(v["path"].as_str().unwrap()).exists(),
                "a superseded part is still there"
            );
        } else if v["kind"] == "page" || v["kind"] == "parquet" {
            let bytes = std::fs::read(out.join(v["path"].as_str().unwrap())).unwrap();
            assert_eq!(bytes.len() as u64, v["bytes"].as_u64().unwrap());
            assert_eq!(
                harvest::manifest::sha256_hex(&bytes),
                v["sha256"].as_str().unwrap()
            );
        }
    }
}

fn all_tables_match_sqlite(version: &str) {
    let db = fixture_db(1);
    let ds = Datasette::start(version, &db);
    let out = TempDir::new("all");
    let mut args = vec![
        "harvest",
        "--url",
        &ds.url,
        "--db",
        &ds.db_name,
        "--out",
        out.path().to_str().unwrap(),
    ];
    for t in ALL_TABLES {
        args.push("--table");
        args.push(t);
    }
    let o = harvest(&args, &[]);
    assert_exit(&o, 0);
    for t in ALL_TABLES {
        assert_dataset_matches_table(out.path(), &db, t);
    }
    assert_manifest_consistent(out.path());
    let m = manifest(out.path());
    let pages = records(&m, "page");
    // Order Details alone is ~588 pages of 1000.
    assert!(pages.len() > 600, "{} pages", pages.len());
    for t in ALL_TABLES {
        let page_rows: u64 = pages
            .iter()
            .filter(|p| p["table"] == *t)
            .map(|p| p["rows"].as_u64().unwrap())
            .sum();
        let part_rows: u64 = records(&m, "parquet")
            .iter()
            .filter(|p| p["table"] == *t)
            .map(|p| p["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(page_rows, part_rows, "{t}: page rows vs Parquet rows");
    }
    // Types: exact integers, mixed int/real widened, blobs as bytes, text dates as text.
    let (names, types, _) = read_dataset(&out.path().join("parquet/Order Details"));
    let ty = |n: &str| types[names.iter().position(|x| x == n).unwrap()].clone();
    assert_eq!(ty("UnitPrice"), arrow::datatypes::DataType::Float64);
    assert_eq!(ty("Quantity"), arrow::datatypes::DataType::Int64);
    let (names, types, _) = read_dataset(&out.path().join("parquet/Categories"));
    assert_eq!(
        types[names.iter().position(|x| x == "Picture").unwrap()],
        arrow::datatypes::DataType::Binary
    );
    let (names, _, _) = read_dataset(&out.path().join("parquet/Shipment Events"));
    assert_eq!(names[0], "rowid");
    // 0.6x: later pages skip the count; every version: explicit page size.
    let later = pages
        .iter()
        .find(|p| p["table"] == "Order Details" && p["page"] == 2)
        .unwrap();
    assert_eq!(later["params"]["_size"], "1000");
    if version.starts_with("0.") {
        assert_eq!(later["params"]["_nocount"], "1");
        assert_eq!(later["params"]["_nofacet"], "1");
    }
    assert_eq!(records(&m, "run_end")[0]["outcome"], "ok");
    // The only warning: the unsorted view. No row-count mismatch anywhere.
    let warnings = records(&m, "run_end")[0]["warnings"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("is a view"));
}

/// harvest.example.toml as shipped (URL and database swapped for the test server), run twice:
/// partitions, filters, type overrides, a sorted view; the second run replaces the first.
fn example_config_partitioned_typed_and_rerun(version: &str) {
    let db = fixture_db(1);
    let ds = Datasette::start(version, &db);
    let out = TempDir::new("example");
    let cfg = repo_root().join("harvest.example.toml");
    let args = [
        "harvest",
        "--config",
        cfg.to_str().unwrap(),
        "--url",
        &ds.url,
        "--db",
        &ds.db_name,
        "--out",
        out.path().to_str().unwrap(),
    ];
    for run in 0..2 {
        let o = harvest(&args, &[]);
        assert_exit(&o, 0);
        for t in [
            "Orders",
            "Order Details",
            "Products",
            "Categories",
            "Customers",
            "Shipment Events",
            "Order Subtotals",
        ] {
            assert_dataset_matches_table(out.path(), &db, t);
        }
        let (names, types, got) = read_dataset(&out.path().join("parquet/Orders_USA"));
        let select = names
            .iter()
            .map(|n| quote(n))
            .collect::<Vec<_>>()
            .join(", ");
        let want = read_sqlite(
            &db,
            &format!("select {select} from Orders where ShipCountry = 'USA'"),
            &types,
        );
        assert!(!want.is_empty());
        assert_same_rows("Orders_USA", got, want);
        let (names, types, _) = read_dataset(&out.path().join("parquet/Orders"));
        let ty = |n: &str| types[names.iter().position(|x| x == n).unwrap()].clone();
        assert_eq!(
            ty("OrderDate"),
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None)
        );
        assert_eq!(ty("RequiredDate"), arrow::datatypes::DataType::Date32);
        assert!(out.path().join("parquet/Orders/ShipCountry=USA").is_dir());
        assert!(
            out.path()
                .join("parquet/Orders/ShipCountry=Côte d'Ivoire")
                .is_dir()
        );
        let m = manifest(out.path());
        if run == 1 {
            assert!(
                !records(&m, "supersede").is_empty(),
                "the rerun replaces the first run's parts"
            );
        }
    }
    assert_manifest_consistent(out.path());
}

#[test]
fn v0_65_all_tables_match_sqlite() {
    all_tables_match_sqlite(V0_65);
}

#[test]
fn v1_0_all_tables_match_sqlite() {
    all_tables_match_sqlite(V1_0);
}

#[test]
fn v0_65_example_config_partitioned_typed_and_rerun() {
    example_config_partitioned_typed_and_rerun(V0_65);
}

#[test]
fn v1_0_example_config_partitioned_typed_and_rerun() {
    example_config_partitioned_typed_and_rerun(V1_0);
}

/// A filter that matches nothing still yields a valid Parquet file with the table's columns.
#[test]
fn v0_65_empty_result_is_a_valid_zero_row_parquet() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let out = TempDir::new("empty");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        out.path().to_str().unwrap(),
        &["--table", "Orders", "--param", "OrderID__lt=0"],
    );
    assert_exit(&o, 0);
    let (names, types, rows) = read_dataset(&out.path().join("parquet/Orders"));
    assert!(rows.is_empty());
    assert_eq!(names, sqlite_columns(&db, "Orders"));
    assert_eq!(types[0], arrow::datatypes::DataType::Int64);
    let m = manifest(out.path());
    assert_eq!(records(&m, "parquet").len(), 1);
    assert_eq!(records(&m, "parquet")[0]["rows"], 0);
}

/// Several parts and Hive partitions (with NULL and non-ASCII values) read as one dataset in
/// pyarrow, DuckDB and pandas, with the row counts SQLite has.
#[test]
fn v0_65_output_reads_in_pyarrow_duckdb_and_pandas() {
    let py = readers_python();
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let out = TempDir::new("readers");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        out.path().to_str().unwrap(),
        &[
            "--table",
            "Orders",
            "--table",
            "Order Details",
            "--partition-by",
            "ShipRegion",
            "--part-rows",
            "200000",
        ],
    );
    // Order Details has no ShipRegion: partitioning applies to every command-line table.
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("ShipRegion"), "{}", stderr(&o));
    let mut pieces = vec![];
    for (table, extra) in [
        ("Orders", vec!["--partition-by", "ShipRegion"]),
        ("Order Details", vec!["--part-rows", "200000"]),
    ] {
        let mut args = vec![
            "harvest",
            "--url",
            &ds.url,
            "--db",
            &ds.db_name,
            "--table",
            table,
            "--out",
        ];
        let o_s = out.path().to_str().unwrap().to_string();
        args.push(&o_s);
        args.extend(extra.iter().copied());
        let o = harvest(&args, &[]);
        assert_exit(&o, 0);
        pieces.push(table);
    }
    let parts = all_files(&out.path().join("parquet/Order Details")).len();
    assert!(parts >= 3, "expected several parts, got {parts}");
    let script = r#"
import sys, json
import pyarrow.dataset as ds, duckdb, pandas as pd
root = sys.argv[1]
res = {}
for t in ["Orders", "Order Details"]:
    d = ds.dataset(f"{root}/parquet/{t}", format="parquet", partitioning="hive")
    tbl = d.to_table()
    con = duckdb.connect()
    n_duck = con.execute("select count(*) from read_parquet(?, hive_partitioning=true, union_by_name=false)", [f"{root}/parquet/{t}/**/*.parquet"]).fetchone()[0]
    # Plain read_parquet infers a dictionary-typed partition column, and pyarrow cannot unify
    # dictionaries holding NULL (a reader limitation, documented in the README).
    part = ds.HivePartitioning.discover(infer_dictionary=False) if t == "Orders" else None
    df = pd.read_parquet(f"{root}/parquet/{t}", partitioning=part) if part else pd.read_parquet(f"{root}/parquet/{t}")
    res[t] = {"pyarrow": tbl.num_rows, "duckdb": n_duck, "pandas": len(df), "columns": tbl.column_names}
d = ds.dataset(f"{root}/parquet/Orders", format="parquet", partitioning="hive")
regions = sorted(set(str(x) for x in d.to_table(columns=["ShipRegion"]).column("ShipRegion").to_pylist()))
res["regions"] = regions
print(json.dumps(res))
"#;
    let o = python_c(&py, script).arg(out.path()).output().unwrap();
    assert!(
        o.status.success(),
        "python readers failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let res: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    for t in ["Orders", "Order Details"] {
        let n: i64 = conn
            .query_row(&format!("select count(*) from {}", quote(t)), [], |r| {
                r.get(0)
            })
            .unwrap();
        for reader in ["pyarrow", "duckdb", "pandas"] {
            assert_eq!(res[t][reader].as_i64(), Some(n), "{t} via {reader}: {res}");
        }
    }
    let regions: Vec<String> = serde_json::from_value(res["regions"].clone()).unwrap();
    assert!(
        regions.contains(&"None".to_string()),
        "NULL partition read as null: {regions:?}"
    );
    assert!(regions.contains(&"Québec".to_string()), "{regions:?}");
}

/// The type probe reads each column's range of storage classes; blobs mixed with text need a
/// second look for numbers in between: blob + text is kept as Blob, while with a number among
/// them it is a usage error naming the column and the override to use.
#[test]
fn v0_65_type_probe_tells_blob_and_text_from_blob_text_and_numbers() {
    let tmp = TempDir::new("probe");
    let db = make_db(
        &tmp,
        "probe",
        "create table bt (id INTEGER PRIMARY KEY, v);
         insert into bt (v) values (x'00ff'), ('text'), (NULL), (x'01');
         create table btn (id INTEGER PRIMARY KEY, v);
         insert into btn (v) values (x'00ff'), (7), ('text');",
    );
    let ds = Datasette::start(V0_65, &db);
    let out = TempDir::new("probe-out");
    let run = |table: &str| {
        run_job(
            "harvest",
            &ds.url,
            &ds.db_name,
            out.path().to_str().unwrap(),
            &["--table", table],
        )
    };
    assert_exit(&run("bt"), 0);
    let (_, types, _) = read_dataset(&out.path().join("parquet/bt"));
    assert_eq!(types[1], arrow::datatypes::DataType::Binary);
    assert_dataset_matches_table(out.path(), &db, "bt");
    let o = run("btn");
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("column \"v\" holds both text and numbers"),
        "{}",
        stderr(&o)
    );
}

/// A server whose `max_returned_rows` is below the default page size: harvest reads the limit
/// from `/-/settings.json` and uses it; a page size the user gave above it stays an error.
fn small_server_uses_its_largest_page(version: &str) {
    let dir = TempDir::new("small-server");
    let db = fixture_db(1);
    let ds = Datasette::start_with(version, &db, &[("max_returned_rows", "70")]);
    let out = dir.path().join("out");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        out.to_str().unwrap(),
        &["--table", "Products"],
    );
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("at most 70 rows per request"),
        "{}",
        stderr(&o)
    );
    assert_dataset_matches_table(&out, &db, "Products");
    let m = manifest(&out);
    let pages = records(&m, "page");
    assert!(pages.iter().all(|p| p["params"]["_size"] == "70"));
    let rows: u64 = pages.iter().map(|p| p["rows"].as_u64().unwrap()).sum();
    assert_eq!(pages.len() as u64, rows.div_ceil(70));
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        dir.path().join("explicit").to_str().unwrap(),
        &["--table", "Products", "--page-size", "100"],
    );
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("max_returned_rows (70)") && stderr(&o).contains("--page-size 70"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn v0_65_small_server_uses_its_largest_page() {
    small_server_uses_its_largest_page(V0_65);
}

#[test]
fn v1_0_small_server_uses_its_largest_page() {
    small_server_uses_its_largest_page(V1_0);
}

/// A table whose every column is declared numeric is typed from its pages, without the type
/// scan: a real that first arrives on page 15 of a column planned as integer widens it to
/// float, and the pages already taken are encoded again from their snapshots. With a
/// checkpoint due before that page, the scan runs first, so the recorded part already has the
/// final types. A string or a blob (0.65 sends a UTF-8 blob as a string) in such a column
/// ends typing from the pages: the scan decides, and numbers beside text or blobs are refused
/// as before, with nothing written.
fn declared_numeric_tables_are_typed_from_their_pages(version: &str) {
    let tmp = TempDir::new("typed-from-pages");
    let db = make_db(
        &tmp,
        "numeric",
        "create table t (id INTEGER PRIMARY KEY, n INTEGER, r REAL, m NUMERIC);
         with recursive k(i) as (select 1 union all select i + 1 from k where i < 2000)
         insert into t select i, i * 3, i / 4.0, case when i % 2 = 0 then i else i + 0.5 end from k;
         update t set n = 2.5 where id = 1450;
         create table s (id INTEGER PRIMARY KEY, n INTEGER);
         with recursive k(i) as (select 1 union all select i + 1 from k where i < 500)
         insert into s select i, i from k;
         update s set n = 'abc' where id = 250;
         create table b (id INTEGER PRIMARY KEY, n INTEGER);
         with recursive k(i) as (select 1 union all select i + 1 from k where i < 500)
         insert into b select i, i from k;
         update b set n = cast('abc' as blob) where id = 250;",
    );
    let ds = Datasette::start(version, &db);
    let types = |out: &Path, table: &str| {
        let (_, types, _) = read_dataset(&out.join("parquet").join(table));
        types
    };
    use arrow::datatypes::DataType::{Float64, Int64};
    let run = |out: &TempDir, table: &str, extra: &[&str]| {
        let dir = out.path().to_str().unwrap();
        let args = [&["--table", table, "--page-size", "100"][..], extra].concat();
        run_job("harvest", &ds.url, &ds.db_name, dir, &args)
    };

    // Typed from the pages alone: n widens from integer to float on page 15.
    let out = TempDir::new("typed-from-pages-out");
    let o = run(&out, "t", &[]);
    assert_exit(&o, 0);
    let log = stderr(&o);
    assert!(log.contains("every column is declared numeric"), "{log}");
    assert!(
        log.contains("column types changed (n Integer -> Float)"),
        "{log}"
    );
    assert!(
        !log.contains("scanning the table's storage classes"),
        "{log}"
    );
    assert_eq!(types(out.path(), "t"), [Int64, Float64, Float64, Float64]);
    assert_dataset_matches_table(out.path(), &db, "t");
    // pyarrow reads the re-encoded pages value for value (the bits of every float).
    let dataset = out.path().join("parquet/t").to_string_lossy().into_owned();
    crate::value_sweep::compare(&db, &[(dataset, "select {cols} from t".into())]);
    assert_exit(
        &harvest(&["verify", "--out", out.path().to_str().unwrap()], &[]),
        0,
    );

    // A checkpoint due before page 15: the scan confirms the types first.
    let out = TempDir::new("typed-from-pages-part");
    let o = run(&out, "t", &["--part-rows", "500"]);
    assert_exit(&o, 0);
    let log = stderr(&o);
    assert!(log.contains("first checkpoint: scanning"), "{log}");
    // The scan, not page 15, widened n: the five pages before the checkpoint are re-encoded.
    assert!(
        log.contains("column types changed (n Integer -> Float): encoding the 5 page(s)"),
        "{log}"
    );
    assert_eq!(types(out.path(), "t"), [Int64, Float64, Float64, Float64]);
    assert_dataset_matches_table(out.path(), &db, "t");
    assert_exit(
        &harvest(&["verify", "--out", out.path().to_str().unwrap()], &[]),
        0,
    );

    // Text, or a blob, beside numbers: the scan decides, and the run stops with nothing
    // written for the table.
    for (table, says) in [
        ("s", "holds both text and numbers"),
        ("b", "holds both blobs and numbers"),
    ] {
        let out = TempDir::new("typed-from-pages-refused");
        let o = run(&out, table, &[]);
        assert_exit(&o, 2);
        let log = stderr(&o);
        assert!(
            log.contains("scanning the table's storage classes"),
            "{log}"
        );
        assert!(log.contains(says), "{table}: {log}");
        let dir = out.path().join("parquet");
        let parts = if dir.exists() {
            all_files(&dir)
        } else {
            vec![]
        };
        assert!(parts.is_empty(), "{table}: {parts:?}");
    }
}

#[test]
fn v0_65_declared_numeric_tables_are_typed_from_their_pages() {
    declared_numeric_tables_are_typed_from_their_pages(V0_65);
}

#[test]
fn v1_0_declared_numeric_tables_are_typed_from_their_pages() {
    declared_numeric_tables_are_typed_from_their_pages(V1_0);
}
