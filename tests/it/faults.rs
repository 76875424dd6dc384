//! Failures a real server won't produce on demand, through the in-process fault server: each
//! ends in the documented behaviour and exit code, and the output stays trustworthy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fault_server::*;

pub const ROWS: u64 = 250; // 3 pages of 100

pub fn run(server: &FaultServer, out: &TempDir, extra: &[&str]) -> std::process::Output {
    let mut rest = vec!["--table", "items", "--page-size", "100"];
    rest.extend_from_slice(extra);
    run_job(
        "harvest",
        &server.url,
        "db",
        out.path().to_str().unwrap(),
        &rest,
    )
}

/// The harvested `items` equal the synthetic table exactly.
#[track_caller]
pub fn assert_items_complete(out: &TempDir) {
    let (names, _, got) = read_dataset(&out.path().join("parquet/items"));
    assert_eq!(names, ["id", "name", "price", "category"]);
    assert_same_rows("items", got, synthetic_rows());
    let m = manifest(out.path());
    assert_eq!(records(&m, "page").len(), 3);
    assert_eq!(records(&m, "run_end").last().unwrap()["outcome"], "ok");
}

/// The synthetic table's rows, as a lossless harvest must type them.
pub fn synthetic_rows() -> Vec<Vec<Cell>> {
    synthetic_rows_n(ROWS)
}

/// The first `n` rows of the synthetic table.
pub fn synthetic_rows_n(n: u64) -> Vec<Vec<Cell>> {
    (1..=n)
        .map(|id| {
            let (i, n, p, c) = Synthetic::row(id);
            vec![
                Cell::Int(i),
                Cell::Text(n),
                real(p),
                c.map_or(Cell::Null, |c| Cell::Text(c.into())),
            ]
        })
        .collect()
}

/// Fail the first `times` requests for page 2 (cursor "100") with `action`.
fn fail_page2(
    times: u32,
    action: impl Fn(&Request) -> Action + Send + Sync + 'static,
) -> FaultServer {
    let left = Arc::new(AtomicU32::new(times));
    FaultServer::start(Synthetic { rows: ROWS }, move |req| {
        if req.path == "/db/items.json"
            && req.param("_next") == Some("100")
            && left.load(Ordering::SeqCst) > 0
        {
            left.fetch_sub(1, Ordering::SeqCst);
            return Some(action(req));
        }
        None
    })
}

fn page2_attempts(out: &TempDir) -> u64 {
    let m = manifest(out.path());
    records(&m, "page")[1]["attempts"].as_u64().unwrap()
}

#[test]
fn a_clean_run_against_the_fault_server() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |_| None);
    let out = TempDir::new("clean");
    let o = run(&server, &out, &[]);
    assert_exit(&o, 0);
    assert_items_complete(&out);
    // The SQL endpoint was refused, so types came from the first page; ints stay ints.
    let m = manifest(out.path());
    let schema = &records(&m, "parquet")[0]["schema"];
    assert_eq!(schema[0]["type"], "integer");
    assert_eq!(schema[2]["type"], "float");
}

#[test]
fn status_429_with_retry_after_seconds_and_http_date_is_retried() {
    let n = Arc::new(AtomicU32::new(0));
    let server = fail_page2(2, move |_| {
        let first = n.fetch_add(1, Ordering::SeqCst) == 0;
        let ra = if first {
            "1".to_string()
        } else {
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(1))
        };
        Action::Respond {
            status: 429,
            headers: vec![("Retry-After".into(), ra)],
            body: b"slow down".to_vec(),
        }
    });
    let out = TempDir::new("429");
    let o = run(&server, &out, &[]);
    assert_exit(&o, 0);
    assert_items_complete(&out);
    assert_eq!(page2_attempts(&out), 3);
    assert!(stderr(&o).contains("429"), "{}", stderr(&o));
}

#[test]
fn retry_after_is_actually_waited_for() {
    let server = fail_page2(1, |_| Action::Respond {
        status: 503,
        headers: vec![("Retry-After".into(), "2".into())],
        body: vec![],
    });
    let out = TempDir::new("ra-wait");
    let started = Instant::now();
    let o = harvest(
        &[
            "harvest",
            "--url",
            &server.url,
            "--db",
            "db",
            "--table",
            "items",
            "--page-size",
            "100",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[("HARVEST_NO_RETRY_SLEEP", "0")],
    );
    assert_exit(&o, 0);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 was not honoured"
    );
    assert_items_complete(&out);
}

