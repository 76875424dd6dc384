//! `sql-extract`: row-for-row equality with SQLite, bound parameters (and an injection attempt
//! that stays a value), partitions readable by pyarrow and DuckDB, empty results, a WAL
//! database being written meanwhile, config files with several extracts, and usage errors.

use std::path::Path;

use crate::common::*;

const TABLES: &[&str] = &[
    "Orders",
    "Order Details",
    "Products",
    "Categories",
    "Customers",
    "CustomerCustomerDemo",
    "Shipment Events",
    "Order Subtotals",
];

fn extract(db: &Path, out: &Path, name: &str, query: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "sql-extract",
        "--db",
        db.to_str().unwrap(),
        "--query",
        query,
        "--name",
        name,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    harvest(&args, &[])
}

fn file_sha(p: &Path) -> String {
    harvest::manifest::sha256_hex(&std::fs::read(p).unwrap())
}

#[test]
fn every_fixture_table_matches_sqlite() {
    let db = fixture_db(1);
    let out = TempDir::new("sx-all");
    for t in TABLES {
        let o = extract(
            &db,
            out.path(),
            t,
            &format!("select * from {}", quote(t)),
            &["--chunk-rows", "10000"],
        );
        assert_exit(&o, 0);
        assert_dataset_matches_table(out.path(), &db, t);
    }
    let m = manifest(out.path());
    let rec = records(&m, "parquet")
        .into_iter()
        .find(|r| r["table"] == "Order Details")
        .unwrap();
    assert_eq!(rec["query"], "select * from \"Order Details\"");
    assert_eq!(rec["params_digest"].as_str().unwrap().len(), 64);
    let (names, types, _) = read_dataset(&out.path().join("parquet/Order Details"));
    let ty = |n: &str| types[names.iter().position(|x| x == n).unwrap()].clone();
    assert_eq!(
        ty("UnitPrice"),
        arrow::datatypes::DataType::Float64,
        "NUMERIC mixing ints and reals"
    );
    assert_eq!(ty("Quantity"), arrow::datatypes::DataType::Int64);
}

#[test]
fn a_join_with_named_and_positional_parameters() {
    let db = fixture_db(1);
    let out = TempDir::new("sx-join");
    let q = "select o.OrderID, o.OrderDate, o.ShipCountry, d.ProductID, d.UnitPrice * d.Quantity as Amount \
             from Orders o join \"Order Details\" d on d.OrderID = o.OrderID \
             where o.ShipCountry = :country and d.Quantity >= ? order by o.OrderID, d.ProductID";
    let o = extract(
        &db,
        out.path(),
        "usa_big",
        q,
        &[
            "--param",
            "country=USA",
            "--arg",
            "int:100",
            "--type",
            "OrderDate=timestamp",
        ],
    );
    assert_exit(&o, 0);
    let (_, types, got) = read_dataset(&out.path().join("parquet/usa_big"));
    let want = read_sqlite(
        &db,
        &q.replace(":country", "'USA'").replace('?', "100"),
        &types,
    );
    assert!(!want.is_empty());
    assert_same_rows("usa_big", got, want);
    assert_eq!(
        types[1],
        arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None)
    );
}

#[test]
fn an_injection_attempt_is_just_a_value() {
    let dir = TempDir::new("sx-inject");
    let db = dir.path().join("copy.db");
    std::fs::copy(fixture_db(1), &db).unwrap();
    let before = file_sha(&db);
    let out = dir.path().join("out");
    let o = extract(
        &db,
        &out,
        "inj",
        "select * from Orders where ShipCountry = :country",
        &["--param", "country=USA'; DROP TABLE Orders; --"],
    );
    assert_exit(&o, 0);
    let (_, _, rows) = read_dataset(&out.join("parquet/inj"));
    assert!(rows.is_empty(), "the value matches nothing");
    assert_eq!(file_sha(&db), before, "the database is unchanged");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("select count(*) from Orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 16000);
    // And a statement that writes is refused outright, as are statements SQLite counts as
    // read-only that are not queries (ATTACH would create a file, PRAGMA may change settings).
    let attach = format!(
        "ATTACH DATABASE '{}' AS x",
        dir.path().join("x.db").display()
    );
    for sql in [
        "delete from Orders",
        attach.as_str(),
        "detach database main",
        "pragma journal_mode",
        "select 1; delete from Orders",
    ] {
        let o = extract(&db, &out, "w", sql, &[]);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains("read-only"), "{sql}: {}", stderr(&o));
    }
    assert!(!dir.path().join("x.db").exists(), "ATTACH created nothing");
    assert_eq!(file_sha(&db), before);
}

