//! `--out s3://BUCKET/PREFIX` against a real S3-compatible server (moto, PyPI) on loopback,
//! harvesting a real Datasette: the run works in a local stage and publishes to the store.
//! What the store holds is read back by readers nobody here wrote, straight from S3: DuckDB's
//! httpfs and pyarrow's S3 filesystem for plain Parquet, the `deltalake` package, polars and
//! DuckDB's `delta` extension for Delta tables, each compared row for row with SQLite.
//! `verify` and `history` read the store. A SIGKILL mid-run resumes exactly once, also from a
//! fresh stage on the store alone; a live lease keeps a second run out, an expired one is
//! taken over; the credentials are written nowhere.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn env_refs<'a>(envs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    envs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `harvest COMMAND --url … --db … --out OUT --stage STAGE REST…` against `ds`.
fn job_args(command: &str, ds: &Datasette, out: &str, stage: &Path, rest: &[&str]) -> Vec<String> {
    let mut a = vec!["--stage", stage.to_str().unwrap()];
    a.extend_from_slice(rest);
    crate::common::job_args(command, &ds.url, &ds.db_name, out, &a)
}

/// `harvest ARGS` with the S3 server's environment.
fn on_s3(s3: &S3Server, args: &[&str]) -> std::process::Output {
    let envs = s3.env();
    harvest(args, &env_refs(&envs))
}

fn read_s3_parquet(s3: &S3Server, uri: &str, db: &Path, table: &str) -> Value {
    let o = std::process::Command::new(delta_readers_python())
        .envs(s3.env())
        .arg(repo_root().join("tests/it/read_s3_parquet.py"))
        .arg(uri)
        .arg(db)
        .arg(table)
        .output()
        .expect("run read_s3_parquet.py");
    assert!(
        o.status.success(),
        "readers of {uri} disagree with SQLite's {table}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("read_s3_parquet.py prints JSON")
}

/// Every `add` in a Delta table's log on the store, in version order: (version, path).
fn store_log_adds(s3: &S3Server, table_key: &str) -> Vec<(u64, String)> {
    let copy = s3.download(&format!("{table_key}/_delta_log/"));
    delta_log(&copy.path().join(table_key))
        .into_iter()
        .filter_map(|(v, a)| a["add"]["path"].as_str().map(|p| (v, p.to_string())))
        .collect()
}

#[track_caller]
fn assert_no_secret(s3: &S3Server, stages: &[&Path], outputs: &[&std::process::Output]) {
    for o in outputs {
        for stream in [&o.stdout, &o.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(S3_SECRET),
                "the secret key is in a run's output"
            );
        }
    }
    for stage in stages {
        for f in all_files(stage) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(S3_SECRET)
                    && !String::from_utf8_lossy(&bytes).contains(S3_KEY_ID),
                "a credential is in {}",
                f.display()
            );
        }
    }
    let copy = s3.download("");
    for f in all_files(copy.path()) {
        let body = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains(S3_SECRET),
            "the secret key is in s3 object {}",
            f.display()
        );
    }
}

