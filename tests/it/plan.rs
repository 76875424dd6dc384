//! `harvest plan`: against real Datasette 0.65 and json-server (each behind the fault server,
//! which only relays and counts), the plan shows each table's first request with credentials
//! masked, the paginator and the `auto` rule, the records pointer, columns with their types
//! and where each came from, the server's total, partitions, the incremental bound and a
//! row-driven table's input and first request; it asks at most page 1 of each table and
//! writes nothing. Problems of the config are listed and exit 2.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::fault_server::{Action, FaultServer, Synthetic};
use crate::rest::write_config;

/// The fault server relaying every request to `port` as it came (counting them).
fn relay(port: u16) -> FaultServer {
    FaultServer::start(Synthetic { rows: 0 }, move |_| {
        Some(Action::Forward {
            port,
            delay: Duration::ZERO,
            lose_answer: false,
        })
    })
}

fn plan_json(cfg: &str, extra: &[&str], envs: &[(&str, &str)]) -> (std::process::Output, Value) {
    let mut args = vec!["plan", "-c", cfg, "--json"];
    args.extend_from_slice(extra);
    let o = harvest(&args, envs);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "plan --json printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        )
    });
    assert_eq!(doc["version"], 1);
    (o, doc["plan"].clone())
}

fn table<'a>(plan: &'a Value, output: &str) -> &'a Value {
    plan["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["output"] == output)
        .unwrap_or_else(|| panic!("no table {output} in {plan:#}"))
}

fn column<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name} in {t:#}"))
}

