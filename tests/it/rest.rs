//! REST sources (`kind = "rest"`) against real servers nobody here wrote: json-server 0.17.4
//! (npm) with a generated file of nested records, and Datasette read as a generic JSON API;
//! the in-process fault server in front of them for retries, API keys, loops and bad bodies.
//! Every dataset is compared value for value with what the server holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::fault_server::*;

/// One generated record: nested objects, arrays, booleans, fractional numbers, a field that
/// is mostly null, text that needs escaping.
fn post(i: u64) -> Value {
    json!({
        "id": i,
        "title": format!("post {i} «ü» \"quoted\" 🦀"),
        "views": i * 7,
        "score": i as f64 + 0.25,
        "published": i.is_multiple_of(3),
        "owner": {
            "login": format!("user{}", i % 50),
            "id": i % 50,
            "site": { "name": format!("site {}", i % 7) }
        },
        "tags": (0..i % 3).map(|k| format!("t{k}")).collect::<Vec<_>>(),
        "note": if i.is_multiple_of(7) { json!(format!("note {i}")) } else { Value::Null },
    })
}

pub(crate) fn posts_db(n: u64) -> Value {
    json!({ "posts": (1..=n).map(post).collect::<Vec<_>>() })
}

/// The row harvest must write for record `i`, by column name (independent of its code).
fn expected_post(i: u64) -> BTreeMap<&'static str, Cell> {
    let tags: Vec<String> = (0..i % 3).map(|k| format!("t{k}")).collect();
    BTreeMap::from([
        ("id", Cell::Int(i as i64)),
        ("title", Cell::Text(format!("post {i} «ü» \"quoted\" 🦀"))),
        ("views", Cell::Int(i as i64 * 7)),
        ("score", real(i as f64 + 0.25)),
        ("published", Cell::Int(i64::from(i.is_multiple_of(3)))),
        ("owner__login", Cell::Text(format!("user{}", i % 50))),
        ("owner__id", Cell::Int((i % 50) as i64)),
        ("owner__site__name", Cell::Text(format!("site {}", i % 7))),
        ("tags", Cell::Text(serde_json::to_string(&tags).unwrap())),
        (
            "note",
            if i.is_multiple_of(7) {
                Cell::Text(format!("note {i}"))
            } else {
                Cell::Null
            },
        ),
    ])
}

/// The dataset holds exactly the records `ids`, each once, with every field.
#[track_caller]
pub(crate) fn assert_posts(out: &Path, dataset: &str, ids: impl IntoIterator<Item = u64>) {
    let (names, types, got) = read_dataset(&out.join("parquet").join(dataset));
    let mut want_names: Vec<&str> = expected_post(1).keys().copied().collect();
    let mut got_names: Vec<&str> = names.iter().map(String::as_str).collect();
    want_names.sort();
    got_names.sort();
    assert_eq!(got_names, want_names, "{dataset}: columns");
    let ty = |n: &str| types[names.iter().position(|x| x == n).unwrap()].clone();
    use arrow::datatypes::DataType as D;
    assert_eq!(ty("id"), D::Int64);
    assert_eq!(ty("score"), D::Float64);
    assert_eq!(ty("published"), D::Boolean);
    assert_eq!(ty("owner__login"), D::Utf8);
    assert_eq!(ty("tags"), D::Utf8);
    let want: Vec<Vec<Cell>> = ids
        .into_iter()
        .map(|i| {
            let e = expected_post(i);
            names.iter().map(|n| e[n.as_str()].clone()).collect()
        })
        .collect();
    assert_same_rows(dataset, got, want);
}

/// A config of one REST source at `url` (no name, auth or headers) with `tables`.
pub(crate) fn rest_config(dir: &Path, url: &str, tables: &str) -> String {
    write_config(
        dir,
        &format!("[[source]]\nkind = \"rest\"\nurl = \"{url}\"\n\n{tables}"),
    )
}

