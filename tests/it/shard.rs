//! `--shard I/N` against a real Datasette: N processes, each with its own DIR, harvest disjoint
//! shares of one job's tables (dealt out in config order), together every table exactly once,
//! each share recorded in its run and verifiable; bad shard specs are usage errors.

use std::collections::BTreeMap;

use crate::common::*;

const TABLES: [&str; 6] = [
    "Categories",
    "Customers",
    "CustomerCustomerDemo",
    "Products",
    "Orders",
    "Shipment Events",
];

#[test]
fn three_shards_harvest_every_table_exactly_once() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let dir = TempDir::new("shard");
    let mut tables: Vec<&str> = vec![];
    for t in TABLES {
        tables.extend(["--table", t]);
    }
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for k in 1..=3usize {
        let out = dir.path().join(format!("shard-{k}"));
        let mut args = tables.clone();
        let spec = format!("{k}/3");
        args.extend(["--shard", &spec]);
        let o = run_job(
            "harvest",
            &ds.url,
            &ds.db_name,
            out.to_str().unwrap(),
            &args,
        );
        assert_exit(&o, 0);
        // Dealt out in the job's order: shard k takes tables k, k+3, ...
        let want: Vec<&str> = TABLES.iter().copied().skip(k - 1).step_by(3).collect();
        let m = manifest(&out);
        let start = records(&m, "run_start")[0];
        assert_eq!(start["settings"]["shard"]["index"], k);
        assert_eq!(start["settings"]["shard"]["count"], 3);
        assert_eq!(
            start["settings"]["shard"]["tables"],
            serde_json::json!(want)
        );
        for r in records(&m, "table_end") {
            let t = r["output"].as_str().unwrap().to_string();
            assert!(owner.insert(t.clone(), k).is_none(), "{t} harvested twice");
        }
        for t in &want {
            assert_dataset_matches_table(&out, &db, t);
        }
        let o = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
        assert_exit(&o, 0);
    }
    assert_eq!(
        owner.keys().cloned().collect::<Vec<_>>(),
        {
            let mut all: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
            all.sort();
            all
        },
        "every table in exactly one shard"
    );

    // A shard with nothing dealt to it runs, records its empty share, and says so.
    let out = dir.path().join("empty");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        out.to_str().unwrap(),
        &["--table", "Categories", "--shard", "2/2"],
    );
    assert_exit_saying(&o, 0, "shard 2/2 has no tables");

    // `incremental` records its share too (and deals a config's `parallel` table out whole).
    let inc = dir.path().join("incremental");
    let o = run_job(
        "incremental",
        &ds.url,
        &ds.db_name,
        inc.to_str().unwrap(),
        &[
            "--table",
            "Categories",
            "--table",
            "Products",
            "--watermark-column",
            "ProductID",
            "--shard",
            "2/2",
        ],
    );
    assert_exit(&o, 0);
    let m = manifest(&inc);
    let start = records(&m, "run_start")[0];
    assert_eq!(
        start["settings"]["shard"]["tables"],
        serde_json::json!(["Products"])
    );
    assert_dataset_matches_table(&inc, &db, "Products");

    for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
        let o = run_job(
            "harvest",
            &ds.url,
            &ds.db_name,
            out.to_str().unwrap(),
            &["--table", "Categories", "--shard", bad],
        );
        assert_exit(&o, 2);
        assert!(stderr(&o).contains("is not I/N"), "{bad}: {}", stderr(&o));
    }
}

/// A row-driven child goes to its parent's shard (it reads the parent's snapshots), and does
/// not count in the dealing: with `posts` → `post_comments` and `comments`, shard 1 of 2 takes
/// the parent and its child, shard 2 the other table.
#[test]
fn a_row_driven_child_goes_with_its_parent() {
    use serde_json::{Value, json};
    let posts: Vec<Value> = (1..=12u64)
        .map(|i| json!({ "id": i, "title": format!("post {i}") }))
        .collect();
    let comments: Vec<Value> = (1..=30u64)
        .map(|c| json!({ "id": c, "postId": (c % 12) + 1 }))
        .collect();
    let js = JsonServer::start(&json!({ "posts": posts, "comments": comments }));
    let work = TempDir::new("shard-rows");
    let config = crate::rest::rest_config(
        work.path(),
        &js.url,
        r#"
[[source.table]]
name = "posts"
params = { _page = 1, _limit = 5 }
paginate = "link"

[[source.table]]
name = "post_comments"
path = "/posts/{post_id}/comments"
for_each = { table = "posts", fields = { post_id = "/id" } }

[[source.table]]
name = "comments"
params = { _page = 1, _limit = 10 }
paginate = "link"
"#,
    );
    for (k, want, rows) in [
        (1, vec!["posts", "post_comments"], vec![12, 30]),
        (2, vec!["comments"], vec![30]),
    ] {
        let out = work.path().join(format!("shard-{k}"));
        let spec = format!("{k}/2");
        let o = harvest(
            &[
                "harvest",
                "--config",
                &config,
                "--out",
                out.to_str().unwrap(),
                "--shard",
                &spec,
            ],
            &[],
        );
        assert_exit(&o, 0);
        let m = manifest(&out);
        assert_eq!(
            records(&m, "run_start")[0]["settings"]["shard"]["tables"],
            json!(want)
        );
        for (t, n) in want.iter().zip(rows) {
            assert_eq!(read_dataset(&out.join("parquet").join(t)).2.len(), n, "{t}");
        }
        let o = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
        assert_exit(&o, 0);
    }
}