/// `--output o.parquet`, a bare file name as in the README, writes the file and exits 0.
#[test]
fn output_to_a_bare_file_name_in_the_working_directory() {
    let dir = TempDir::new("sx-bare");
    let db = fixture_db(1);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_harvest"))
        .current_dir(dir.path())
        .args(["sql-extract", "--db", db.to_str().unwrap()])
        .args(["--query", "select 1 as a", "--output", "o.parquet"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let (names, _, rows) = read_dataset(&dir.path().join("o.parquet"));
    assert_eq!(
        (names, rows),
        (vec!["a".to_string()], vec![vec![Cell::Int(1)]])
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["o.parquet"], "no temp file left behind");
}

#[test]
fn empty_result_is_a_valid_zero_row_parquet_with_the_schema() {
    let db = fixture_db(1);
    let out = TempDir::new("sx-empty");
    let o = extract(
        &db,
        out.path(),
        "none",
        "select OrderID, Freight, ShipName from Orders where 0",
        &[],
    );
    assert_exit(&o, 0);
    let (names, types, rows) = read_dataset(&out.path().join("parquet/none"));
    assert!(rows.is_empty());
    assert_eq!(names, ["OrderID", "Freight", "ShipName"]);
    assert_eq!(types[0], arrow::datatypes::DataType::Int64);
    assert_eq!(types[1], arrow::datatypes::DataType::Float64);
    assert_eq!(types[2], arrow::datatypes::DataType::Utf8);
    // Single-file mode too.
    let f = out.path().join("single.parquet");
    let o = harvest(
        &[
            "sql-extract",
            "--db",
            db.to_str().unwrap(),
            "--query",
            "select * from Products",
            "--output",
            f.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&o, 0);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&f).unwrap(),
    )
    .unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 77);
}