pub(crate) fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("harvest.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Forward `req` to `upstream` unchanged but for the query parameter `drop`.
pub(crate) fn forward(upstream: &str, req: &Request, drop: &str) -> Action {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(req.query.iter().filter(|(k, _)| k != drop))
        .finish();
    Action::ProxyTo {
        upstream: upstream.to_string(),
        target: format!("{}?{q}", req.path),
    }
}

/// No secret, plain or URL-encoded, is in the run's stdout, stderr, or any file under `out`.
#[track_caller]
pub(crate) fn assert_nowhere(o: &std::process::Output, out: &Path, secrets: &[&str]) {
    let mut texts = vec![
        (
            "stdout".to_string(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        ),
        ("stderr".to_string(), stderr(o)),
    ];
    for f in all_files(out) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        texts.push((f.display().to_string(), text));
    }
    for secret in secrets {
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        for (what, t) in &texts {
            assert!(
                !t.contains(secret) && !t.contains(&encoded),
                "a secret leaked into {what}"
            );
        }
    }
}

/// `harvest harvest --config CONFIG --out OUT` with `envs`.
pub(crate) fn run_config(config: &str, out: &Path, envs: &[(&str, &str)]) -> std::process::Output {
    config_cmd("harvest", config, out, &[], envs)
}

/// `harvest CMD --config CONFIG --out OUT EXTRA…` with `envs`.
pub(crate) fn config_cmd(
    cmd: &str,
    config: &str,
    out: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Output {
    let mut args = vec![cmd, "--config", config, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    harvest(&args, envs)
}

fn pages_of<'a>(m: &'a [Value], output: &str) -> Vec<&'a Value> {
    records(m, "page")
        .into_iter()
        .filter(|p| p["output"] == output)
        .collect()
}

#[test]
fn json_server_every_paginator_gives_every_record_once() {
    let n = 2500;
    let js = JsonServer::start(&posts_db(n));
    let work = TempDir::new("rest-paginators");
    let out = work.path().join("out");
    let config = write_config(
        work.path(),
        &format!(
            r#"
[[source]]
name = "blog"
kind = "rest"
url = "{url}"
headers = {{ Accept = "application/json" }}

[[source.table]]
name = "posts_link"
path = "/posts"
params = {{ _page = 1, _limit = 100 }}
paginate = "link"
primary_key = ["id"]

[[source.table]]
name = "posts_auto"
path = "/posts"
params = {{ _page = 1, _limit = 100 }}

[[source.table]]
name = "posts_offset"
path = "/posts"
paginate = {{ kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 300, total_header = "X-Total-Count" }}

[[source.table]]
name = "posts_pages"
path = "/posts"
params = {{ _limit = 250 }}
paginate = {{ kind = "page_number", param = "_page", start = 1 }}

[[source.table]]
name = "posts_none"
path = "/posts"
params = {{ "owner.id" = 3 }}
paginate = "none"
"#,
            url = js.url
        ),
    );
    let o = run_config(&config, &out, &[]);
    assert_exit(&o, 0);
    for d in ["posts_link", "posts_auto", "posts_offset", "posts_pages"] {
        assert_posts(&out, d, 1..=n);
    }
    assert_posts(&out, "posts_none", (1..=n).filter(|i| i % 50 == 3));

    let m = manifest(&out);
    let link = pages_of(&m, "posts_link");
    assert_eq!(link.len(), 25);
    assert_eq!(link[0]["paging"]["kind"], "link");
    assert_eq!(link[0]["server_count"], n);
    assert!(link[0].get("database").is_none());
    // auto found json-server's Link header, and recorded its choice with every page.
    let auto = pages_of(&m, "posts_auto");
    assert_eq!(auto.len(), 25);
    assert!(auto.iter().all(|p| p["paging"]["kind"] == "link"));
    // offset: 9 pages of up to 300; the total (2500) stops it without an empty page.
    let offset = pages_of(&m, "posts_offset");
    assert_eq!(offset.len(), 9);
    assert_eq!(offset[8]["params"]["_start"], "2400");
    // page numbers: 10 full pages, then the empty page that ends it.
    let pages = pages_of(&m, "posts_pages");
    assert_eq!(pages.len(), 11);
    assert_eq!(pages[10]["rows"], 0);
    assert_eq!(pages_of(&m, "posts_none").len(), 1);
    // Each snapshot is the body byte for byte (its sha256 is recorded), and verify agrees.
    for p in link {
        let body = std::fs::read(out.join(p["path"].as_str().unwrap())).unwrap();
        assert_eq!(
            harvest::manifest::sha256_hex(&body),
            p["sha256"].as_str().unwrap()
        );
    }
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 0);

    // Other readers find the nested fields by name.
    let py = readers_python();
    let script = r#"
import sys, pyarrow.dataset as ds, duckdb, pandas as pd, glob
d = sys.argv[1]
t = ds.dataset(d, format="parquet").to_table()
assert t.num_rows == 2500, t.num_rows
assert str(t.schema.field("published").type) == "bool"
con = duckdb.connect()
n, logins, views = con.execute(f"select count(*), count(distinct owner__login), sum(views) from read_parquet('{d}/**/*.parquet')").fetchone()
assert (n, logins, views) == (2500, 50, 7 * 2500 * 2501 // 2), (n, logins, views)
df = pd.concat(pd.read_parquet(f) for f in glob.glob(f"{d}/**/*.parquet", recursive=True))
assert len(df) == 2500 and df["owner__site__name"].nunique() == 7
print("readers ok")
"#;
    python_ok(&py, script, &[&out.join("parquet").join("posts_link")]);

    // Tampering with a REST snapshot is caught like any other.
    let snap = out.join(pages_of(&m, "posts_offset")[3]["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&snap, bytes).unwrap();
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 3);
    assert!(stderr(&v).contains("page-000004"), "{}", stderr(&v));
}

/// A table of values a JSON API must carry exactly: 64-bit integers, exponent-form reals,
/// Unicode, NULL beside empty text.
fn value_db(dir: &TempDir) -> std::path::PathBuf {
    let mut sql = String::from(
        "create table t (id integer primary key, big integer, r real, s text, flag integer);",
    );
    let bigs = [i64::MAX, i64::MIN, 9007199254740993, -1, 0];
    for i in 1..=40i64 {
        let big = bigs[(i % 5) as usize];
        let r = [1e300, -2.5e-310, 0.1, 123.456][(i % 4) as usize];
        let s = match i % 4 {
            0 => "NULL".to_string(),
            1 => "''".to_string(),
            _ => format!("'row {i} 🦀 «ü»'"),
        };
        sql.push_str(&format!(
            "insert into t values ({i}, {big}, {r:e}, {s}, {});",
            i % 2
        ));
    }
    make_db(dir, "vals", &sql)
}

#[test]
fn datasette_read_as_a_plain_rest_api_matches_sqlite() {
    let work = TempDir::new("rest-datasette");
    let db = value_db(&work);
    for version in [V0_65, V1_0] {
        let ds = Datasette::start(version, &db);
        let out = work.path().join(format!("out-{version}"));
        // 0.65 answers arrays unless asked for objects; its page also carries `columns`,
        // `primary_keys` and more arrays, so `records` must be named.
        let (params, records) = if version == V0_65 {
            ("{ _size = 7, _shape = \"objects\" }", "records = \"/rows\"")
        } else {
            ("{ _size = 7 }", "")
        };
        let config = write_config(
            work.path(),
            &format!(
                r#"
[[source]]
kind = "rest"
url = "{url}"

[[source.table]]
name = "t_link"
path = "/vals/t.json"
params = {params}
{records}
paginate = "link"

[[source.table]]
name = "t_next_url"
path = "/vals/t.json"
params = {params}
{records}
paginate = {{ kind = "next_url", pointer = "/next_url" }}

[[source.table]]
name = "t_cursor"
path = "/vals/t.json"
params = {params}
{records}
paginate = {{ kind = "cursor", pointer = "/next", param = "_next" }}
"#,
                url = ds.url
            ),
        );
        let o = run_config(&config, &out, &[]);
        assert_exit(&o, 0);
        for d in ["t_link", "t_next_url", "t_cursor"] {
            let (names, types, got) = read_dataset(&out.join("parquet").join(d));
            let select = names
                .iter()
                .map(|n| quote(n))
                .collect::<Vec<_>>()
                .join(", ");
            let want = read_sqlite(&db, &format!("select {select} from t"), &types);
            assert_same_rows(&format!("{version} {d}"), got, want);
            assert_eq!(pages_of(&manifest(&out), d).len(), 6, "{version} {d}");
        }
        if version == V0_65 {
            // Without `records`, the arrays of a 0.65 page are ambiguous: a config error
            // naming the candidates, before anything is written.
            let cfg = write_config(
                work.path(),
                &format!(
                    "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n[[source.table]]\nname = \"t\"\npath = \"/vals/t.json\"\nparams = {{ _shape = \"objects\" }}\n",
                    ds.url
                ),
            );
            let out2 = work.path().join("out-ambiguous");
            let o = run_config(&cfg, &out2, &[]);
            assert_exit(&o, 2);
            let e = stderr(&o);
            assert!(e.contains("\"/rows\"") && e.contains("\"/columns\""), "{e}");
            assert!(!out2.join("parquet").exists());
        }
    }
}

/// SIGKILL a REST harvest at seeded moments, then let it finish: every record once, no
/// recorded page fetched again, for a URL-following paginator and an offset one.
#[test]
fn kill_9_during_a_rest_harvest_then_resume_exactly_once() {
    let n = 3000;
    let js = JsonServer::start(&posts_db(n));
    // Slow every page a little so that kills land mid-run.
    let upstream = js.url.clone();
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        std::thread::sleep(Duration::from_millis(8));
        Some(forward(&upstream, req, ""))
    });
    let work = TempDir::new("rest-kill");
    let config = write_config(
        work.path(),
        &format!(
            r#"
[[source]]
kind = "rest"
url = "{url}"

[[source.table]]
name = "by_link"
path = "/posts"
params = {{ _page = 1, _limit = 40 }}

[[source.table]]
name = "by_offset"
path = "/posts"
paginate = {{ kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 40 }}
"#,
            url = proxy.url
        ),
    );
    kill_9_then_finish(
        work.path(),
        &config,
        "500",
        200,
        n,
        &["by_link", "by_offset"],
    );
}

