//! Every paging shape of `docs/rest.md` against the documented shapes of well-known APIs
//! ([`crate::api_shapes`]): each table read row for row, `auto` on the shapes it can tell,
//! exit 2 with nothing written when `auto` sees signs of more it cannot follow, and kill -9
//! resume exactly once on the last-record cursor, the POST body cursor and the windows.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::api_shapes::{self, N};
use crate::common::*;
use crate::rest::write_config;

/// The column `col` of dataset `name`, as the record numbers it holds (`prefix` stripped from
/// text ids), in the order written.
fn ids(out: &Path, name: &str, col: &str, prefix: &str) -> Vec<u64> {
    let (names, _, rows) = read_dataset(&out.join("parquet").join(name));
    let c = names
        .iter()
        .position(|n| n == col)
        .unwrap_or_else(|| panic!("{name} has no column {col}: {names:?}"));
    rows.iter()
        .map(|r| match &r[c] {
            Cell::Int(i) => *i as u64,
            Cell::Text(t) => t
                .strip_prefix(prefix)
                .unwrap_or(t)
                .parse()
                .unwrap_or_else(|_| panic!("{name}.{col}: {t:?}")),
            other => panic!("{name}.{col}: {other:?}"),
        })
        .collect()
}

fn all() -> Vec<u64> {
    (1..=N).collect()
}

const TABLES: &str = r#"
[[source.table]]
name = "stripe"
path = "/v1/customers"
params = { limit = 10 }
paginate = { kind = "cursor", last_record = "/id", param = "starting_after", has_more = "/has_more" }

[[source.table]]
name = "stripe_auto"
path = "/v1/customers"
params = { limit = 10 }

[[source.table]]
name = "notion"
path = "/v1/databases/db1/query"
method = "POST"
body = { page_size = 10, filter = { property = "name", rich_text = { is_not_empty = true } } }
records = "/results"
paginate = { kind = "cursor", pointer = "/next_cursor", body_field = "/start_cursor", has_more = "/has_more" }

[[source.table]]
name = "notion_auto"
path = "/v1/databases/db1/query"
method = "POST"
body = { page_size = 10 }
records = "/results"

[[source.table]]
name = "zendesk"
path = "/api/v2/incremental/tickets/cursor.json"
params = { start_time = 0 }
records = "/tickets"
paginate = { kind = "next_url", pointer = "/after_url", done = "/end_of_stream" }

[[source.table]]
name = "zendesk_auto"
path = "/api/v2/incremental/tickets/cursor.json"
params = { start_time = 0 }
records = "/tickets"

[[source.table]]
name = "graphql"
path = "/graphql"
method = "POST"
body = { query = "query($first: Int, $after: String) { items(first: $first, after: $after) { nodes { id name amount created } pageInfo { endCursor hasNextPage } } }", variables = { first = 10 } }
records = "/data/items/nodes"
paginate = { kind = "cursor", pointer = "/data/items/pageInfo/endCursor", body_field = "/variables/after", has_more = "/data/items/pageInfo/hasNextPage" }

[[source.table]]
name = "search"
path = "/idx/_search"
method = "POST"
body = { size = 10, sort = [{ created = "asc" }, { _id = "asc" }] }
records = "/hits/hits"
paginate = { kind = "cursor", last_record = "/sort", body_field = "/search_after" }

[[source.table]]
name = "events"
path = "/events"
paginate = { kind = "cursor", from_header = "X-Next-Cursor", to_header = "X-Cursor" }

[[source.table]]
name = "commits"
path = "/commits"
paginate = { kind = "page_number", param = "page", start = 1 }
window = { start_param = "since", end_param = "until", from = "2024-01-01", to = "2024-01-03", step = "1d" }

[[source.table]]
name = "ndjson"
path = "/export.ndjson"
format = "ndjson"

[[source.table]]
name = "csv"
path = "/export.csv"
format = "csv"
types = { id = "integer", amount = "float" }
paginate = { kind = "page_number", param = "page", start = 1 }

[[source.table]]
name = "keyed"
path = "/keyed"
records = "/items"
records_from = "values"
paginate = { kind = "cursor", pointer = "/next", param = "after" }

