//! Requests in flight at once (issue 29), against json-server and Datasette behind the fault
//! server: `parallel` on REST tables whose pages are addressable (fetched ahead, recorded in
//! order, the same output as one page at a time), `--jobs N` (tables at once, one manifest),
//! a `Retry-After` that holds back every request in flight, kill -9 with both, a failure that
//! stops the other tables cleanly, and `verify` finding a page missing from a cursor.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::fault_server::*;
use crate::rest::{assert_posts, kill_9_then_finish, posts_db, run_config, write_config};

/// When each request reached the fault server, in order.
type Arrivals = Arc<Mutex<Vec<(Instant, Request)>>>;

/// The fault server in front of json-server, adding `delay` to every request (as a server
/// across a network would) and keeping each request's arrival time.
fn delayed(js: &JsonServer, delay: Duration) -> (FaultServer, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let log = arrivals.clone();
    let port = js.port;
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        log.lock().unwrap().push((Instant::now(), req.clone()));
        Some(Action::Forward {
            port,
            delay,
            lose_answer: false,
        })
    });
    (proxy, arrivals)
}

/// The most requests that arrived within any `window`.
fn most_within(arrivals: &[(Instant, Request)], window: Duration) -> usize {
    let times: Vec<Instant> = arrivals.iter().map(|(t, _)| *t).collect();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn pages_of<'a>(m: &'a [Value], output: &str) -> Vec<&'a Value> {
    records(m, "page")
        .into_iter()
        .filter(|p| p["output"] == output)
        .collect()
}

/// The sha256 of each Parquet part the manifest records for `output`, in order.
fn part_hashes(out: &Path, output: &str) -> Vec<String> {
    records(&manifest(out), "parquet")
        .into_iter()
        .filter(|p| p["output"] == output)
        .map(|p| p["sha256"].as_str().unwrap().to_string())
        .collect()
}

#[track_caller]
fn assert_verify(out: &Path, code: i32) -> String {
    let o = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&o, code);
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o))
}

const PAGED_TABLES: &str = r#"
[[source.table]]
name = "with_total"
path = "/posts"
paginate = { kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 100, total_header = "X-Total-Count" }

[[source.table]]
name = "no_total"
path = "/posts"
paginate = { kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 125 }

[[source.table]]
name = "by_page"
path = "/posts"
params = { _limit = 250 }
paginate = { kind = "page_number", param = "_page", start = 1 }
"#;