/// Four seeds: `harvest --config CONFIG --part-rows PART_ROWS` SIGKILLed at seeded moments
/// (from `base_ms`), then run to the end. Each time every table in `datasets` holds posts
/// 1..=n once, no recorded page was fetched again, and `verify` is clean; at least three of
/// the kills landed mid-run.
pub(crate) fn kill_9_then_finish(
    work: &Path,
    config: &str,
    part_rows: &str,
    base_ms: u64,
    n: u64,
    datasets: &[&str],
) {
    let mut landed = 0;
    for seed in 1..=4u64 {
        let out = work.join(format!("out{seed}"));
        let args = [
            "harvest",
            "-q",
            "--config",
            config,
            "--part-rows",
            part_rows,
            "--out",
            out.to_str().unwrap(),
        ];
        landed += kill_at_seeded_moments(&args, seed, base_ms);
        let o = harvest(&args, &[]);
        assert_exit(&o, 0);
        for d in datasets {
            assert_posts(&out, d, 1..=n);
        }
        assert_no_page_fetched_twice(&out, &format!("seed {seed}"));
        assert_exit(
            &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
            0,
        );
    }
    assert!(landed >= 3, "too few kills landed mid-run ({landed})");
}

/// The fault server in front of json-server: resets, 503s with Retry-After and cut-off
/// bodies on REST pages are retried, and the records come out exact.
#[test]
fn rest_pages_are_retried_through_faults() {
    let n = 600;
    let js = JsonServer::start(&posts_db(n));
    let upstream = js.url.clone();
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        Some(match req.n % 5 {
            1 => Action::Reset,
            2 => Action::Respond {
                status: 503,
                headers: vec![("Retry-After".into(), "0".into())],
                body: b"busy".to_vec(),
            },
            3 => Action::Truncate {
                body: serde_json::to_vec(&posts_db(3)["posts"]).unwrap(),
                keep: 40,
            },
            _ => forward(&upstream, req, ""),
        })
    });
    let work = TempDir::new("rest-faults");
    let out = work.path().join("out");
    let config = write_config(
        work.path(),
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n[[source.table]]\nname = \"posts\"\npaginate = {{ kind = \"offset\", offset_param = \"_start\", limit_param = \"_limit\", limit = 50 }}\n",
            proxy.url
        ),
    );
    let o = run_config(&config, &out, &[("HARVEST_NO_RETRY_SLEEP", "1")]);
    assert_exit(&o, 0);
    assert_posts(&out, "posts", 1..=n);
    let m = manifest(&out);
    let end = records(&m, "run_end");
    assert!(
        end[0]["totals"]["retries"].as_u64().unwrap() >= 20,
        "{}",
        end[0]
    );
}