[[source.table]]
name = "commits_6h"
path = "/commits"
paginate = { kind = "page_number", param = "page", start = 1 }
window = { start_param = "since", end_param = "until", from = "2024-01-01T00:00:00Z", to = "2024-01-03T00:00:00Z", step = "6h" }
"#;

fn config(dir: &Path, url: &str) -> String {
    write_config(
        dir,
        &format!(
            r#"
[[source]]
kind = "rest"
url = "{url}"
{TABLES}
[[source]]
kind = "rest"
name = "salesforce"
url = "{url}/services/data/v58.0"

[[source.table]]
name = "salesforce"
path = "/query"
params = {{ q = "SELECT Id, Name FROM Account" }}
records = "/records"
paginate = {{ kind = "next_url", pointer = "/nextRecordsUrl", done = "/done" }}

[[source.table]]
name = "salesforce_auto"
path = "/query"
params = {{ q = "SELECT Id, Name FROM Account" }}
records = "/records"
"#
        ),
    )
}

fn check_every_shape(out: &Path) {
    for (name, col, prefix) in [
        ("stripe", "id", "cus_"),
        ("stripe_auto", "id", "cus_"),
        ("notion", "id", ""),
        ("notion_auto", "id", ""),
        ("zendesk", "id", ""),
        ("zendesk_auto", "id", ""),
        ("graphql", "id", ""),
        ("search", "_source__id", ""),
        ("events", "id", ""),
        ("commits", "id", ""),
        ("commits_6h", "id", ""),
        ("ndjson", "id", ""),
        ("csv", "id", ""),
        ("keyed", "id", ""),
        ("keyed", "_key", "k"),
        ("salesforce", "Id", "001"),
        ("salesforce_auto", "Id", "001"),
    ] {
        assert_eq!(ids(out, name, col, prefix), all(), "{name}");
    }
}