#[test]
fn server_errors_500_502_503_504_are_retried() {
    let n = Arc::new(AtomicU32::new(0));
    let server = fail_page2(4, move |_| {
        let status = [500, 502, 503, 504][n.fetch_add(1, Ordering::SeqCst) as usize % 4];
        json(status, "{\"error\": \"boom\"}")
    });
    let out = TempDir::new("5xx");
    let o = run(&server, &out, &[]);
    assert_exit(&o, 0);
    assert_items_complete(&out);
    assert_eq!(page2_attempts(&out), 5);
}

#[test]
fn connection_reset_is_retried() {
    let server = fail_page2(2, |_| Action::Reset);
    let out = TempDir::new("reset");
    let o = run(&server, &out, &[]);
    assert_exit(&o, 0);
    assert_items_complete(&out);
    assert_eq!(page2_attempts(&out), 3);
}

#[test]
fn truncated_bodies_are_retried_and_never_saved() {
    let syn = Synthetic { rows: ROWS };
    let n = Arc::new(AtomicU32::new(0));
    let server = fail_page2(2, move |req| {
        let body = body_of(&syn.page(req));
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            // Content-Length promised, connection dropped half way.
            Action::Truncate {
                keep: body.len() / 2,
                body,
            }
        } else {
            // No length promised: the JSON itself ends early.
            Action::Respond {
                status: 200,
                headers: vec![],
                body: body[..body.len() / 2].to_vec(),
            }
        }
    });
    let out = TempDir::new("trunc");
    let o = run(&server, &out, &[]);
    assert_exit(&o, 0);
    assert_items_complete(&out);
    assert_eq!(page2_attempts(&out), 3);
    // Every snapshot on disk is a complete, parseable page whose hash the manifest records.
    for rec in records(&manifest(out.path()), "page") {
        let bytes = std::fs::read(out.path().join(rec["path"].as_str().unwrap())).unwrap();
        assert_eq!(
            harvest::manifest::sha256_hex(&bytes),
            rec["sha256"].as_str().unwrap()
        );
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
    }
}

#[test]
fn stalled_body_times_out_and_is_retried() {
    let syn = Synthetic { rows: ROWS };
    let server = fail_page2(1, move |req| {
        let body = body_of(&syn.page(req));
        Action::Stall {
            keep: 10,
            body,
            pause: Duration::from_secs(20),
        }
    });
    let out = TempDir::new("stall");
    let started = Instant::now();
    let o = run(&server, &out, &["--stall-timeout", "0.5"]);
    assert_exit(&o, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the stall was waited out, not timed out"
    );
    assert_items_complete(&out);
    assert!(stderr(&o).contains("stalled"), "{}", stderr(&o));
}

#[test]
fn auth_rejections_exit_4_without_retrying() {
    for status in [401u16, 403] {
        let server = FaultServer::start(Synthetic { rows: ROWS }, move |req| {
            (req.path == "/db/items.json")
                .then(|| json(status, "{\"error\": \"Permission denied\"}"))
        });
        let out = TempDir::new("auth");
        let o = run(&server, &out, &[]);
        assert_exit(&o, 4);
        let err = stderr(&o);
        assert!(
            err.contains(&status.to_string()) && err.contains("credentials"),
            "{err}"
        );
        assert!(
            err.contains("hint: check the credentials: the source's `auth`"),
            "exit 4 says what to do: {err}"
        );
        let table_requests = server
            .requests()
            .iter()
            .filter(|r| r.path == "/db/items.json")
            .count();
        assert_eq!(table_requests, 1, "{status} must not be retried");
        let m = manifest(out.path());
        assert!(
            records(&m, "run_end")[0]["outcome"]
                .as_str()
                .unwrap()
                .starts_with("failed")
        );
        assert!(
            !out.path().join("parquet/items").exists(),
            "no Parquet for a failed table"
        );
    }
}

#[test]
fn retry_budget_exhausted_exits_5_and_says_rerun_resumes() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |req| {
        (req.path == "/db/items.json" && req.param("_next") == Some("100")).then(|| json(503, "{}"))
    });
    let out = TempDir::new("budget");
    let o = run(&server, &out, &["--max-attempts", "3"]);
    assert_exit(&o, 5);
    let err = stderr(&o);
    assert!(
        err.contains("gave up") && err.contains("3 attempts"),
        "{err}"
    );
    assert!(
        err.contains("hint: what was recorded is kept")
            && err.contains("rerun the same command")
            && err.contains("--retry-budget"),
        "exit 5 says what to do: {err}"
    );
    let page2 = server
        .requests()
        .iter()
        .filter(|r| r.param("_next") == Some("100"))
        .count();
    assert_eq!(page2, 3);
    // Nothing half-written is visible: no temp files, and no unrecorded Parquet part.
    for f in all_files(out.path()) {
        assert!(
            !f.to_string_lossy().contains("harvest-tmp"),
            "left behind: {}",
            f.display()
        );
    }
    let parts = all_files(out.path())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert_eq!(parts, 0, "no Parquet part from a failed table");
}

