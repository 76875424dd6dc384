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
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("shard 2/2 has no tables"),
        "{}",
        stderr(&o)
    );

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