#[test]
fn every_documented_paging_shape_reads_every_record_once() {
    let server = api_shapes::start(N);
    let work = TempDir::new("paging-shapes");
    let cfg = config(work.path(), &server.url);
    let out = work.path().join("out");
    let o = harvest(
        &["harvest", "--config", &cfg, "--out", out.to_str().unwrap()],
        &[],
    );
    assert_exit(&o, 0);
    check_every_shape(&out);
    // The search's token kept its JSON types (the server asserts it), and the whole hit is
    // kept: the sort array as JSON text.
    let (names, _, rows) = read_dataset(&out.join("parquet/search"));
    let sort = names.iter().position(|n| n == "sort").unwrap();
    assert_eq!(
        rows[0][sort],
        Cell::Text(format!("[{},\"doc-1\"]", api_shapes::created(1) * 1000))
    );
    // CSV: quoted commas, doubled quotes and newlines read back; declared types applied,
    // the rest text. NDJSON keeps each line's field order.
    let (names, types, rows) = read_dataset(&out.join("parquet/csv"));
    assert_eq!(names, ["id", "name", "amount", "created"]);
    assert_eq!(format!("{:?}", types), "[Int64, Utf8, Float64, Utf8]");
    for (k, r) in rows.iter().enumerate() {
        let i = k as u64 + 1;
        assert_eq!(r[1], Cell::Text(api_shapes::csv_name(i)));
        assert_eq!(r[2], real(i as f64 * 1.5));
    }
    // (the test server writes each line's fields sorted by name)
    let (names, _, _) = read_dataset(&out.join("parquet/ndjson"));
    assert_eq!(names, ["amount", "created", "id", "name"]);
    let (names, _, _) = read_dataset(&out.join("parquet/keyed"));
    assert_eq!(names[0], "_key");
    // The same, value for value, by readers nobody here wrote: DuckDB and pyarrow.
    python_ok(
        &readers_python(),
        r#"
import sys, datetime, duckdb, pyarrow.parquet as pq
out = sys.argv[1]
def created(i):
    t = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=i)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
def name(i):
    return [f"name, {i}", f'say "{i}"', f"two\nlines {i}"][i % 3]
want = [(i, name(i), i * 1.5, created(i)) for i in range(1, 48)]
got = duckdb.sql(f"select id, name, amount, created from read_parquet('{out}/parquet/csv/*.parquet') order by id").fetchall()
assert got == want, (got[:3], want[:3])
t = pq.read_table(f"{out}/parquet/csv")
assert [str(f.type) for f in t.schema] == ["int64", "string", "double", "string"], t.schema
keyed = duckdb.sql(f"select _key, id, name from read_parquet('{out}/parquet/keyed/*.parquet') order by _key").fetchall()
assert keyed == [(f"k{i:03}", i, f"name {i}") for i in range(1, 48)], keyed[:3]
"#,
        &[&out],
    );
    let m = manifest(&out);
    let pages = |name: &str| -> Vec<&Value> {
        records(&m, "page")
            .into_iter()
            .filter(|p| p["output"] == name)
            .collect()
    };
    // auto recorded what it chose, with the stop flags it saw.
    let stripe = pages("stripe_auto");
    assert_eq!(stripe.len(), 5);
    assert_eq!(stripe[0]["paging"]["last_record"], "/id");
    assert_eq!(stripe[0]["paging"]["has_more"], "/has_more");
    assert_eq!(
        pages("notion_auto")[0]["paging"]["body_field"],
        "/start_cursor"
    );
    assert_eq!(pages("zendesk_auto")[0]["paging"]["done"], "/end_of_stream");
    assert_eq!(
        pages("salesforce_auto")[0]["paging"]["pointer"],
        "/nextRecordsUrl"
    );
    // A POST page records its method and the sha256 of the body it sent; the body cursor is
    // in cursor_in, so the request can be rebuilt.
    let notion = pages("notion");
    assert_eq!(notion.len(), 5);
    assert_eq!(notion[1]["method"], "POST");
    assert_eq!(notion[1]["request_body_sha256"].as_str().unwrap().len(), 64);
    let c: Value = serde_json::from_str(notion[1]["cursor_in"].as_str().unwrap()).unwrap();
    assert_eq!(c["token"], "c-11");
    // Zendesk stops on end_of_stream though after_url is still set: no extra request.
    assert_eq!(pages("zendesk").len(), 5);
    // The windows: two days, each paged; the 6-hour ones sent as RFC 3339 instants.
    let w = pages("commits_6h");
    assert!(
        w[0]["url"]
            .as_str()
            .unwrap()
            .contains("since=2024-01-01T00%3A00%3A00Z")
    );
    assert!(
        pages("commits")[0]["url"]
            .as_str()
            .unwrap()
            .contains("since=2024-01-01&until=2024-01-02")
    );
    // Salesforce's nextRecordsUrl is relative to the host, not to the source's path.
    let sf = pages("salesforce");
    assert!(
        sf[1]["url"]
            .as_str()
            .unwrap()
            .ends_with("/services/data/v58.0/query/01gXX-10"),
        "{}",
        sf[1]["url"]
    );
    let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
    assert_exit(&v, 0);
}

/// `auto` with a body that says there is more but shows no way to it: exit 2, nothing
/// written for the table, and the message names what it saw and the setting to use.
#[test]
fn auto_refuses_a_first_page_that_says_there_is_more() {
    let server = api_shapes::start(N);
    let work = TempDir::new("paging-auto-more");
    for (path, params, seen) in [
        ("/more/has_more", "", "has_more is true"),
        ("/more/done", "", "done is false"),
        (
            "/more/total",
            "",
            "total is 47 but the page holds 3 records",
        ),
        (
            "/more/limit",
            "params = { limit = 3 }",
            "asked for limit = 3",
        ),
        ("/more/link_last", "", "names a last page"),
    ] {
        let cfg = write_config(
            work.path(),
            &format!(
                "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n\n[[source.table]]\nname = \"t\"\npath = \"{path}\"\n{params}\n",
                server.url
            ),
        );
        let out = work.path().join(format!("out{}", path.replace('/', "_")));
        let o = harvest(
            &["harvest", "--config", &cfg, "--out", out.to_str().unwrap()],
            &[],
        );
        assert_exit_saying(&o, 2, seen);
        assert!(stderr(&o).contains("paginate = {"), "{}", stderr(&o));
        assert!(
            !out.join("parquet/t").exists() || all_files(&out.join("parquet/t")).is_empty(),
            "{path}: something was written"
        );
    }
    // No sign of more: one page is the whole table, and the run succeeds.
    let cfg = write_config(
        work.path(),
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n\n[[source.table]]\nname = \"t\"\npath = \"/more/none\"\n",
            server.url
        ),
    );
    let out = work.path().join("out_none");
    let o = harvest(
        &["harvest", "--config", &cfg, "--out", out.to_str().unwrap()],
        &[],
    );
    assert_exit(&o, 0);
    assert_eq!(ids(&out, "t", "id", ""), vec![1, 2, 3]);
}

