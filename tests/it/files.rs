//! `kind = "files"`: CSV, NDJSON and Parquet files by glob, each recorded byte-for-byte like a
//! page, typed, checked (the CSV upload case: good rows in, bad rows in quarantine with their
//! reasons), unchanged files skipped, changed files harvested again as their new version.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// hired_employees: id, name, datetime, department_id, job_id. Defects: an empty name
/// (required), a datetime that is not one (type), a department out of range, a name with
/// digits (pattern), a name too long (max_length), a job not in the list (one_of), and in
/// February a repeated id (unique).
const JAN: &str = "id,name,datetime,department_id,job_id
1,Ana Díaz,2021-01-04T10:00:00Z,1,7
2,\"Lee, Ben\",2021-01-05T11:30:00Z,2,3
3,,2021-01-06T09:00:00Z,2,3
4,Kim Roe,not a time,3,1
5,Sam Poe,2021-01-08T08:15:00Z,99,2
6,Ida Fox,2021-01-09T17:45:00Z,4,5
9,R2D2,2021-01-10T10:00:00Z,4,5
10,Zed Long Name Here,2021-01-11T10:00:00Z,4,5
11,Al Ok,2021-01-12T10:00:00Z,4,4
";

const FEB: &str = "id,name,datetime,department_id,job_id
7,Ola Nyx,2021-02-01T10:00:00Z,5,2
2,Lee Ben,2021-02-02T10:00:00Z,2,3
8,Uma Lin,2021-02-03T10:00:00Z,6,9
";

fn config(dir: &Path, data: &Path) -> String {
    let cfg = dir.join("files.toml");
    fs::write(
        &cfg,
        format!(
            r#"[[source]]
name = "uploads"
kind = "files"

[[source.table]]
name = "hired_employees"
path = "{}/hired_employees*.csv"
name_pattern = '^hired_employees_\d{{4}}-\d{{2}}\.csv$'
types = {{ id = "integer", datetime = "timestamp", department_id = "integer", job_id = "integer" }}

[source.table.checks]
required = ["id", "name", "datetime", "department_id", "job_id"]
unique = ["id"]
range = {{ department_id = {{ min = 1, max = 12 }} }}
pattern = {{ name = '^[^0-9]+$' }}
max_length = {{ name = 12 }}
one_of = {{ job_id = [1, 2, 3, 5, 7, 9] }}
"#,
            data.display()
        ),
    )
    .unwrap();
    cfg.to_str().unwrap().to_string()
}

