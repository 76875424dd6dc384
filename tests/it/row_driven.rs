//! Row-driven tables (`for_each`): one request per input row, against json-server 0.17.4
//! (npm): GET by id with ids it does not have (404s recorded), POST per row with kill -9 at
//! seeded moments, a parent table feeding a child path, a Parquet dataset as input, and the
//! in-process fault server in front for 429/5xx/resets. Each output is compared with what the
//! server holds, and every request id is recomputed here from its documented definition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::crash::spawn_harvest;
use crate::fault_server::*;
use crate::rest::{assert_nowhere, rest_config, run_config, write_config};

/// The documented request id: sha256 of method, "\n", URL, "\n", body.
fn request_id(method: &str, url: &str, body: &[u8]) -> String {
    let mut bytes = format!("{method}\n{url}\n").into_bytes();
    bytes.extend_from_slice(body);
    harvest::manifest::sha256_hex(&bytes)
}

fn customer(i: u64) -> Value {
    json!({
        "id": format!("C{i:03}"),
        "name": format!("Customer {i} «ü»"),
        "balance": i as i64 * 1000 - 7,
        "rating": i as f64 / 4.0,
        "active": !i.is_multiple_of(3),
        "address": { "city": format!("City {}", i % 5), "zip": format!("{:05}", i * 11) },
    })
}

/// Column position by name.
fn col(names: &[String], n: &str) -> usize {
    names
        .iter()
        .position(|x| x == n)
        .unwrap_or_else(|| panic!("no column {n} in {names:?}"))
}

fn text(c: &Cell) -> String {
    match c {
        Cell::Text(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    }
}

fn table_end<'a>(m: &'a [Value], output: &str) -> &'a Value {
    records(m, "table_end")
        .into_iter()
        .rfind(|r| r["output"] == output)
        .unwrap_or_else(|| panic!("no table_end for {output}"))
}