#[test]
fn plain_parquet_and_delta_tables_on_s3_read_back_from_the_store_and_verify() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let s3 = S3Server::start("lake");
    let dir = TempDir::new("s3");
    let stage = dir.path().join("stage-plain");
    let job = || {
        let tables = ["--table", "Orders", "--table", "Customers"];
        on_s3(
            &s3,
            &strs(&job_args(
                "harvest",
                &ds,
                "s3://lake/plain",
                &stage,
                &tables,
            )),
        )
    };

    // Plain Parquet: the store holds the manifest segments, snapshots and parts.
    let first = job();
    assert_exit(&first, 0);
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("-> s3://lake/plain/"),
        "the summary names the store"
    );
    let keys = s3.list("plain/");
    assert!(keys.iter().any(|(k, _)| k.starts_with("plain/manifest.d/")));
    assert!(keys.iter().any(|(k, _)| k.starts_with("plain/raw/")));
    assert!(
        !keys.iter().any(|(k, _)| k.contains("lease")),
        "the lease is released"
    );
    // Segments joined are the stage's manifest byte for byte.
    let copy = s3.download("plain/manifest.d/");
    let mut joined = vec![];
    for (k, _) in keys
        .iter()
        .filter(|(k, _)| k.starts_with("plain/manifest.d/"))
    {
        joined.extend(std::fs::read(copy.path().join(k)).unwrap());
    }
    assert_eq!(joined, std::fs::read(stage.join("manifest.jsonl")).unwrap());
    for t in ["Orders", "Customers"] {
        let r = read_s3_parquet(&s3, &format!("s3://lake/plain/parquet/{t}"), &db, t);
        assert_eq!(r["rows"]["duckdb"], r["rows"]["pyarrow"], "{r}");
    }
    let o = on_s3(&s3, &["verify", "--json", "--out", "s3://lake/plain"]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dir"], "s3://lake/plain", "{v}");
    let o = on_s3(&s3, &["history", "--json", "--out", "s3://lake/plain"]);
    assert_exit(&o, 0);
    let h: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(h["runs"][0]["outcome"], "ok", "{h}");
    assert_eq!(
        h["dir"], "s3://lake/plain",
        "the store is named, not a scratch copy"
    );

    // export reads the dataset from the store.
    let csv = dir.path().join("orders.csv");
    let o = on_s3(
        &s3,
        &[
            "export",
            "--out",
            "s3://lake/plain",
            "--dataset",
            "Orders",
            "--format",
            "csv",
            "--output",
            csv.to_str().unwrap(),
        ],
    );
    assert_exit(&o, 0);
    let want: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("select count(*) from Orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap().lines().count() as i64,
        want + 1,
        "header and every row"
    );

    // A complete re-harvest supersedes the old parts: the store keeps only the new run's.
    let second = job();
    assert_exit(&second, 0);
    let runs: Vec<String> = records(&manifest(&stage), "run_start")
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(runs.len(), 2);
    let parts: Vec<String> = s3
        .list("plain/parquet/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!parts.is_empty());
    assert!(
        parts.iter().all(|k| k.contains(&runs[1])),
        "superseded parts left on the store: {parts:?}"
    );
    assert_exit(&on_s3(&s3, &["verify", "--out", "s3://lake/plain"]), 0);

    // Delta tables on the store, committed by conditional put.
    let dstage = dir.path().join("stage-delta");
    let delta = {
        let rest = [
            "--table",
            "Orders",
            "--table",
            "Order Details",
            "--table-format",
            "delta",
            "--part-rows",
            "100000",
            "--s3-endpoint",
            &s3.endpoint,
        ];
        on_s3(
            &s3,
            &strs(&job_args("harvest", &ds, "s3://lake/delta", &dstage, &rest)),
        )
    };
    assert_exit(&delta, 0);
    assert!(
        std::fs::read_dir(dstage.join("parquet/Orders"))
            .unwrap()
            .flatten()
            .all(|e| e.file_name() != "_delta_log"),
        "the Delta log lives on the store only"
    );
    for t in ["Orders", "Order Details"] {
        let uri = format!("s3://lake/delta/parquet/{t}");
        delta_readers_agree_env(&uri, &db, t, None, &s3.env());
        let adds = store_log_adds(&s3, &format!("delta/parquet/{t}"));
        let mut seen = std::collections::BTreeSet::new();
        for (v, p) in &adds {
            assert!(seen.insert(p.clone()), "{t}: {p} added twice (version {v})");
        }
    }
    let o = on_s3(&s3, &["verify", "--out", "s3://lake/delta"]);
    assert_exit(&o, 0);

    // The store's bytes are what verify checks: a changed snapshot is a discrepancy.
    let snap = s3
        .list("plain/raw/")
        .into_iter()
        .map(|(k, _)| k)
        .next()
        .unwrap();
    s3.put(&snap, "{\"tampered\": true}");
    assert_exit_saying(
        &on_s3(&s3, &["verify", "--out", "s3://lake/plain"]),
        3,
        "hash_mismatch",
    );

    assert_no_secret(&s3, &[&stage, &dstage], &[&first, &second, &delta]);

    // A stage whose manifest disagrees with the store's is refused, naming the fix.
    let path = stage.join("manifest.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("\"kind\":\"run_start\"", "\"kind\":\"run_stArt\"", 1),
    )
    .unwrap();
    assert_exit_saying(&job(), 2, "remove");
}

