//! Shards on the engines teams already run, each with the example the docs ship:
//! - Kubernetes: the Indexed Job of examples/kubernetes/ (read with PyYAML) run as the Job
//!   would run it: its container args, with `$(JOB_COMPLETION_INDEX)` expanded and
//!   JOB_COMPLETION_INDEX = 0, 1, 2 set, three pods at once into one S3 prefix (moto), then
//!   `verify` of the prefix and the Delta tables read by deltalake, polars and DuckDB.
//! - Airflow 2.10: the DAG of examples/airflow/ run by `airflow dags test` (the mapped shard
//!   tasks, then verify), then the tables read back.
//! - Spark 4.3: the PySpark driver of examples/spark/ on `local[3]` (three tasks, three
//!   shards into one DIR), which verifies and reads every table; rows exact.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

/// The tables the engine tests harvest: one split by key ranges across the shards (Orders,
/// `parallel = 6`) and two dealt out whole.
const JOB: &str = r#"[[source]]
url = "URL"
database = "DB"

[[source.table]]
name = "Orders"
parallel = 6

[[source.table]]
name = "Customers"

[[source.table]]
name = "Products"
"#;

fn job_config(dir: &TempDir, ds: &Datasette) -> String {
    let p = dir.path().join("job.toml");
    std::fs::write(&p, JOB.replace("URL", &ds.url).replace("DB", &ds.db_name)).unwrap();
    p.to_str().unwrap().to_string()
}

/// verify of `out` (a DIR or an s3:// prefix) is clean, and each split table's shards
/// together hold the server's count.
#[track_caller]
fn verify_clean(out: &str, envs: &[(&str, &str)]) -> Value {
    let o = harvest(&["verify", "--json", "--out", out], envs);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    for t in v["shards"]["tables"].as_array().unwrap() {
        assert_eq!(t["rows"], t["server_count"], "{t}");
    }
    v
}

/// Each of three shards wrote into `out` as writer shard-K, `verify` is clean, and every
/// table of [`JOB`] is the SQLite table row for row (deltalake, polars, DuckDB).
#[track_caller]
fn three_writers_wrote_the_job(out: &std::path::Path, db: &std::path::Path) {
    for k in 0..3 {
        assert!(
            out.join(format!("writers/shard-{k}/manifest.jsonl"))
                .is_file()
        );
    }
    verify_clean(out.to_str().unwrap(), &[]);
    for t in ["Orders", "Customers", "Products"] {
        delta_readers_agree(out.join("parquet").join(t).to_str().unwrap(), db, t, None);
    }
}

#[test]
fn the_kubernetes_indexed_job_runs_three_shards_into_one_s3_prefix() {
    // The manifest as Kubernetes reads it.
    let yaml = repo_root().join("examples/kubernetes/harvest-indexed-job.yaml");
    let o = python_c(
        &moto_python(),
        "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
    )
    .arg(&yaml)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let docs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap")["data"]["harvest.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let pods = job["spec"]["completions"].as_u64().unwrap();
    assert_eq!(job["spec"]["parallelism"].as_u64(), Some(pods));
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let flag = |name: &str| {
        let i = args
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("no {name} in {args:?}"));
        args[i + 1].clone()
    };
    assert_eq!(flag("--shards"), pods.to_string());
    assert_eq!(flag("--shard-index-env"), "JOB_COMPLETION_INDEX");
    let location = flag("--out");
    let bucket = location
        .strip_prefix("s3://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let mount = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap()
        .to_string();

    // The cluster: the Datasette the ConfigMap names, an S3 server, the mounted config.
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let s3 = S3Server::start(&bucket);
    let work = TempDir::new("k8s");
    let url_line = config
        .lines()
        .find(|l| l.starts_with("url = "))
        .unwrap()
        .to_string();
    let db_line = config
        .lines()
        .find(|l| l.starts_with("database = "))
        .unwrap()
        .to_string();
    let config = config
        .replace(&url_line, &format!("url = \"{}\"", ds.url))
        .replace(&db_line, &format!("database = \"{}\"", ds.db_name));
    std::fs::write(work.path().join("harvest.toml"), &config).unwrap();
    let tables: Vec<String> = config
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .collect();
    assert!(tables.len() >= 2, "{config}");

    // Each pod: its index in the environment, `$(VAR)` in args expanded (as the kubelet
    // does), its own HOME (the stage); all three at once.
    let s3_env = s3.env();
    let mut pods_running = Vec::new();
    for index in 0..pods {
        let pod_args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("$(JOB_COMPLETION_INDEX)", &index.to_string())
                    .replace(&format!("{mount}/"), &format!("{}/", work.path().display()))
            })
            .collect();
        let home = work.path().join(format!("pod-{index}"));
        std::fs::create_dir_all(&home).unwrap();
        let log = std::fs::File::create(work.path().join(format!("pod-{index}.log"))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_harvest"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .envs(s3_env.iter().map(|(k, v)| (k, v)))
            .args(&pod_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        pods_running.push(cmd.spawn().unwrap());
    }
    for (index, mut pod) in pods_running.into_iter().enumerate() {
        let status = pod.wait().unwrap();
        assert!(
            status.success(),
            "pod {index}: {status:?}\n{}",
            std::fs::read_to_string(work.path().join(format!("pod-{index}.log")))
                .unwrap_or_default()
        );
    }

    // The verify Job's command, then readers nobody here wrote.
    let env: Vec<(&str, &str)> = s3_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let v = verify_clean(&location, &env);
    assert_eq!(
        v["dirs"].as_array().unwrap().len(),
        pods as usize + 1,
        "{v}"
    );
    for t in &tables {
        delta_readers_agree_env(&format!("{location}/parquet/{t}"), &db, t, None, &s3_env);
    }
}