/// An API key sent as a query parameter reaches the server on every request but no file the
/// run writes, and no line it prints; a wrong key is exit 4 without the key in the message.
#[test]
fn an_api_key_in_the_query_never_reaches_disk_or_logs() {
    const KEY: &str = "k3y/with+special&chars=ok";
    let n = 300;
    let js = JsonServer::start(&posts_db(n));
    let upstream = js.url.clone();
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        if req.param("api_key") != Some(KEY) {
            return Some(json(401, r#"{"error": "bad key"}"#));
        }
        Some(forward(&upstream, req, "api_key"))
    });
    let work = TempDir::new("rest-key");
    let out = work.path().join("out");
    let config = write_config(
        work.path(),
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"{}\"\nauth = {{ query = \"api_key\", value = \"${{POSTS_KEY}}\" }}\n[[source.table]]\nname = \"posts\"\npaginate = {{ kind = \"offset\", offset_param = \"_start\", limit_param = \"_limit\", limit = 100 }}\n",
            proxy.url
        ),
    );
    let args = [
        "harvest",
        "-v",
        "--config",
        &config,
        "--out",
        out.to_str().unwrap(),
    ];
    let o = harvest(&args, &[("POSTS_KEY", KEY)]);
    assert_exit(&o, 0);
    assert_posts(&out, "posts", 1..=n);
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| r.param("api_key") == Some(KEY))
    );
    assert_nowhere(&o, &out, &[KEY]);
    // A wrong key: exit 4, and the message does not carry it either.
    let o = harvest(&args, &[("POSTS_KEY", "wrong-key-123")]);
    assert_exit(&o, 4);
    assert!(!stderr(&o).contains("wrong-key-123"), "{}", stderr(&o));
}

/// Loops, HTML, new fields and missing arrays are refused naming the URL and the fix;
/// `max_pages` caps a table that never ends.
#[test]
fn loops_bad_bodies_and_new_fields_are_refused_clearly() {
    let server = FaultServer::start(Synthetic { rows: 0 }, |req| {
        let page: u64 = req.param("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        Some(match req.path.as_str() {
            "/loop" => json(200, r#"{"items": [{"id": 1}], "next": "/loop?x=1"}"#),
            "/endless" => json(
                200,
                format!(
                    r#"{{"items": [{{"id": {page}}}], "next": "/endless?page={}"}}"#,
                    page + 1
                ),
            ),
            "/html" => Action::Respond {
                status: 200,
                headers: vec![("Content-Type".into(), "text/html".into())],
                body: b"<html><body>Log in</body></html>".to_vec(),
            },
            "/late-field" => json(
                200,
                if page == 1 {
                    r#"{"items": [{"id": 1}], "next": "/late-field?page=2"}"#.to_string()
                } else {
                    r#"{"items": [{"id": 2, "added": 5}], "next": null}"#.to_string()
                },
            ),
            "/no-array" => json(200, r#"{"error": {"message": "quota"}}"#),
            _ => json(404, "{}"),
        })
    });
    let work = TempDir::new("rest-refusals");
    let run = |path: &str, extra: &str| {
        let out = work.path().join(format!("out{}", path.replace('/', "_")));
        let config = write_config(
            work.path(),
            &format!(
                "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n[[source.table]]\nname = \"t\"\npath = \"{path}\"\n{extra}\n",
                server.url
            ),
        );
        let o = run_config(&config, &out, &[]);
        (o, out)
    };
    let (o, _) = run("/loop", "");
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("loop forever"), "{}", stderr(&o));
    let (o, out) = run("/endless", "max_pages = 3");
    assert_exit(&o, 0);
    assert_eq!(read_dataset(&out.join("parquet").join("t")).2.len(), 3);
    let (o, _) = run("/html", "");
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("HTML") && e.contains("/html"), "{e}");
    // A late field: the columns evolve (a new column from page 2) ...
    let (o, out) = run("/late-field", "");
    assert_exit(&o, 0);
    let (names, _, rows) = read_evolved(&out.join("parquet").join("t"));
    assert_eq!(names, ["id", "added"]);
    assert_eq!(
        rows,
        vec![
            vec![Cell::Int(1), Cell::Null],
            vec![Cell::Int(2), Cell::Int(5)],
        ]
    );
    // ... unless the schema is frozen: then the run stops naming the field and the fix.
    let (o, _) = run("/late-field", "schema = \"freeze\"");
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("\"added\"") && e.contains("page 2") && e.contains("types"),
        "{e}"
    );
    // Declared up front, the late field is a column from the first page.
    let (o, out) = run("/late-field", "types = { added = \"integer\" }");
    assert_exit(&o, 0);
    let (names, _, rows) = read_dataset(&out.join("parquet").join("t"));
    assert_eq!(names, ["id", "added"]);
    assert_same_rows(
        "late",
        rows,
        vec![
            vec![Cell::Int(1), Cell::Null],
            vec![Cell::Int(2), Cell::Int(5)],
        ],
    );
    let (o, _) = run("/no-array", "");
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("\"error\""), "{}", stderr(&o));
    let (o, _) = run("/missing", "");
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
}

/// The rows of a dataset whose parts may hold different columns (schema evolution), by name:
/// every part's rows with NULL where it lacks a column, columns in the order first seen.
fn read_evolved(dir: &Path) -> (Vec<String>, (), Vec<Vec<Cell>>) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let mut names: Vec<String> = Vec::new();
    let mut parts = Vec::new();
    for f in files {
        let (n, _, rows) = read_dataset(&f);
        for c in &n {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
        parts.push((n, rows));
    }
    let rows = parts
        .into_iter()
        .flat_map(|(n, rows)| {
            let names = &names;
            rows.into_iter().map(move |r| {
                names
                    .iter()
                    .map(|c| {
                        n.iter()
                            .position(|k| k == c)
                            .map_or(Cell::Null, |i| r[i].clone())
                    })
                    .collect()
            })
        })
        .collect();
    (names, (), rows)
}

