//! Crash safety and resume (DESIGN.md §"Crash safety"): SIGKILL at seeded random moments,
//! SIGTERM, an exhausted retry budget, a seeded fault soak in front of a real Datasette, torn
//! manifest lines, unrecorded parts, hostile names. After each, the output holds every source
//! row exactly once and the manifest chain is intact.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fault_server::*;
use crate::faults::{ROWS, assert_items_complete, run, synthetic_rows, synthetic_rows_n};

/// A small deterministic PRNG (xorshift64*), so kill moments and faults are seeded.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The manifest's hash chain is unbroken and `seq` strictly increases.
#[track_caller]
fn assert_chain(out: &std::path::Path) {
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "manifest ends mid-line");
    let mut prev: Option<String> = None;
    let mut seq = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["prev"].as_str().map(str::to_string), prev);
        assert!(v["seq"].as_u64().unwrap() > seq);
        seq = v["seq"].as_u64().unwrap();
        prev = Some(harvest::manifest::sha256_hex(line.as_bytes()));
    }
}

pub(crate) fn spawn_harvest(args: &[&str]) -> std::process::Child {
    spawn_harvest_env(args, &[])
}

/// [`spawn_harvest`] with its stderr written to `log`, for a failure message to quote.
pub(crate) fn spawn_harvest_logged(args: &[&str], log: &std::path::Path) -> std::process::Child {
    let file = std::fs::File::create(log).expect("create the stderr log");
    Command::new(env!("CARGO_BIN_EXE_harvest"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HARVEST_NO_RETRY_SLEEP", "1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn harvest")
}

/// [`spawn_harvest`] with these environment variables (and no others but PATH).
pub(crate) fn spawn_harvest_env(args: &[&str], envs: &[(&str, String)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_harvest"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HARVEST_NO_RETRY_SLEEP", "1")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn harvest")
}

#[test]
fn kill_9_at_ten_seeded_moments_then_resume_exactly_once() {
    let (seeds, kills) = kill_and_resume(1..=10, &[]);
    assert!(
        kills >= 8,
        "most of {seeds} kills must land mid-run to test anything ({kills})"
    );
}

#[test]
fn kill_9_with_parallel_cursors_then_resume_exactly_once() {
    let (seeds, kills) = kill_and_resume(11..=16, &["--parallel", "3"]);
    assert!(
        kills >= 4,
        "most of {seeds} kills must land mid-run to test anything ({kills})"
    );
}

/// SIGKILL a harvest once or twice per seed at a seeded moment, then run it to completion:
/// the rows are exact, the chain intact, no recorded page was fetched again, no temp file is
/// left, and a sliced table keeps the slice plan it recorded first. Returns (kills, kills
/// that landed mid-run).
fn kill_and_resume(seeds: std::ops::RangeInclusive<u64>, extra: &[&str]) -> (usize, usize) {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let mut max_refetched = 0usize;
    let mut kills = 0;
    let mut kills_mid_run = 0;
    for seed in seeds {
        let mut rng = Rng::new(seed);
        let out = TempDir::new(&format!("kill{seed}"));
        let mut args = vec![
            "harvest",
            "-q",
            "--url",
            &ds.url,
            "--db",
            &ds.db_name,
            "--table",
            "Order Details",
            "--table",
            "Orders",
            "--part-rows",
            "60000",
            "--out",
            out.path().to_str().unwrap(),
        ];
        args.extend(extra);
        // One or two kills per seed, then a run to completion.
        for _ in 0..=(seed % 2) {
            let mut child = spawn_harvest(&args);
            let delay = Duration::from_millis(300 + rng.below(6000));
            let started = Instant::now();
            while started.elapsed() < delay {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            kills += 1;
            if child.try_wait().unwrap().is_none() {
                kills_mid_run += 1;
            }
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        let o = harvest(&args, &[]);
        assert_exit(&o, 0);
        assert_dataset_matches_table(out.path(), &db, "Order Details");
        assert_dataset_matches_table(out.path(), &db, "Orders");
        assert_chain(out.path());
        // A recorded page is never fetched again: within a run, each page number is recorded once.
        let m = manifest(out.path());
        let mut per_page: HashMap<(String, String, Option<u64>, u64), usize> = HashMap::new();
        for p in records(&m, "page") {
            let key = (
                p["run_id"].as_str().unwrap().to_string(),
                p["output"].as_str().unwrap().to_string(),
                p["slice"].as_u64(),
                p["page"].as_u64().unwrap(),
            );
            *per_page.entry(key).or_default() += 1;
        }
        let refetched = per_page.values().filter(|n| **n > 1).count();
        max_refetched = max_refetched.max(refetched);
        assert_eq!(
            refetched, 0,
            "seed {seed}: recorded pages were fetched again"
        );
        // No temp file or unrecorded part is left.
        for f in all_files(out.path()) {
            assert!(
                !f.to_string_lossy().ends_with(".harvest-tmp"),
                "seed {seed}: {}",
                f.display()
            );
        }
        // A resumed sliced run reuses its recorded plan: one `slices` record per run and table.
        let mut plans: HashMap<(String, String), usize> = HashMap::new();
        for r in records(&m, "slices") {
            let key = (
                r["run_id"].as_str().unwrap().to_string(),
                r["output"].as_str().unwrap().to_string(),
            );
            *plans.entry(key).or_default() += 1;
        }
        assert!(plans.values().all(|n| *n == 1), "seed {seed}: {plans:?}");
        if extra.contains(&"--parallel") {
            assert!(plans.len() >= 2, "seed {seed}: tables were not split");
        }
    }
    eprintln!(
        "kill test {extra:?}: {kills} kills, {kills_mid_run} landed mid-run, max re-fetched recorded pages: {max_refetched}"
    );
    (kills, kills_mid_run)
}

/// SIGTERM mid-table: exit 130 with a clean checkpoint, and the rerun resumes exactly. With
/// `--part-rows 100000` the type scan confirmed the plan at the first checkpoint, so the
/// interrupted run records its open parts. By default `Order Details` (declared numeric) is
/// still typed from its pages when the signal lands, so it records no part, and the rerun
/// replays every recorded page from its snapshot instead of fetching it again.
#[test]
fn sigterm_checkpoints_exits_130_and_the_rerun_resumes() {
    sigterm_then_resume(&["--part-rows", "100000"], true);
    sigterm_then_resume(&[], false);
}

fn sigterm_then_resume(extra: &[&str], parts_at_signal: bool) {
    let db = fixture_db(1);
    let ds = Datasette::start(V1_0, &db);
    let out = TempDir::new("sigterm");
    let mut args = vec![
        "harvest",
        "--url",
        &ds.url,
        "--db",
        &ds.db_name,
        "--table",
        "Order Details",
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let child = spawn_harvest(&args);
    std::thread::sleep(Duration::from_millis(2500));
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    let m = manifest(out.path());
    assert_eq!(records(&m, "run_end")[0]["outcome"], "interrupted");
    let checkpointed: u64 = records(&m, "parquet")
        .iter()
        .map(|r| r["rows"].as_u64().unwrap())
        .sum();
    if parts_at_signal {
        assert!(
            checkpointed > 0,
            "the interrupted run recorded a clean checkpoint"
        );
    } else {
        assert_eq!(
            checkpointed, 0,
            "no part is recorded with unconfirmed types"
        );
    }
    let pages_before = records(&m, "page").len();
    let o = harvest(&args, &[]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("resuming run"), "{}", stderr(&o));
    assert_dataset_matches_table(out.path(), &db, "Order Details");
    let m = manifest(out.path());
    // Nothing recorded before the interrupt was fetched again.
    let total_pages = records(&m, "page").len();
    let table_end = records(&m, "table_end")[0];
    assert_eq!(
        table_end["fetched_pages"].as_u64().unwrap() as usize,
        total_pages - pages_before
    );
    // Every count means one thing: `pages` and `rows` are the table's totals for the run;
    // fetched now, replayed from snapshots and taken by the earlier process add up to them.
    let n = |k: &str| table_end[k].as_u64().unwrap();
    let rows_in_sqlite = read_sqlite(
        &db,
        "select OrderID from \"Order Details\"",
        &[arrow::datatypes::DataType::Int64],
    )
    .len() as u64;
    assert_eq!(n("rows"), rows_in_sqlite, "{table_end}");
    assert_eq!(n("server_count"), rows_in_sqlite, "{table_end}");
    assert_eq!(n("pages") as usize, total_pages, "{table_end}");
    assert_eq!(
        n("fetched_pages") + n("replayed_pages") + n("earlier_pages"),
        n("pages")
    );
    assert_eq!(
        n("fetched_rows") + n("replayed_rows") + n("earlier_rows"),
        n("rows")
    );
    assert!(n("earlier_rows") >= checkpointed, "{table_end}");
    if !parts_at_signal {
        // Every page the interrupted run recorded was replayed from its snapshot.
        assert_eq!(n("replayed_pages") as usize, pages_before, "{table_end}");
        assert_eq!(n("earlier_rows"), 0, "{table_end}");
    }
    let totals = &records(&m, "run_end")[1]["totals"];
    assert_eq!(totals["rows"], rows_in_sqlite);
    assert_eq!(totals["pages"].as_u64().unwrap() as usize, total_pages);
    let summary = stderr(&o);
    assert!(
        summary.contains(&format!("{total_pages} pages ("))
            && summary.contains(&format!("{rows_in_sqlite} rows")),
        "{summary}"
    );
    assert!(
        !summary.contains("counted"),
        "no row-count mismatch warning: {summary}"
    );
    assert_exit(
        &harvest(&["verify", "--out", out.path().to_str().unwrap()], &[]),
        0,
    );
    assert_chain(out.path());
}

#[test]
fn retry_budget_exhausted_then_the_rerun_resumes_without_refetching() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let server = FaultServer::start(Synthetic { rows: ROWS }, move |req| {
        (!h.load(Ordering::SeqCst)
            && req.path == "/db/items.json"
            && req.param("_next") == Some("200"))
        .then(|| json(503, "{}"))
    });
    let out = TempDir::new("budget-resume");
    let o = run(&server, &out, &["--max-attempts", "2"]);
    assert_exit(&o, 5);
    assert!(stderr(&o).contains("gave up"));
    healthy.store(true, Ordering::SeqCst);
    let o = run(&server, &out, &["--max-attempts", "2"]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("resuming run"), "{}", stderr(&o));
    assert_items_complete(&out);
    // Pages 1 and 2 were fetched once each (then replayed); page 3 twice failed, once fetched.
    let fetches = |cursor: Option<&str>| {
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/db/items.json" && r.param("_next") == cursor)
            .count()
    };
    assert_eq!(
        (fetches(None), fetches(Some("100")), fetches(Some("200"))),
        (1, 1, 3)
    );
}

#[test]
fn a_torn_manifest_line_is_repaired_and_unrecorded_parts_removed() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |_| None);
    let out = TempDir::new("torn");
    assert_exit(&run(&server, &out, &[]), 0);
    // A crash mid-append, and a part renamed into place whose record never made it.
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(out.path().join("manifest.jsonl"))
        .unwrap()
        .write_all(b"{\"version\":1,\"kind\":\"page\",\"run_")
        .unwrap();
    let stray = out
        .path()
        .join("parquet/items/part-19990101T000000Z-dead-00001.parquet");
    std::fs::copy(
        all_files(&out.path().join("parquet/items"))[0].clone(),
        &stray,
    )
    .unwrap();
    let o = run(&server, &out, &[]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(err.contains("torn last line"), "{err}");
    assert!(err.contains("the manifest does not record"), "{err}");
    assert!(!stray.exists());
    assert_chain(out.path());
    assert_same_rows(
        "items",
        read_dataset(&out.path().join("parquet/items")).2,
        synthetic_rows(),
    );
}

#[test]
fn an_unwritable_output_directory_is_a_clean_error() {
    let d = TempDir::new("unwritable");
    let file = d.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let server = FaultServer::start(Synthetic { rows: ROWS }, |_| None);
    let o = run_job(
        "harvest",
        &server.url,
        "db",
        file.join("out").to_str().unwrap(),
        &["-t", "items"],
    );
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("cannot create the output directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn hostile_table_and_partition_names_stay_inside_the_output_directory() {
    let server = FaultServer::start(Synthetic { rows: ROWS }, |_| None);
    let root = TempDir::new("hostile");
    let out = root.path().join("out");
    let o = run_job(
        "harvest",
        &server.url,
        "db",
        out.to_str().unwrap(),
        &[
            "-t",
            "../evil",
            "--page-size",
            "100",
            "--partition-by",
            "category",
        ],
    );
    assert_exit(&o, 0);
    // Nothing was written next to DIR.
    let beside: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["out"]);
    for f in all_files(&out) {
        let rel = f.strip_prefix(&out).unwrap().to_string_lossy().into_owned();
        assert!(!rel.split('/').any(|c| c == ".."), "{rel}");
    }
    let ds = out.join("parquet/%2E.%2Fevil");
    assert!(
        ds.join("category=%2E.%2F..%2Fescape").is_dir(),
        "{:?}",
        all_files(&ds)
    );
    assert!(ds.join("category=a%2Fb").is_dir());
    assert!(ds.join("category=__HIVE_DEFAULT_PARTITION__").is_dir());
    // The original names are kept in the manifest, and the rows are all there.
    let m = manifest(&out);
    assert!(
        records(&m, "parquet")
            .iter()
            .any(|r| r["partition"]["category"] == "../../escape")
    );
    assert_eq!(records(&m, "page")[0]["table"], "../evil");
    // The partition column (already last) comes back from the path, percent-decoded.
    let (_, _, rows) = read_dataset(&ds);
    assert_same_rows("../evil", rows, synthetic_rows());
}

/// A seeded mix of 429 + Retry-After, 5xx, resets, truncated and stalled bodies on ≥30% of
/// requests, in front of a real Datasette: the harvest completes with exactly the SQLite rows.
#[test]
fn fault_soak_in_front_of_a_real_datasette() {
    let db = fixture_db(1);
    let ds = Datasette::start(V0_65, &db);
    let upstream = ds.url.clone();
    let faults = Arc::new(AtomicU64::new(0));
    let f2 = faults.clone();
    let server = FaultServer::start(Synthetic { rows: 0 }, move |req| {
        let mut rng = Rng::new(0x5eed ^ req.n);
        let roll = rng.below(100);
        let action = match roll {
            0..=8 => Action::Respond {
                status: 429,
                headers: vec![("Retry-After".into(), "1".into())],
                body: b"slow down".to_vec(),
            },
            9..=14 => json(500, "{}"),
            15..=19 => json(503, "{}"),
            20..=24 => Action::Reset,
            25..=29 => Action::Proxy {
                upstream: upstream.clone(),
                then: Some(|body| Action::Truncate {
                    keep: body.len() / 3,
                    body,
                }),
            },
            30..=33 => Action::Proxy {
                upstream: upstream.clone(),
                then: Some(|body| Action::Stall {
                    keep: 100,
                    body,
                    pause: Duration::from_secs(3),
                }),
            },
            _ => {
                return Some(Action::Proxy {
                    upstream: upstream.clone(),
                    then: None,
                });
            }
        };
        f2.fetch_add(1, Ordering::SeqCst);
        Some(action)
    });
    let out = TempDir::new("soak");
    let o = run_job(
        "harvest",
        &server.url,
        &ds.db_name,
        out.path().to_str().unwrap(),
        &[
            "--table",
            "Order Details",
            "--table",
            "Orders",
            "--max-attempts",
            "30",
            "--stall-timeout",
            "0.3",
        ],
    );
    assert_exit(&o, 0);
    assert_dataset_matches_table(out.path(), &db, "Order Details");
    assert_dataset_matches_table(out.path(), &db, "Orders");
    assert_chain(out.path());
    let requests = server.requests().len() as u64;
    let injected = faults.load(Ordering::SeqCst);
    let m = manifest(out.path());
    let pages = records(&m, "page");
    let page_retries: u64 = pages
        .iter()
        .map(|p| p["attempts"].as_u64().unwrap() - 1)
        .sum();
    let run_retries = records(&m, "run_end")[0]["totals"]["retries"]
        .as_u64()
        .unwrap();
    let rows: u64 = pages.iter().map(|p| p["rows"].as_u64().unwrap()).sum();
    eprintln!(
        "soak: {requests} requests, {injected} faults injected ({:.0}%), {run_retries} retries ({page_retries} on pages), {} pages, {rows} rows",
        100.0 * injected as f64 / requests as f64,
        pages.len()
    );
    assert!(
        injected * 100 >= requests * 30,
        "fault rate below 30%: {injected}/{requests}"
    );
    assert!(page_retries > 0 && run_retries >= page_retries);
    assert!(
        pages.iter().any(|p| p["attempts"].as_u64().unwrap() > 1),
        "the manifest records the attempts"
    );
}

/// Unmounts a test mount on drop.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn disk_full_mid_run_is_a_clean_error_and_the_rerun_resumes_once_space_is_back() {
    let root = TempDir::new("diskfull");
    let mnt = root.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=192k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !mounted {
        // Only root can make a small filesystem; as root, failing to is a real failure.
        assert!(!is_root, "could not mount a tmpfs as root");
        eprintln!("disk-full test needs root to mount a tmpfs; not run as a non-root user");
        return;
    }
    let _m = Mount(mnt.clone());
    const N: u64 = 4000; // 40 pages of ~7 KB: more than the 192 KiB filesystem holds
    let server = FaultServer::start(Synthetic { rows: N }, |_| None);
    let out = mnt.join("out");
    let args = [
        "harvest",
        "--url",
        &server.url,
        "--db",
        "db",
        "-t",
        "items",
        "--page-size",
        "100",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = harvest(&args, &[]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("No space left on device"), "{err}");
    for f in all_files(&out) {
        let name = f.to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".harvest-tmp"),
            "temp file left visible: {name}"
        );
        assert!(
            !name.ends_with(".parquet"),
            "a part from a failed run: {name}"
        );
    }
    // Space comes back; the rerun resumes from what was recorded and completes.
    assert!(
        Command::new("mount")
            .args(["-o", "remount,size=32m"])
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    let o = harvest(&args, &[]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("resuming run"), "{}", stderr(&o));
    let (_, _, rows) = read_dataset(&out.join("parquet/items"));
    assert_same_rows("items", rows, synthetic_rows_n(N));
    assert_chain(&out);
}

/// A crash between the manifest lines of one checkpoint's parts (a partitioned table closes
/// one part per partition at a time): the rerun removes the parts of the cut-short
/// checkpoint, replays its pages, and has every row exactly once, as Parquet parts and as a
/// Delta table.
#[test]
fn a_crash_between_the_part_lines_of_one_checkpoint_loses_nothing() {
    let server = FaultServer::start(Synthetic { rows: 1000 }, |_| None);
    let root = TempDir::new("between-part-lines");
    for format in ["parquet", "delta"] {
        let out = root.path().join(format);
        let args = job_args(
            "harvest",
            &server.url,
            "db",
            out.to_str().unwrap(),
            &[
                "-t",
                "items",
                "--page-size",
                "100",
                "--part-rows",
                "300",
                "--partition-by",
                "category",
                "--table-format",
                format,
            ],
        );
        let o = harvest(
            &strs(&args),
            &[("HARVEST_FAILPOINT", "parts:between-lines")],
        );
        assert!(!o.status.success(), "{format}: the failpoint did not fire");
        let o = harvest(&strs(&args), &[]);
        assert_exit(&o, 0);
        assert!(stderr(&o).contains("cut short"), "{}", stderr(&o));
        let mut ids: Vec<i64> = export_ndjson(&out, "items")
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=1000).collect::<Vec<_>>(), "{format}");
        assert_exit(
            &harvest(&["verify", "--out", out.to_str().unwrap()], &[]),
            0,
        );
        if format == "delta" {
            // The Delta log holds each row once too (the cut-short parts removed by a commit).
            python_ok(
                &delta_readers_python(),
                "import sys\nfrom deltalake import DeltaTable\nids = sorted(DeltaTable(sys.argv[1]).to_pyarrow_table(columns=['id']).column('id').to_pylist())\nassert ids == list(range(1, 1001)), (len(ids), ids[:10])",
                &[&out.join("parquet/items")],
            );
        }
    }
}