#[test]
fn a_sigkilled_run_on_s3_resumes_exactly_once_from_a_fresh_stage() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let s3 = S3Server::start("lake");
    let dir = TempDir::new("s3-kill");
    let stage_a = dir.path().join("stage-a");
    let stage_b = dir.path().join("stage-b");
    let args = |stage: &Path| {
        let rest = [
            "--table",
            "Order Details",
            "--table-format",
            "delta",
            "--part-rows",
            "20000",
        ];
        job_args("harvest", &ds, "s3://lake/t", stage, &rest)
    };
    let a = args(&stage_a);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut child = crate::crash::spawn_harvest_env(&a, &s3.env());
    assert!(
        kill_after_pages(&mut child, &stage_a.join("manifest.jsonl"), 150),
        "the run finished before it could be killed"
    );
    // The machine is gone: a new stage starts from what the store holds. The killed run's
    // lease names a dead process on this host, so it is taken over at once.
    std::fs::remove_dir_all(&stage_a).unwrap();
    let b = args(&stage_b);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    // The lease is renewed every 100 ms here (every minute by default): renewals run beside
    // the publishes all through the rerun, and none may be taken for a lost lease.
    let mut envs = s3.env();
    envs.push(("HARVEST_LEASE_RENEW_MS", "100".into()));
    envs.push(("HARVEST_LOG", "harvest=debug".into()));
    let o = harvest(&b, &env_refs(&envs));
    assert_exit(&o, 0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("restored the stage"), "{err}");
    assert!(err.contains("resuming run"), "{err}");
    assert!(err.contains("took over the lease"), "{err}");
    assert!(err.matches("renewed the lease").count() >= 5, "{err}");
    assert!(!err.contains("lost the lease"), "{err}");

    let m = manifest(&stage_b);
    assert_eq!(records(&m, "run_start").len(), 1, "one run, resumed");
    delta_readers_agree_env(
        "s3://lake/t/parquet/Order Details",
        &db,
        "Order Details",
        None,
        &s3.env(),
    );
    let adds = store_log_adds(&s3, "t/parquet/Order Details");
    let mut seen = std::collections::BTreeSet::new();
    for (v, p) in &adds {
        assert!(seen.insert(p.clone()), "{p} added twice (version {v})");
        assert!(
            s3.list(&format!("t/parquet/Order Details/{p}")).len() == 1,
            "version {v} adds {p}, not on the store"
        );
    }
    assert_exit(&on_s3(&s3, &["verify", "--out", "s3://lake/t"]), 0);
}

/// A process killed between a page's snapshot and its manifest line leaves that snapshot in
/// the stage. The rerun on the same stage fetches the page again (Datasette's body differs by
/// its `query_ms`), so the killed copy must never be what reaches the store: a publish that
/// sent it first kept it there, and verify then found the recorded bytes differ (a CI failure
/// of the three-shard test). Planted here: such a leftover, and one the rerun never rewrites.
#[test]
fn a_rerun_on_the_same_stage_never_publishes_what_the_killed_run_left_unrecorded() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let s3 = S3Server::start("lake");
    let dir = TempDir::new("s3-same-stage");
    let stage = dir.path().join("stage");
    let a = job_args(
        "harvest",
        &ds,
        "s3://lake/t",
        &stage,
        &["--table", "Order Details"],
    );
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut child = crate::crash::spawn_harvest_env(&a, &s3.env());
    assert!(
        kill_after_pages(&mut child, &stage.join("manifest.jsonl"), 40),
        "the run finished before it could be killed"
    );
    let m = manifest(&stage);
    let pages = records(&m, "page");
    let last = pages.last().unwrap()["path"].as_str().unwrap().to_string();
    let raw_dir = stage.join(&last).parent().unwrap().to_path_buf();
    let n: u64 = last
        .rsplit("page-")
        .next()
        .and_then(|t| t.strip_suffix(".json"))
        .and_then(|t| t.parse().ok())
        .unwrap();
    let next = format!("page-{:06}.json", n + 1);
    let stale = [next.as_str(), "page-999999.json"];
    for name in stale {
        std::fs::write(
            raw_dir.join(name),
            b"{\"stale\": \"a killed process's copy\"}",
        )
        .unwrap();
    }

    let o = on_s3(&s3, &a);
    assert_exit(&o, 0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("from the stage"), "{err}");
    assert!(err.contains("page-999999.json"), "{err}");
    assert!(!raw_dir.join("page-999999.json").exists());
    let keys = s3.list("t/raw/");
    assert!(
        !keys.iter().any(|(k, _)| k.ends_with("page-999999.json")),
        "{keys:?}"
    );
    // The page fetched again is on the store as recorded (verify checks size and hash).
    let m = manifest(&stage);
    assert_eq!(records(&m, "run_start").len(), 1, "one run, resumed");
    assert!(
        records(&m, "page")
            .iter()
            .any(|p| p["path"].as_str().unwrap().ends_with(&next))
    );
    assert_exit(&on_s3(&s3, &["verify", "--out", "s3://lake/t"]), 0);
}