/// SIGKILL at seeded moments during the last-record cursor, the POST body cursor and the
/// windows, then a run to completion: every record once, no recorded page fetched again.
#[test]
fn kill_9_on_the_new_cursors_then_resume_exactly_once() {
    let n = 400;
    let inner = api_shapes::start(n);
    let upstream = inner.url.clone();
    // Slow every page a little so that kills land mid-run, relaying the request as it came.
    let port: u16 = upstream.rsplit(':').next().unwrap().parse().unwrap();
    let slow = crate::fault_server::FaultServer::start(
        crate::fault_server::Synthetic { rows: 0 },
        move |_| {
            Some(crate::fault_server::Action::Forward {
                port,
                delay: Duration::from_millis(15),
                lose_answer: false,
            })
        },
    );
    let work = TempDir::new("paging-kill");
    let cfg = write_config(
        work.path(),
        &format!(
            r#"
[[source]]
kind = "rest"
url = "{url}"

[[source.table]]
name = "stripe"
path = "/v1/customers"
params = {{ limit = 10 }}
paginate = {{ kind = "cursor", last_record = "/id", param = "starting_after", has_more = "/has_more" }}

[[source.table]]
name = "notion"
path = "/v1/databases/db1/query"
method = "POST"
body = {{ page_size = 10 }}
records = "/results"
paginate = {{ kind = "cursor", pointer = "/next_cursor", body_field = "/start_cursor", has_more = "/has_more" }}

[[source.table]]
name = "commits"
path = "/commits"
paginate = {{ kind = "page_number", param = "page", start = 1 }}
window = {{ start_param = "since", end_param = "until", from = "2024-01-01", to = "2024-01-18", step = "1d" }}
"#,
            url = slow.url
        ),
    );
    let want: Vec<u64> = (1..=n).collect();
    let mut landed = 0;
    for seed in 1..=3u64 {
        let out = work.path().join(format!("out{seed}"));
        let args = [
            "harvest",
            "-q",
            "--config",
            &cfg,
            "--part-rows",
            "25",
            "--out",
            out.to_str().unwrap(),
        ];
        landed += kill_at_seeded_moments(&args, seed, 300);
        let o = harvest(&args, &[]);
        assert_exit(&o, 0);
        let mut s = ids(&out, "stripe", "id", "cus_");
        let mut no = ids(&out, "notion", "id", "");
        let mut c = ids(&out, "commits", "id", "");
        for (name, got) in [("stripe", &mut s), ("notion", &mut no), ("commits", &mut c)] {
            got.sort_unstable();
            assert_eq!(got, &want, "seed {seed}: {name}");
        }
        assert_no_page_fetched_twice(&out, &format!("seed {seed}"));
        assert_exit(
            &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
            0,
        );
    }
    assert!(landed >= 2, "too few kills landed mid-run ({landed})");
}

/// Paginator mistakes are usage errors naming the key and the fix, before any request.
#[test]
fn paginator_mistakes_are_named_before_any_request() {
    let work = TempDir::new("paging-mistakes");
    for (table, says) in [
        (
            r#"paginate = { kind = "cursor", param = "after" }"#,
            "needs the place its token is read",
        ),
        (
            r#"paginate = { kind = "cursor", pointer = "/a", last_record = "/id", param = "after" }"#,
            "takes one of `pointer`, `last_record`, not several",
        ),
        (
            r#"paginate = { kind = "cursor", pointer = "/next", body_field = "/cursor" }"#,
            "the table sends GET",
        ),
        ("method = \"PUT\"", "a paged table sends GET or POST"),
        ("body = { a = 1 }", "a GET request has no body"),
        (
            r#"window = { start_param = "since", end_param = "until", from = "yesterday", step = "1d" }"#,
            "is not a date or an instant",
        ),
        (
            r#"window = { start_param = "since", end_param = "until", from = "2024-01-01", step = "1 day" }"#,
            "is not a step",
        ),
        (
            r#"paginate = { kind = "none", has_more = "/has_more" }"#,
            "has no option `has_more`",
        ),
        ("format = \"xml\"", "is not a page format"),
        (
            "format = \"csv\"\npaginate = { kind = \"next_url\", pointer = \"/next\" }",
            "cannot work with format = \"csv\"",
        ),
    ] {
        let cfg = write_config(
            work.path(),
            &format!(
                "[[source]]\nkind = \"rest\"\nurl = \"http://127.0.0.1:9\"\n\n[[source.table]]\nname = \"t\"\n{table}\n"
            ),
        );
        let out = work.path().join("out");
        let o = harvest(
            &["harvest", "--config", &cfg, "--out", out.to_str().unwrap()],
            &[],
        );
        assert_exit_saying(&o, 2, says);
    }
}

