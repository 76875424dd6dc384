//! `harvest history`: golden output on a hand-written manifest holding every kind of run
//! (ok, failed, interrupted, unfinished, resumed, incremental, sql-extract), the JSON schema,
//! a torn and edited manifest, and the history of real runs against the fault server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::common::*;
use crate::fault_server::*;
use crate::faults::{ROWS, run};

/// Write `records` as a hash-chained manifest (as harvest writes it) into `dir`.
fn write_manifest(dir: &std::path::Path, records: &[Value]) {
    let mut text = String::new();
    let mut prev: Option<String> = None;
    for (i, r) in records.iter().enumerate() {
        let mut m = serde_json::Map::new();
        m.insert("version".into(), json!(1));
        m.insert("kind".into(), r["kind"].clone());
        m.insert("run_id".into(), r["run_id"].clone());
        m.insert("seq".into(), json!(i + 1));
        m.insert("prev".into(), json!(prev));
        for (k, v) in r.as_object().unwrap() {
            if k != "kind" && k != "run_id" {
                m.insert(k.clone(), v.clone());
            }
        }
        let line = serde_json::to_string(&Value::Object(m)).unwrap();
        prev = Some(harvest::manifest::sha256_hex(line.as_bytes()));
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(dir.join("manifest.jsonl"), text).unwrap();
}

fn start(id: &str, command: &str, at: &str) -> Value {
    json!({"kind": "run_start", "run_id": id, "command": command, "started_at": at})
}

fn end(id: &str, outcome: &str, wall_ms: u64, bytes: u64, retries: u64) -> Value {
    json!({"kind": "run_end", "run_id": id, "outcome": outcome, "ended_at": "2026-11-20T03:10:00Z",
           "totals": {"wall_ms": wall_ms, "bytes": bytes, "retries": retries}})
}

fn table_end(id: &str, output: &str, rows: u64, pages: u64, wm: Option<(i64, i64)>) -> Value {
    let mut v =
        json!({"kind": "table_end", "run_id": id, "output": output, "rows": rows, "pages": pages});
    if let Some((b, a)) = wm {
        v["watermark"] = json!({"column": "OrderID", "before": b, "after": a});
    }
    v
}

fn every_kind_of_run() -> Vec<Value> {
    vec![
        start("r1", "harvest", "2026-11-18T03:00:00Z"),
        table_end("r1", "Orders", 830, 1, None),
        table_end("r1", "Customers", 91, 1, None),
        json!({"kind": "parquet", "run_id": "r1", "output": "Orders", "rows": 830, "pages": {"first": 1, "last": 1}}),
        end("r1", "ok", 2_400, 1_500_000, 0),
        start("r2", "incremental", "2026-11-19T03:00:00Z"),
        table_end("r2", "Orders", 12, 1, Some((11077, 11089))),
        end("r2", "ok", 900, 20_000, 2),
        start("r3", "harvest", "2026-11-20T03:00:00Z"),
        end(
            "r3",
            "failed: gave up on http://x/db/Orders.json after 5 attempts",
            61_000,
            300_000,
            4,
        ),
        json!({"kind": "run_resume", "run_id": "r3", "resumed_at": "2026-11-20T04:00:00Z"}),
        table_end("r3", "Orders", 830, 1, None),
        end("r3", "ok", 3_000, 1_200_000, 0),
        start("r4", "harvest", "2026-11-21T03:00:00Z"),
        end("r4", "interrupted", 5_000, 0, 0),
        start("r5", "sql-extract", "2026-11-22T03:00:00Z"),
        table_end("r5", "order_lines", 2155, 0, None),
        json!({"kind": "run_end", "run_id": "r5", "outcome": "ok", "totals": {"queries": 1, "rows": 2155, "parts": 1, "wall_ms": 300}}),
        start("r6", "harvest", "2026-11-23T03:00:00Z"),
        end(
            "r6",
            "failed: harvesting table \"Orders\": the server answered 500",
            1_000,
            0,
            5,
        ),
        start("r7", "incremental", "2026-11-23T04:00:00Z"),
    ]
}

const GOLDEN: &str = "\
run  command      started               duration  outcome      tables  pages  rows    bytes  retries  resumes
r1   harvest      2026-11-18T03:00:00Z  2.4s      ok                2      2   921   1.5 MB        0        0
r2   incremental  2026-11-19T03:00:00Z  0.9s      ok                1      1    12  20.0 kB        2        0
r3   harvest      2026-11-20T03:00:00Z  1m04s     ok                1      1   830   1.5 MB        4        1
r4   harvest      2026-11-21T03:00:00Z  5.0s      interrupted       0      0     0   0.0 kB        0        0
r5   sql-extract  2026-11-22T03:00:00Z  0.3s      ok                1      0  2155   0.0 kB        0        0
r6   harvest      2026-11-23T03:00:00Z  1.0s      failed            0      0     0   0.0 kB        5        0
r7   incremental  2026-11-23T04:00:00Z  0.0s      unfinished        0      0     0   0.0 kB        0        0

r6 failed: harvesting table \"Orders\": the server answered 500

7 run(s): 4 ok, 1 failed, 1 interrupted, 1 unfinished; success rate 57%; duration median 1.0s, max 1m04s; rows per run median 12, total 3918
";

#[test]
fn every_kind_of_run_has_its_line_and_summary() {
    let dir = TempDir::new("history-golden");
    write_manifest(dir.path(), &every_kind_of_run());
    let o = harvest(&["history", "--out", dir.path().to_str().unwrap()], &[]);
    assert_exit(&o, 0);
    assert_eq!(String::from_utf8_lossy(&o.stdout), GOLDEN);
    assert_eq!(stderr(&o), "", "a sound manifest gives no warning");

    // --dataset: only the runs that completed it, with rows and watermark before/after.
    let o = harvest(
        &[
            "history",
            "--out",
            dir.path().to_str().unwrap(),
            "--dataset",
            "Orders",
            "--last",
            "2",
        ],
        &[],
    );
    assert_exit(&o, 0);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("r2 ") && lines[2].starts_with("r3 "),
        "{text}"
    );
    assert!(
        text.contains("r2   Orders     12      1  11077             11089"),
        "{text}"
    );
    assert!(text.contains("2 run(s): 2 ok"), "{text}");

    // --json: the same facts, for dashboards and CI assertions.
    let o = harvest(
        &["history", "--out", dir.path().to_str().unwrap(), "--json"],
        &[],
    );
    assert_exit(&o, 0);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["manifest"]["lines"], 21);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 7);
    let fields = [
        "run_id",
        "command",
        "started_at",
        "ended_at",
        "duration_ms",
        "outcome",
        "reason",
        "tables",
        "pages",
        "rows",
        "bytes",
        "retries",
        "resumes",
        "datasets",
    ];
    for r in runs {
        for f in fields {
            assert!(r.get(f).is_some(), "run {} lacks {f}", r["run_id"]);
        }
    }
    assert_eq!(runs[2]["outcome"], "ok");
    assert_eq!(runs[2]["resumes"], 1);
    assert_eq!(runs[2]["duration_ms"], 64_000);
    assert_eq!(runs[5]["outcome"], "failed");
    assert_eq!(
        runs[5]["reason"],
        "harvesting table \"Orders\": the server answered 500"
    );
    assert_eq!(runs[1]["datasets"][0]["watermark_after"], 11089);
    let s = &doc["summary"];
    assert_eq!(
        (
            s["runs"].clone(),
            s["ok"].clone(),
            s["failed"].clone(),
            s["unfinished"].clone()
        ),
        (json!(7), json!(4), json!(1), json!(1))
    );
    assert_eq!(s["max_duration_ms"], 64_000);
    assert_eq!(s["total_rows"], 3918);

    // An unknown dataset is a usage error naming the known ones.
    let o = harvest(
        &[
            "history",
            "--out",
            dir.path().to_str().unwrap(),
            "--dataset",
            "Nope",
        ],
        &[],
    );
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("Customers, Orders, order_lines"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_torn_or_edited_manifest_is_reported_not_fatal() {
    let dir = TempDir::new("history-torn");
    write_manifest(dir.path(), &every_kind_of_run());
    let path = dir.path().join("manifest.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    // Edit a number on line 2 (breaking the chain at line 3), add garbage and a torn tail.
    let edited = text.replacen("\"rows\":830", "\"rows\":831", 1)
        + "not json\n"
        + "{\"version\":1,\"kind\":\"run_st";
    std::fs::write(&path, edited).unwrap();
    let o = harvest(
        &["history", "--out", dir.path().to_str().unwrap(), "--json"],
        &[],
    );
    assert_exit(&o, 0);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        doc["runs"].as_array().unwrap().len(),
        7,
        "every readable run is listed"
    );
    assert_eq!(doc["manifest"]["chain_break_at"], 3);
    assert_eq!(doc["manifest"]["unreadable_lines"], 1);
    assert_eq!(doc["manifest"]["torn_last_line"], true);
    let err = stderr(&o);
    assert!(err.contains("harvest verify --out"), "{err}");
    // No manifest at all is a usage error.
    let empty = TempDir::new("history-none");
    let o = harvest(&["history", "--out", empty.path().to_str().unwrap()], &[]);
    assert_exit(&o, 2);
}

#[test]
fn real_runs_ok_failed_and_resumed() {
    let failing = Arc::new(AtomicBool::new(true));
    let f2 = failing.clone();
    let server = FaultServer::start(Synthetic { rows: ROWS }, move |req| {
        (f2.load(Ordering::SeqCst) && req.param("_next") == Some("100")).then(|| json(503, "{}"))
    });
    let out = TempDir::new("history-real");
    let o = run(&server, &out, &["--max-attempts", "2"]);
    assert_exit(&o, 5);
    failing.store(false, Ordering::SeqCst);
    let o = run(&server, &out, &["--max-attempts", "2"]);
    assert_exit(&o, 0);
    let o = run(&server, &out, &[]);
    assert_exit(&o, 0);
    let h = harvest(
        &["history", "--out", out.path().to_str().unwrap(), "--json"],
        &[],
    );
    assert_exit(&h, 0);
    let doc: Value = serde_json::from_slice(&h.stdout).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "the failed run and its resume are one run");
    assert_eq!(runs[0]["outcome"], "ok");
    assert_eq!(runs[0]["resumes"], 1);
    assert!(runs[0]["retries"].as_u64().unwrap() >= 1);
    assert_eq!(runs[0]["rows"], ROWS);
    assert_eq!(runs[1]["rows"], ROWS);
    assert_eq!(runs[1]["command"], "harvest");
    assert!(runs[1]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(doc["summary"]["success_rate"], 100.0);
    assert_eq!(doc["manifest"]["unreadable_lines"], 0);
    let h = harvest(&["history", "--out", out.path().to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&h.stdout).into_owned();
    assert!(text.contains("2 run(s): 2 ok"), "{text}");
}

/// Every stderr line of a JSON-logged run parses, carries `run_id` once the run has one, and
/// the lines that report facts carry them as fields (README §"Logs").
#[test]
fn json_log_lines_carry_the_run_id_and_their_facts() {
    let failing = Arc::new(AtomicBool::new(true));
    let f2 = failing.clone();
    let server = FaultServer::start(Synthetic { rows: ROWS }, move |req| {
        // The second page fails once with a 503 (retried); with `failing`, always.
        let n = req.n;
        (req.param("_next") == Some("100") && (f2.load(Ordering::SeqCst) || n % 2 == 0))
            .then(|| json(503, "{}"))
    });
    let parse = |o: &std::process::Output| -> Vec<Value> {
        stderr(o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    // A failure: exit 5, every line JSON, the last one the error with outcome and exit code.
    let out = TempDir::new("json-logs");
    let o = run(
        &server,
        &out,
        &["--log-format", "json", "--max-attempts", "2"],
    );
    assert_exit(&o, 5);
    let lines = parse(&o);
    let run_id = lines
        .iter()
        .find_map(|l| l["run_id"].as_str())
        .expect("a run id")
        .to_string();
    let started = lines
        .iter()
        .position(|l| l["message"].as_str().unwrap_or("").contains("started"))
        .unwrap();
    for l in &lines[started..] {
        assert_eq!(l["run_id"], run_id.as_str(), "{l}");
        assert!(l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string());
    }
    let retry = lines
        .iter()
        .find(|l| l["attempt"].is_u64())
        .expect("a retry line");
    assert_eq!(retry["status"], 503);
    assert_eq!(retry["max_attempts"], 2);
    assert!(
        retry["url"].as_str().unwrap().contains("/db/items.json"),
        "{retry}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["exit_code"], 5);
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("hint: what was recorded is kept"),
        "the JSON error line carries the hint: {last}"
    );

    // The resumed run succeeds: its table line and summary carry the counts.
    failing.store(false, Ordering::SeqCst);
    let o = run(
        &server,
        &out,
        &["--log-format", "json", "--max-attempts", "2"],
    );
    assert_exit(&o, 0);
    let lines = parse(&o);
    assert!(
        lines.iter().all(|l| l["run_id"] == run_id.as_str()),
        "the resumed run's id"
    );
    let table = lines
        .iter()
        .find(|l| l["table"] == "items" && l["elapsed_ms"].is_u64())
        .expect("the table line");
    assert_eq!(table["rows"], ROWS);
    assert_eq!(table["pages"], 3);
    assert!(
        table["source"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let summary = lines
        .iter()
        .find(|l| l["summary"] == true)
        .expect("a summary");
    assert_eq!(summary["outcome"], "ok");
    assert_eq!(summary["rows"], ROWS);
    assert!(summary["retries"].is_u64() && summary["elapsed_ms"].is_u64());
}

/// The RGB pixels of a PNG file, with its width.
fn rgb_pixels(png_file: &std::path::Path) -> (Vec<[u8; 3]>, u32) {
    let file = std::io::BufReader::new(std::fs::File::open(png_file).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (pixels, info.width)
}

#[test]
fn the_html_page_shows_the_runs_as_charts_in_a_real_browser_and_loads_nothing() {
    let dir = TempDir::new("history-html");
    let mut records = every_kind_of_run();
    // A dataset name a browser would run if it were not escaped.
    records.insert(
        1,
        table_end("r1", "<img src=x onerror=alert(1)>", 7, 1, None),
    );
    write_manifest(dir.path(), &records);
    let page = dir.path().join("report.html");
    let o = harvest(
        &[
            "history",
            "--out",
            dir.path().to_str().unwrap(),
            "--html",
            page.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("wrote"), "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained: nothing to fetch, nothing to run. Every tag is one of a page of text
    // and inline SVG, no attribute names an address, and the CSS imports nothing.
    let allowed = [
        "!doctype",
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "p",
        "section",
        "div",
        "figure",
        "figcaption",
        "svg",
        "line",
        "text",
        "polyline",
        "circle",
        "g",
        "pre",
    ];
    for tag in html.split('<').skip(1) {
        let tag = &tag[..tag.find('>').expect("a closed tag")];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
            .collect::<String>()
            .to_ascii_lowercase();
        assert!(
            allowed.contains(&name.as_str()),
            "the page has a <{tag}> tag"
        );
        for attr in [
            " src=",
            " href=",
            " srcset=",
            "xlink:href",
            " action=",
            " data=",
            " on",
        ] {
            assert!(
                !tag.to_ascii_lowercase().contains(attr),
                "<{tag}> has {attr:?}"
            );
        }
    }
    let style = &html[html.find("<style>").unwrap()..html.find("</style>").unwrap()];
    assert!(
        !style.contains("url(") && !style.contains("@import"),
        "{style}"
    );
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // Three charts per dataset (Orders, Customers, order_lines, and the hostile one), and
    // the table history prints, with every run.
    assert_eq!(html.matches("<figure>").count(), 4 * 3, "{html}");
    for id in ["r1", "r2", "r3", "r4", "r5", "r6", "r7"] {
        assert!(
            html.contains(&format!("\n{id} ")),
            "run {id} not in the table"
        );
    }
    assert!(html.contains("r6 failed: harvesting table &quot;Orders&quot;"));

    // A real browser draws it: the line and the outcome markers are on the screen.
    let shot = dir.path().join("report.png");
    chromium_screenshot(&page, &shot, 1200, 2600);
    let (pixels, width) = rgb_pixels(&shot);
    assert_eq!(width, 1200);
    let count = |rgb: [u8; 3]| pixels.iter().filter(|p| **p == rgb).count();
    let line = count([0x3d, 0x5a, 0x80]);
    let ok = count([0x1b, 0x7f, 0x5b]);
    let failed = count([0xc6, 0x28, 0x28]);
    let interrupted = count([0xe0, 0x8a, 0x00]);
    // The legend alone holds about 75 pixels of each outcome colour; the charts far more:
    // Orders' three lines (three runs each), 18 ok markers, and a failed and an interrupted
    // cross on each of the 12 charts. The line colour is used by the lines alone.
    // (Measured on Chromium 156: line 499, ok 1138, failed 322, interrupted 632; only the
    // pixels exactly of a colour count, so anti-aliased edges do not.)
    assert!(line > 300, "too few line pixels: {line}");
    assert!(ok > 500, "too few ok markers: {ok}");
    assert!(failed > 160, "too few failed markers: {failed}");
    assert!(
        interrupted > 300,
        "too few interrupted markers: {interrupted}"
    );
    // And the page is not blank beyond them: most pixels are the white background.
    let white = count([255, 255, 255]);
    assert!(
        white > pixels.len() / 2 && white < pixels.len(),
        "{white} of {}",
        pixels.len()
    );
}