#[test]
fn a_live_lease_keeps_a_second_run_out_and_an_expired_one_is_taken_over() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let s3 = S3Server::start("lake");
    let dir = TempDir::new("s3-lease");
    let stage = dir.path().join("stage");
    let run = || {
        let a = job_args(
            "harvest",
            &ds,
            "s3://lake/l",
            &stage,
            &["--table", "Customers"],
        );
        on_s3(&s3, &strs(&a))
    };
    // Another machine holds the lease (a host name that is not this one).
    let lease = |expires: &str| {
        serde_json::json!({
            "holder": "pid 4242 on other-host",
            "host": "other-host",
            "pid": 4242,
            "stage": "/elsewhere",
            "expires_at": expires,
        })
        .to_string()
    };
    s3.put("l/state/lease.json", &lease("2999-01-01T00:00:00Z"));
    let o = run();
    assert_exit_saying(&o, 2, "locked by pid 4242 on other-host");
    assert!(s3.list("l/manifest.d/").is_empty(), "nothing published");
    // Expired: taken over by a conditional update, then released.
    s3.put("l/state/lease.json", &lease("2001-01-01T00:00:00Z"));
    let o = run();
    assert_exit(&o, 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("took over the lease"));
    assert!(s3.list("l/state/").is_empty(), "the lease is released");
    assert_exit(&on_s3(&s3, &["verify", "--out", "s3://lake/l"]), 0);
}

#[test]
fn bad_object_storage_locations_are_usage_errors_and_file_urls_are_local_paths() {
    for (out, says) in [
        ("s3://", "no bucket"),
        ("gs://bucket/p", "only s3://"),
        ("s3://bucket/a/../b", "not prefix components"),
    ] {
        let o = run_job("harvest", "http://127.0.0.1:9", "d", out, &["--table", "t"]);
        assert_exit_saying(&o, 2, says);
    }
    // sql-extract writes only to a local directory.
    let db = fixture_db(1);
    let extract = |out: &str| {
        let q = [
            "sql-extract",
            "--db",
            db.to_str().unwrap(),
            "--query",
            "select 1 as a",
        ];
        let mut a = q.to_vec();
        a.extend_from_slice(&["--name", "one", "--out", out]);
        harvest(&a, &[])
    };
    assert_exit_saying(&extract("s3://lake/x"), 2, "local directory");
    // A file:// URL is the local path it names, for writing and for reading.
    let dir = TempDir::new("file-url");
    let url = format!("file://{}/out", dir.path().display());
    assert_exit(&extract(&url), 0);
    assert!(dir.path().join("out/manifest.jsonl").is_file());
    assert_exit(&harvest(&["verify", "--out", &url], &[]), 0);
    assert_exit(&harvest(&["history", "--out", &url], &[]), 0);
    // The same in a config's `out`.
    let cfg = dir.path().join("x.toml");
    let toml = format!(
        "out = \"file://{}/from-config\"\n[[extract]]\nname = \"one\"\ndb = {:?}\nquery = \"select 1 as a\"\n",
        dir.path().display(),
        db.to_str().unwrap()
    );
    std::fs::write(&cfg, toml).unwrap();
    assert_exit(
        &harvest(&["sql-extract", "--config", cfg.to_str().unwrap()], &[]),
        0,
    );
    assert!(dir.path().join("from-config/manifest.jsonl").is_file());
}