/// A source's credentials stay with its origin: a `Link` next URL or a redirect that points at
/// another origin (here: another port) is refused with exit 1 when the source sends a key, and
/// the other server never sees a request; a same-origin redirect is followed, and without
/// credentials a next URL elsewhere is followed as before.
#[test]
fn credentials_never_follow_the_server_to_another_origin() {
    const KEY: &str = "origin-key-7f3a";
    let elsewhere = FaultServer::start(Synthetic { rows: 0 }, |_| {
        Some(json(200, r#"{"items": [{"id": 2}]}"#))
    });
    let away = elsewhere.url.clone();
    let api = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        Some(match req.path.as_str() {
            "/link" => Action::Respond {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Link".into(), format!("<{away}/p2>; rel=\"next\"")),
                ],
                body: br#"{"items": [{"id": 1}]}"#.to_vec(),
            },
            "/moved" => Action::Respond {
                status: 302,
                headers: vec![("Location".into(), format!("{away}/p2"))],
                body: vec![],
            },
            "/moved-home" => Action::Respond {
                status: 302,
                headers: vec![("Location".into(), "/home".into())],
                body: vec![],
            },
            "/home" => json(200, r#"{"items": [{"id": 3}]}"#),
            _ => json(404, "{}"),
        })
    });
    let work = TempDir::new("rest-origin");
    let run = |tag: &str, path: &str, auth: &str| {
        let out = work.path().join(format!("out-{tag}"));
        // Lines before `[[source.table]]` belong to the source.
        let config = rest_config(
            work.path(),
            &api.url,
            &format!(
                "{auth}\n[[source.table]]\nname = \"t\"\npath = \"{path}\"\nrecords = \"/items\"\n"
            ),
        );
        (run_config(&config, &out, &[("ORIGIN_KEY", KEY)]), out)
    };
    let key = "auth = { header = \"X-Api-Key\", value = \"${ORIGIN_KEY}\" }";
    let ids = |out: &Path| -> Vec<Vec<Cell>> { read_dataset(&out.join("parquet").join("t")).2 };

    // A next URL on another origin, with a key header: refused before it is requested.
    let (o, _) = run("link", "/link", key);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("another origin") && e.contains(&elsewhere.url) && e.contains("`url`"),
        "{e}"
    );
    assert!(!e.contains(KEY), "{e}");
    // A redirect to another origin, with a key header (reqwest would forward it): refused.
    let (o, _) = run("moved", "/moved", key);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("redirected to another origin"), "{e}");
    assert!(
        elsewhere.requests().is_empty(),
        "the other origin was asked: {:?}",
        elsewhere.requests()
    );
    // The same with a bearer token.
    let bearer = "auth = { bearer = \"${ORIGIN_KEY}\" }";
    let (o, _) = run("moved-bearer", "/moved", bearer);
    assert_exit(&o, 1);
    assert!(elsewhere.requests().is_empty());
    // A `${VAR}` header is a secret too, with or without `auth`.
    let header = "headers = { X-Api-Key = \"${ORIGIN_KEY}\" }";
    for (tag, path) in [("header-link", "/link"), ("header-moved", "/moved")] {
        let (o, _) = run(tag, path, header);
        assert_exit(&o, 1);
        assert!(stderr(&o).contains("another origin"), "{}", stderr(&o));
    }
    assert!(elsewhere.requests().is_empty());
    // A redirect within the origin is followed, credentials and all.
    let (o, out) = run("home", "/moved-home", key);
    assert_exit(&o, 0);
    assert_eq!(ids(&out), vec![vec![Cell::Int(3)]]);
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.path == "/home")
            .all(|r| r.header("X-Api-Key") == Some(KEY))
    );
    // Without credentials there is nothing to leak: the next URL elsewhere is followed.
    let (o, out) = run("open", "/link", "");
    assert_exit(&o, 0);
    assert_eq!(ids(&out), vec![vec![Cell::Int(1)], vec![Cell::Int(2)]]);
    assert_eq!(elsewhere.requests().len(), 1);
}

/// An empty collection: with no record and no `types`, no columns are known, so no Parquet part
/// is written (a file without columns is one DuckDB refuses to read) and the run says so; with
/// `types` the table is an empty part with those columns, read by DuckDB and pyarrow.
#[test]
fn an_empty_collection_writes_a_readable_table_or_none() {
    let server = FaultServer::start(Synthetic { rows: 0 }, |req| {
        Some(match req.path.as_str() {
            "/empty" => json(200, "[]"),
            _ => json(404, "{}"),
        })
    });
    let work = TempDir::new("rest-empty");
    // `extra`: more keys of the table.
    let run_cmd = |cmd: &str, tag: &str, extra: &str| {
        let out = work.path().join(format!("out-{cmd}-{tag}"));
        let config = rest_config(
            work.path(),
            &server.url,
            &format!("[[source.table]]\nname = \"empty\"\npaginate = \"none\"\n{extra}\n"),
        );
        (config_cmd(cmd, &config, &out, &[], &[]), out)
    };
    let run = |tag: &str, extra: &str| run_cmd("harvest", tag, extra);
    let (o, out) = run("bare", "");
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("no Parquet part was written") && stderr(&o).contains("types"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("parquet").join("empty").exists());
    assert_eq!(records(&manifest(&out), "parquet").len(), 0);
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );

    let (o, out) = run("typed", "types = { id = \"integer\", name = \"text\" }");
    assert_exit(&o, 0);
    let dir = out.join("parquet").join("empty");
    let script = r#"
import sys, duckdb, pyarrow.dataset as ds
d = sys.argv[1]
con = duckdb.connect()
cols = con.execute(f"select column_name, column_type from (describe select * from read_parquet('{d}/*.parquet'))").fetchall()
assert cols == [("id", "BIGINT"), ("name", "VARCHAR")], cols
assert con.execute(f"select count(*) from read_parquet('{d}/*.parquet')").fetchone()[0] == 0
assert ds.dataset(d, format="parquet").to_table().num_rows == 0
print("ok")
"#;
    python_ok(&readers_python(), script, &[&dir]);
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );

    // `incremental` on an empty collection: the watermark column is unknown until declared.
    let incremental = |tag: &str, extra: &str| {
        run_cmd("incremental", tag, &format!("watermark = \"/id\"\n{extra}")).0
    };
    let o = incremental("bare", "");
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("no records, so no columns are known")
            && stderr(&o).contains("types = { id = \"integer\" }"),
        "{}",
        stderr(&o)
    );
    assert_exit(&incremental("typed", "types = { id = \"integer\" }"), 0);
}