/// Every file under `dir`, relative.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn plan_shows_each_table_from_its_first_page_and_writes_nothing() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let ds_relay = relay(ds.port);
    let users: Vec<Value> = (1..=5)
        .map(|i| json!({"id": i, "name": format!("user {i}"), "karma": i * 10}))
        .collect();
    let posts: Vec<Value> = (1..=25)
        .map(|i| json!({"id": i, "title": format!("post {i}"), "author": {"id": 1 + i % 5}}))
        .collect();
    let js = JsonServer::start(&json!({"posts": posts, "users": users}));
    let js_relay = relay(js.port);

    let work = TempDir::new("plan");
    let out = work.path().join("out");
    let cfg = write_config(
        work.path(),
        &format!(
            r#"out = "{out}"

[[source]]
url = "{ds}"
database = "{db}"

[[source.table]]
name = "Orders"
partition_by = "ShipCountry"
watermark = "OrderDate"
initial = "1997-01-01"
lookback = "2d"
types = {{ OrderDate = "timestamp" }}

[[source.table]]
name = "Customers"

[[source]]
name = "blog"
kind = "rest"
url = "{js}"
headers = {{ "X-Api-Key" = "${{PLAN_IT_KEY}}" }}
auth = {{ bearer = "${{PLAN_IT_TOKEN}}" }}

[[source.table]]
name = "posts"
params = {{ _page = 1, _limit = 10 }}

[[source.table]]
name = "authors"
path = "/users/{{author_id}}"
for_each = {{ table = "posts", fields = {{ author_id = "/author/id" }} }}
"#,
            out = out.display(),
            ds = ds_relay.url,
            db = ds.db_name,
            js = js_relay.url,
        ),
    );
    let secrets = [
        ("PLAN_IT_KEY", "key-4f9e2d7c1b"),
        ("PLAN_IT_TOKEN", "tok-8a6b3c5d9e"),
    ];
    let (o, plan) = plan_json(&cfg, &[], &secrets);
    assert_exit(&o, 0);
    assert_eq!(plan["problems"], 0);
    assert_eq!(plan["tables"].as_array().unwrap().len(), 4);

    // Datasette: types from the server's probe, the override named as such, the count.
    let orders = table(&plan, "Orders");
    assert_eq!(orders["kind"], "datasette");
    assert!(
        orders["request"]["url"]
            .as_str()
            .unwrap()
            .contains(&format!("/{}/Orders.json?", ds.db_name)),
        "{orders:#}"
    );
    assert_eq!(column(orders, "OrderDate")["type"], "timestamp");
    assert_eq!(column(orders, "OrderDate")["from"], "types override");
    assert_eq!(column(orders, "OrderID")["type"], "integer");
    assert_eq!(column(orders, "Freight")["type"], "float");
    assert_eq!(column(orders, "ShipCountry")["type"], "text");
    let count: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("select count(*) from Orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orders["server_total"], count);
    assert_eq!(orders["partition_by"], "ShipCountry");
    assert_eq!(orders["first_page"]["more"], true);
    assert_eq!(orders["incremental"]["column"], "OrderDate");
    assert_eq!(orders["incremental"]["bound"], "1997-01-01");
    assert_eq!(orders["incremental"]["stored"], Value::Null);
    assert!(
        orders["incremental"]["params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[0] == "OrderDate__gte" && p[1] == "1997-01-01"),
        "{orders:#}"
    );
    let customers = table(&plan, "Customers");
    assert_eq!(customers["first_page"]["more"], false);
    assert_eq!(
        customers["server_total"].as_u64(),
        customers["first_page"]["rows"].as_u64()
    );

    // REST, auto: the rule that chose the Link paginator, the records, masked credentials.
    let p = table(&plan, "posts");
    assert_eq!(p["paginator"]["kind"], "link");
    assert!(
        p["paginator_rule"]
            .as_str()
            .unwrap()
            .contains("Link header")
    );
    assert_eq!(p["records"], "");
    assert_eq!(p["server_total"], 25);
    assert_eq!(p["first_page"]["rows"], 10);
    assert_eq!(column(p, "author__id")["type"], "integer");
    assert_eq!(column(p, "author__id")["from"], "inferred from page 1");
    let headers = p["request"]["headers"].to_string();
    assert!(
        headers.contains(r#"["X-Api-Key","[REDACTED]"]"#),
        "{headers}"
    );
    assert!(headers.contains("Bearer [REDACTED]"), "{headers}");

    // Row-driven: the input's columns and first row (from the parent's page 1), the first
    // request filled from it, the response's columns after harvest's own.
    let a = table(&plan, "authors");
    assert_eq!(a["input"]["columns"], json!(["author_id"]));
    assert_eq!(a["input"]["first_row"], json!([2]));
    assert!(
        a["request"]["url"].as_str().unwrap().ends_with("/users/2"),
        "{a:#}"
    );
    assert_eq!(a["columns"][0]["name"], "_request_id");
    assert_eq!(a["columns"][1]["name"], "_status");
    assert_eq!(column(a, "_input__author_id")["type"], "integer");
    assert_eq!(column(a, "karma")["type"], "integer");

    // At most page 1 of each table: no Datasette `_next`, one request per REST table.
    let ds_seen = ds_relay.requests();
    assert!(
        ds_seen.iter().all(|r| r.param("_next").is_none()),
        "{:?}",
        ds_seen.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let table_pages = ds_seen
        .iter()
        .filter(|r| r.path.ends_with("/Orders.json") || r.path.ends_with("/Customers.json"))
        .count();
    assert_eq!(table_pages, 2, "{ds_seen:?}");
    let js_seen: Vec<String> = js_relay.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(js_seen, ["/posts", "/users/2"]);
    // The credentials went out as the run sends them.
    let first = &js_relay.requests()[0];
    assert_eq!(first.header("x-api-key"), Some("key-4f9e2d7c1b"));
    assert_eq!(first.header("authorization"), Some("Bearer tok-8a6b3c5d9e"));

    // Nothing written: no DIR, nothing beside the config.
    assert!(!out.exists(), "plan created {}", out.display());
    assert_eq!(files_in(work.path()), ["harvest.toml"]);

    // The human form, and no secret in anything printed.
    let h = harvest(&["plan", "-c", &cfg], &secrets);
    assert_exit(&h, 0);
    let text = String::from_utf8_lossy(&h.stdout).into_owned();
    for needle in [
        "request     GET ",
        "Authorization: Bearer [REDACTED]",
        "the first page has a Link header",
        "OrderDate >= 1997-01-01",
        "types override",
        "first row [2]",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    for (_, secret) in secrets {
        for printed in [
            &text,
            &stderr(&h),
            &String::from_utf8_lossy(&o.stdout).into_owned(),
        ] {
            assert!(
                !printed.contains(secret),
                "a secret was printed:\n{printed}"
            );
        }
    }
    assert_eq!(files_in(work.path()), ["harvest.toml"]);

    // After an incremental run, the plan's bound is the stored watermark less the lookback,
    // read from DIR without touching it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let orders_only = &text[..text.find("[[source.table]]\nname = \"Customers\"").unwrap()];
    let inc_cfg = work.path().join("incremental.toml");
    std::fs::write(&inc_cfg, orders_only).unwrap();
    let o = harvest(&["incremental", "-c", inc_cfg.to_str().unwrap(), "-q"], &[]);
    assert_exit(&o, 0);
    let before = std::fs::read(out.join("manifest.jsonl")).unwrap();
    let (o, plan) = plan_json(
        &cfg,
        &["--table", "Orders", "--out", out.to_str().unwrap()],
        &secrets,
    );
    assert_exit(&o, 0);
    let inc = &table(&plan, "Orders")["incremental"];
    assert!(!inc["stored"].is_null(), "{inc:#}");
    let bound = inc["bound"].as_str().unwrap();
    assert_ne!(bound, "1997-01-01", "{inc:#}");
    assert!(
        inc["params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[0] == "OrderDate__gte" && p[1] == bound),
        "{inc:#}"
    );
    assert_eq!(std::fs::read(out.join("manifest.jsonl")).unwrap(), before);

    // --table picks tables (by dataset name); an unknown one is a usage error.
    let (o, plan) = plan_json(&cfg, &["--table", "Customers"], &secrets);
    assert_exit(&o, 0);
    assert_eq!(plan["tables"].as_array().unwrap().len(), 1);
    let o = harvest(&["plan", "-c", &cfg, "--table", "Ordres"], &secrets);
    assert_exit_saying(&o, 2, "--table \"Ordres\" is not a table of the config");
}

#[test]
fn plan_lists_the_problems_a_run_would_stop_on_and_exits_2() {
    let js = JsonServer::start(&json!({
        // A page that says there is more, with no way to reach it.
        "feed": {"items": [{"id": 1}, {"id": 2}], "has_more": true},
        "posts": [{"id": 1, "author": 3}, {"id": 2, "author": 4}],
    }));
    let work = TempDir::new("plan-problems");
    let cfg = write_config(
        work.path(),
        &format!(
            r#"[[source]]
name = "api"
kind = "rest"
url = "{js}"

[[source.table]]
name = "feed"

[[source.table]]
name = "feed_entries"
path = "/feed"
records = "/entries"
paginate = "none"

[[source.table]]
name = "posts"
partition_by = "region"

[[source.table]]
name = "authors"
path = "/users/{{author}}"
for_each = {{ table = "posts", fields = {{ id = "/author" }} }}
"#,
            js = js.url
        ),
    );
    let (o, plan) = plan_json(&cfg, &[], &[]);
    assert_exit(&o, 2);
    let problem = |output: &str| -> String {
        let t = table(&plan, output);
        assert!(
            !t["problems"].as_array().unwrap().is_empty(),
            "{output}: no problem listed: {t:#}"
        );
        t["problems"].to_string()
    };
    let feed = problem("feed");
    assert!(
        feed.contains("says there is more") && feed.contains("has_more"),
        "{feed}"
    );
    let entries = problem("feed_entries");
    assert!(
        entries.contains("records") && entries.contains("/entries"),
        "{entries}"
    );
    let posts = problem("posts");
    assert!(
        posts.contains("partition_by") && posts.contains("region"),
        "{posts}"
    );
    let authors = problem("authors");
    assert!(
        authors.contains("{author}") && authors.contains("its columns are: id"),
        "{authors}"
    );
    assert_eq!(plan["problems"], 4);
    assert!(
        stderr(&o).contains("the plan found 4 problem(s) in 4 table(s)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(files_in(work.path()), ["harvest.toml"]);

    // A server that does not answer: the failure's own exit code (5), not 2.
    let cfg = write_config(
        work.path(),
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"http://127.0.0.1:{}\"\n[[source.table]]\nname = \"posts\"\n",
            free_port()
        ),
    );
    let o = harvest(&["plan", "-c", &cfg], &[]);
    assert_exit_saying(&o, 5, "gave up");
    // The same for a Datasette source, asked once for all its tables.
    let cfg = write_config(
        work.path(),
        &format!(
            "[[source]]\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"d\"\n[[source.table]]\nname = \"a\"\n[[source.table]]\nname = \"b\"\n",
            free_port()
        ),
    );
    let (o, plan) = plan_json(&cfg, &[], &[]);
    assert_exit_saying(&o, 5, "asking the Datasette server");
    assert_eq!(plan["problems"], 2, "{plan:#}");
}