fn quarantine(out: &Path) -> Vec<(i64, String, String)> {
    let o = harvest(
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--dataset",
            "hired_employees",
            "--quarantine",
            "--format",
            "ndjson",
        ],
        &[],
    );
    assert_exit(&o, 0);
    let mut v: Vec<(i64, String, String)> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            (
                r["id"].as_str().unwrap().parse().unwrap(),
                r["_checks"].as_str().unwrap().to_string(),
                r["_reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn ids(out: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = export_ndjson(out, "hired_employees")
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn csv_files_are_checked_recorded_and_harvested_once_per_version() {
    let tmp = TempDir::new("files-csv");
    let data = tmp.path().join("uploads");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("hired_employees_2021-01.csv"), JAN).unwrap();
    fs::write(data.join("hired_employees_final.csv"), "id\n1\n").unwrap();
    let cfg = config(tmp.path(), &data);
    let out = tmp.path().join("out");
    let run = || crate::rest::config_cmd("harvest", &cfg, &out, &[], &[]);

    let o = run();
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("hired_employees_final.csv was not read: its name does not match"),
        "{err}"
    );
    assert!(
        err.contains(
            "3 rows written, 6 quarantined (max_length: 1, one_of: 1, pattern: 1, range: 1, required: 1, type: 1)"
        ),
        "{err}"
    );
    assert_eq!(ids(&out), [1, 2, 6]);
    let q = quarantine(&out);
    assert_eq!(
        q.iter()
            .map(|(i, c, _)| (*i, c.as_str()))
            .collect::<Vec<_>>(),
        [
            (3, "required"),
            (4, "type"),
            (5, "range"),
            (9, "pattern"),
            (10, "max_length"),
            (11, "one_of")
        ]
    );
    assert_eq!(q[5].2, "job_id 4 is not one of 1, 2, 3, 5, 7, 9");
    assert!(
        q[1].2
            .starts_with("datetime \"not a time\" is not a timestamp"),
        "{q:?}"
    );
    // The file is recorded byte-for-byte: its copy's sha256 is the original's.
    let m = manifest(&out);
    let page = records(&m, "page")[0];
    assert_eq!(
        page["sha256"],
        harvest::manifest::sha256_hex(JAN.as_bytes())
    );
    assert_eq!(
        fs::read(out.join(page["path"].as_str().unwrap())).unwrap(),
        JAN.as_bytes()
    );
    assert_eq!(page["rows"], 9);
    // DuckDB reads the dataset typed, and the quarantine as text.
    python_ok(
        &readers_python(),
        "import sys, duckdb\nd = sys.argv[1]\nr = duckdb.sql(f\"select id, name, datetime, department_id from read_parquet('{d}/parquet/hired_employees/*.parquet') order by id\").fetchall()\nassert [x[0] for x in r] == [1, 2, 6], r\nassert r[1][1] == 'Lee, Ben', r\nassert str(r[0][2]) == '2021-01-04 10:00:00', r\nq = duckdb.sql(f\"select id, _checks from read_parquet('{d}/quarantine/hired_employees/*.parquet') order by cast(id as integer)\").fetchall()\nassert q[:3] == [('3', 'required'), ('4', 'type'), ('5', 'range')] and len(q) == 6, q",
        &[&out],
    );

    // Unchanged: nothing read again. A new file: only its rows, and its repeated id 2 is a
    // duplicate of January's.
    fs::write(data.join("hired_employees_2021-02.csv"), FEB).unwrap();
    let o = run();
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("is unchanged since it was harvested"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ids(&out), [1, 2, 6, 7, 8]);
    let q = quarantine(&out);
    assert_eq!(q.len(), 7);
    assert!(q.iter().any(|(i, c, _)| *i == 2 && c == "unique"), "{q:?}");
    let pages = records(&manifest(&out), "page").len();
    assert_eq!(pages, 2, "January was not recorded again");

    // January corrected: harvested again as its new version, replacing the old one's rows
    // (dataset and quarantine).
    let fixed = JAN
        .replace("3,,", "3,Jo Ray,")
        .replace("not a time", "2021-01-07T12:00:00Z")
        .replace(",99,", ",9,");
    fs::write(data.join("hired_employees_2021-01.csv"), &fixed).unwrap();
    let o = run();
    assert_exit(&o, 0);
    assert_eq!(ids(&out), [1, 2, 3, 4, 5, 6, 7, 8]);
    let q = quarantine(&out);
    assert_eq!(
        q.iter()
            .map(|(i, c, _)| (*i, c.as_str()))
            .collect::<Vec<_>>(),
        [
            (2, "unique"),
            (9, "pattern"),
            (10, "max_length"),
            (11, "one_of")
        ]
    );
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
}

