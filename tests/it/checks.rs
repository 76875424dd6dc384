//! Row checks and quarantine against real servers: every seeded defect ends in quarantine with
//! its reasons, the good rows land in the dataset exactly, `verify` checks quarantine parts,
//! `max_failed` stops a run with exit 6 and a raised limit resumes it.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// 60 events; the defects are seeded at fixed ids, each named by the checks it must fail.
const EVENTS: &str = "
create table events (n INTEGER PRIMARY KEY, id INTEGER, type TEXT, email TEXT, score INTEGER,
                     created_at TEXT, name TEXT);
with recursive k(i) as (select 1 union all select i + 1 from k where i < 60)
insert into events (id, type, email, score, created_at, name)
select i,
       case i % 3 when 0 then 'PushEvent' when 1 then 'IssuesEvent' else 'WatchEvent' end,
       'user' || i || '@example.com', i % 100, '2021-01-' || printf('%02d', 1 + i % 28), 'n' || i
from k;
update events set type = NULL where id = 5;
update events set type = 'ForkEvent' where id = 11;
update events set email = 'not an address' where id = 17;
update events set score = 130 where id = 23;
update events set created_at = '2019-05-01' where id = 29;
update events set created_at = 'yesterday' where id = 31;
update events set name = 'a name far too long' where id = 37;
update events set type = 'ForkEvent', score = -4 where id = 41;
update events set id = 3 where id = 47;
update events set id = 13 where id = 53;
";

/// The ids that must end in quarantine (the rows at n = 47 and 53 carry ids 3 and 13 again),
/// with the checks each must name.
const BAD: [(i64, i64, &str); 10] = [
    (5, 5, "required"),
    (11, 11, "one_of"),
    (17, 17, "pattern"),
    (23, 23, "range"),
    (29, 29, "range"),
    (31, 31, "type,range"),
    (37, 37, "max_length"),
    (41, 41, "one_of,range"),
    (47, 3, "unique"),
    (53, 13, "unique"),
];

fn config(dir: &Path, url: &str, db: &str, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("checks.toml");
    fs::write(
        &cfg,
        format!(
            r#"
[parquet]
part_rows = 7

[[source]]
name = "ev"
url = "{url}"
database = "{db}"
page_size = 10

[[source.table]]
name = "events"
types = {{ created_at = "timestamp" }}

[source.table.checks]
required = ["id", "type"]
unique = ["id"]
one_of = {{ type = ["PushEvent", "IssuesEvent", "WatchEvent"] }}
pattern = {{ email = '^[^@\s]+@[^@\s]+$' }}
range = {{ score = {{ min = 0, max = 100 }}, created_at = {{ min = "2020-01-01" }} }}
max_length = {{ name = 12 }}
{extra}
"#
        ),
    )
    .unwrap();
    cfg
}

#[track_caller]
fn assert_verified(out: &Path) {
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
}

/// A Datasette 0.65 serving the seeded events (with the temp dir holding its database).
fn events_server(tag: &str) -> (TempDir, Datasette) {
    let tmp = TempDir::new(tag);
    let db = make_db(&tmp, "checks", EVENTS);
    let ds = Datasette::start(V0_65, &db);
    (tmp, ds)
}

fn ids(lines: &[String], field: &str) -> Vec<i64> {
    let mut v: Vec<i64> = lines
        .iter()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            match &r[field] {
                Value::String(s) => s.parse().unwrap(),
                v => v.as_i64().unwrap(),
            }
        })
        .collect();
    v.sort();
    v
}

fn export_quarantine(out: &Path, dataset: &str) -> Vec<Value> {
    let o = harvest(
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--dataset",
            dataset,
            "--quarantine",
            "--format",
            "ndjson",
        ],
        &[],
    );
    assert_exit(&o, 0);
    let mut rows: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by_key(|r| r["_page"].as_i64().unwrap() * 1000 + r["_row"].as_i64().unwrap());
    rows
}