#[test]
fn get_by_id_records_404s_and_joins_back_to_inputs() {
    let n_known = 30u64;
    let js = JsonServer::start(&json!({
        "customers": (1..=n_known).map(customer).collect::<Vec<_>>(),
    }));
    let work = TempDir::new("rows-get");
    let out = work.path().join("out");
    // 40 distinct ids (10 unknown to the server), one repeated, and rows the query filters out.
    let mut sql =
        String::from("create table wanted(CustomerID text, Country text, seq integer);\n");
    for i in 1..=40u64 {
        sql.push_str(&format!(
            "insert into wanted values('C{i:03}', 'USA', {i});\n"
        ));
    }
    sql.push_str("insert into wanted values('C007', 'USA', 99);\n");
    sql.push_str("insert into wanted values('C001', 'Peru', 100);\n");
    let db = make_db(&work, "input", &sql);
    let token = "rd-token-4f9a1c0b77";
    let config = write_config(
        work.path(),
        &format!(
            r#"
[[source]]
name = "crm"
kind = "rest"
url = "{url}"
auth = {{ bearer = "${{RD_TOKEN}}" }}

[[source.table]]
name = "customer_detail"
path = "/customers/{{CustomerID}}"
for_each = {{ sqlite = "{db}", query = "select CustomerID from wanted where Country = :c order by seq", params = {{ c = "USA" }} }}
concurrency = 8
request_id_header = "Idempotency-Key"
"#,
            url = js.url,
            db = db.display()
        ),
    );
    let o = run_config(&config, &out, &[("RD_TOKEN", token)]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("10 request(s) answered with a recorded error status (10× 404)"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("1 input row(s) repeated"),
        "{}",
        stderr(&o)
    );

    let (names, types, rows) = read_dataset(&out.join("parquet/customer_detail"));
    use arrow::datatypes::DataType as D;
    assert_eq!(
        &names[..3],
        ["_request_id", "_status", "_input__CustomerID"],
        "the request id, status and input come first"
    );
    assert_eq!(types[col(&names, "_status")], D::Int64);
    assert_eq!(types[col(&names, "balance")], D::Int64);
    assert_eq!(types[col(&names, "rating")], D::Float64);
    assert_eq!(types[col(&names, "active")], D::Boolean);
    assert_eq!(
        rows.len(),
        40,
        "one row per distinct input, the repeat not sent twice"
    );
    let mut ids = HashSet::new();
    for r in &rows {
        let input = text(&r[col(&names, "_input__CustomerID")]);
        let i: u64 = input[1..].parse().unwrap();
        let url = format!("{}/customers/{input}", js.url);
        assert_eq!(
            text(&r[col(&names, "_request_id")]),
            request_id("GET", &url, b"")
        );
        assert!(
            ids.insert(text(&r[col(&names, "_request_id")])),
            "ids are unique"
        );
        if i <= n_known {
            assert_eq!(r[col(&names, "_status")], Cell::Int(200));
            assert_eq!(r[col(&names, "id")], Cell::Text(input.clone()));
            assert_eq!(r[col(&names, "balance")], Cell::Int(i as i64 * 1000 - 7));
            assert_eq!(r[col(&names, "rating")], real(i as f64 / 4.0));
            assert_eq!(
                r[col(&names, "address__city")],
                Cell::Text(format!("City {}", i % 5))
            );
        } else {
            assert_eq!(r[col(&names, "_status")], Cell::Int(404));
            assert_eq!(r[col(&names, "id")], Cell::Null);
            assert_eq!(r[col(&names, "name")], Cell::Null);
        }
    }
    // The manifest: one entry per response with its id and input key; the counts in table_end.
    let m = manifest(&out);
    let entries: Vec<&Value> = records(&m, "page")
        .into_iter()
        .flat_map(|p| p["requests"].as_array().unwrap())
        .collect();
    assert_eq!(entries.len(), 40);
    assert!(
        entries
            .iter()
            .all(|e| e["key"]["CustomerID"].is_string() && e["id"].is_string())
    );
    let te = table_end(&m, "customer_detail");
    assert_eq!(te["row_driven"]["statuses"], json!({"200": 30, "404": 10}));
    assert_eq!(te["row_driven"]["duplicate_inputs"], 1);
    assert_eq!(te["row_driven"]["inputs_read"], 41);
    // Every body is kept byte-for-byte: a 404's body is json-server's own `{}` (NOTES.md).
    let page = records(&m, "page")
        .into_iter()
        .find(|p| {
            p["requests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["status"] == 404)
        })
        .unwrap();
    let batch = std::fs::read(out.join(page["path"].as_str().unwrap())).unwrap();
    let e = page["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status"] == 404)
        .unwrap();
    let (off, len) = (
        e["offset"].as_u64().unwrap() as usize,
        e["bytes"].as_u64().unwrap() as usize,
    );
    assert_eq!(&batch[off..off + len], b"{}");
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 0);
    assert_nowhere(&o, &out, &[token]);

    // DuckDB joins the responses back to the inputs.
    let py = readers_python();
    let script = format!(
        r#"
import duckdb
con = duckdb.connect()
print(con.execute("""
  select count(*), count(name), sum(balance)
  from read_parquet('{out}/parquet/customer_detail/**/*.parquet')
  where _status = 200 and _input__CustomerID = id
""").fetchone())
"#,
        out = out.display()
    );
    let o2 = python_c(&py, &script).output().unwrap();
    let got = String::from_utf8_lossy(&o2.stdout).trim().to_string();
    let sum: i64 = (1..=n_known as i64).map(|i| i * 1000 - 7).sum();
    assert_eq!(
        got,
        format!("(30, 30, {sum})"),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );

    // pyarrow reads every value as the server sent it: no NULL where a value was, no coercion.
    let script = format!(
        r#"
import json, pyarrow.dataset as ds
t = ds.dataset('{out}/parquet/customer_detail', format='parquet').to_table()
for r in sorted(t.to_pylist(), key=lambda r: r['_input__CustomerID']):
    print(json.dumps(r, ensure_ascii=False, sort_keys=True))
"#,
        out = out.display()
    );
    let o2 = python_c(&py, &script).output().unwrap();
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&o2.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    for (k, r) in lines.iter().enumerate() {
        let i = k as u64 + 1;
        let id = format!("C{i:03}");
        let url = format!("{}/customers/{id}", js.url);
        assert_eq!(r["_request_id"], request_id("GET", &url, b"").as_str());
        assert_eq!(r["_input__CustomerID"], id.as_str());
        if i <= n_known {
            let c = customer(i);
            assert_eq!(r["_status"], 200);
            for f in ["id", "name", "balance", "rating", "active"] {
                assert_eq!(r[f], c[f], "{id}: {f}");
            }
            assert_eq!(r["address__city"], c["address"]["city"]);
            assert_eq!(r["address__zip"], c["address"]["zip"]);
        } else {
            assert_eq!(r["_status"], 404);
            for f in ["id", "name", "balance", "rating", "active", "address__city"] {
                assert!(r[f].is_null(), "{id}: {f} is {}", r[f]);
            }
        }
    }

    // The dataset harvest wrote, read back as the input of another table: the same requests,
    // so the same ids.
    let out2 = work.path().join("out2");
    let config2 = rest_config(
        work.path(),
        &js.url,
        &format!(
            r#"
[[source.table]]
name = "again"
path = "/customers/{{_input__CustomerID}}"
for_each = {{ parquet = "{parts}", columns = ["_input__CustomerID"] }}
concurrency = 4
"#,
            parts = out.join("parquet/customer_detail").display()
        ),
    );
    let o3 = run_config(&config2, &out2, &[]);
    assert_exit(&o3, 0);
    let (n2, _, rows2) = read_dataset(&out2.join("parquet/again"));
    let ids2: HashSet<String> = rows2
        .iter()
        .map(|r| text(&r[col(&n2, "_request_id")]))
        .collect();
    assert_eq!(ids2, ids);
}