/// `--table` with a REST config picks tables of the config: only those are requested and
/// written, by `harvest` and `incremental` alike; an unknown name lists the known ones, and the
/// flags that describe command-line Datasette tables are refused rather than ignored.
#[test]
fn table_flags_pick_tables_of_a_rest_config() {
    let server = FaultServer::start(Synthetic { rows: 0 }, |req| {
        Some(match req.path.as_str() {
            "/a" => json(200, r#"[{"id": 1}, {"id": 2}]"#),
            "/b" => json(200, r#"[{"id": 3}]"#),
            "/c/3" => json(200, r#"{"id": 3, "detail": "x"}"#),
            _ => json(404, "{}"),
        })
    });
    let work = TempDir::new("rest-pick");
    let config = write_config(
        work.path(),
        &format!(
            r#"[[source]]
kind = "rest"
url = "{}"
[[source.table]]
name = "a"
paginate = "none"
watermark = "/id"
[[source.table]]
name = "b"
paginate = "none"
[[source.table]]
name = "c"
path = "/c/{{id}}"
records = ""
for_each = {{ table = "b", fields = {{ id = "/id" }} }}
"#,
            server.url
        ),
    );
    let run = |tag: &str, cmd: &str, extra: &[&str]| {
        let out = work.path().join(format!("out-{tag}"));
        (config_cmd(cmd, &config, &out, extra, &[]), out)
    };
    let datasets = |out: &Path| -> Vec<String> {
        let mut d: Vec<String> = std::fs::read_dir(out.join("parquet"))
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        d.sort();
        d
    };

    let (o, out) = run("b", "harvest", &["--table", "b", "--table", "c"]);
    assert_exit(&o, 0);
    assert_eq!(datasets(&out), ["b", "c"]);
    assert!(server.requests().iter().all(|r| r.path != "/a"));

    let (o, out) = run("inc", "incremental", &["-t", "a"]);
    assert_exit(&o, 0);
    assert_eq!(datasets(&out), ["a"]);
    assert_eq!(read_dataset(&out.join("parquet").join("a")).2.len(), 2);

    let (o, _) = run("nope", "harvest", &["--table", "nope"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("\"nope\"") && stderr(&o).contains("a, b, c"),
        "{}",
        stderr(&o)
    );
    let (o, _) = run("param", "harvest", &["--table", "a", "--param", "x=1"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--param"), "{}", stderr(&o));
    // A row-driven table without its parent: the parent is named.
    let (o, _) = run("orphan", "harvest", &["--table", "c"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("add --table \"b\""), "{}", stderr(&o));
}

#[test]
fn rest_config_mistakes_are_usage_errors() {
    let work = TempDir::new("rest-config");
    let out = work.path().join("out");
    let cases = [
        ("page_size = 10", "page_size"),
        ("paginate = \"cursor\"", "needs options"),
        (
            "paginate = { kind = \"offset\", limit = 10, pointer = \"/x\" }",
            "no option `pointer`",
        ),
        (
            "paginate = { kind = \"next_url\", pointer = \"next\" }",
            "JSON Pointer",
        ),
        ("paginate = \"sideways\"", "unknown paginator"),
        ("records = \"data\"", "JSON Pointer"),
        ("sort = \"id\"", "sort"),
        // `auto` decides on the first page: nothing to fetch ahead with.
        ("parallel = 2", "parallel = 2 cannot fetch its pages ahead"),
    ];
    for (line, want) in cases {
        let config = write_config(
            work.path(),
            &format!(
                "[[source]]\nkind = \"rest\"\nurl = \"http://127.0.0.1:9\"\n[[source.table]]\nname = \"t\"\n{line}\n"
            ),
        );
        let o = run_config(&config, &out, &[]);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains(want), "{line}: {}", stderr(&o));
    }
    let config = write_config(
        work.path(),
        "[[source]]\nkind = \"rest\"\nurl = \"http://127.0.0.1:9\"\n[[source.table]]\nname = \"t\"\n",
    );
    let o = harvest(
        &[
            "incremental",
            "--config",
            &config,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("no watermark column"), "{}", stderr(&o));
    let config = write_config(
        work.path(),
        "[[source]]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"d\"\n[[source.table]]\nname = \"t\"\npaginate = \"link\"\n",
    );
    let o = run_config(&config, &out, &[]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("for REST tables"), "{}", stderr(&o));
}

/// A proxy in front of json-server that lets a request through only with a bearer token the
/// OAuth2 server signed (RS256, checked against its `/jwks`), issued by it and not expired;
/// `revoke_at`: the request number whose token is revoked from then on (answered 401).
struct TokenGate {
    proxy: FaultServer,
    /// Every token presented, and how many requests were refused.
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn token_gate(oauth: &OAuthServer, upstream: &str, revoke_at: Option<u64>) -> TokenGate {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    let keys = oauth.keys();
    let issuer = oauth.url.clone();
    let upstream = upstream.to_string();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let revoked = Arc::new(Mutex::new(None::<String>));
    let (seen2, refused2) = (seen.clone(), refused.clone());
    let proxy = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        std::thread::sleep(Duration::from_millis(60));
        let token = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        seen2.lock().unwrap().push(token.clone());
        if revoke_at == Some(req.n) {
            *revoked.lock().unwrap() = Some(token.clone());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // One second of leeway for clock skew, as APIs allow: a token sent just before its
        // expiry may arrive just after it on a loaded machine.
        let valid = verified_claims(&token, &keys).is_some_and(|c| {
            c["iss"] == issuer.as_str() && c["exp"].as_u64().is_some_and(|e| e + 1 > now)
        }) && revoked.lock().unwrap().as_deref() != Some(token.as_str());
        if !valid {
            refused2.fetch_add(1, Ordering::SeqCst);
            return Some(json(401, r#"{"error": "invalid_token"}"#));
        }
        Some(forward(&upstream, req, ""))
    });
    TokenGate {
        proxy,
        seen,
        refused,
    }
}

fn oauth_config(dir: &Path, api: &str, auth: &str) -> String {
    write_config(
        dir,
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"{api}\"\nauth = {{ oauth2 = {{ {auth} }} }}\n[[source.table]]\nname = \"posts\"\npaginate = {{ kind = \"offset\", offset_param = \"_start\", limit_param = \"_limit\", limit = 10 }}\n"
        ),
    )
}

/// Client credentials: one token is fetched and reused, renewed before it expires (no request
/// ever carries an expired token), renewed again when the API revokes it (401), and neither
/// the secret nor any token reaches a file or a log line. A wrong secret is exit 4.
#[test]
fn oauth2_client_credentials_tokens_are_reused_renewed_and_never_written() {
    use std::sync::atomic::Ordering;
    const SECRET: &str = "client-s3cret/+&value";
    let n = 600;
    let js = JsonServer::start(&posts_db(n));
    let oauth = OAuthServer::start(3, ("harvest-client", SECRET), ("", ""));
    let gate = token_gate(&oauth, &js.url, Some(10));
    let work = TempDir::new("rest-oauth2");
    let out = work.path().join("out");
    let config = oauth_config(
        work.path(),
        &gate.proxy.url,
        &format!(
            "token_url = \"{}/token\", client_id = \"harvest-client\", client_secret = \"${{CLIENT_SECRET}}\", scopes = [\"posts:read\", \"profile\"]",
            oauth.url
        ),
    );
    let o = run_config(&config, &out, &[("CLIENT_SECRET", SECRET)]);
    assert_exit(&o, 0);
    assert_posts(&out, "posts", 1..=n);
    let seen = gate.seen.lock().unwrap().clone();
    let issued = oauth.issued.load(Ordering::SeqCst);
    let distinct: std::collections::HashSet<&String> = seen.iter().collect();
    // 61 pages at 60 ms each take over 3.6 s: the token revoked at the 10th request is
    // replaced, and the 3 s token after it is renewed (1 s early) before it runs out; far
    // fewer tokens than requests.
    assert!(
        (3..=20).contains(&issued),
        "{issued} tokens for {} requests",
        seen.len()
    );
    assert_eq!(distinct.len() as u64, issued);
    // One refusal: the revoked token, answered by a new one (never an expired token).
    assert_eq!(gate.refused.load(Ordering::SeqCst), 1);
    let tokens: Vec<&str> = distinct.iter().map(|t| t.as_str()).collect();
    assert_nowhere(&o, &out, &[&[SECRET][..], &tokens].concat());
    // A wrong secret: the token endpoint refuses, exit 4, and the message says why.
    let o = run_config(
        &config,
        &work.path().join("out2"),
        &[("CLIENT_SECRET", "nope-123456")],
    );
    assert_exit(&o, 4);
    let e = stderr(&o);
    assert!(
        e.contains("invalid_client") && !e.contains("nope-123456"),
        "{e}"
    );
}

/// The password grant for a public client (no secret): the user's password goes to the
/// token endpoint only.
#[test]
fn oauth2_password_grant_reads_a_protected_api() {
    const PASSWORD: &str = "correct horse battery";
    let n = 120;
    let js = JsonServer::start(&posts_db(n));
    let oauth = OAuthServer::start(300, ("public-app", "unused"), ("ada", PASSWORD));
    let gate = token_gate(&oauth, &js.url, None);
    let work = TempDir::new("rest-oauth2-password");
    let out = work.path().join("out");
    let config = oauth_config(
        work.path(),
        &gate.proxy.url,
        &format!(
            "token_url = \"{}/token\", grant = \"password\", client_id = \"public-app\", username = \"ada\", password = \"${{API_PASSWORD}}\"",
            oauth.url
        ),
    );
    let o = run_config(&config, &out, &[("API_PASSWORD", PASSWORD)]);
    assert_exit(&o, 0);
    assert_posts(&out, "posts", 1..=n);
    assert_eq!(oauth.issued.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(gate.refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_nowhere(&o, &out, &[PASSWORD]);
}

fn stamp(minute: u64) -> String {
    format!("2026-03-01T{:02}:{:02}:00Z", 8 + minute / 60, minute % 60)
}

/// Records 1..=300, two per minute.
fn stamped() -> Vec<Value> {
    (1..=300u64)
        .map(|i| json!({"id": i, "title": format!("t{i}"), "updated_at": stamp(i.div_ceil(2))}))
        .collect()
}

/// `incremental` over REST, with the bound sent as a parameter and without one: every new
/// or changed record once, none twice at the boundary (ties at the old maximum are re-read
/// and skipped by identity), and a run with nothing new adds nothing.
#[test]
fn incremental_over_rest_takes_each_new_record_once() {
    // Two records per minute, so the maximum is shared by two records.
    let js = JsonServer::start(&json!({ "posts": stamped() }));
    let work = TempDir::new("rest-incremental");
    let out = work.path().join("out");
    let config = write_config(
        work.path(),
        &format!(
            r#"
[[source]]
kind = "rest"
url = "{url}"

[[source.table]]
name = "filtered"
path = "/posts"
params = {{ updated_at_gte = "{{watermark}}" }}
watermark = "/updated_at"
paginate = {{ kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 40 }}

[[source.table]]
name = "unfiltered"
path = "/posts"
watermark = "updated_at"
paginate = {{ kind = "offset", offset_param = "_start", limit_param = "_limit", limit = 40 }}
"#,
            url = js.url
        ),
    );
    let run = || config_cmd("incremental", &config, &out, &[], &[]);
    let rows_of = |d: &str| {
        let (names, _, rows) = read_dataset(&out.join("parquet").join(d));
        assert_eq!(names, ["id", "title", "updated_at"]);
        rows
    };
    let as_cells = |recs: &[Value]| -> Vec<Vec<Cell>> {
        recs.iter()
            .map(|r| {
                vec![
                    Cell::Int(r["id"].as_i64().unwrap()),
                    Cell::Text(r["title"].as_str().unwrap().into()),
                    Cell::Text(r["updated_at"].as_str().unwrap().into()),
                ]
            })
            .collect()
    };
    let o = run();
    assert_exit(&o, 0);
    let mut want = as_cells(&stamped());
    for d in ["filtered", "unfiltered"] {
        assert_same_rows(d, rows_of(d), want.clone());
    }

    // 20 new records after the maximum, and 5 old ones changed (new versions).
    let mut added = vec![];
    for i in 301..=320u64 {
        let r = json!({"id": i, "title": format!("t{i}"), "updated_at": stamp(200 + i)});
        assert_eq!(http_send(js.port, "POST", "/posts", &r.to_string()), 201);
        added.push(r);
    }
    for i in [3u64, 50, 120, 200, 298] {
        let patch = json!({"title": format!("t{i} v2"), "updated_at": stamp(600 + i)});
        assert_eq!(
            http_send(js.port, "PATCH", &format!("/posts/{i}"), &patch.to_string()),
            200
        );
        added.push(json!({"id": i, "title": format!("t{i} v2"), "updated_at": stamp(600 + i)}));
    }
    let o = run();
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("no parameter carries {watermark}"),
        "{}",
        stderr(&o)
    );
    want.extend(as_cells(&added));
    for d in ["filtered", "unfiltered"] {
        assert_same_rows(d, rows_of(d), want.clone());
    }
    let m = manifest(&out);
    let ends: Vec<&Value> = records(&m, "table_end");
    let second = |d: &str| {
        ends.iter()
            .filter(|e| e["output"] == d)
            .nth(1)
            .copied()
            .unwrap()
    };
    // The two records at the old maximum came back (>= is inclusive) and were skipped.
    assert_eq!(second("filtered")["watermark"]["skipped_duplicates"], 2);
    assert_eq!(
        second("filtered")["watermark"]["before"],
        "2026-03-01 10:30:00"
    );
    assert_eq!(second("filtered")["rows"], 25);
    // Without the parameter every record was read; those below the bound were dropped.
    assert_eq!(second("unfiltered")["rows"], 25);
    assert_eq!(second("unfiltered")["watermark"]["skipped_below"], 298 - 5);
    // The API was asked for records at or past the old maximum.
    let page1 = pages_of(&m, "filtered")
        .into_iter()
        .rfind(|p| p["page"] == 1)
        .unwrap();
    assert_eq!(page1["params"]["updated_at_gte"], "2026-03-01T10:30:00Z");

    // Nothing new: nothing added.
    let o = run();
    assert_exit(&o, 0);
    for d in ["filtered", "unfiltered"] {
        assert_same_rows(d, rows_of(d), want.clone());
    }
    assert_exit(
        &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
        0,
    );
}

/// httpbin (PyPI) as the API: basic and bearer auth accepted and refused (exit 4, nothing
/// recorded), redirects followed with the final body snapshotted, a 503 retried until the
/// budget is spent (exit 5), a 404 first page (exit 2), and a single-object endpoint read as
/// one record.
#[test]
fn httpbin_auth_redirects_and_status_codes() {
    const PASS: &str = "pa55-w0rd!";
    let hb = HttpBin::start();
    let work = TempDir::new("rest-httpbin");
    let run = |tag: &str, auth: &str, path: &str, envs: &[(&str, &str)]| {
        let out = work.path().join(format!("out-{tag}"));
        let config = write_config(
            work.path(),
            &format!(
                "[http]\nmax_attempts = 3\n[[source]]\nkind = \"rest\"\nurl = \"{}\"\n{auth}\n[[source.table]]\nname = \"t\"\npath = \"{path}\"\nrecords = \"\"\npaginate = \"none\"\n",
                hb.url
            ),
        );
        (run_config(&config, &out, envs), out)
    };
    let basic = "auth = { user = \"ada\", password = \"${HB_PASS}\" }";
    // httpbin's /basic-auth/USER/PASSWORD names the expected password in its own path.
    let path = format!("/basic-auth/ada/{PASS}");
    let (o, out) = run("basic", basic, &path, &[("HB_PASS", PASS)]);
    assert_exit(&o, 0);
    let (names, _, rows) = read_dataset(&out.join("parquet").join("t"));
    assert_eq!(names, ["authenticated", "user"]);
    assert_eq!(rows, vec![vec![Cell::Int(1), Cell::Text("ada".into())]]);
    // The password was in the URL: every recorded URL shows it redacted.
    assert_nowhere(&o, &out, &[PASS]);
    let (o, out) = run("basic-wrong", basic, &path, &[("HB_PASS", "not-it-000")]);
    assert_exit(&o, 4);
    assert!(records(&manifest(&out), "page").is_empty());

    let bearer = "auth = { bearer = \"${HB_TOKEN}\" }";
    let (o, _) = run("bearer", bearer, "/bearer", &[("HB_TOKEN", "tok-123456")]);
    assert_exit(&o, 0);
    let (o, _) = run("bearer-none", "", "/bearer", &[]);
    assert_exit(&o, 4);

    // Redirects are followed; the snapshot is the final body and the record its fields.
    let (o, out) = run("redirect", "", "/redirect/3", &[]);
    assert_exit(&o, 0);
    let (names, _, rows) = read_dataset(&out.join("parquet").join("t"));
    let url_col = names.iter().position(|n| n == "url").unwrap();
    assert_eq!(rows[0][url_col], Cell::Text(format!("{}/get", hb.url)));
    assert!(names.contains(&"headers__Host".to_string()), "{names:?}");

    let (o, out) = run("503", "", "/status/503", &[]);
    assert_exit(&o, 5);
    assert!(records(&manifest(&out), "page").is_empty());
    let (o, _) = run("404", "", "/status/404", &[]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
}