/// Two `incremental` runs of one table against a server holding 30 records, then all `N`:
/// `table` is the `[[source.table]]` text; returns the output directory, the server (to look
/// at its requests) and how many requests the first run made.
fn two_incremental_runs(
    work: &TempDir,
    table: &str,
    check_first: impl Fn(&Path, &crate::fault_server::FaultServer),
) -> (std::path::PathBuf, crate::fault_server::FaultServer, usize) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let n = Arc::new(AtomicU64::new(30));
    let server = api_shapes::start_growing(Arc::clone(&n));
    let cfg = write_config(
        work.path(),
        &format!(
            "[[source]]\nkind = \"rest\"\nurl = \"{}\"\n\n[[source.table]]\n{table}\n",
            server.url
        ),
    );
    let out = work.path().join("out");
    let run = || crate::rest::config_cmd("incremental", &cfg, &out, &[], &[]);
    assert_exit(&run(), 0);
    check_first(&out, &server);
    let before = server.requests().len();
    n.store(N, Ordering::SeqCst);
    assert_exit(&run(), 0);
    (out, server, before)
}

/// `incremental` over time windows: the second run's windows start at the stored watermark,
/// and every record is written once.
#[test]
fn incremental_windows_start_at_the_watermark() {
    let work = TempDir::new("paging-windows-incremental");
    let (out, server, before) = two_incremental_runs(
        &work,
        r#"name = "commits"
path = "/commits"
watermark = "created"
paginate = { kind = "page_number", param = "page", start = 1 }
window = { start_param = "since", end_param = "until", from = "2024-01-01T00:00:00Z", to = "2024-01-03T00:00:00Z", step = "12h" }"#,
        |out, _| assert_eq!(ids(out, "commits", "id", ""), (1..=30).collect::<Vec<_>>()),
    );
    let mut got = ids(&out, "commits", "id", "");
    got.sort_unstable();
    assert_eq!(got, all());
    // The second run asked only for windows from the watermark (record 30's time) on.
    let first_query = &server.requests()[before].query;
    let since = first_query.iter().find(|(k, _)| k == "since").unwrap();
    assert_eq!(since.1, api_shapes::created_text(30));
}

/// `incremental` over a POST search: `{watermark}` in the body is the stored bound on the
/// second run (and left out on the first), and every record is written once.
#[test]
fn incremental_fills_the_watermark_into_a_post_body() {
    let work = TempDir::new("paging-body-watermark");
    let (out, server, before) = two_incremental_runs(
        &work,
        r#"name = "search"
path = "/idx/_search"
method = "POST"
body = { size = 10, sort = [{ created = "asc" }], query = { range = { created = { gte = "{watermark}" } } } }
records = "/hits/hits"
watermark = "_source__created"
paginate = { kind = "cursor", last_record = "/sort", body_field = "/search_after" }"#,
        |out, server| {
            // No bound yet: the entry holding the slot is left out.
            let first: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
            assert_eq!(
                first["query"],
                serde_json::json!({"range": {"created": {}}})
            );
            assert_eq!(
                ids(out, "search", "_source__id", ""),
                (1..=30).collect::<Vec<_>>()
            );
        },
    );
    let second: Value = serde_json::from_slice(&server.requests()[before].body).unwrap();
    assert_eq!(
        second["query"]["range"]["created"]["gte"],
        api_shapes::created_text(30)
    );
    let mut got = ids(&out, "search", "_source__id", "");
    got.sort_unstable();
    assert_eq!(got, all());
}