#[test]
fn placeholders_and_settings_are_checked_before_any_request() {
    let server = FaultServer::start(Synthetic { rows: 1 }, |_| None);
    let work = TempDir::new("rows-config");
    let db = make_db(
        &work,
        "in",
        "create table t(id integer, name text); insert into t values (1, 'a');",
    );
    let cases = [
        (
            r#"path = "/x/{nope}"
for_each = { sqlite = "DB", query = "select id, name from t" }"#,
            "path uses the placeholder {nope}",
        ),
        (
            r#"path = "/x"
method = "POST"
body = { a = "{id}", b = "{missing}" }
for_each = { sqlite = "DB", query = "select id, name from t" }"#,
            "body uses the placeholder {missing}",
        ),
        (
            r#"path = "/x/{id"
for_each = { sqlite = "DB", query = "select id from t" }"#,
            "never closed",
        ),
        (
            r#"path = "/x"
for_each = { sqlite = "DB", query = "select id from t", parquet = "p" }"#,
            "exactly one of",
        ),
        (
            r#"path = "/x"
record_status = [401]
for_each = { sqlite = "DB", query = "select id from t" }"#,
            "record_status has 401",
        ),
        (
            r#"path = "/x"
body = { a = 1 }
for_each = { sqlite = "DB", query = "select id from t" }"#,
            "a GET request has no body",
        ),
        (
            r#"path = "/x"
for_each = { sqlite = "DB", query = "select id from t where id = :v" }"#,
            "no value was given",
        ),
        (
            r#"path = "/x"
for_each = { sqlite = "DB", query = "delete from t" }"#,
            "must be a SELECT",
        ),
        (
            r#"path = "/x"
for_each = { table = "later", fields = { id = "/id" } }"#,
            "not a table listed before it",
        ),
        (
            r#"path = "/x"
concurrency = 0
for_each = { sqlite = "DB", query = "select id from t" }"#,
            "concurrency = 0",
        ),
    ];
    for (i, (table, want)) in cases.iter().enumerate() {
        let config = rest_config(
            work.path(),
            &server.url,
            &format!(
                "[[source.table]]\nname = \"t{i}\"\n{}\n",
                table.replace("DB", db.to_str().unwrap())
            ),
        );
        let out = work.path().join(format!("out{i}"));
        let o = run_config(&config, &out, &[]);
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains(want),
            "case {i}: want {want:?} in\n{}",
            stderr(&o)
        );
    }
    // `incremental` does not run row-driven tables.
    let config = rest_config(
        work.path(),
        &server.url,
        &format!(
            "[[source.table]]\nname = \"t\"\npath = \"/x/{{id}}\"\nfor_each = {{ sqlite = \"{}\", query = \"select id from t\" }}\n",
            db.display()
        ),
    );
    let o = harvest(
        &[
            "incremental",
            "--config",
            &config,
            "--out",
            work.path().join("inc").to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("does not run row-driven tables"),
        "{}",
        stderr(&o)
    );
    assert!(
        server.requests().is_empty(),
        "no request before the settings are right"
    );
}