fn bad_body_case(tag: &str, body: &'static str, expect: &str) {
    let server = FaultServer::start(Synthetic { rows: ROWS }, move |req| {
        (req.path == "/db/items.json").then(|| Action::Respond {
            status: 200,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: body.as_bytes().to_vec(),
        })
    });
    let out = TempDir::new(tag);
    let o = run(&server, &out, &[]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains(expect), "{tag}: {}", stderr(&o));
    let attempts = server
        .requests()
        .iter()
        .filter(|r| r.path == "/db/items.json")
        .count();
    assert_eq!(attempts, 1, "{tag}: a wrong body is not retried");
    assert!(
        records(&manifest(out.path()), "page").is_empty(),
        "{tag}: no page recorded"
    );
}

#[test]
fn html_error_page_with_200_exits_1() {
    bad_body_case(
        "html",
        "<html><body><h1>Service temporarily unavailable</h1></body></html>",
        "HTML",
    );
}

#[test]
fn non_json_body_exits_1() {
    bad_body_case("nonjson", "rows=1,2,3", "not valid JSON");
}

#[test]
fn json_of_the_wrong_shape_exits_1() {
    bad_body_case("shape", r#"{"results": [1, 2, 3]}"#, "no \"rows\" array");
}

#[test]
fn repeated_next_token_is_an_error_not_a_loop() {
    let syn = Synthetic { rows: ROWS };
    let server = FaultServer::start(syn, move |req| {
        // Page 2 points back at itself, like Datasette's blob-sort bug.
        (req.path == "/db/items.json" && req.param("_next") == Some("100")).then(|| {
            let body = String::from_utf8(body_of(&syn.page(req))).unwrap();
            json(200, body.replace("\"next\": \"200\"", "\"next\": \"100\""))
        })
    });
    let out = TempDir::new("repeat");
    let o = run(&server, &out, &[]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("a second time"), "{}", stderr(&o));
    assert!(server.requests().len() < 10);
}

#[test]
fn unknown_table_exits_2_naming_it() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |_| None);
    let out = TempDir::new("404");
    let o = run_job(
        "harvest",
        &server.url,
        "db",
        out.path().to_str().unwrap(),
        &["--table", "nope"],
    );
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("\"nope\" was not found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn body_over_the_cap_exits_1() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |_| None);
    let out = TempDir::new("cap");
    let o = run(&server, &out, &["--max-body-bytes", "1000"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("larger than the 1000-byte cap"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_token_never_touches_disk_or_logs() {
    const TOKEN: &str = "dstok_SeCrEt-7f3a9c1e-do-not-leak";
    let server = FaultServer::start(Synthetic { rows: ROWS }, |req| {
        let ok = req.header("authorization") == Some(&format!("Bearer {TOKEN}"));
        if !ok {
            return Some(json(401, "{}"));
        }
        // Fail once mid-run so retry logging is exercised too.
        (req.param("_next") == Some("200") && req.n % 2 == 0).then(|| json(503, "{}"))
    });
    let out = TempDir::new("token");
    let o = harvest(
        &[
            "harvest",
            "-v",
            "--url",
            &server.url,
            "--db",
            "db",
            "--table",
            "items",
            "--page-size",
            "100",
            "--token-env",
            "DS_TOKEN",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[("DS_TOKEN", TOKEN), ("HARVEST_LOG", "trace")],
    );
    assert_exit(&o, 0);
    assert_items_complete(&out);
    let needle = TOKEN.as_bytes();
    let leaks = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    assert!(!leaks(&o.stderr) && !leaks(&o.stdout), "token in the logs");
    let files = all_files(out.path());
    assert!(files.len() >= 6);
    for f in files {
        assert!(
            !leaks(&std::fs::read(&f).unwrap()),
            "token written to {}",
            f.display()
        );
    }
    // And a failing run's error output is clean too.
    let out2 = TempDir::new("token-fail");
    let o = harvest(
        &[
            "harvest",
            "--url",
            &server.url,
            "--db",
            "db",
            "--table",
            "nope",
            "--token-env",
            "DS_TOKEN",
            "--out",
            out2.path().to_str().unwrap(),
        ],
        &[("DS_TOKEN", TOKEN)],
    );
    assert_exit(&o, 2);
    assert!(!leaks(&o.stderr));
    for f in all_files(out2.path()) {
        assert!(
            !leaks(&std::fs::read(&f).unwrap()),
            "token written to {}",
            f.display()
        );
    }
}

/// Page 2 as the server would send it with `Content-Encoding: enc`, its body `encode`d.
fn encoded_page2(req: &Request, enc: &str, encode: impl Fn(Vec<u8>) -> Vec<u8>) -> Action {
    let plain = body_of(&Synthetic { rows: ROWS }.page(req));
    Action::Respond {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Content-Encoding".into(), enc.into()),
        ],
        body: encode(plain),
    }
}

fn gzip(b: Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&b).unwrap();
    e.finish().unwrap()
}

/// A gzip body cut short decodes to garbage-free nothing: it is retried like a body cut off
/// mid-transfer, and the retry's decoded body is what the snapshot holds.
#[test]
fn a_damaged_gzip_body_is_retried_and_the_snapshot_is_decoded() {
    let n = Arc::new(AtomicU32::new(0));
    let server = FaultServer::start(Synthetic { rows: ROWS }, move |req| {
        if req.path != "/db/items.json" || req.param("_next") != Some("100") {
            return None;
        }
        let first = n.fetch_add(1, Ordering::SeqCst) == 0;
        Some(encoded_page2(req, "gzip", |b| {
            let z = gzip(b);
            if first { z[..z.len() / 2].to_vec() } else { z }
        }))
    });
    let out = TempDir::new("gzip-damaged");
    let o = run(&server, &out, &[]);
    assert_exit(&o, 0);
    assert_items_complete(&out);
    assert_eq!(page2_attempts(&out), 2);
    assert!(stderr(&o).contains("does not decode"), "{}", stderr(&o));
    let m = manifest(out.path());
    let page2 = records(&m, "page")[1];
    assert_eq!(page2["content_encoding"], "gzip");
    let snapshot = std::fs::read(out.path().join(page2["path"].as_str().unwrap())).unwrap();
    assert!(snapshot.starts_with(b"{\"database\""), "decoded JSON");
    assert!(page2["wire_bytes"].as_u64() < page2["bytes"].as_u64());
    // The request asked for compression; with --no-compression it does not.
    let asked = |s: &FaultServer| {
        s.requests()
            .iter()
            .all(|r| r.header("accept-encoding") == Some("gzip, br, zstd"))
    };
    assert!(asked(&server));
}

/// An encoding harvest did not ask for is refused by name (exit 1), never saved encoded.
#[test]
fn an_unrequested_content_encoding_is_refused() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |req| {
        (req.path == "/db/items.json" && req.param("_next") == Some("100"))
            .then(|| encoded_page2(req, "compress", |b| b))
    });
    let out = TempDir::new("gzip-unknown");
    let o = run(&server, &out, &["--no-compression"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("\"compress\""), "{}", stderr(&o));
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("accept-encoding").is_none())
    );
    assert_eq!(records(&manifest(out.path()), "page").len(), 1);
}

/// A server that hides `/-/settings.json` but names its limit when it refuses a page: a
/// defaulted page size drops to that limit; a given one stays an error naming it.
#[test]
fn a_page_size_refused_with_its_limit_drops_to_the_limit() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |req| {
        let size: u64 = req.param("_size").and_then(|s| s.parse().ok()).unwrap_or(0);
        (req.path == "/db/items.json" && size > 100).then(|| {
            json(
                400,
                r#"{"ok": false, "error": "_size must be <= 100", "status": 400}"#,
            )
        })
    });
    let out = TempDir::new("size-400");
    let out_s = out.path().to_str().unwrap();
    let o = run_job("harvest", &server.url, "db", out_s, &["--table", "items"]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("at most 100 rows per request"),
        "{}",
        stderr(&o)
    );
    assert_items_complete(&out);
    assert_exit(&harvest(&["verify", "--out", out_s], &[]), 0);
    let given = TempDir::new("size-400-given");
    let rest = ["--table", "items", "--page-size", "200"];
    let o = run_job(
        "harvest",
        &server.url,
        "db",
        given.path().to_str().unwrap(),
        &rest,
    );
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("_size must be <= 100") && stderr(&o).contains("--page-size"),
        "{}",
        stderr(&o)
    );
}
