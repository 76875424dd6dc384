//! `incremental` against a real Datasette over a database that changes between runs: ties at
//! the watermark, late rows inside the lookback, a run with no changes, and crashes at both
//! steps of the watermark commit. After every run the union of the dataset's parts equals the
//! SQLite table exactly.

use std::path::Path;

use crate::common::*;

fn sql(db: &Path, statements: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(statements).unwrap();
}

fn max_order_date(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    // Typed maximum: both text formats compare correctly as text for ISO dates.
    conn.query_row("select max(OrderDate) from Orders", [], |r| r.get(0))
        .unwrap()
}

fn state(out: &Path) -> serde_json::Value {
    let o = run_job(
        "incremental",
        "http://127.0.0.1:9",
        "x",
        out.to_str().unwrap(),
        &[
            "-t",
            "Orders",
            "--watermark-column",
            "OrderDate",
            "--show-state",
        ],
    );
    assert_exit(&o, 0);
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0].clone()
}

fn parts(out: &Path) -> usize {
    all_files(&out.join("parquet/Orders")).len()
}

#[test]
fn v0_65_incremental_sequence_with_ties_late_rows_no_change_and_crashes() {
    let dir = TempDir::new("inc");
    let db = dir.path().join("shop.db");
    std::fs::copy(fixture_db(1), &db).unwrap();
    let ds = Datasette::start(V0_65, &db);
    let out = dir.path().join("out");
    let run = |envs: &[(&str, &str)]| {
        harvest(
            &[
                "incremental",
                "--url",
                &ds.url,
                "--db",
                &ds.db_name,
                "--table",
                "Orders",
                "--watermark-column",
                "OrderDate",
                "--lookback",
                "2d",
                "--out",
                out.to_str().unwrap(),
            ],
            envs,
        )
    };
    let insert = |id: i64, date: &str| {
        sql(
            &db,
            &format!(
                "insert into Orders (OrderID, CustomerID, OrderDate, ShipCountry) values ({id}, 'C{id}', '{date}', 'USA')"
            ),
        );
    };

    // Run 1: everything.
    assert_exit(&run(&[]), 0);
    assert_dataset_matches_table(&out, &db, "Orders");
    let wm1 = state(&out)["value"].as_str().unwrap().to_string();
    assert_eq!(wm1, max_order_date(&db));

    // Run 2: a tie at exactly the watermark, a late row inside the 2-day lookback (in the
    // date-only format), and newer rows in both formats.
    let late_day = &wm1[..10];
    insert(900001, &wm1); // same value as the watermark
    insert(900002, late_day); // midnight of the watermark's day: earlier, but inside the lookback
    insert(900003, "2031-01-01");
    insert(900004, "2031-01-01 08:30:00");
    let before = parts(&out);
    let o = run(&[]);
    assert_exit(&o, 0);
    assert_dataset_matches_table(&out, &db, "Orders");
    assert_eq!(parts(&out), before + 1);
    let st = state(&out);
    assert_eq!(
        st["value"], "2031-01-01 08:30:00",
        "typed max across both formats"
    );

    // Run 3: nothing changed: no rows, no part, same watermark.
    let before = parts(&out);
    let o = run(&[]);
    assert_exit(&o, 0);
    assert_eq!(parts(&out), before, "a no-change run writes no part");
    assert_eq!(state(&out)["value"], st["value"]);
    assert_dataset_matches_table(&out, &db, "Orders");
    let m = manifest(&out);
    let last_wm = &records(&m, "run_end").last().unwrap()["watermarks"][0];
    assert_eq!(last_wm["before"], last_wm["after"]);

    // Run 4 crashes after its Parquet is recorded, before the watermark is written; run 5
    // resumes it: no duplicates.
    insert(900005, "2031-01-01 08:30:00"); // another tie
    insert(900006, "2031-01-02");
    let o = run(&[("HARVEST_FAILPOINT", "incremental:before-watermark")]);
    assert_ne!(o.status.code(), Some(0), "the failpoint aborts the run");
    assert_eq!(
        state(&out)["value"],
        "2031-01-01 08:30:00",
        "the watermark did not move"
    );
    let o = run(&[]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("resuming run"), "{}", stderr(&o));
    assert_dataset_matches_table(&out, &db, "Orders");
    assert_eq!(state(&out)["value"], "2031-01-02");

    // Run 6 crashes after table_end, before the watermark file is published; run 7 rolls the
    // watermark forward and finishes run 6 (its table is already committed, so it fetches
    // nothing); run 8, the next scheduled one, takes the tie that arrived after the crash.
    insert(900007, "2031-01-03");
    let o = run(&[("HARVEST_FAILPOINT", "incremental:before-publish")]);
    assert_ne!(o.status.code(), Some(0));
    insert(900008, "2031-01-03"); // a tie arriving after the crash
    let o = run(&[]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("rolled forward"), "{}", stderr(&o));
    assert_eq!(state(&out)["value"], "2031-01-03");
    let o = run(&[]);
    assert_exit(&o, 0);
    assert_dataset_matches_table(&out, &db, "Orders");
    let st = state(&out);
    assert_eq!(st["value"], "2031-01-03");
    assert!(
        st["history"].as_array().unwrap().len() >= 6,
        "history is kept: {st}"
    );
    // Datasets written by successive runs read as one in other tools too (pyarrow via the
    // readers venv is covered elsewhere); here: no run's rows appear twice.
    let (_, _, rows) = read_dataset(&out.join("parquet/Orders"));
    let mut ids: Vec<_> = rows.iter().map(|r| r[0].clone()).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate OrderIDs in the union");
}