/// Rows in the input table of the POST test.
const POSTS: u64 = 240;

/// The body of a json-server collection.
fn collection(port: u16, path: &str) -> Vec<Value> {
    let raw = http_get(port, path).unwrap_or_else(|| panic!("GET {path} failed"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[test]
fn post_per_row_kill_9_then_resume_gives_exactly_one_response_per_request() {
    let concurrency = 4u64;
    let work = TempDir::new("rows-post");
    let mut sql =
        String::from("create table staging(ref integer, label text, amount real, tag text);\n");
    for i in 1..=POSTS {
        let tag = if i % 5 == 0 {
            "NULL".to_string()
        } else {
            format!("'t{}'", i % 3)
        };
        sql.push_str(&format!(
            "insert into staging values({i}, 'label {i} \"q\"', {}, {tag});\n",
            i as f64 + 0.5
        ));
    }
    let db = make_db(&work, "staging", &sql);
    let mut kills_mid_run = 0;
    for seed in 1..=3u64 {
        let js = JsonServer::start(&json!({ "submissions": [] }));
        let out = work.path().join(format!("out{seed}"));
        let config = write_config(
            work.path(),
            &format!(
                r#"
[[source]]
name = "intake"
kind = "rest"
url = "{url}"

[[source.table]]
name = "submitted"
path = "/submissions"
method = "POST"
body = {{ ref = "{{ref}}", label = "{{label}}", amount = "{{amount}}", tag = "{{tag}}", note = "ref {{ref}}" }}
for_each = {{ sqlite = "{db}", query = "select ref, label, amount, tag from staging order by ref" }}
concurrency = {concurrency}
request_id_header = "Idempotency-Key"
"#,
                url = js.url,
                db = db.display()
            ),
        );
        let args = [
            "harvest",
            "-q",
            "--config",
            &config,
            "--out",
            out.to_str().unwrap(),
        ];
        // Kill -9 (seed 3: SIGTERM, which records the requests in flight before it stops) once
        // at a seeded moment, after some but not all posts.
        let mut child = spawn_harvest(&args);
        let started = Instant::now();
        let wanted = seed * POSTS / 4;
        loop {
            let held = collection(js.port, "/submissions").len() as u64;
            if held >= wanted
                || child.try_wait().unwrap().is_some()
                || started.elapsed() > Duration::from_secs(60)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mid_run = child.try_wait().unwrap().is_none();
        if seed == 3 && mid_run {
            // SIGTERM instead: a clean checkpoint and exit 130, then the same resume.
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(130), "SIGTERM exits 130");
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
        let o = harvest(&args, &[]);
        assert_exit(&o, 0);
        if mid_run {
            kills_mid_run += 1;
            // The rerun resumed the killed run and skipped what it had recorded.
            let m = manifest(&out);
            assert_eq!(
                counts_by_kind(&m).get("run_resume"),
                Some(&1),
                "seed {seed}"
            );
            let te = table_end(&m, "submitted");
            assert!(
                te["row_driven"]["already_recorded"].as_u64().unwrap() > 0,
                "{te}"
            );
        }

        // The output: exactly one response per input row, N distinct ids.
        let (names, _, rows) = read_dataset(&out.join("parquet/submitted"));
        assert_eq!(rows.len() as u64, POSTS, "seed {seed}: one row per input");
        let mut refs = BTreeMap::new();
        for r in &rows {
            let Cell::Int(rf) = r[col(&names, "_input__ref")] else {
                panic!("ref")
            };
            assert_eq!(r[col(&names, "_status")], Cell::Int(201));
            assert_eq!(
                r[col(&names, "ref")],
                Cell::Int(rf),
                "the integer stayed a JSON number"
            );
            assert_eq!(r[col(&names, "amount")], real(rf as f64 + 0.5));
            *refs.entry(rf).or_insert(0) += 1;
            // The id from its definition: the body as harvest sent it (keys in order).
            let tag = if rf % 5 == 0 {
                Value::Null
            } else {
                json!(format!("t{}", rf % 3))
            };
            let body = serde_json::to_vec(&json!({
                "amount": rf as f64 + 0.5, "label": format!("label {rf} \"q\""),
                "note": format!("ref {rf}"), "ref": rf, "tag": tag,
            }))
            .unwrap();
            let url = format!("{}/submissions", js.url);
            assert_eq!(
                text(&r[col(&names, "_request_id")]),
                request_id("POST", &url, &body)
            );
        }
        assert_eq!(refs.len() as u64, POSTS);
        assert!(refs.values().all(|n| *n == 1));
        let ids: HashSet<String> = rows
            .iter()
            .map(|r| text(&r[col(&names, "_request_id")]))
            .collect();
        assert_eq!(ids.len() as u64, POSTS);
        // The server: at least N, at most N + concurrency; every extra one repeats an input.
        let held = collection(js.port, "/submissions");
        let mut per_ref: HashMap<i64, u64> = HashMap::new();
        for s in &held {
            *per_ref.entry(s["ref"].as_i64().unwrap()).or_default() += 1;
            assert!(
                s["amount"].is_number() && s["ref"].is_i64(),
                "typed body: {s}"
            );
        }
        assert_eq!(
            per_ref.len() as u64,
            POSTS,
            "seed {seed}: every input reached the server"
        );
        let extra = held.len() as u64 - POSTS;
        assert!(
            extra <= concurrency,
            "seed {seed}: {extra} repeats, more than the {concurrency} in flight at the kill"
        );
        if seed == 3 && mid_run {
            assert_eq!(
                extra, 0,
                "SIGTERM lets the POSTs in flight be answered and recorded: nothing repeats"
            );
        }
        // The resumed run ended ok: the directory verifies clean.
        assert_exit(
            &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
            0,
        );
        eprintln!(
            "seed {seed}: server holds {} for {POSTS} inputs ({extra} repeats)",
            held.len()
        );
    }
    assert!(
        kills_mid_run >= 2,
        "the kills must land mid-run ({kills_mid_run})"
    );
}

#[test]
fn a_parent_table_feeds_a_child_path() {
    let posts: Vec<Value> = (1..=23u64)
        .map(|i| json!({ "id": i, "title": format!("post {i}") }))
        .collect();
    let comments: Vec<Value> = (1..=60u64)
        .map(|c| json!({ "id": c, "postId": (c % 20) + 1, "body": format!("comment {c}") }))
        .collect();
    let js = JsonServer::start(&json!({ "posts": posts, "comments": comments }));
    let work = TempDir::new("rows-parent");
    let out = work.path().join("out");
    let config = rest_config(
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
for_each = { table = "posts", fields = { post_id = "/id", title = "/title" } }
params = { _sort = "id" }
concurrency = 3
"#,
    );
    let o = run_config(&config, &out, &[]);
    assert_exit(&o, 0);
    let (names, _, rows) = read_dataset(&out.join("parquet/post_comments"));
    // Every comment once, under its post; posts 21-23 have none (200 with an empty array).
    assert_eq!(rows.len(), 60);
    let mut seen = HashSet::new();
    for r in &rows {
        let Cell::Int(c) = r[col(&names, "id")] else {
            panic!("id")
        };
        assert!(seen.insert(c));
        let post = (c % 20) + 1;
        assert_eq!(r[col(&names, "_input__post_id")], Cell::Int(post));
        assert_eq!(r[col(&names, "postId")], Cell::Int(post));
        assert_eq!(
            r[col(&names, "_input__title")],
            Cell::Text(format!("post {post}"))
        );
    }
    let m = manifest(&out);
    assert_eq!(
        table_end(&m, "post_comments")["row_driven"]["responses"],
        23
    );
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 0);
    // A part whose rows name a request id the manifest never recorded: verify says so.
    {
        use arrow::array::{Array as _, AsArray, StringArray};
        let part = all_files(&out.join("parquet/post_comments"))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))
            .unwrap();
        let file = std::fs::File::open(&part).unwrap();
        let batches: Vec<arrow::record_batch::RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let schema = batches[0].schema();
        let idx = schema.index_of("_request_id").unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&part).unwrap(),
            schema.clone(),
            None,
        )
        .unwrap();
        for (k, b) in batches.iter().enumerate() {
            let mut cols = b.columns().to_vec();
            if k == 0 {
                let ids = cols[idx].as_string::<i32>();
                let forged: StringArray = (0..ids.len())
                    .map(|i| {
                        Some(if i == 0 {
                            "f".repeat(64)
                        } else {
                            ids.value(i).to_string()
                        })
                    })
                    .collect();
                cols[idx] = std::sync::Arc::new(forged);
            }
            w.write(&arrow::record_batch::RecordBatch::try_new(schema.clone(), cols).unwrap())
                .unwrap();
        }
        w.close().unwrap();
        let v = harvest(&["verify", "--out", out.to_str().unwrap(), "--quick"], &[]);
        assert_exit(&v, 3);
        assert!(
            stderr(&v).contains("request_id_mismatch")
                && stderr(&v).contains("1 id(s) in the rows were never recorded"),
            "{}",
            stderr(&v)
        );
    }
    // One flipped byte in a batch snapshot: verify names the response and the file.
    let batch = records(&m, "page")
        .into_iter()
        .find(|p| p["output"] == "post_comments")
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bytes = std::fs::read(out.join(&batch)).unwrap();
    bytes[3] ^= 0x20;
    std::fs::write(out.join(&batch), bytes).unwrap();
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 3);
    assert!(
        stderr(&v).contains("request_mismatch") && stderr(&v).contains("response 1 ("),
        "{}",
        stderr(&v)
    );
}