/// `parallel = N` on offset and page-number tables: pages are fetched several at once, but
/// recorded in order as one cursor, so the manifest and the Parquet parts are those of a run
/// one page at a time; a known total stops the fetching ahead at the end, and without one
/// the pages guessed past the end are never recorded.
#[test]
fn parallel_rest_pages_are_fetched_ahead_and_recorded_in_order() {
    let n = 2500;
    let js = JsonServer::start(&posts_db(n));
    let (proxy, arrivals) = delayed(&js, Duration::from_millis(60));
    let work = TempDir::new("rest-parallel");
    let tables = |parallel: bool| {
        let p = if parallel { "parallel = 8\n" } else { "" };
        PAGED_TABLES.replace("path = \"/posts\"\n", &format!("path = \"/posts\"\n{p}"))
    };
    let run = |name: &str, parallel: bool| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = write_config(
            &dir,
            &format!(
                "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n{}",
                proxy.url,
                tables(parallel)
            ),
        );
        let out = dir.join("out");
        let o = run_config(&config, &out, &[]);
        assert_exit(&o, 0);
        (out, stderr(&o))
    };
    let (seq, _) = run("sequential", false);
    let one_at_a_time = arrivals.lock().unwrap().len();
    assert!(most_within(&arrivals.lock().unwrap(), Duration::from_millis(40)) <= 2);
    arrivals.lock().unwrap().clear();
    let (par, log) = run("parallel", true);
    assert!(log.contains("up to 8 pages fetched at once"), "{log}");
    let sent = arrivals.lock().unwrap().clone();
    // Eight requests went out together (one at a time, each waits 60 ms for the last).
    assert!(
        most_within(&sent, Duration::from_millis(40)) >= 6,
        "no pages were in flight together"
    );
    for d in ["with_total", "no_total", "by_page"] {
        assert_posts(&par, d, 1..=n);
        // The same pages and cursors as one page at a time, and byte-identical parts.
        let (m1, m2) = (manifest(&seq), manifest(&par));
        let key = |p: &&Value| (p["page"].clone(), p["url"].clone(), p["cursor_in"].clone());
        let a: Vec<_> = pages_of(&m1, d).iter().map(key).collect();
        let b: Vec<_> = pages_of(&m2, d).iter().map(key).collect();
        assert_eq!(a, b, "{d}: the pages differ from a sequential run");
        assert_eq!(
            part_hashes(&seq, d),
            part_hashes(&par, d),
            "{d}: parts differ"
        );
    }
    let m = manifest(&par);
    // 2500 records: 25 pages of 100 and the total stops it; 20 pages of 125 and an empty
    // page; 10 pages of 250 and an empty page.
    assert_eq!(pages_of(&m, "with_total").len(), 25);
    assert_eq!(pages_of(&m, "no_total").len(), 21);
    assert_eq!(pages_of(&m, "by_page").len(), 11);
    for (k, p) in pages_of(&m, "with_total").iter().enumerate() {
        assert_eq!(p["page"], k as u64 + 1);
        assert_eq!(p["params"]["_start"], (k * 100).to_string());
    }
    let asked = |limit: &str, past: u64| {
        sent.iter()
            .filter(|(_, r)| {
                r.param("_limit") == Some(limit)
                    && r.param("_start")
                        .is_some_and(|s| s.parse::<u64>().unwrap() >= past)
            })
            .count()
    };
    // The total stopped the guesses at the end; without one, at most 7 past the empty page.
    assert_eq!(asked("100", n), 0, "a page past the total was requested");
    assert!(asked("125", n + 125) <= 7);
    // Guesses past the end are the only extra requests.
    assert!(
        sent.len() <= one_at_a_time + 7 + 7,
        "{} vs {one_at_a_time}",
        sent.len()
    );
    assert_verify(&par, 0);
}

/// `parallel` where a page's request comes from the response before it: refused in the config
/// (exit 2, naming why), and with the `--parallel` flag the table is read one page at a time
/// with a warning.
#[test]
fn parallel_is_refused_where_pages_are_not_addressable() {
    let js = JsonServer::start(&posts_db(120));
    let work = TempDir::new("rest-parallel-refused");
    let out = work.path().join("out");
    let link = "[[source.table]]\nname = \"posts\"\nparams = { _page = 1, _limit = 50 }\npaginate = \"link\"\n";
    let config = write_config(
        work.path(),
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n{}parallel = 4\n",
            js.url, link
        ),
    );
    let o = run_config(&config, &out, &[]);
    assert_exit_saying(&o, 2, "parallel = 4 cannot fetch its pages ahead");
    assert!(stderr(&o).contains("link paginator"), "{}", stderr(&o));
    assert!(!out.join("manifest.jsonl").exists());
    let config = write_config(
        work.path(),
        &format!("[[source]]\nkind = \"rest\"\nurl = \"{}\"\n{link}", js.url),
    );
    let o = harvest(
        &[
            "harvest",
            "--config",
            &config,
            "--out",
            out.to_str().unwrap(),
            "--parallel",
            "4",
        ],
        &[],
    );
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("--parallel 4 not used, one cursor instead"),
        "{}",
        stderr(&o)
    );
    assert_posts(&out, "posts", 1..=120);
}

