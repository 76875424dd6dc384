//! Every SQLite storage class and edge value, harvested through both Datasette versions and
//! through `sql-extract`, read back with pyarrow and compared value for value with SQLite.
//! A value that cannot travel unchanged must be a loud, documented refusal, never a silent
//! change: the table below says which, per case.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// The edge-value database. Each table is one class of values.
const EDGE_SQL: &str = r#"
create table reals(id integer primary key, x real);
insert into reals values (1, 1e999), (2, -1e999), (3, 1.5), (4, null), (5, 1e300), (6, 1e-300),
    (7, 1e20), (8, 0.1), (9, -2.5e-310), (10, 123456789.125);
create table untyped(id integer primary key, v);
insert into untyped values (1, -0.0), (2, 0.0), (3, 2.5), (4, 1e999), (5, null), (6, 7e-5);
create table ints(id integer primary key, i integer);
insert into ints values (1, 9223372036854775807), (2, -9223372036854775808), (3, 0), (4, -1),
    (5, null), (6, 9007199254740993);
create table texts(id integer primary key, t text);
insert into texts values (1, ''), (2, null), (3, 'a' || char(0) || 'b'), (4, '«ü» 😀 עברית'),
    (5, 'x' || char(65533) || 'y'), (6, printf('%.*c', 200000, 'z')), (7, 'Infinity'),
    (8, ' lead and trail '), (9, '"quoted", \back\slash' || char(10) || 'line');
create table blobs(id integer primary key, b blob);
insert into blobs values (1, x''), (2, null), (3, x'00ff'), (4, x'41'), (5, randomblob(3000)),
    (6, x'efbbbf');
create table keyed(k text primary key, v integer) without rowid;
insert into keyed values ('a', 1), ('b', 2), ('', 3), ('z z', null);
create table gen(a integer, b integer generated always as (a * 2) virtual,
    c text generated always as ('#' || a) stored);
insert into gen(a) values (1), (2), (null);
create table rowid_only(x integer, y text);
insert into rowid_only values (10, 'p'), (null, null), (30, 'r');
create view joined as select r.id, r.x, i.i, t.t from reals r join ints i on i.id = r.id
    left join texts t on t.id = r.id where r.id <= 6;
create table bad_utf8(id integer primary key, t text);
insert into bad_utf8 values (1, 'fine'), (2, cast(x'ff41' as text));
create table mixed(id integer primary key, m);
insert into mixed values (1, 1), (2, 'one');
"#;

/// Tables that must arrive value for value.
const EXACT: &[&str] = &[
    "reals",
    "untyped",
    "ints",
    "texts",
    "blobs",
    "keyed",
    "gen",
    "rowid_only",
];

/// Loud refusals: (table, extra flags, exit code, what stderr must say).
const REFUSED: &[(&str, &[&str], i32, &str)] = &[
    ("bad_utf8", &[], 1, "not valid UTF-8"),
    ("mixed", &[], 2, "holds both text and numbers"),
];

pub(crate) fn compare(db: &Path, pairs: &[(String, String)]) {
    let mut cmd = Command::new(readers_python());
    cmd.arg(repo_root().join("tests/it/compare_with_sqlite.py"))
        .arg(db);
    for (path, sql) in pairs {
        cmd.arg(path).arg(sql);
    }
    let o = cmd.output().expect("run the pyarrow comparison");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "pyarrow disagrees with SQLite:\n{said}");
    assert_eq!(said.matches("rows match").count(), pairs.len(), "{said}");
}

fn select_all(table: &str) -> String {
    format!("select {{cols}} from {}", quote(table))
}