#[test]
fn faults_in_front_of_per_row_requests_change_nothing() {
    let js = JsonServer::start(&json!({
        "customers": (1..=50).map(customer).collect::<Vec<_>>(),
    }));
    let upstream = js.url.clone();
    // Per id, the first attempt fails one way or another (seeded by the id); retries pass.
    let tries: std::sync::Arc<std::sync::Mutex<HashMap<String, u32>>> = Default::default();
    let t2 = tries.clone();
    let server = FaultServer::start(Synthetic { rows: 1 }, move |req| {
        let n = {
            let mut t = t2.lock().unwrap();
            let e = t.entry(req.path.clone()).or_insert(0);
            *e += 1;
            *e
        };
        let i: u64 = req
            .path
            .rsplit('C')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let fault = match (i % 5, n) {
            (0, 1) => Some(Action::Respond {
                status: 429,
                headers: vec![("Retry-After".into(), "1".into())],
                body: b"slow down".to_vec(),
            }),
            (1, 1) => Some(json(503, "{}")),
            (2, 1) => Some(Action::Reset),
            (3, 1) => Some(Action::Truncate {
                body: customer(i).to_string().into_bytes(),
                keep: 10,
            }),
            _ => None,
        };
        fault.or_else(|| {
            Some(Action::ProxyTo {
                upstream: upstream.clone(),
                target: req.path.clone(),
            })
        })
    });
    let work = TempDir::new("rows-faults");
    let mut sql = String::from("create table ids(id text);\n");
    for i in 1..=50 {
        sql.push_str(&format!("insert into ids values('C{i:03}');\n"));
    }
    let db = make_db(&work, "ids", &sql);
    let out = work.path().join("out");
    let config = rest_config(
        work.path(),
        &server.url,
        &format!(
            r#"
[[source.table]]
name = "detail"
path = "/customers/{{id}}"
for_each = {{ sqlite = "{db}", query = "select id from ids" }}
concurrency = 6
params = {{ for = "{{id}}-x" }}
headers = {{ X-Customer = "{{id}}" }}
request_id_header = "Idempotency-Key"
"#,
            db = db.display()
        ),
    );
    let o = run_config(&config, &out, &[]);
    assert_exit(&o, 0);
    let (names, _, rows) = read_dataset(&out.join("parquet/detail"));
    assert_eq!(rows.len(), 50);
    let ids: HashSet<String> = rows
        .iter()
        .map(|r| text(&r[col(&names, "_request_id")]))
        .collect();
    assert_eq!(ids.len(), 50);
    for r in &rows {
        let id = text(&r[col(&names, "_input__id")]);
        let i: u64 = id[1..].parse().unwrap();
        assert_eq!(r[col(&names, "_status")], Cell::Int(200));
        assert_eq!(r[col(&names, "balance")], Cell::Int(i as i64 * 1000 - 7));
    }
    // Retried attempts are counted in the manifest, one entry per request.
    let m = manifest(&out);
    let attempts: u64 = records(&m, "page")
        .iter()
        .flat_map(|p| p["requests"].as_array().unwrap())
        .map(|e| e["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(
        attempts,
        50 + 40,
        "one extra attempt for each id with a fault"
    );
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 0);
}