/// NDJSON and Parquet files: typed from the file (NDJSON by its values, Parquet by its own
/// schema), flattened like REST records; a kill -9 mid-run resumes to every row once.
#[test]
fn ndjson_and_parquet_files_and_a_crash_between_files() {
    let tmp = TempDir::new("files-mixed");
    let data = tmp.path().join("in");
    fs::create_dir_all(&data).unwrap();
    for f in 0..4 {
        let mut text = String::new();
        for i in 0..500 {
            let id = f * 500 + i;
            text.push_str(&format!(
                "{{\"id\": {id}, \"kind\": \"k{}\", \"repo\": {{\"name\": \"r{}\"}}, \"score\": {}.5}}\n",
                id % 3,
                id % 7,
                id % 100
            ));
        }
        fs::write(data.join(format!("events-{f}.ndjson")), text).unwrap();
    }
    let cfg = tmp.path().join("files.toml");
    fs::write(
        &cfg,
        format!(
            "[[source]]\nkind = \"files\"\n[[source.table]]\nname = \"events\"\npath = \"{}/events-*.ndjson\"\n[source.table.checks]\nunique = [\"id\"]\nrequired = [\"repo__name\"]\n",
            data.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let args = [
        "harvest",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = harvest(&args, &[("HARVEST_FAILPOINT", "unique:before-settle")]);
    assert!(!o.status.success(), "the failpoint did not fire");
    let o = harvest(&args, &[]);
    assert_exit(&o, 0);
    let rows: Vec<Value> = export_ndjson(&out, "events")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
    assert_eq!(
        rows[0]["repo__name"].as_str().map(|s| s.starts_with('r')),
        Some(true)
    );
    assert_eq!(rows[0]["score"].as_f64().map(|s| s.fract()), Some(0.5));
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );

    // Parquet files: the dataset harvest just wrote, read back as a source.
    let parts = tmp.path().join("parts");
    fs::create_dir_all(&parts).unwrap();
    for (i, p) in all_files(&out.join("parquet/events")).iter().enumerate() {
        fs::copy(p, parts.join(format!("p{i}.parquet"))).unwrap();
    }
    let cfg2 = tmp.path().join("pq.toml");
    fs::write(
        &cfg2,
        format!(
            "[[source]]\nkind = \"files\"\n[[source.table]]\nname = \"again\"\npath = \"{}/*.parquet\"\n",
            parts.display()
        ),
    )
    .unwrap();
    let out2 = tmp.path().join("out2");
    assert_exit(
        &crate::rest::config_cmd("harvest", cfg2.to_str().unwrap(), &out2, &[], &[]),
        0,
    );
    let again: Vec<Value> = export_ndjson(&out2, "again")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(again.len(), 2000);
    let by_id = |rows: &[Value], id: i64| rows.iter().find(|r| r["id"] == id).cloned().unwrap();
    assert_eq!(by_id(&again, 1234), by_id(&rows, 1234));
}

/// Files on object storage (an S3-compatible server, moto): listed by glob under the prefix,
/// copied and hashed as they stream, checked; unchanged on the next run.
#[test]
fn csv_files_on_s3_are_read_like_local_ones() {
    let tmp = TempDir::new("files-s3");
    let s3 = S3Server::start("uploads");
    s3.put("hr/hired_employees_2021-01.csv", JAN);
    s3.put("hr/notes.txt", "not data");
    s3.put("hr/2020/hired_employees_old.csv", "id\n1\n");
    let cfg = tmp.path().join("s3.toml");
    let text = config(tmp.path(), Path::new("/placeholder"));
    fs::write(
        &cfg,
        fs::read_to_string(&text)
            .unwrap()
            .replace("/placeholder/", "s3://uploads/hr/"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let env: Vec<(&str, String)> = s3.env();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = || crate::rest::config_cmd("harvest", cfg.to_str().unwrap(), &out, &[], &envs);
    let o = run();
    assert_exit(&o, 0);
    assert_eq!(ids(&out), [1, 2, 6]);
    assert_eq!(quarantine(&out).len(), 6);
    let m = manifest(&out);
    let pages = records(&m, "page");
    assert_eq!(
        pages.len(),
        1,
        "only the matching file at the prefix's top level"
    );
    assert_eq!(
        pages[0]["file"]["path"],
        "s3://uploads/hr/hired_employees_2021-01.csv"
    );
    assert_eq!(
        pages[0]["sha256"],
        harvest::manifest::sha256_hex(JAN.as_bytes())
    );
    let o = run();
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("is unchanged since it was harvested"),
        "{}",
        stderr(&o)
    );
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
}