#[test]
fn three_shards_on_three_stages_commit_one_table_into_one_delta_table_on_s3() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let s3 = S3Server::start("lake");
    let dir = TempDir::new("s3-shards");
    let stage = |k: usize| dir.path().join(format!("stage-{k}"));
    let args = |k: usize| {
        let st = stage(k);
        crate::writers::writer_args(&ds, "s3://lake/big", k, &["--stage", st.to_str().unwrap()])
    };
    let spawn = |k: usize| {
        let a = args(k);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        crate::crash::spawn_harvest_env(&a, &s3.env())
    };
    // Three machines at once; shard 2 is killed with SIGKILL mid-run, then rerun.
    let mut children: Vec<_> = (1..=3).map(spawn).collect();
    assert!(
        kill_after_pages(
            &mut children[1],
            &stage(2).join("writers/shard-2/manifest.jsonl"),
            60
        ),
        "shard 2 finished before it could be killed"
    );
    for k in [0, 2] {
        let status = children[k].wait().unwrap();
        assert!(status.success(), "shard {} failed: {status:?}", k + 1);
    }
    let a = args(2);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_exit(&on_s3(&s3, &a), 0);

    // Each writer's manifest segments on the store, nothing at the top of the prefix.
    let keys = s3.list("big/");
    assert!(!keys.iter().any(|(k, _)| k.starts_with("big/manifest.d/")));
    for k in 1..=3 {
        let seg = format!("big/writers/shard-{k}/manifest.d/");
        assert!(keys.iter().any(|(key, _)| key.starts_with(&seg)), "{seg}");
    }
    assert!(
        !keys.iter().any(|(k, _)| k.ends_with("lease.json")),
        "every lease released"
    );
    for t in ["Order Details", "Orders"] {
        let table = format!("big/parquet/{t}");
        let adds = store_log_adds(&s3, &table);
        let mut seen = std::collections::BTreeSet::new();
        for (v, p) in &adds {
            assert!(seen.insert(p.clone()), "{t}: {p} added twice (version {v})");
            assert!(
                keys.iter().any(|(k, _)| *k == format!("{table}/{p}")),
                "{t}: version {v} adds {p}, not on the store"
            );
        }
        // Parts on the store that the log does not add would be orphans.
        let on_store = keys
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{table}/")) && k.ends_with(".parquet"))
            .count();
        assert_eq!(
            on_store,
            seen.len(),
            "{t}: parts on the store vs. in the log"
        );
        delta_readers_agree_env(&format!("s3://lake/{table}"), &db, t, None, &s3.env());
    }
    let o = on_s3(&s3, &["verify", "--json", "--out", "s3://lake/big"]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    for t in v["shards"]["tables"].as_array().unwrap() {
        assert_eq!(t["rows"], t["server_count"], "{t}");
    }
}

/// The fault server in front of the S3 server: what it injects, by request number.
fn faulty(port: u16, req: &crate::fault_server::Request) -> crate::fault_server::Action {
    use crate::fault_server::Action;
    use std::time::Duration;
    let forward = |delay_ms: u64, lose_answer: bool| Action::Forward {
        port,
        delay: Duration::from_millis(delay_ms),
        lose_answer,
    };
    match req.n {
        n if n % 5 == 0 => Action::Respond {
            status: 503,
            headers: vec![("Content-Type".into(), "application/xml".into())],
            body: b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".to_vec(),
        },
        n if n % 7 == 0 => Action::Reset,
        // The PUT happens, its answer is lost: the client must find out by itself.
        n if n % 11 == 0 && req.method == "PUT" => forward(0, true),
        n if n % 101 == 0 => forward(800, false),
        _ => forward(0, false),
    }
}