#[test]
fn a_child_cut_off_between_its_own_pages_continues_from_its_next_url() {
    let posts: Vec<Value> = (1..=4u64)
        .map(|i| json!({ "id": i, "title": format!("post {i}") }))
        .collect();
    let comments: Vec<Value> = (1..=12u64)
        .map(|c| json!({ "id": c, "postId": (c - 1) / 3 + 1, "body": format!("comment {c}") }))
        .collect();
    let js = JsonServer::start(&json!({ "posts": posts, "comments": comments }));
    let work = TempDir::new("rows-partial");
    let out = work.path().join("out");
    let config = rest_config(
        work.path(),
        &js.url,
        r#"
[[source.table]]
name = "posts"

[[source.table]]
name = "comments_by_post"
path = "/posts/{post}/comments"
for_each = { table = "posts", fields = { post = "/id" } }
params = { _page = 1, _limit = 1 }
paginate = "link"
"#,
    );
    // The first run dies right after recording its first batch: input 1's first page only.
    let o = run_config(&config, &out, &[("HARVEST_FAILPOINT", "rows:after-batch")]);
    assert!(o.status.code() != Some(0), "the failpoint stops the run");
    let m = manifest(&out);
    let first: Vec<&Value> = records(&m, "page")
        .into_iter()
        .filter(|p| p["output"] == "comments_by_post")
        .collect();
    assert_eq!(first.len(), 1);
    let entries = first[0]["requests"].as_array().unwrap();
    assert!(
        entries.last().unwrap()["next"].is_string(),
        "the batch ends inside input 1's pagination: {entries:?}"
    );
    let o = run_config(&config, &out, &[]);
    assert_exit(&o, 0);
    let (names, _, rows) = read_dataset(&out.join("parquet/comments_by_post"));
    let mut got: Vec<(i64, i64)> = rows
        .iter()
        .map(
            |r| match (&r[col(&names, "id")], &r[col(&names, "_input__post")]) {
                (Cell::Int(c), Cell::Int(p)) => (*c, *p),
                other => panic!("{other:?}"),
            },
        )
        .collect();
    got.sort();
    let want: Vec<(i64, i64)> = (1..=12).map(|c| (c, (c - 1) / 3 + 1)).collect();
    assert_eq!(got, want, "every comment once, under its post");
    let ids: HashSet<String> = rows
        .iter()
        .map(|r| text(&r[col(&names, "_request_id")]))
        .collect();
    assert_eq!(ids.len(), 12, "one id per page request");
    let m = manifest(&out);
    let urls: Vec<&str> = records(&m, "page")
        .into_iter()
        .filter(|p| p["output"] == "comments_by_post")
        .flat_map(|p| p["requests"].as_array().unwrap())
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&&str> = urls.iter().collect();
    assert_eq!(
        urls.len(),
        distinct.len(),
        "no page fetched twice: {urls:?}"
    );
    assert_eq!(urls.len(), 12, "4 inputs x 3 pages");
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 0);
}

