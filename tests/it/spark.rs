//! Apache Spark (pyspark 4.3 on Java 17, a reader nobody here wrote) reads harvest's plain
//! Parquet datasets with their Hive partition directories: every row as SQLite holds it, with
//! the partition values decoded from the directory names (escaped separators, `%`, `=`,
//! non-ASCII text, and NULL as `__HIVE_DEFAULT_PARTITION__`).

use std::process::Command;

use serde_json::Value;

use crate::common::*;

#[test]
fn spark_reads_hive_partitioned_datasets_row_for_row() {
    let dir = TempDir::new("spark");
    let db = make_db(
        &dir,
        "odd",
        "create table t (id integer primary key, grp text, v real, note text);
         insert into t values
           (1, 'a/b', 1.5, 'slash'), (2, '50%', 2, 'percent'), (3, 'x=y', null, 'equals'),
           (4, null, 4.25, 'null group'), (5, 'Côte d''Ivoire', 5, 'unicode'),
           (6, 'plain', 6, null), (7, 'plain', 7, 'two rows'), (8, '..', 8, 'dots');",
    );
    let ds = Datasette::start(V0_65, &db);
    let out = dir.path().join("out");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        out.to_str().unwrap(),
        &["--table", "t", "--partition-by", "grp"],
    );
    assert_exit(&o, 0);
    let o = Command::new(spark_python())
        .arg(repo_root().join("tests/it/read_spark.py"))
        .arg(out.join("parquet/t"))
        .arg(&db)
        .arg("t")
        .output()
        .expect("run read_spark.py");
    assert!(
        o.status.success(),
        "Spark disagrees with SQLite:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got: Value = serde_json::from_slice(&o.stdout).expect("read_spark.py prints JSON");
    assert_eq!(got["rows"], 8, "{got}");
    // a/b, 50%, x=y, NULL, Côte d'Ivoire, plain, ..: seven partitions, NULL among them.
    assert_eq!(got["partition_values"], 7, "{got}");
    assert_eq!(
        got["columns"][3], "grp",
        "the partition column comes last: {got}"
    );
}