/// Shard `k` of 3 of `Order Details` and `Orders`, each split into six key ranges, into `out`.
pub(crate) fn split_shard_args(ds: &Datasette, out: &str, k: usize, extra: &[&str]) -> Vec<String> {
    let spec = format!("{k}/3");
    let mut a: Vec<&str> = vec![
        "harvest",
        "-q",
        "--url",
        &ds.url,
        "--db",
        &ds.db_name,
        "--out",
        out,
        "--table",
        "Order Details",
        "--table",
        "Orders",
        "--parallel",
        "6",
        "--shard",
        &spec,
    ];
    a.extend_from_slice(extra);
    a.iter().map(|s| s.to_string()).collect()
}

/// The shards' DIRs, as `verify` takes them.
fn verify_dirs(dirs: &[&std::path::Path], json: bool) -> std::process::Output {
    let mut args = vec!["verify"];
    if json {
        args.push("--json");
    }
    for d in dirs {
        args.extend(["--out", d.to_str().unwrap()]);
    }
    harvest(&args, &[])
}

/// `--parallel 6 --shard I/3`: every shard plans the same six key ranges and pages its two,
/// one shard is killed with SIGKILL mid-run and rerun, and the three DIRs together hold every
/// row of both tables exactly once (read back by our reader and by pyarrow as one union
/// dataset); `verify` with all three DIRs is clean, and with one missing says which.
#[test]
fn one_parallel_table_split_across_three_shards_with_a_kill() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let dir = TempDir::new("shard-split");
    let shard_dir = |k: usize| dir.path().join(format!("shard {k}"));
    let run_shard = |k: usize| {
        let a = split_shard_args(&ds, shard_dir(k).to_str().unwrap(), k, &[]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        assert_exit(&harvest(&a, &[]), 0);
    };
    // Shard 2 is killed once it has recorded some pages, then rerun.
    let a2 = split_shard_args(&ds, shard_dir(2).to_str().unwrap(), 2, &[]);
    let a2: Vec<&str> = a2.iter().map(String::as_str).collect();
    let mut child = crate::crash::spawn_harvest(&a2);
    assert!(
        kill_after_pages(&mut child, &shard_dir(2).join("manifest.jsonl"), 20),
        "shard 2 finished before it could be killed"
    );
    for k in [1, 2, 3] {
        run_shard(k);
    }

    let mut plans = vec![];
    for k in 1..=3u64 {
        let m = manifest(&shard_dir(k as usize));
        let start = records(&m, "run_start");
        let start = start.last().unwrap();
        assert_eq!(
            start["settings"]["shard"]["split"],
            serde_json::json!(["Order Details", "Orders"])
        );
        for t in ["Order Details", "Orders"] {
            let sl: Vec<&serde_json::Value> = records(&m, "slices")
                .into_iter()
                .filter(|r| r["output"] == t)
                .collect();
            assert_eq!(sl.len(), 1, "shard {k} {t}: one plan, reused on resume");
            let plan = &sl[0]["plan"];
            assert_eq!(plan["slices"].as_array().unwrap().len(), 6);
            // Shard k pages slices k-1 and k+2.
            let mine: Vec<u64> = vec![k - 1, k + 2];
            assert_eq!(sl[0]["shard"]["slices"], serde_json::json!(mine), "{t}");
            for p in records(&m, "page").into_iter().filter(|r| r["output"] == t) {
                assert!(mine.contains(&p["slice"].as_u64().unwrap()), "{p}");
            }
            let end: Vec<&serde_json::Value> = records(&m, "table_end")
                .into_iter()
                .filter(|r| r["output"] == t)
                .collect();
            assert_eq!(end.len(), 1);
            assert_eq!(end[0]["shard"]["index"], k);
            plans.push((t, plan.clone()));
        }
    }
    for t in ["Order Details", "Orders"] {
        let same: Vec<&serde_json::Value> = plans
            .iter()
            .filter(|(n, _)| *n == t)
            .map(|(_, p)| p)
            .collect();
        assert!(
            same.windows(2).all(|w| w[0] == w[1]),
            "{t}: one plan for all shards"
        );
        // Our reader and pyarrow: the three shards' parts are the table, each row once.
        let mut got = vec![];
        let mut types = vec![];
        let mut names = vec![];
        for k in 1..=3 {
            let (n, ty, rows) = read_dataset(&shard_dir(k).join("parquet").join(t));
            (names, types) = (n, ty);
            got.extend(rows);
        }
        let select = names
            .iter()
            .map(|n| quote(n))
            .collect::<Vec<_>>()
            .join(", ");
        let want = read_sqlite(&db, &format!("select {select} from {}", quote(t)), &types);
        assert_same_rows(t, got, want);
    }
    let union = |t: &str| {
        (1..=3)
            .map(|k| shard_dir(k).join("parquet").join(t).display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    };
    crate::value_sweep::compare(
        &db,
        &[
            (
                union("Order Details"),
                "select {cols} from \"Order Details\"".into(),
            ),
            (union("Orders"), "select {cols} from Orders".into()),
        ],
    );

    // verify: all three together are clean, and add up to the table.
    let (d1, d2, d3) = (shard_dir(1), shard_dir(2), shard_dir(3));
    let o = verify_dirs(&[&d1, &d2, &d3], true);
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let tables = v["shards"]["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2);
    for t in tables {
        assert_eq!(t["rows"], t["server_count"], "{t}");
    }
    // One DIR alone is clean, and says the shards are checked together.
    let o = verify_dirs(&[&d2], false);
    assert_exit_saying(&o, 0, "pass every shard's DIR");
    // A missing shard, or one given twice, is a coverage finding naming it.
    let o = verify_dirs(&[&d1, &d2], true);
    assert_exit_saying(&o, 3, "shard 3/3 is missing");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = v["shards"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    // Per table: shard 3 missing, and its two slices paged by no shard.
    assert_eq!(kinds, vec!["shard_coverage"; 6], "{v}");
    let copy = dir.path().join("copy of shard 1");
    let o = std::process::Command::new("cp")
        .args(["-a", d1.to_str().unwrap(), copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = verify_dirs(&[&d1, &d2, &d3, &copy], false);
    assert_exit_saying(&o, 3, "shard 1/3 is in 2 DIRs");

    // Too few slices for the shards, and a table that cannot be split: usage errors.
    let out = dir.path().join("refused");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        out.to_str().unwrap(),
        &["--table", "Orders", "--parallel", "2", "--shard", "1/3"],
    );
    assert_exit_saying(&o, 2, "fewer than the 3 shards");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        out.to_str().unwrap(),
        &["--table", "Customers", "--parallel", "3", "--shard", "1/3"],
    );
    assert_exit_saying(&o, 2, "cannot be split across shards");
}

/// Shards that plan at different moments of a growing table get different key ranges, so
/// their slices do not tile it: `verify` says so instead of calling the union complete.
#[test]
fn shards_that_planned_different_key_ranges_are_a_verify_finding() {
    let work = TempDir::new("shard-drift");
    let db = make_db(
        &work,
        "drift",
        "create table t (id integer primary key, v text);
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 900)
         insert into t select i, 'row ' || i from n;",
    );
    let ds = Datasette::start(V0_65, &db);
    let run = |k: usize| {
        let out = work.path().join(format!("s{k}"));
        let o = run_job(
            "harvest",
            &ds.url,
            &ds.db_name,
            out.to_str().unwrap(),
            &[
                "--table",
                "t",
                "--parallel",
                "3",
                "--page-size",
                "100",
                "--shard",
                &format!("{k}/3"),
            ],
        );
        assert_exit(&o, 0);
        out
    };
    let (s1, s2) = (run(1), run(2));
    // Rows arrive between the shards' starts.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("insert into t values (5000, 'late')")
        .unwrap();
    let s3 = run(3);
    let o = verify_dirs(&[&s1, &s2, &s3], true);
    assert_exit_saying(&o, 3, "key range changed");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["shards"]["findings"][0]["kind"], "shard_plan_mismatch",
        "{v}"
    );
    // Each DIR is sound on its own.
    for d in v["dirs"].as_array().unwrap() {
        assert_eq!(d["ok"], true, "{d}");
    }
}

/// With `--table-format delta`, each shard's DIR holds a Delta table of its share: the three
/// together, read by the `deltalake` package, polars and DuckDB's `delta` extension, are the
/// SQLite table row for row, and `verify` of the three DIRs is clean.
#[test]
fn a_split_table_into_three_delta_tables_reads_back_whole() {
    let db = fixture_db(1);
    let ds = Datasette::start(V1_0, &db);
    let dir = TempDir::new("shard-delta");
    let outs: Vec<std::path::PathBuf> = (1..=3).map(|k| dir.path().join(format!("s{k}"))).collect();
    for (k, out) in outs.iter().enumerate() {
        let spec = format!("{}/3", k + 1);
        let o = run_job(
            "harvest",
            &ds.url,
            &ds.db_name,
            out.to_str().unwrap(),
            &[
                "--table",
                "Orders",
                "--parallel",
                "3",
                "--shard",
                &spec,
                "--table-format",
                "delta",
                "--part-rows",
                "2000",
            ],
        );
        assert_exit(&o, 0);
        assert!(out.join("parquet/Orders/_delta_log").is_dir());
    }
    let tables = outs
        .iter()
        .map(|o| o.join("parquet/Orders").display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let v = delta_readers_agree(&tables, &db, "Orders", None);
    for (reader, n) in v["rows"].as_object().unwrap() {
        assert_eq!(n, 16_000, "{reader}");
    }
    let refs: Vec<&std::path::Path> = outs.iter().map(|p| p.as_path()).collect();
    assert_exit(&verify_dirs(&refs, false), 0);
}