#[test]
fn auth_failures_budget_exhaustion_and_fatal_404s_stop_as_documented() {
    let js = JsonServer::start(&json!({
        "customers": (1..=20).map(customer).collect::<Vec<_>>(),
    }));
    let upstream = js.url.clone();
    let mode = std::sync::Arc::new(std::sync::Mutex::new("503"));
    let m2 = mode.clone();
    let server = FaultServer::start(Synthetic { rows: 1 }, move |req| {
        let mode = *m2.lock().unwrap();
        if req.path.ends_with("/C007") {
            match mode {
                "503" => return Some(json(503, "{}")),
                "401" => return Some(json(401, r#"{"error":"bad token"}"#)),
                _ => {}
            }
        }
        Some(Action::ProxyTo {
            upstream: upstream.clone(),
            target: req.path.clone(),
        })
    });
    let work = TempDir::new("rows-stops");
    let mut sql = String::from("create table ids(id text);\n");
    for i in (1..=20).chain([77]) {
        sql.push_str(&format!("insert into ids values('C{i:03}');\n"));
    }
    let db = make_db(&work, "ids", &sql);
    let config = |extra: &str| {
        write_config(
            work.path(),
            &format!(
                r#"
[http]
max_attempts = 2

[[source]]
kind = "rest"
url = "{url}"

[[source.table]]
name = "detail"
path = "/customers/{{id}}"
for_each = {{ sqlite = "{db}", query = "select id from ids order by id" }}
concurrency = 3
{extra}
"#,
                url = server.url,
                db = db.display()
            ),
        )
    };
    // A 503 that outlasts the retry budget: exit 5, and a rerun resumes exactly once.
    let out = work.path().join("out");
    let cfg = config("");
    let o = run_config(&cfg, &out, &[]);
    assert_exit(&o, 5);
    assert!(
        stderr(&o).contains("C007"),
        "names the input: {}",
        stderr(&o)
    );
    *mode.lock().unwrap() = "ok";
    let o = run_config(&cfg, &out, &[]);
    assert_exit(&o, 0);
    let (names, _, rows) = read_dataset(&out.join("parquet/detail"));
    assert_eq!(rows.len(), 21);
    let ids: HashSet<String> = rows
        .iter()
        .map(|r| text(&r[col(&names, "_input__id")]))
        .collect();
    assert_eq!(ids.len(), 21, "each input once");
    let m = manifest(&out);
    assert_eq!(
        table_end(&m, "detail")["row_driven"]["already_recorded"],
        6,
        "C001-C006, answered before C007 failed, were recorded and not sent again"
    );
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );

    // 401 is an authentication failure: exit 4.
    *mode.lock().unwrap() = "401";
    let o = run_config(&cfg, &work.path().join("out401"), &[]);
    assert_exit(&o, 4);

    // record_status = [] makes the unknown C077 (404) fatal: exit 1 naming it.
    *mode.lock().unwrap() = "ok";
    let o = run_config(
        &config("record_status = []"),
        &work.path().join("out404"),
        &[],
    );
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("404") && stderr(&o).contains("C077"),
        "{}",
        stderr(&o)
    );
}