fn sweep_datasette(version: &str) {
    let dir = TempDir::new("sweep");
    let db = make_db(&dir, "edge", EDGE_SQL);
    let ds = Datasette::start(version, &db);
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let mut args = vec![];
    for t in EXACT {
        args.extend(["--table", *t]);
    }
    let o = run_job("harvest", &ds.url, "edge", out_s, &args);
    assert_exit(&o, 0);
    let view_out = dir.path().join("view");
    let o = run_job(
        "harvest",
        &ds.url,
        "edge",
        view_out.to_str().unwrap(),
        &["--table", "joined", "--sort", "id"],
    );
    assert_exit(&o, 0);
    let mut pairs: Vec<(String, String)> = EXACT
        .iter()
        .map(|t| {
            (
                out.join("parquet").join(t).display().to_string(),
                select_all(t),
            )
        })
        .collect();
    pairs.push((
        view_out.join("parquet/joined").display().to_string(),
        select_all("joined"),
    ));
    compare(&db, &pairs);
    // ±Infinity are values: Float64 infinities, and the snapshot holds the server's tokens.
    let (_, types, rows) = read_dataset(&out.join("parquet/reals"));
    assert_eq!(types[1], arrow::datatypes::DataType::Float64);
    assert!(rows.contains(&vec![Cell::Int(1), real(f64::INFINITY)]));
    assert!(rows.contains(&vec![Cell::Int(2), real(f64::NEG_INFINITY)]));
    let m = manifest(&out);
    let page = records(&m, "page")
        .into_iter()
        .find(|r| r["table"] == "reals")
        .unwrap();
    let snapshot = std::fs::read_to_string(out.join(page["path"].as_str().unwrap())).unwrap();
    assert!(snapshot.contains("-Infinity"), "{snapshot}");
    assert_exit(&harvest(&["verify", "--out", out_s], &[]), 0);

    for (table, extra, code, says) in REFUSED {
        let refused = dir.path().join(format!("refused-{table}"));
        let mut args = vec!["--table", *table];
        args.extend_from_slice(extra);
        let o = run_job("harvest", &ds.url, "edge", refused.to_str().unwrap(), &args);
        assert_exit(&o, *code);
        assert!(stderr(&o).contains(says), "{table}: {}", stderr(&o));
        // Nothing a reader would trust: no Parquet part for the refused table.
        let parts = refused.join("parquet").join(table);
        assert!(
            !parts.exists() || all_files(&parts).is_empty(),
            "{table}: a refused table left parts"
        );
    }
    // The documented ways through: a text override for mixed columns.
    let o = run_job(
        "harvest",
        &ds.url,
        "edge",
        dir.path().join("mixed-text").to_str().unwrap(),
        &["--table", "mixed", "--type", "m=text"],
    );
    assert_exit(&o, 0);
}

#[test]
fn edge_values_through_datasette_0_65() {
    sweep_datasette(V0_65);
}

#[test]
fn edge_values_through_datasette_1_0() {
    sweep_datasette(V1_0);
}

#[test]
fn edge_values_through_sql_extract() {
    let dir = TempDir::new("sweep-sql");
    let db = make_db(&dir, "edge", EDGE_SQL);
    let mut pairs = vec![];
    for t in EXACT.iter().chain(&["joined"]) {
        let file = dir.path().join(format!("{t}.parquet"));
        let query = format!("select * from {}", quote(t));
        assert_exit(&extract_to_file(&db, &query, &file, &[]), 0);
        pairs.push((file.display().to_string(), select_all(t)));
    }
    compare(&db, &pairs);
    for (table, _, code, says) in REFUSED {
        let file = dir.path().join(format!("refused-{table}.parquet"));
        let query = format!("select * from {table}");
        let o = extract_to_file(&db, &query, &file, &[]);
        assert_exit(&o, *code);
        assert!(stderr(&o).contains(says), "{table}: {}", stderr(&o));
        assert!(!file.exists(), "{table}: a refused extract left a file");
    }
    // A blob override keeps text that is not UTF-8 byte for byte.
    let file = dir.path().join("bad_utf8.parquet");
    let query = "select id, t from bad_utf8";
    let o = extract_to_file(&db, query, &file, &["--type", "t=blob"]);
    assert_exit(&o, 0);
    let (_, _, rows) = read_dataset(&file);
    assert!(rows.contains(&vec![Cell::Int(2), Cell::Blob(vec![0xff, 0x41])]));
}

/// A server that sends ±Infinity as null even when asked (simulated by a proxy in front of a
/// real Datasette that rewrites the tokens): tables holding them are refused before any page,
/// and other tables still harvest.
#[test]
fn a_server_that_drops_infinity_is_refused_not_trusted() {
    use crate::fault_server::{Action, FaultServer, Synthetic, json};
    fn infinity_to_null(body: Vec<u8>) -> Action {
        let text = String::from_utf8_lossy(&body)
            .replace("-Infinity", "null")
            .replace("Infinity", "null");
        json(200, text)
    }
    let dir = TempDir::new("sweep-noinf");
    let db = make_db(&dir, "edge", EDGE_SQL);
    let ds = Datasette::start(V0_65, &db);
    let upstream = ds.url.clone();
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |_| {
        Some(Action::Proxy {
            upstream: upstream.clone(),
            then: Some(infinity_to_null),
        })
    });
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let o = run_job("harvest", &proxy.url, "edge", out_s, &["--table", "reals"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("\"x\" (2)") && err.contains("±Infinity"),
        "{err}"
    );
    assert!(
        !out.join("parquet/reals").exists(),
        "no part for a refused table"
    );
    assert!(
        records(&manifest(&out), "page").is_empty(),
        "refused before the first page"
    );
    let o = run_job("harvest", &proxy.url, "edge", out_s, &["--table", "ints"]);
    assert_exit(&o, 0);
    assert_dataset_matches_table(&out, &db, "ints");
}