#[test]
fn partitioned_output_reads_with_hive_partitioning() {
    let py = readers_python();
    let db = fixture_db(1);
    let out = TempDir::new("sx-part");
    let o = extract(
        &db,
        out.path(),
        "orders_by_year",
        "select strftime('%Y', OrderDate) as year, OrderID, ShipCountry, Freight from Orders",
        &["--partition-by", "year", "--chunk-rows", "4096"],
    );
    assert_exit(&o, 0);
    assert!(out.path().join("parquet/orders_by_year/year=2013").is_dir());
    let script = r#"
import sys, json, pyarrow.dataset as ds, duckdb
root = sys.argv[1] + "/parquet/orders_by_year"
t = ds.dataset(root, format="parquet", partitioning="hive").to_table()
n = duckdb.connect().execute("select count(*), count(distinct year) from read_parquet(?, hive_partitioning=true)", [root + "/**/*.parquet"]).fetchone()
print(json.dumps({"pyarrow": t.num_rows, "duckdb": n[0], "years": n[1]}))
"#;
    let o = python_c(&py, script).arg(out.path()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pyarrow"], 16000);
    assert_eq!(v["duckdb"], 16000);
    assert!(v["years"].as_i64().unwrap() >= 10);
}

#[test]
fn a_wal_database_being_written_reads_as_a_consistent_snapshot() {
    let dir = TempDir::new("sx-wal");
    let db = dir.path().join("wal.db");
    std::fs::copy(fixture_db(1), &db).unwrap();
    let writer = rusqlite::Connection::open(&db).unwrap();
    let mode: String = writer
        .query_row("pragma journal_mode=wal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // An open write transaction with uncommitted rows while the extract runs.
    writer
        .execute_batch(
            "begin immediate; insert into Orders (OrderID, CustomerID) values (990001, 'W');",
        )
        .unwrap();
    let out = dir.path().join("out");
    let o = extract(&db, &out, "Orders", "select * from Orders", &[]);
    assert_exit(&o, 0);
    let (_, _, rows) = read_dataset(&out.join("parquet/Orders"));
    assert_eq!(rows.len(), 16000, "uncommitted rows are not seen");
    writer.execute_batch("commit").unwrap();
}

#[test]
fn a_config_with_several_extracts() {
    let db = fixture_db(1);
    let dir = TempDir::new("sx-config");
    std::fs::write(
        dir.path().join("q.sql"),
        "select * from Products where UnitPrice >= :min",
    )
    .unwrap();
    let cfg = dir.path().join("x.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"out = "{out}"
[[extract]]
name = "Customers"
db = "{db}"
query = "select * from Customers"

[[extract]]
name = "pricey"
db = "{db}"
query_file = "q.sql"
params = {{ min = 100 }}
types = {{ UnitPrice = "float" }}
"#,
            out = dir.path().join("out").display(),
            db = db.display()
        ),
    )
    .unwrap();
    let o = harvest(&["sql-extract", "--config", cfg.to_str().unwrap()], &[]);
    assert_exit(&o, 0);
    let out = dir.path().join("out");
    assert_dataset_matches_table(&out, &db, "Customers");
    let (_, types, got) = read_dataset(&out.join("parquet/pricey"));
    let want = read_sqlite(&db, "select * from Products where UnitPrice >= 100", &types);
    assert_same_rows("pricey", got, want);
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let db = fixture_db(1);
    let out = TempDir::new("sx-err");
    let cases: &[(&[&str], &str)] = &[
        (&["--query", "select * from Nope"], "does not compile"),
        (&["--query", "selec 1"], "does not compile"),
        (
            &[
                "--query",
                "select * from Orders where ShipCountry = :country",
            ],
            ":country",
        ),
        (
            &["--query", "select * from Orders where OrderID = ?"],
            "--arg",
        ),
        (&["--query", "select 1", "--param", "unused=1"], "not used"),
        (
            &["--query", "select 1 as a", "--partition-by", "b"],
            "not a column",
        ),
        (
            &["--query", "select 1 as a", "--param", "x=int:many"],
            "not a valid integer",
        ),
    ];
    for (extra, expect) in cases {
        let mut args = vec![
            "sql-extract",
            "--db",
            db.to_str().unwrap(),
            "--name",
            "x",
            "--out",
            out.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = harvest(&args, &[]);
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains(expect),
            "{extra:?}: expected {expect:?} in {}",
            stderr(&o)
        );
    }
    let missing = out.path().join("missing.db");
    let o = extract(&missing, out.path(), "x", "select 1", &[]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!missing.exists(), "a missing database is never created");
    // A file that is not SQLite points at the path, not at the query.
    let not_db = out.path().join("notes.txt");
    std::fs::write(&not_db, "not a database, just text\n".repeat(100)).unwrap();
    let o = extract(&not_db, out.path(), "x", "select 1", &[]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("not a readable SQLite database") && stderr(&o).contains("--db"),
        "{}",
        stderr(&o)
    );
    // A value that does not fit its declared column type is named, not altered.
    let dir = TempDir::new("sx-misfit");
    let bad = dir.path().join("bad.db");
    let conn = rusqlite::Connection::open(&bad).unwrap();
    conn.execute_batch("create table t (n INTEGER); insert into t values (1), (2.5);")
        .unwrap();
    drop(conn);
    let o = extract(&bad, &dir.path().join("out"), "t", "select * from t", &[]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("row 2")
            && err.contains("\"n\"")
            && err.contains("2.5")
            && err.contains("float"),
        "{err}"
    );
}

/// A query that fails part-way leaves nothing a reader would trust: parts published at
/// earlier checkpoints are removed, and `--output` leaves no file.
#[test]
fn a_query_failing_part_way_leaves_no_parts_and_no_file() {
    let dir = TempDir::new("sx-partway");
    let db = fixture_db(1);
    let out = dir.path().join("out");
    // Typed Int64 from the first chunk of one row; the real in the fourth row does not fit.
    let query = "select * from (values (1), (2), (3), (4.5), (5))";
    let flags = ["--chunk-rows", "1", "--part-rows", "1"];
    let o = extract(&db, &out, "partway", query, &flags);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("4.5"), "{}", stderr(&o));
    let parts = out.join("parquet/partway");
    assert!(
        !parts.exists() || all_files(&parts).is_empty(),
        "parts of a failed extract are visible: {:?}",
        all_files(&parts)
    );
    let file = dir.path().join("partway.parquet");
    assert_exit(&extract_to_file(&db, query, &file, &flags), 1);
    assert!(!file.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only out/"
    );
}