/// Row checks on a row-driven table: a response that fails goes to quarantine with the id of
/// the request that returned it (a recorded 404 has no `name`: `required`).
#[test]
fn checks_quarantine_responses_with_their_request_id() {
    let mut customers: Vec<Value> = (1..=10).map(customer).collect();
    customers[3]["balance"] = json!(-5);
    let js = JsonServer::start(&json!({ "customers": customers }));
    let work = TempDir::new("rows-checks");
    let out = work.path().join("out");
    let mut sql = String::from("create table wanted(CustomerID text);\n");
    for i in 1..=12u64 {
        sql.push_str(&format!("insert into wanted values('C{i:03}');\n"));
    }
    let db = make_db(&work, "input", &sql);
    let config = rest_config(
        work.path(),
        &js.url,
        &format!(
            r#"[[source.table]]
name = "customer_detail"
path = "/customers/{{CustomerID}}"
for_each = {{ sqlite = "{}", query = "select CustomerID from wanted" }}
concurrency = 4
checks = {{ required = ["name"], range = {{ balance = {{ min = 0 }} }} }}
"#,
            db.display()
        ),
    );
    let o = run_config(&config, &out, &[]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("9 rows written, 3 quarantined (range: 1, required: 2)"),
        "{}",
        stderr(&o)
    );
    let q = harvest(
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--dataset",
            "customer_detail",
            "--quarantine",
            "--format",
            "ndjson",
        ],
        &[],
    );
    assert_exit(&q, 0);
    let rows: Vec<Value> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    let m = manifest(&out);
    let ids: HashSet<String> = records(&m, "page")
        .iter()
        .flat_map(|p| p["requests"].as_array().unwrap().iter())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for r in &rows {
        let id = r["_request_id"].as_str().unwrap();
        assert!(ids.contains(id), "{id} is a recorded request");
    }
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
}