/// A 429 storm with `Retry-After: 1` on pages fetched ahead: once the first 429 arrives, no
/// request of the run is sent until the second has passed, whichever page it is for.
#[test]
fn retry_after_holds_back_every_page_in_flight() {
    let n = 1500;
    let js = JsonServer::start(&posts_db(n));
    let port = js.port;
    let arrivals: Arrivals = Arc::default();
    let log = arrivals.clone();
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        log.lock().unwrap().push((Instant::now(), req.clone()));
        Some(match req.n {
            4..=7 => Action::Respond {
                status: 429,
                headers: vec![("Retry-After".into(), "1".into())],
                body: b"slow down".to_vec(),
            },
            _ => Action::Forward {
                port,
                delay: Duration::from_millis(40),
                lose_answer: false,
            },
        })
    });
    let work = TempDir::new("rest-429");
    let out = work.path().join("out");
    let config = write_config(
        work.path(),
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n[[source.table]]\nname = \"posts\"\nparallel = 6\npaginate = {{ kind = \"offset\", offset_param = \"_start\", limit_param = \"_limit\", limit = 100, total_header = \"X-Total-Count\" }}\n",
            proxy.url
        ),
    );
    let o = run_config(&config, &out, &[("HARVEST_NO_RETRY_SLEEP", "0")]);
    assert_exit(&o, 0);
    assert_posts(&out, "posts", 1..=n);
    let sent = arrivals.lock().unwrap().clone();
    let first_429 = sent.iter().find(|(_, r)| r.n == 4).unwrap().0;
    // Requests already on their way when the first 429 was sent may land just after it;
    // then nothing until Retry-After has passed.
    let early: Vec<u64> = sent
        .iter()
        .filter(|(t, _)| {
            *t > first_429 + Duration::from_millis(60)
                && *t < first_429 + Duration::from_millis(950)
        })
        .map(|(_, r)| r.n)
        .collect();
    assert!(
        early.is_empty(),
        "requests {early:?} did not wait for Retry-After"
    );
    let end = records(&manifest(&out), "run_end")[0].clone();
    assert!(end["totals"]["retries"].as_u64().unwrap() >= 4, "{end}");
    assert_verify(&out, 0);
}

/// kill -9 at seeded moments during a job of REST tables fetched ahead (`parallel`) and run
/// three at a time (`jobs = 3`), then a rerun: every record once in every table, no recorded
/// page fetched again, and `verify` clean.
#[test]
fn kill_9_with_pages_fetched_ahead_and_tables_at_once_then_resume_exactly_once() {
    let n = 3000;
    let js = JsonServer::start(&posts_db(n));
    let (proxy, _) = delayed(&js, Duration::from_millis(15));
    let work = TempDir::new("rest-parallel-kill");
    let config = write_config(
        work.path(),
        &format!(
            r#"jobs = 3
[[source]]
kind = "rest"
url = "{}"

[[source.table]]
name = "ahead"
path = "/posts"
parallel = 6
paginate = {{ kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 40, total_header = "X-Total-Count" }}

[[source.table]]
name = "by_link"
path = "/posts"
params = {{ _page = 1, _limit = 40 }}
paginate = "link"

[[source.table]]
name = "by_page"
path = "/posts"
parallel = 4
params = {{ _limit = 50 }}
paginate = {{ kind = "page_number", param = "_page", start = 1 }}
"#,
            proxy.url
        ),
    );
    kill_9_then_finish(
        work.path(),
        &config,
        "400",
        150,
        n,
        &["ahead", "by_link", "by_page"],
    );
}