#[test]
fn v1_0_integer_watermark_compares_as_integers() {
    let dir = TempDir::new("inc-int");
    let db = dir.path().join("ints.db");
    std::fs::copy(fixture_db(1), &db).unwrap();
    let ds = Datasette::start(V1_0, &db);
    let out = dir.path().join("out");
    let run = || {
        run_job(
            "incremental",
            &ds.url,
            &ds.db_name,
            out.to_str().unwrap(),
            &[
                "--table",
                "Orders",
                "--watermark-column",
                "OrderID",
                "--since",
                "25000",
            ],
        )
    };
    assert_exit(&run(), 0);
    let (_, _, rows) = read_dataset(&out.join("parquet/Orders"));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row(
            "select count(*) from Orders where OrderID >= 25000",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        rows.len() as i64,
        n,
        "--since is an inclusive integer bound"
    );
    // 100000 > 26247 as integers (as text it would sort before "26247").
    sql(
        &db,
        "insert into Orders (OrderID, CustomerID, OrderDate) values (100000, 'Z', '2031-05-05')",
    );
    assert_exit(&run(), 0);
    let (_, _, rows) = read_dataset(&out.join("parquet/Orders"));
    assert_eq!(rows.len() as i64, n + 1);
    assert!(rows.iter().any(|r| r[0] == Cell::Int(100000)));
}

/// A sort Datasette answers with `500 Cannot sort table by …` on every attempt is refused
/// before the first page (exit 2, naming the column to use), not retried for a minute: rowid
/// on a table with a primary key, or a column the table does not have. Both versions.
#[test]
fn an_unsortable_watermark_or_sort_column_is_a_usage_error_naming_the_fix() {
    let db = fixture_db(1);
    for version in [V0_65, V1_0] {
        let ds = Datasette::start(version, &db);
        let out = TempDir::new("unsortable");
        let started = std::time::Instant::now();
        let o = run_job(
            "incremental",
            &ds.url,
            &ds.db_name,
            out.path().to_str().unwrap(),
            &["--table", "Products", "--watermark-column", "rowid"],
        );
        assert_exit_saying(&o, 2, "use --watermark-column ProductID");
        let o = run_job(
            "harvest",
            &ds.url,
            &ds.db_name,
            out.path().to_str().unwrap(),
            &["--table", "Orders", "--sort", "Shipped"],
        );
        assert_exit_saying(&o, 2, "has no column \"Shipped\"");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{version}: refused only after retries"
        );
        // rowid on a table without a primary key still works.
        let o = run_job(
            "incremental",
            &ds.url,
            &ds.db_name,
            out.path().to_str().unwrap(),
            &["--table", "Shipment Events", "--watermark-column", "rowid"],
        );
        assert_exit(&o, 0);
    }
}