#[test]
fn store_faults_are_retried_and_leave_nothing_half_committed() {
    use crate::fault_server::{Action, FaultServer, Synthetic};
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let s3 = S3Server::start("lake");
    let dir = TempDir::new("s3-faults");
    let stage = dir.path().join("stage");
    let port = s3.port;
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |req| Some(faulty(port, req)));
    let job = |endpoint: &str, extra: &[&str]| {
        let mut a = vec![
            "--table",
            "Orders",
            "--table-format",
            "delta",
            "--part-rows",
            "2000",
            "--s3-endpoint",
            endpoint,
        ];
        a.extend_from_slice(extra);
        let a = job_args("harvest", &ds, "s3://lake/f", &stage, &a);
        let a = strs(&a);
        on_s3(&s3, &a)
    };
    // 5xx, resets, lost answers and slow answers all along the run: it completes.
    assert_exit(&job(&proxy.url, &[]), 0);
    let seen = proxy.requests();
    assert!(seen.len() > 60, "{} store requests", seen.len());
    assert!(
        seen.iter()
            .filter(|r| r.n % 11 == 0 && r.method == "PUT")
            .count()
            > 3
    );
    let t = "Orders";
    delta_readers_agree_env("s3://lake/f/parquet/Orders", &db, t, None, &s3.env());
    let adds = store_log_adds(&s3, "f/parquet/Orders");
    let mut once = std::collections::BTreeSet::new();
    for (v, p) in &adds {
        assert!(once.insert(p.clone()), "{t}: {p} added twice (version {v})");
    }
    assert_exit(&on_s3(&s3, &["verify", "--out", "s3://lake/f"]), 0);

    // A store that keeps failing every write of data (the lease still works): the run gives
    // up with exit 5 (safe to rerun)…
    let down = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        let data = req.path.contains("/parquet/") || req.path.contains("/manifest.d/");
        Some(match req.method.as_str() {
            "PUT" | "POST" if data => Action::Respond {
                status: 503,
                headers: vec![],
                body: b"<Error><Code>ServiceUnavailable</Code></Error>".to_vec(),
            },
            _ => faulty(
                port,
                &crate::fault_server::Request {
                    n: 1,
                    ..req.clone()
                },
            ),
        })
    });
    let o = job(
        &down.url,
        &["--restart", "--max-attempts", "3", "--retry-budget", "5"],
    );
    assert_exit_saying(&o, 5, "a rerun with the same settings resumes");
    // …and nothing it did is visible: the tables still read exactly as before.
    delta_readers_agree_env("s3://lake/f/parquet/Orders", &db, t, None, &s3.env());
    // The rerun against the healthy store completes the job exactly once.
    assert_exit(
        &job(
            &s3.endpoint,
            &["--max-attempts", "3", "--retry-budget", "5"],
        ),
        0,
    );
    delta_readers_agree_env("s3://lake/f/parquet/Orders", &db, t, None, &s3.env());
    assert_exit(&on_s3(&s3, &["verify", "--out", "s3://lake/f"]), 0);
}

#[test]
fn credentials_and_endpoint_can_come_from_an_aws_profile() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let s3 = S3Server::start("lake");
    let dir = TempDir::new("s3-profile");
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        format!("[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[bench]\naws_access_key_id = {S3_KEY_ID}\naws_secret_access_key = {S3_SECRET}\n"),
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/config"),
        format!(
            "[profile bench]\nregion = us-east-1\nendpoint_url = {}\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let stage = dir.path().join("stage");
    // No AWS_* variable but the profile's name: keys, region and endpoint come from the files.
    let home_s = home.to_str().unwrap();
    let a = job_args(
        "harvest",
        &ds,
        "s3://lake/p",
        &stage,
        &["--table", "Customers"],
    );
    let o = harvest(&strs(&a), &[("HOME", home_s), ("AWS_PROFILE", "bench")]);
    assert_exit(&o, 0);
    assert!(
        s3.list("p/")
            .iter()
            .any(|(k, _)| k.starts_with("p/manifest.d/"))
    );
    assert_exit(&on_s3(&s3, &["verify", "--out", "s3://lake/p"]), 0);
    assert_no_secret(&s3, &[&stage], &[&o]);
}

#[test]
fn incremental_on_s3_continues_from_the_stores_watermark_on_a_fresh_stage() {
    let work = TempDir::new("s3-inc");
    let fill = |from: u32, to: u32| {
        format!(
            "with recursive n(i) as (select {from} union all select i + 1 from n where i < {to})
             insert into a select i, 'a' || i from n;"
        )
    };
    let db = make_db(
        &work,
        "inc",
        &format!(
            "create table a (id integer primary key, v text); {}",
            fill(1, 2500)
        ),
    );
    let ds = Datasette::start(V1_0, &db);
    let s3 = S3Server::start("lake");
    let stage = work.path().join("stage");
    let round = || {
        let rest = [
            "--table",
            "a",
            "--watermark-column",
            "id",
            "--table-format",
            "delta",
            "--page-size",
            "500",
        ];
        on_s3(
            &s3,
            &strs(&job_args(
                "incremental",
                &ds,
                "s3://lake/inc",
                &stage,
                &rest,
            )),
        )
    };
    assert_exit(&round(), 0);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&fill(2501, 3100))
        .unwrap();
    // Another machine: nothing but the store.
    std::fs::remove_dir_all(&stage).unwrap();
    let o = round();
    assert_exit(&o, 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("restored the stage"));
    let ends: Vec<u64> = records(&manifest(&stage), "table_end")
        .iter()
        .map(|r| r["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ends,
        vec![2500, 600],
        "the second run takes only the new rows"
    );
    delta_readers_agree_env("s3://lake/inc/parquet/a", &db, "a", None, &s3.env());
    assert_exit(&on_s3(&s3, &["verify", "--out", "s3://lake/inc"]), 0);
}