/// `--jobs 2` with a row-driven table: the child starts only after its parent table ended;
/// a table that fails stops the others at a clean checkpoint with the failure's exit code, and
/// the rerun resumes the same run, fetching no recorded page again.
#[test]
fn jobs_wait_for_parents_and_a_failure_stops_the_others_cleanly() {
    let n = 600;
    let mut db = posts_db(n);
    db["users"] = (1..=45)
        .map(|i| serde_json::json!({ "id": i, "login": format!("user{i}") }))
        .collect();
    let js = JsonServer::start(&db);
    let port = js.port;
    let broken = Arc::new(AtomicBool::new(true));
    let flag = broken.clone();
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        if req.path == "/users" && flag.load(Ordering::SeqCst) {
            return Some(json(400, r#"{"error": "not today"}"#));
        }
        Some(Action::Forward {
            port,
            delay: Duration::from_millis(10),
            lose_answer: false,
        })
    });
    let work = TempDir::new("rest-jobs");
    let out = work.path().join("out");
    let config = write_config(
        work.path(),
        &format!(
            r#"[[source]]
kind = "rest"
url = "{}"

[[source.table]]
name = "posts"
params = {{ _page = 1, _limit = 20 }}
paginate = "link"

[[source.table]]
name = "post_detail"
path = "/posts/{{post_id}}"
for_each = {{ table = "posts", fields = {{ post_id = "/id" }} }}
concurrency = 4

[[source.table]]
name = "users"
path = "/users"
params = {{ _page = 1, _limit = 20 }}
paginate = "link"
"#,
            proxy.url
        ),
    );
    let args = [
        "harvest",
        "--config",
        &config,
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ];
    let o = harvest(&args, &[]);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("users") && e.contains("400"), "{e}");
    let m = manifest(&out);
    assert_eq!(
        records(&m, "run_end")[0]["outcome"]
            .as_str()
            .map(|s| s.starts_with("failed")),
        Some(true)
    );
    // The server recovers; the rerun resumes the run and finishes every table.
    broken.store(false, Ordering::SeqCst);
    let o = harvest(&args, &[]);
    assert_exit(&o, 0);
    let m = manifest(&out);
    assert_eq!(
        records(&m, "run_resume").len(),
        1,
        "the rerun resumed the run"
    );
    assert_posts(&out, "posts", 1..=n);
    assert_no_page_fetched_twice(&out, "jobs rerun");
    let rows = |d: &str| {
        records(&m, "table_end")
            .into_iter()
            .find(|r| r["output"] == d)
            .map(|r| r["rows"].as_u64().unwrap())
    };
    assert_eq!(rows("post_detail"), Some(n));
    assert!(rows("users").is_some());
    // The child's first request went out after its parent's table_end.
    let seq_of = |pred: &dyn Fn(&Value) -> bool| {
        m.iter()
            .find(|r| pred(r))
            .map(|r| r["seq"].as_u64().unwrap())
    };
    let parent_end = seq_of(&|r| r["kind"] == "table_end" && r["output"] == "posts").unwrap();
    let child_first =
        seq_of(&|r| r["output"] == "post_detail" && r["kind"] != "table_end").unwrap();
    assert!(
        child_first > parent_end,
        "the row-driven table started before its parent ended"
    );
    assert_verify(&out, 0);
}

