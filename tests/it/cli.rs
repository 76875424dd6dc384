//! Usage and config errors: a clear one-line cause, exit 2, and nothing written.

use crate::common::*;

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[track_caller]
fn usage_error(args: &[&str], envs: &[(&str, &str)], expect: &str) {
    let o = harvest(args, envs);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains(expect),
        "expected {expect:?} in:\n{}",
        stderr(&o)
    );
}

#[test]
fn malformed_toml() {
    let d = TempDir::new("toml");
    let cfg = write(&d, "h.toml", "out = \"x\"\n[[source]\nurl = 1\n");
    usage_error(&["harvest", "--config", &cfg], &[], "is not valid");
    assert!(!d.path().join("x").exists());
}

#[test]
fn unknown_config_key_is_a_typo_not_ignored() {
    let d = TempDir::new("typo");
    let cfg = write(
        &d,
        "h.toml",
        "out = \"x\"\n[[source]]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"d\"\n[[source.table]]\nname = \"t\"\npage_sise = 10\n",
    );
    usage_error(&["harvest", "--config", &cfg], &[], "page_sise");
}

#[test]
fn missing_env_var_for_a_secret() {
    let d = TempDir::new("env");
    let cfg = write(
        &d,
        "h.toml",
        "out = \"x\"\n[[source]]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"d\"\nauth = { bearer = \"${HARVEST_IT_UNSET_TOKEN}\" }\n[[source.table]]\nname = \"t\"\n",
    );
    usage_error(
        &["harvest", "--config", &cfg],
        &[],
        "HARVEST_IT_UNSET_TOKEN",
    );
    usage_error(
        &[
            "harvest",
            "--url",
            "http://127.0.0.1:9",
            "--db",
            "d",
            "-t",
            "t",
            "--out",
            "x",
            "--token-env",
            "NOPE_VAR",
        ],
        &[],
        "NOPE_VAR",
    );
}

#[test]
fn literal_secret_in_config_is_refused() {
    let d = TempDir::new("literal");
    let cfg = write(
        &d,
        "h.toml",
        "out = \"x\"\n[[source]]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"d\"\nauth = { bearer = \"dstok_literal\" }\n[[source.table]]\nname = \"t\"\n",
    );
    let o = harvest(&["harvest", "--config", &cfg], &[]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("literal secret"));
    assert!(
        !stderr(&o).contains("dstok_literal"),
        "the literal must not be echoed"
    );
}

#[test]
fn bad_flags() {
    usage_error(
        &["harvest", "--table", "t", "--out", "x"],
        &[],
        "no Datasette URL",
    );
    usage_error(
        &[
            "harvest", "--url", "ftp://h", "--db", "d", "-t", "t", "--out", "x",
        ],
        &[],
        "http",
    );
    usage_error(
        &[
            "harvest",
            "--url",
            "http://h",
            "--db",
            "d",
            "-t",
            "t",
            "--out",
            "x",
            "--type",
            "a=decimal",
        ],
        &[],
        "unknown type",
    );
    usage_error(
        &[
            "harvest",
            "--url",
            "http://h",
            "--db",
            "d",
            "-t",
            "t",
            "--out",
            "x",
            "--rate-limit",
            "fast",
        ],
        &[],
        "rate limit",
    );
    usage_error(&["harvest", "--no-such-flag"], &[], "--no-such-flag");
    usage_error(
        &["harvest", "--url", "http://h", "--db", "d", "-t", "t"],
        &[],
        "no output directory",
    );
}

#[test]
fn a_locked_output_directory_fails_fast_naming_the_holder() {
    let d = TempDir::new("lock");
    let state = d.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("lock"))
        .unwrap();
    f.lock().unwrap();
    std::fs::write(state.join("lock"), "pid 4242 since 2026-01-01T00:00:00Z").unwrap();
    let o = run_job(
        "harvest",
        "http://127.0.0.1:9",
        "d",
        d.path().to_str().unwrap(),
        &["-t", "t"],
    );
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("locked by pid 4242"), "{}", stderr(&o));
    drop(f);
}

#[test]
fn an_output_that_is_a_file_is_a_usage_error_and_the_file_is_untouched() {
    let d = TempDir::new("out-file");
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, "keep me").unwrap();
    for (cmd, extra) in [
        ("harvest", &["-t", "t"][..]),
        ("incremental", &["-t", "t", "--watermark-column", "id"][..]),
    ] {
        let o = run_job(
            cmd,
            "http://127.0.0.1:9",
            "d",
            file.to_str().unwrap(),
            extra,
        );
        assert_exit(&o, 2);
        let err = stderr(&o);
        assert!(
            err.contains("is a file, not a directory") && err.contains("hint: pass a directory"),
            "{cmd}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}

#[test]
fn help_and_version_succeed() {
    assert_exit(&harvest(&["--help"], &[]), 0);
    assert_exit(&harvest(&["harvest", "--help"], &[]), 0);
    assert_exit(&harvest(&["--version"], &[]), 0);
}