/// `--checks FILE`: the query's rows that fail go to quarantine with their reasons, the rest
/// to the dataset; `max_failed` past its limit records nothing; `--output FILE` refuses checks.
#[test]
fn checks_split_a_query_into_dataset_and_quarantine() {
    let tmp = TempDir::new("extract-checks");
    let db = make_db(
        &tmp,
        "people",
        "create table people (id INTEGER, name TEXT, age INTEGER, born TEXT);
         insert into people values (1, 'Ana', 31, '1993-04-01'), (2, NULL, 40, '1984-01-02'),
           (3, 'Bo', 230, '1794-01-01'), (4, 'Cy', 'forty', '1985-05-05'), (1, 'Ana again', 31, '1993-04-01'),
           (5, 'Di', 22, 'soon');",
    );
    let checks = tmp.path().join("checks.toml");
    std::fs::write(
        &checks,
        "required = [\"name\"]\nunique = [\"id\"]\nrange = { age = { min = 0, max = 120 } }\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = extract(
        &db,
        &out,
        "people",
        "select id, name, age, born from people",
        &[
            "--checks",
            checks.to_str().unwrap(),
            "--type",
            "age=integer",
            "--type",
            "born=date",
        ],
    );
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("5 row(s) failed their checks"),
        "{}",
        stderr(&o)
    );
    let good: Vec<i64> = export_ndjson(&out, "people")
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(good, [1]);
    let q = harvest(
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--dataset",
            "people",
            "--quarantine",
            "--format",
            "ndjson",
        ],
        &[],
    );
    assert_exit(&q, 0);
    let rows: Vec<(String, String)> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["_row"].to_string(),
                r["_checks"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("2".to_string(), "required".to_string()),
            ("3".to_string(), "range".to_string()),
            ("4".to_string(), "type,range".to_string()),
            ("5".to_string(), "unique".to_string()),
            ("6".to_string(), "type".to_string()),
        ]
    );
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
    // Past max_failed: exit 6, and the extract records nothing (the earlier one stays).
    std::fs::write(
        &checks,
        "required = [\"name\"]\nunique = [\"id\"]\nmax_failed = 2\n",
    )
    .unwrap();
    let before = std::fs::read(out.join("manifest.jsonl")).unwrap().len();
    let o = extract(
        &db,
        &out,
        "people",
        "select id, name, age, born from people",
        &["--checks", checks.to_str().unwrap()],
    );
    assert_exit(&o, 6);
    let m = manifest(&out);
    assert!(
        records(&m, "parquet").len() == 1,
        "no part of the stopped extract is recorded"
    );
    assert!(std::fs::read(out.join("manifest.jsonl")).unwrap().len() > before);
    assert!(
        all_files(&out.join("quarantine/people")).len() == 1,
        "only the first extract's quarantine part is on disk"
    );
    let o = harvest(
        &[
            "sql-extract",
            "--db",
            db.to_str().unwrap(),
            "--query",
            "select * from people",
            "--checks",
            checks.to_str().unwrap(),
            "--name",
            "p",
            "--out",
            out.to_str().unwrap(),
            "--output",
            tmp.path().join("p.parquet").to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&o, 2);
}