/// `--jobs 3` on a Datasette job: tables are paged at the same time (their pages interleave in
/// the one manifest), and each dataset is the one a run of one table at a time writes.
#[test]
fn jobs_on_datasette_interleave_tables_with_the_same_output() {
    let work = TempDir::new("jobs-datasette");
    let mut sql = String::new();
    for (t, rows) in [
        ("alpha", 900),
        ("beta", 700),
        ("gamma", 500),
        ("delta", 300),
    ] {
        sql.push_str(&format!(
            "create table {t}(id integer primary key, name text, score real);\n\
             with recursive n(i) as (select 1 union all select i + 1 from n where i < {rows})\n\
             insert into {t} select i, '{t} ' || i, i * 0.5 from n;\n"
        ));
    }
    let db = make_db(&work, "jobs", &sql);
    let ds = Datasette::start(V0_65, &db);
    let run = |name: &str, jobs: &str| {
        let out = work.path().join(name);
        let mut args = job_args(
            "harvest",
            &ds.url,
            "jobs",
            out.to_str().unwrap(),
            &["--page-size", "50", "--jobs", jobs],
        );
        for t in ["alpha", "beta", "gamma", "delta"] {
            args.push("--table".into());
            args.push(t.into());
        }
        let o = harvest(&strs(&args), &[]);
        assert_exit(&o, 0);
        out
    };
    let one = run("one", "1");
    let three = run("three", "3");
    let m = manifest(&three);
    let order: Vec<&str> = records(&m, "page")
        .into_iter()
        .map(|p| p["output"].as_str().unwrap())
        .collect();
    let first_beta = order.iter().position(|o| *o == "beta").unwrap();
    let last_alpha = order.iter().rposition(|o| *o == "alpha").unwrap();
    assert!(
        first_beta < last_alpha,
        "the tables were paged one after another"
    );
    for t in ["alpha", "beta", "gamma", "delta"] {
        assert_eq!(
            read_dataset(&one.join("parquet").join(t)).2,
            read_dataset(&three.join("parquet").join(t)).2,
            "{t}"
        );
        assert_eq!(part_hashes(&one, t), part_hashes(&three, t), "{t}");
    }
    assert_eq!(records(&m, "table_end").len(), 4);
    assert_verify(&three, 0);
    let h = harvest(
        &["history", "--out", three.to_str().unwrap(), "--json"],
        &[],
    );
    assert_exit(&h, 0);
    let text = String::from_utf8_lossy(&h.stdout);
    for t in ["alpha", "beta", "gamma", "delta"] {
        assert!(
            text.contains(&format!("\"{t}\"")),
            "history lacks {t}: {text}"
        );
    }
}

/// `verify` finds a page missing from the middle of a cursor fetched ahead, even with the
/// manifest's hash chain redone around the gap and the page's snapshot gone with it.
#[test]
fn verify_finds_a_page_missing_from_a_cursor() {
    let n = 1000;
    let js = JsonServer::start(&posts_db(n));
    let work = TempDir::new("rest-parallel-gap");
    let out = work.path().join("out");
    let config = write_config(
        work.path(),
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n[[source.table]]\nname = \"posts\"\nparallel = 4\npaginate = {{ kind = \"offset\", offset_param = \"_start\", limit_param = \"_limit\", limit = 100, total_header = \"X-Total-Count\" }}\n",
            js.url
        ),
    );
    let o = run_config(&config, &out, &[]);
    assert_exit(&o, 0);
    assert_verify(&out, 0);
    // Drop page 5's line (and its snapshot), then chain every later line onto its new
    // predecessor, as a forger would.
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let mut kept: Vec<Value> = Vec::new();
    let mut rows_dropped = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "page" && v["page"] == 5 {
            std::fs::remove_file(out.join(v["path"].as_str().unwrap())).unwrap();
            rows_dropped = v["rows"].as_u64().unwrap();
            continue;
        }
        kept.push(v);
    }
    assert_eq!(rows_dropped, 100);
    let mut prev = Value::Null;
    let mut rewritten = String::new();
    for (i, mut v) in kept.into_iter().enumerate() {
        v["seq"] = Value::from(i as u64 + 1);
        v["prev"] = prev.clone();
        // Keep the header order the manifest writes, then the rest.
        let mut line = format!(
            "{{\"version\":{},\"kind\":{},\"run_id\":{},\"seq\":{},\"prev\":{}",
            v["version"], v["kind"], v["run_id"], v["seq"], v["prev"]
        );
        for (k, val) in v.as_object().unwrap() {
            if !["version", "kind", "run_id", "seq", "prev"].contains(&k.as_str()) {
                line.push_str(&format!(",{}:{}", Value::String(k.clone()), val));
            }
        }
        line.push('}');
        prev = Value::String(harvest::manifest::sha256_hex(line.as_bytes()));
        rewritten.push_str(&line);
        rewritten.push('\n');
    }
    std::fs::write(out.join("manifest.jsonl"), rewritten).unwrap();
    let report = assert_verify(&out, 3);
    assert!(
        report.contains("page_chain") || report.contains("page 6 follows page 4"),
        "{report}"
    );
    assert!(
        report.contains("page 6 follows page 4: 1 page(s) of the cursor are missing"),
        "{report}"
    );
}