/// The good rows are exact, each bad row is in quarantine once with every check it failed,
/// traceable to its snapshot.
fn assert_split(out: &Path) {
    let good = ids(&export_ndjson(out, "events"), "n");
    let bad_n: Vec<i64> = BAD.iter().map(|b| b.0).collect();
    let want: Vec<i64> = (1..=60).filter(|n| !bad_n.contains(n)).collect();
    assert_eq!(good, want, "the dataset holds exactly the good rows");
    let q = export_quarantine(out, "events");
    let got: Vec<(i64, i64, String)> = q
        .iter()
        .map(|r| {
            (
                r["n"].as_str().unwrap().parse().unwrap(),
                r["id"].as_str().unwrap().parse().unwrap(),
                r["_checks"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(i64, i64, String)> = BAD
        .iter()
        .map(|(n, id, c)| (*n, *id, c.to_string()))
        .collect();
    assert_eq!(got, want, "{q:#?}");
    let reason = |n: i64| {
        q.iter()
            .find(|r| r["n"].as_str() == Some(n.to_string().as_str()))
            .map(|r| r["_reason"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(reason(23), "score 130 is above max 100");
    assert_eq!(reason(5), "type is NULL");
    assert!(
        reason(31).contains("created_at \"yesterday\" is not a timestamp"),
        "{}",
        reason(31)
    );
    assert_eq!(
        reason(47),
        "id 3 was harvested before (a duplicate key; the first is kept)"
    );
    // Traceable: the snapshot named holds the row, at the page and position given.
    for r in &q {
        let snap = out.join(r["_snapshot"].as_str().unwrap());
        let body: Value = serde_json::from_slice(&fs::read(&snap).unwrap()).unwrap();
        let row = &body["rows"][r["_row"].as_u64().unwrap() as usize - 1];
        let n = r["n"].as_str().unwrap();
        assert!(
            row.to_string().contains(&format!("\"n\":{n}"))
                || row[0].as_i64().map(|x| x.to_string()).as_deref() == Some(n),
            "{row} is not row n={n}"
        );
    }
}

#[test]
fn datasette_rows_that_fail_checks_go_to_quarantine_with_every_reason() {
    let (tmp, ds) = events_server("checks-ds");
    let out = tmp.path().join("out");
    let cfg = config(tmp.path(), &ds.url, &ds.db_name, "");
    let args = [
        "harvest",
        "-c",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = harvest(&args, &[]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("50 rows written, 10 quarantined (max_length: 1, one_of: 2, pattern: 1, range: 4, required: 1, type: 1, unique: 2) in quarantine/events"),
        "{err}"
    );
    assert_split(&out);
    // The manifest: quarantine parts with sha256 and rows; table_end with the counts.
    let m = manifest(&out);
    let q = records(&m, "quarantine");
    assert!(
        q.len() >= 2,
        "several checkpoints hold quarantined rows: {q:?}"
    );
    assert_eq!(
        q.iter().map(|r| r["rows"].as_u64().unwrap()).sum::<u64>(),
        10
    );
    let end = records(&m, "table_end")[0];
    assert_eq!(end["rows"], 50);
    assert_eq!(end["rows_quarantined"], 10);
    assert_eq!(end["checks"]["range"], 4);
    // verify checks quarantine parts like any other part.
    assert_verified(&out);
    let hist = harvest(&["history", "--out", out.to_str().unwrap(), "--json"], &[]);
    assert_exit(&hist, 0);
    let h: Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(h["runs"][0]["rows_quarantined"], 10, "{h}");
    assert_eq!(h["runs"][0]["datasets"][0]["checks"]["unique"], 2, "{h}");
    // A second complete harvest replaces dataset and quarantine (its keys are its own).
    assert_exit(&harvest(&args, &[]), 0);
    assert_split(&out);
    // A tampered quarantine part is found.
    let part = out.join(q[0]["path"].as_str().unwrap());
    let part = if part.exists() {
        part
    } else {
        let m = manifest(&out);
        out.join(
            records(&m, "quarantine").last().unwrap()["path"]
                .as_str()
                .unwrap(),
        )
    };
    let mut bytes = fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&part, bytes).unwrap();
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 3);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("quarantine/events")
            || stderr(&v).contains("quarantine/events"),
        "{}",
        stderr(&v)
    );
}

/// Past `max_failed` the run stops with exit 6 after recording what it wrote; raising the
/// limit resumes it, and the rows end where they belong, once.
#[test]
fn max_failed_stops_with_exit_6_and_a_raised_limit_resumes() {
    let (tmp, ds) = events_server("checks-max");
    let out = tmp.path().join("out");
    let cfg = config(tmp.path(), &ds.url, &ds.db_name, "max_failed = 3");
    let run = |extra: &[&str]| {
        crate::rest::config_cmd("harvest", cfg.to_str().unwrap(), &out, extra, &[])
    };
    let o = run(&[]);
    assert_exit(&o, 6);
    let err = stderr(&o);
    assert!(
        err.contains("5 of 30 rows failed their checks")
            && err.contains("more than max_failed 3")
            && err.contains("hint:"),
        "{err}"
    );
    // A share over the whole table: 10 of 60 is above 10%, so the end is refused too.
    let o = run(&["--max-failed", "10%"]);
    assert_exit(&o, 6);
    assert!(stderr(&o).contains("resuming run"), "{}", stderr(&o));
    let o = run(&["--max-failed", "20%"]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("resuming run"), "{}", stderr(&o));
    assert_split(&out);
    assert_verified(&out);
}

/// A crash anywhere (kill -9 at seeded moments; an abort between a checkpoint's dataset and
/// quarantine lines; an abort after the lines, before the key index settles them): after the
/// rerun, dataset and quarantine together hold every source row exactly once.
#[test]
fn crashes_with_checks_and_unique_lose_and_double_nothing() {
    let (tmp, ds) = events_server("checks-crash");
    let cfg = config(tmp.path(), &ds.url, &ds.db_name, "");
    // Slow enough to be killed mid-run: 7 pages at 20 requests per second.
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, format!("[http]\nrate_limit = \"20/s\"\n{text}")).unwrap();
    for (i, failpoint) in ["parts:between-lines", "unique:before-settle", ""]
        .iter()
        .enumerate()
    {
        let out = tmp.path().join(format!("out-{i}"));
        let args = [
            "harvest",
            "-c",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if failpoint.is_empty() {
            for seed in 0..3 {
                kill_at_seeded_moments(&args, seed, 60);
            }
        } else {
            let o = harvest(&args, &[("HARVEST_FAILPOINT", failpoint)]);
            assert!(
                !o.status.success(),
                "{failpoint}: the failpoint did not fire"
            );
        }
        let o = harvest(&args, &[]);
        assert_exit(&o, 0);
        let said = match *failpoint {
            // The checkpoint's dataset line is in, its quarantine line is not: both go.
            "parts:between-lines" => "cut short",
            // The lines are in, the keys still pending: the index settles them.
            "unique:before-settle" => "key index recovered",
            _ => "",
        };
        assert!(stderr(&o).contains(said), "{failpoint}: {}", stderr(&o));
        assert_split(&out);
        assert_no_page_fetched_twice(&out, failpoint);
        assert_verified(&out);
    }
}

fn event(id: u64, event_id: u64, kind: &str, score: i64) -> Value {
    serde_json::json!({
        "id": id,
        "event_id": event_id,
        "type": kind,
        "score": score,
        "email": format!("user{id}@example.com"),
        "title": format!("event {id}"),
        "created_at": format!("2024-03-{:02}T{:02}:00:00Z", 1 + id / 24, id % 24),
    })
}

fn rest_events_config(dir: &Path, url: &str, table: &str) -> String {
    crate::rest::rest_config(
        dir,
        url,
        &format!(
            r#"[[source.table]]
name = "events"
{table}

[source.table.checks]
required = ["event_id", "type"]
unique = ["event_id"]
one_of = {{ type = ["PushEvent", "WatchEvent"] }}
range = {{ score = {{ min = 0, max = 100 }} }}
pattern = {{ email = '^[^@\s]+@[^@\s]+$' }}
max_length = {{ title = 20 }}
"#
        ),
    )
}

/// json-server: duplicate ids across two incremental runs (an event the API sends again with
/// a later time) and seeded defects end in quarantine; each good event is in the dataset once.
#[test]
fn rest_incremental_keeps_one_row_per_key_across_runs() {
    let tmp = TempDir::new("checks-rest-inc");
    let mut events: Vec<Value> = (1..=30).map(|i| event(i, i, "PushEvent", 10)).collect();
    events[4]["type"] = Value::Null; // id 5: required
    events[8]["type"] = "ForkEvent".into(); // id 9: one_of
    events[14]["score"] = 130.into(); // id 15: range
    events[19]["email"] = "nobody".into(); // id 20: pattern
    events[24]["title"] = "a title that is far too long".into(); // id 25: max_length
    let js = JsonServer::start(&serde_json::json!({ "events": events }));
    let cfg = rest_events_config(
        tmp.path(),
        &js.url,
        r#"params = { _sort = "created_at", created_at_gte = "{watermark}" }
paginate = { kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 7 }
watermark = "created_at""#,
    );
    let out = tmp.path().join("out");
    let run = || crate::rest::config_cmd("incremental", &cfg, &out, &[], &[]);
    assert_exit(&run(), 0);
    // New events, two of them repeating earlier event ids with a later time, one a repeat of
    // a quarantined (so never held) key.
    let mut new: Vec<Value> = (31..=40).map(|i| event(i, i, "WatchEvent", 50)).collect();
    new[2]["event_id"] = 7.into(); // id 33 repeats event 7
    new[5]["event_id"] = 12.into(); // id 36 repeats event 12
    new[7]["event_id"] = 9.into(); // id 38 repeats event 9, which was quarantined
    for e in &new {
        assert_eq!(
            http_send(js.port, "POST", "/events", &e.to_string()),
            201,
            "json-server took the new event"
        );
    }
    let o = run();
    assert_exit(&o, 0);
    let good = ids(&export_ndjson(&out, "events"), "id");
    let want: Vec<i64> = (1..=40)
        .filter(|i| ![5, 9, 15, 20, 25, 33, 36].contains(i))
        .collect();
    assert_eq!(good, want);
    let q = export_quarantine(&out, "events");
    let mut got: Vec<(i64, String)> = q
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().parse().unwrap(),
                r["_checks"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (5, "required".to_string()),
            (9, "one_of".to_string()),
            (15, "range".to_string()),
            (20, "pattern".to_string()),
            (25, "max_length".to_string()),
            (33, "unique".to_string()),
            (36, "unique".to_string()),
        ]
    );
    assert_verified(&out);
}

/// json-server paged by offset, newest first: records inserted after page 1 shift the later
/// pages, which repeat rows already taken. `unique` quarantines the repeats; the dataset holds
/// each record once.
#[test]
fn rest_offset_paging_that_shifts_under_insertion_keeps_each_record_once() {
    let tmp = TempDir::new("checks-rest-shift");
    let events: Vec<Value> = (1..=50).map(|i| event(i, i, "PushEvent", 10)).collect();
    let js = JsonServer::start(&serde_json::json!({ "events": events }));
    let cfg = rest_events_config(
        tmp.path(),
        &js.url,
        r#"params = { _sort = "id", _order = "desc" }
paginate = { kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 10 }"#,
    );
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, format!("[http]\nrate_limit = \"2/s\"\n{text}")).unwrap();
    let out = tmp.path().join("out");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["harvest", "--config", &cfg, "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Once page 1 is recorded, three newer records arrive.
    let started = std::time::Instant::now();
    while !fs::read_to_string(out.join("manifest.jsonl")).is_ok_and(|m| m.contains("\"page\":1,")) {
        assert!(started.elapsed().as_secs() < 60, "page 1 never came");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for i in 51..=53 {
        assert_eq!(
            http_send(
                js.port,
                "POST",
                "/events",
                &event(i, i, "PushEvent", 10).to_string()
            ),
            201
        );
    }
    assert!(child.wait().unwrap().success());
    let m = manifest(&out);
    assert!(
        records(&m, "page")[1]["params"]["_start"] == "10",
        "page 2 came after the insertion"
    );
    let good = ids(&export_ndjson(&out, "events"), "id");
    assert_eq!(good, (1..=50).collect::<Vec<i64>>());
    let q = export_quarantine(&out, "events");
    let got: Vec<(i64, &str)> = q
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().parse().unwrap(),
                r["_checks"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(43, "unique"), (42, "unique"), (41, "unique")]);
    assert_verified(&out);
}

/// `--table-format delta`: the Delta table holds exactly the good rows (its log commits no
/// quarantine part); the quarantine is Parquet beside it, and `verify` is clean.
#[test]
fn a_delta_dataset_commits_only_the_rows_that_pass() {
    let (tmp, ds) = events_server("checks-delta");
    let out = tmp.path().join("out");
    let cfg = config(tmp.path(), &ds.url, &ds.db_name, "");
    let o = crate::rest::config_cmd(
        "harvest",
        cfg.to_str().unwrap(),
        &out,
        &["--table-format", "delta"],
        &[],
    );
    assert_exit(&o, 0);
    assert_split(&out);
    let bad: Vec<String> = BAD.iter().map(|b| b.0.to_string()).collect();
    python_ok(
        &delta_readers_python(),
        &format!(
            "import sys\nfrom deltalake import DeltaTable\nn = sorted(DeltaTable(sys.argv[1]).to_pyarrow_table(columns=['n']).column('n').to_pylist())\nbad = {{{}}}\nassert n == [i for i in range(1, 61) if i not in bad], n",
            bad.join(", ")
        ),
        &[&out.join("parquet/events")],
    );
    assert_verified(&out);
}

/// `--parallel 3`: each key range has its own quarantine parts and checkpoints, the key index
/// is shared, and the split is the same as with one cursor.
#[test]
fn parallel_cursors_split_rows_the_same_way() {
    let (tmp, ds) = events_server("checks-parallel");
    let out = tmp.path().join("out");
    let cfg = config(tmp.path(), &ds.url, &ds.db_name, "");
    let o = crate::rest::config_cmd(
        "harvest",
        cfg.to_str().unwrap(),
        &out,
        &["--parallel", "3"],
        &[],
    );
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("3 cursors"), "{}", stderr(&o));
    // Which row of a repeated id is "first" depends on the cursors' interleaving, so compare
    // the split by row, with the duplicates checked as a set.
    let good = ids(&export_ndjson(&out, "events"), "n");
    let q = export_quarantine(&out, "events");
    let mut all: Vec<i64> = good.clone();
    all.extend(
        q.iter()
            .map(|r| r["n"].as_str().unwrap().parse::<i64>().unwrap()),
    );
    all.sort();
    assert_eq!(
        all,
        (1..=60).collect::<Vec<_>>(),
        "every row once, in one of the two"
    );
    let unique: Vec<i64> = q
        .iter()
        .filter(|r| r["_checks"] == "unique")
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let mut unique_sorted = unique.clone();
    unique_sorted.sort();
    assert_eq!(unique_sorted, [3, 13], "one of each repeated id's two rows");
    assert_eq!(q.len(), 10);
    assert!(
        records(&manifest(&out), "quarantine")
            .iter()
            .any(|r| r["path"].as_str().unwrap().contains("-s")),
        "slices write their own quarantine parts"
    );
    assert_verified(&out);
}