#[test]
fn the_airflow_dag_maps_the_shards_then_verifies() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let work = TempDir::new("airflow");
    let cfg = job_config(&work, &ds);
    let out = work.path().join("lake");
    let py = airflow_python();
    let airflow = py.with_file_name("airflow");
    let home = work.path().join("airflow-home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: &[&str]| {
        Command::new(&airflow)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("AIRFLOW_HOME", &home)
            .env(
                "AIRFLOW__CORE__DAGS_FOLDER",
                repo_root().join("examples/airflow"),
            )
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("HARVEST_BIN", env!("CARGO_BIN_EXE_harvest"))
            .env("HARVEST_CONFIG", &cfg)
            .env("HARVEST_OUT", &out)
            .env("HARVEST_SHARDS", "3")
            .env("HARVEST_RETRIES", "0")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["db", "migrate"]);
    assert!(
        o.status.success(),
        "airflow db migrate: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(&["dags", "test", "harvest_sharded", "2026-01-02"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "airflow dags test failed:\n{said}");
    for i in 0..3 {
        assert!(
            said.contains(&format!(
                "task_id=harvest_shard, run_id=manual__2026-01-02T00:00:00+00:00, map_index={i}"
            )),
            "mapped task {i} did not run:\n{said}"
        );
    }
    assert!(
        said.contains("Marking task as SUCCESS. dag_id=harvest_sharded, task_id=verify"),
        "{said}"
    );
    three_writers_wrote_the_job(&out, &db);
}

#[test]
fn the_pyspark_driver_runs_three_shards_as_tasks_into_one_dir() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let work = TempDir::new("spark-shards");
    let cfg = job_config(&work, &ds);
    let out = work.path().join("lake");
    let o = Command::new(spark_python())
        .env("HARVEST_BIN", env!("CARGO_BIN_EXE_harvest"))
        .arg(repo_root().join("examples/spark/harvest_shards.py"))
        .args(["--shards", "3", "--master", "local[3]", "--out"])
        .arg(&out)
        .args(["--", "-c", &cfg, "-q"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the Spark driver failed:\n{err}");
    assert!(err.contains("shards [0, 1, 2] finished"), "{err}");
    let sqlite = rusqlite::Connection::open(&db).unwrap();
    let read: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(read.len(), 3, "{read:?}");
    for t in &read {
        let name = t["table"].as_str().unwrap();
        let want: i64 = sqlite
            .query_row(&format!("select count(*) from [{name}]"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(t["rows"], want, "Spark's row count of {name}: {t}");
        assert_eq!(t["distinct_rows"], want, "a row twice in {name}: {t}");
    }
    three_writers_wrote_the_job(&out, &db);
}

#[test]
fn a_shard_index_from_the_environment_is_checked_before_anything_runs() {
    let work = TempDir::new("shard-env");
    let out = work.path().join("out");
    let base = [
        "harvest",
        "--url",
        "http://127.0.0.1:9",
        "--db",
        "d",
        "--table",
        "t",
        "--out",
        out.to_str().unwrap(),
        "--shard-index-env",
        "JOB_COMPLETION_INDEX",
        "--shards",
        "3",
    ];
    assert_exit_saying(
        &harvest(&base, &[]),
        2,
        "the environment variable JOB_COMPLETION_INDEX is not set",
    );
    assert_exit_saying(
        &harvest(&base, &[("JOB_COMPLETION_INDEX", "3")]),
        2,
        "JOB_COMPLETION_INDEX=3 is not below --shards 3",
    );
    assert_exit_saying(
        &harvest(&base, &[("JOB_COMPLETION_INDEX", "one")]),
        2,
        "is not a shard index",
    );
    // Either form, not both; and --shards only with the variable.
    let mut both = base.to_vec();
    both.extend(["--shard", "1/3"]);
    assert_exit(&harvest(&both, &[("JOB_COMPLETION_INDEX", "0")]), 2);
    let mut alone = base[..base.len() - 4].to_vec();
    alone.extend(["--shards", "3"]);
    assert_exit_saying(&harvest(&alone, &[]), 2, "--shard-index-env");
    assert!(!out.exists());
}
