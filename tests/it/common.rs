//! Test harness: real Datasette servers (each version in its own cached virtualenv), fixture
//! databases generated from `fixtures/generate.py`, the built `harvest` binary run in a clean
//! environment, and readers that turn Parquet datasets and SQLite tables into comparable rows.
//!
//! Nothing here skips: if Datasette cannot be installed or started, the test fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatchReader};
use arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const V0_65: &str = "0.65.5";
pub const V1_0: &str = "1.0a41";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where venvs and generated fixtures are cached between runs.
pub fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os("HARVEST_TEST_CACHE") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("target").join("harvest-test-cache"),
    };
    fs::create_dir_all(&dir).expect("create the test cache dir");
    prune_old_logs(&dir);
    dir
}

/// Server logs (`<name>-<port>.log`) from test runs more than a day old, removed once per test
/// process so the cache does not collect one per port ever used. Today's stay for debugging.
fn prune_old_logs(dir: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let day = Duration::from_secs(24 * 3600);
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day);
            if old && p.extension().is_some_and(|x| x == "log") {
                let _ = fs::remove_file(&p);
            }
        }
    });
}

/// Serialize set-up across threads (Mutex) and test processes (flock).
fn with_setup_lock<T>(name: &str, f: impl FnOnce() -> T) -> T {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _g = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let lock = File::create(cache_dir().join(format!("{name}.lock"))).expect("lock file");
    lock.lock().expect("flock");
    f()
}

fn python() -> String {
    std::env::var("HARVEST_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `datasette` executable of `version`, installing it into a cached venv when missing.
pub fn datasette_bin(version: &str) -> PathBuf {
    datasette_bin_with(version, &[])
}

/// The same, with plugins from PyPI installed beside it (a venv of its own).
pub fn datasette_bin_with(version: &str, plugins: &[&str]) -> PathBuf {
    let tag = std::iter::once(version)
        .chain(plugins.iter().copied())
        .collect::<Vec<_>>()
        .join("-");
    with_setup_lock(&format!("venv-{tag}"), || {
        let venv = cache_dir().join(format!("venv-datasette-{tag}"));
        let bin = venv.join("bin").join("datasette");
        let marker = venv.join(".installed");
        if marker.exists() && bin.exists() {
            return bin;
        }
        let _ = fs::remove_dir_all(&venv);
        run_ok(
            Command::new(python()).args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
        run_ok(
            Command::new(venv.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("datasette=={version}"))
                .args(plugins),
            &format!("pip install datasette=={version} {}", plugins.join(" ")),
        );
        fs::write(&marker, version).expect("write venv marker");
        bin
    })
}

/// A cached venv with `packages` installed (once; later calls reuse it).
fn venv_with(name: &str, packages: &[&str]) -> PathBuf {
    with_setup_lock(name, || {
        let venv = cache_dir().join(name);
        let py = venv.join("bin").join("python");
        let marker = venv.join(".installed");
        if marker.exists() && py.exists() {
            return py;
        }
        let _ = fs::remove_dir_all(&venv);
        run_ok(
            Command::new(python()).args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
        run_ok(
            Command::new(venv.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(packages),
            &format!("pip install {}", packages.join(" ")),
        );
        fs::write(&marker, "ok").expect("write venv marker");
        py
    })
}

/// A venv with the Parquet readers the tests compare against: pyarrow, pandas, DuckDB.
pub fn readers_python() -> PathBuf {
    venv_with("venv-readers", &["pyarrow", "pandas", "duckdb"])
}

/// A venv with Delta Lake readers nobody here wrote: the `deltalake` package (delta-rs's Python
/// binding), polars, and DuckDB 1.4.4 with its offline `delta` and `httpfs` extension wheels.
pub fn delta_readers_python() -> PathBuf {
    venv_with(
        "venv-delta-s3",
        &[
            "deltalake==1.6.6",
            "polars==2.1.0",
            "pyarrow",
            "duckdb==1.4.4",
            "duckdb-ext-delta==1.4.4.20260205",
            "duckdb-ext-httpfs==1.4.4.20260205",
        ],
    )
}

/// `py -c code`, with `code` ending in an exit that skips the interpreter's teardown once its
/// answer is flushed: pyarrow's and deltalake's worker threads can abort that teardown with
/// "terminate called without an active exception" (apache/arrow#34314), turning a reader that
/// printed its answer into an exit 134 now and then. The reader scripts end the same way
/// (`rowcompare.finish`). A snippet that fails still exits non-zero before reaching the end.
pub fn python_c(py: &Path, code: &str) -> Command {
    let mut cmd = Command::new(py);
    cmd.arg("-c").arg(format!(
        "{code}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_sys.stderr.flush()\n_os._exit(0)\n"
    ));
    cmd
}

/// Run `code` with `py` and `args`; panic with its output unless it succeeds.
#[track_caller]
pub fn python_ok(py: &Path, code: &str, args: &[&Path]) {
    let r = python_c(py, code).args(args).output().unwrap();
    assert!(
        r.status.success(),
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
}

/// A venv with a JSON Schema validator nobody here wrote (python-jsonschema).
pub fn jsonschema_python() -> PathBuf {
    venv_with("venv-jsonschema", &["jsonschema>=4.20,<5"])
}

/// A venv with Apache Airflow 2.10 (its `airflow dags test` runs a DAG's tasks in-process on
/// a SQLite metadata database).
pub fn airflow_python() -> PathBuf {
    venv_with("venv-airflow", &["apache-airflow==2.10.5"])
}

/// The S3 server's venv (moto), whose PyYAML reads the Kubernetes manifests.
pub fn moto_python() -> PathBuf {
    venv_with("venv-moto", &["moto[server]==5.2.5"])
}

/// Debian's Chromium (`/usr/bin/chromium`), installed with apt-get when missing (the package
/// lists refreshed once if the first install fails).
pub fn chromium_bin() -> PathBuf {
    with_setup_lock("chromium", || {
        let bin = PathBuf::from("/usr/bin/chromium");
        if bin.exists() {
            return bin;
        }
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            run_ok(Command::new("apt-get").arg("update"), "apt-get update");
            assert!(install(), "apt-get install chromium failed");
        }
        bin
    })
}

/// A headless Chromium screenshot of `page` (a local file) into `png`, `width`×`height`,
/// with the flags that keep it off the network (no background fetches, no QUIC, no sync).
pub fn chromium_screenshot(page: &Path, png: &Path, width: u32, height: u32) {
    let profile = TempDir::new("chromium-profile");
    let o = Command::new(chromium_bin())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        o.status.success() && png.exists(),
        "chromium did not take the screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A venv with Apache Spark (the pyspark wheel carries it; Java 17 is on the machine).
pub fn spark_python() -> PathBuf {
    venv_with("venv-spark", &["pyspark==4.3.0"])
}

/// A fixture database at `scale`, generated once and cached (read-only use only: copy it
/// before modifying).
pub fn fixture_db(scale: u32) -> PathBuf {
    with_setup_lock(&format!("fixture-{scale}"), || {
        let path = cache_dir().join(format!("northwind-s{scale}.db"));
        let script = repo_root().join("fixtures").join("generate.py");
        let stamp = cache_dir().join(format!("northwind-s{scale}.stamp"));
        let script_digest = format!("{:x}", fs::metadata(&script).map(|m| m.len()).unwrap_or(0))
            + &fs::read_to_string(&script)
                .map(|s| format!("{:x}", fxhash(&s)))
                .unwrap_or_default();
        if path.exists()
            && fs::read_to_string(&stamp).ok().as_deref() == Some(script_digest.as_str())
        {
            return path;
        }
        run_ok(
            Command::new(python())
                .arg(&script)
                .arg("--out")
                .arg(&path)
                .arg("--scale")
                .arg(scale.to_string()),
            "fixtures/generate.py",
        );
        fs::write(&stamp, script_digest).expect("stamp");
        path
    })
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A real Datasette server on a free loopback port, killed on drop.
pub struct Datasette {
    child: Child,
    pub port: u16,
    pub url: String,
    pub db_name: String,
    pub version: String,
}

impl Datasette {
    pub fn start(version: &str, db: &Path) -> Datasette {
        Self::start_with(version, db, &[])
    }

    /// Start with extra `--setting NAME VALUE` pairs (e.g. `("max_returned_rows", "100")`).
    pub fn start_with(version: &str, db: &Path, settings: &[(&str, &str)]) -> Datasette {
        Self::start_bin(datasette_bin(version), version, db, settings)
    }

    /// Start with PyPI plugins installed (e.g. `datasette-gzip`).
    pub fn start_with_plugins(version: &str, db: &Path, plugins: &[&str]) -> Datasette {
        Self::start_bin(datasette_bin_with(version, plugins), version, db, &[])
    }

    fn start_bin(bin: PathBuf, version: &str, db: &Path, settings: &[(&str, &str)]) -> Datasette {
        let db_name = db.file_stem().unwrap().to_string_lossy().into_owned();
        for _ in 0..5 {
            let port = free_port();
            let log = File::create(cache_dir().join(format!("datasette-{port}.log"))).expect("log");
            let child = Command::new(&bin)
                .arg("serve")
                .arg(db)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["--setting", "sql_time_limit_ms", "10000"])
                .args(settings.iter().flat_map(|(k, v)| ["--setting", k, v]))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start datasette");
            let mut ds = Datasette {
                child,
                port,
                url: format!("http://127.0.0.1:{port}"),
                db_name: db_name.clone(),
                version: version.to_string(),
            };
            if ds.wait_ready(Duration::from_secs(60)) {
                return ds;
            }
            let _ = ds.child.kill();
        }
        panic!(
            "Datasette {version} did not start; see the datasette-*.log files in {}",
            cache_dir().display()
        );
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if http_get(self.port, "/-/versions.json").is_some_and(|b| b.contains(&self.version)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Datasette {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// taplo (npm `@taplo/cli`, 0.7.0): the TOML engine behind Even Better TOML and other editors.
pub fn taplo_bin() -> PathBuf {
    npm_bin("@taplo/cli", "0.7.0", "taplo")
}

/// The `json-server` (npm, 0.17.4) entry point, installed into a cached directory when missing.
pub fn json_server_bin() -> PathBuf {
    npm_bin("json-server", "0.17.4", "json-server")
}

/// `bin` of npm package `pkg@version`, installed once into the test cache.
pub fn npm_bin(pkg: &str, version: &str, bin: &str) -> PathBuf {
    // A scoped package (`@taplo/cli`) names one directory, not two.
    let flat = pkg.replace('/', "+");
    with_setup_lock(&format!("npm-{flat}"), || {
        let dir = cache_dir().join(format!("npm-{flat}-{version}"));
        let exe = dir.join("node_modules").join(".bin").join(bin);
        let marker = dir.join(".installed");
        if marker.exists() && exe.exists() {
            return exe;
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("npm dir");
        fs::write(dir.join("package.json"), "{\"private\": true}").expect("package.json");
        run_ok(
            Command::new("npm")
                .current_dir(&dir)
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .arg(format!("{pkg}@{version}")),
            &format!("npm install {pkg}@{version}"),
        );
        fs::write(&marker, version).expect("npm marker");
        exe
    })
}

/// Start the server `command(port)` builds on a free loopback port, its stderr in
/// `<name>-<port>.log` in the cache, until `GET ready` answers 200 (five ports, 60 s each).
fn serve_on_free_port(name: &str, ready: &str, command: impl Fn(u16) -> Command) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let log = File::create(cache_dir().join(format!("{name}-{port}.log"))).expect("log");
        let mut child = command(port)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if http_get(port, ready).is_some() {
                return (child, port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "{name} did not start; see the {name}-*.log files in {}",
        cache_dir().display()
    );
}

/// A real json-server on a free loopback port serving a copy of `db_json`, killed on drop.
pub struct JsonServer {
    child: Child,
    pub port: u16,
    pub url: String,
    _dir: TempDir,
}

impl JsonServer {
    pub fn start(db_json: &serde_json::Value) -> JsonServer {
        let bin = json_server_bin();
        let dir = TempDir::new("json-server");
        let db = dir.path().join("db.json");
        fs::write(&db, serde_json::to_vec(db_json).unwrap()).unwrap();
        let (child, port) = serve_on_free_port("json-server", "/db", |port| {
            let mut cmd = Command::new(&bin);
            cmd.arg(&db).args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--quiet",
            ]);
            cmd
        });
        JsonServer {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real httpbin (PyPI) under gunicorn, from a cached venv, on a free loopback port.
pub struct HttpBin {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl HttpBin {
    pub fn start() -> HttpBin {
        let venv = with_setup_lock("venv-httpbin", || {
            let venv = cache_dir().join("venv-httpbin");
            let marker = venv.join(".installed");
            if !(marker.exists() && venv.join("bin/gunicorn").exists()) {
                let _ = fs::remove_dir_all(&venv);
                run_ok(
                    Command::new(python()).args(["-m", "venv"]).arg(&venv),
                    "python3 -m venv",
                );
                run_ok(
                    Command::new(venv.join("bin/pip")).args([
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "httpbin==0.10.4",
                        "gunicorn",
                    ]),
                    "pip install httpbin gunicorn",
                );
                fs::write(&marker, "ok").expect("venv marker");
            }
            venv
        });
        let (child, port) = serve_on_free_port("httpbin", "/get", |port| {
            let mut cmd = Command::new(venv.join("bin/gunicorn"));
            cmd.args(["-b", &format!("127.0.0.1:{port}"), "-w", "2", "httpbin:app"]);
            cmd
        });
        HttpBin {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for HttpBin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real S3-compatible server: moto 5.2.5 (PyPI) in server mode, on a free loopback port,
/// with one bucket; killed on drop. It enforces `If-None-Match: *` and `If-Match` on PUT (the
/// conditional puts harvest and delta-rs rely on). It does not check signatures; the test
/// credentials are still distinctive so a grep can prove they are written nowhere.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub endpoint: String,
    pub bucket: String,
}

pub const S3_KEY_ID: &str = "AKIAHARVESTTESTKEY01";
pub const S3_SECRET: &str = "harvest-test-secret-9f8e7d6c5b4a";

impl S3Server {
    pub fn start(bucket: &str) -> S3Server {
        let py = moto_python();
        let bin = py.with_file_name("moto_server");
        let (child, port) = serve_on_free_port("moto", "/moto-api/", |port| {
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            cmd
        });
        assert_eq!(
            http_send(port, "PUT", &format!("/{bucket}"), ""),
            200,
            "create bucket {bucket}"
        );
        S3Server {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
        }
    }

    /// The AWS environment a client of this server needs (and nothing from the host's).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Every object under `prefix`: (key, size), in key order.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut out = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{}?list-type=2&prefix={}", self.bucket, url_escape(prefix));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", url_escape(t)));
            }
            let body = http_get(self.port, &path).expect("list objects");
            for c in body.split("<Contents>").skip(1) {
                let field = |name: &str| {
                    c.split(&format!("<{name}>"))
                        .nth(1)
                        .and_then(|r| r.split(&format!("</{name}>")).next())
                        .unwrap_or_default()
                        .to_string()
                };
                out.push((
                    xml_unescape(&field("Key")),
                    field("Size").parse().unwrap_or(0),
                ));
            }
            token = body
                .split("<NextContinuationToken>")
                .nth(1)
                .and_then(|r| r.split("</NextContinuationToken>").next())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        out.sort();
        out
    }

    fn tool(&self) -> Command {
        let py = moto_python();
        let mut cmd = Command::new(py);
        cmd.envs(self.env())
            .arg(repo_root().join("tests/it/s3_tool.py"));
        cmd
    }

    /// Every object under `prefix`, downloaded into a fresh directory as `<dir>/<key>`.
    pub fn download(&self, prefix: &str) -> TempDir {
        let dir = TempDir::new("s3-copy");
        let o = self
            .tool()
            .args(["get-all", &self.bucket, prefix])
            .arg(dir.path())
            .output()
            .expect("run s3_tool.py");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        dir
    }

    /// Put `body` at `key` (unconditionally).
    pub fn put(&self, key: &str, body: &str) {
        use std::io::Write as _;
        let mut child = self
            .tool()
            .args(["put", &self.bucket, key])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run s3_tool.py");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "put {key}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A real OAuth2 token endpoint: oauth2-mock-server (npm, 9.3.0) started by
/// `tests/it/oauth2_server.mjs`, which checks client credentials and sets the token lifetime.
pub struct OAuthServer {
    child: Child,
    pub url: String,
    /// Tokens issued so far.
    pub issued: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl OAuthServer {
    pub fn start(ttl_secs: u64, client: (&str, &str), user: (&str, &str)) -> OAuthServer {
        use std::io::BufRead;
        let bin = npm_bin("oauth2-mock-server", "9.3.0", "oauth2-mock-server");
        let module = bin
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("oauth2-mock-server/dist/index.mjs");
        let mut child = Command::new("node")
            .arg(repo_root().join("tests/it/oauth2_server.mjs"))
            .arg(&module)
            .arg(ttl_secs.to_string())
            .args([client.0, client.1, user.0, user.1])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oauth2-mock-server");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.trim().parse().ok())
            .expect("oauth2-mock-server printed no port");
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = issued.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if l.starts_with("issued") {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        OAuthServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            issued,
        }
    }

    /// The signing keys (`/jwks`), as (kid, modulus, exponent) bytes.
    pub fn keys(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        use base64::Engine as _;
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let raw = http_get(port, "/jwks").expect("GET /jwks");
        let body = &raw[raw.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap_or_default().to_string(),
                    b64.decode(k["n"].as_str().unwrap()).unwrap(),
                    b64.decode(k["e"].as_str().unwrap()).unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The claims of an RS256 JWT whose signature one of `keys` verifies (`None` otherwise).
pub fn verified_claims(
    jwt: &str,
    keys: &[(String, Vec<u8>, Vec<u8>)],
) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jwt.split('.');
    let (h, p, sig) = (parts.next()?, parts.next()?, parts.next()?);
    let sig = b64.decode(sig).ok()?;
    let signed = format!("{h}.{p}");
    let ok = keys.iter().any(|(_, n, e)| {
        ring::signature::RsaPublicKeyComponents { n, e }
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &sig,
            )
            .is_ok()
    });
    ok.then(|| serde_json::from_slice(&b64.decode(p).ok()?).ok())
        .flatten()
}

/// A new SQLite database `name.db` in `dir`, made by running `sql`.
pub fn make_db(dir: &TempDir, name: &str, sql: &str) -> PathBuf {
    let db = dir.path().join(format!("{name}.db"));
    rusqlite::Connection::open(&db)
        .and_then(|c| c.execute_batch(sql))
        .unwrap_or_else(|e| panic!("cannot make {}: {e}", db.display()));
    db
}

/// A minimal blocking HTTP GET on loopback (for readiness checks).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.starts_with("HTTP/1.1 200").then_some(buf)
}

/// A minimal blocking HTTP request with a JSON body on loopback; the status code.
pub fn http_send(port: u16, method: &str, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A fresh, empty temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("harvest-it-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("HARVEST_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Run the built binary with a clean environment plus `envs`.
pub fn harvest(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harvest"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HARVEST_NO_RETRY_SLEEP", "1")
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run harvest")
}

/// `COMMAND --url URL --db DB --out OUT REST…`: one job against one server.
pub fn job_args(command: &str, url: &str, db: &str, out: &str, rest: &[&str]) -> Vec<String> {
    let mut args = vec![command, "--url", url, "--db", db, "--out", out];
    args.extend_from_slice(rest);
    args.iter().map(|a| a.to_string()).collect()
}

/// Borrow owned arguments as `harvest` takes them.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Run `harvest COMMAND --url URL --db DB --out OUT REST…`: one job against one server.
pub fn run_job(command: &str, url: &str, db: &str, out: &str, rest: &[&str]) -> Output {
    harvest(&strs(&job_args(command, url, db, out, rest)), &[])
}

/// Run `harvest sql-extract --db DB --query QUERY --output FILE EXTRA…`.
pub fn extract_to_file(db: &Path, query: &str, file: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "sql-extract",
        "--db",
        db.to_str().unwrap(),
        "--query",
        query,
    ];
    args.extend(["--output", file.to_str().unwrap()]);
    args.extend_from_slice(extra);
    harvest(&args, &[])
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}, got {:?}\nstderr:\n{}",
        o.status.code(),
        stderr(o)
    );
}

/// The rows of dataset `dataset` in DIR `out` as `harvest export --format ndjson` writes them
/// (one JSON line per row, columns unified by name across the parts).
pub fn export_ndjson(out: &Path, dataset: &str) -> Vec<String> {
    let file = out.join(format!("export-{dataset}.ndjson"));
    let e = harvest(
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--dataset",
            dataset,
            "--format",
            "ndjson",
            "--output",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&e, 0);
    let text = fs::read_to_string(&file).unwrap();
    fs::remove_file(&file).unwrap();
    text.lines().map(str::to_string).collect()
}

/// Start `harvest ARGS` and SIGKILL it after a seeded delay (`base_ms` plus up to 1.5 s), once
/// or twice per seed; then the caller runs it to completion. Returns how many kills landed
/// while it was still running.
pub fn kill_at_seeded_moments(args: &[&str], seed: u64, base_ms: u64) -> usize {
    let mut landed = 0;
    for k in 0..=(seed % 2) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_harvest"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(base_ms + (seed * 7919 + k * 104_729) % 1500);
        let started = Instant::now();
        while started.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_none() {
            landed += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    landed
}

/// Every page line of the manifest in `out` is the only one of its run, output and page
/// number: no recorded page was fetched again.
#[track_caller]
pub fn assert_no_page_fetched_twice(out: &Path, what: &str) {
    let m = manifest(out);
    let mut per_page: BTreeMap<(String, String, u64), usize> = BTreeMap::new();
    for p in records(&m, "page") {
        let key = (
            p["run_id"].as_str().unwrap().to_string(),
            p["output"].as_str().unwrap().to_string(),
            p["page"].as_u64().unwrap(),
        );
        *per_page.entry(key).or_default() += 1;
    }
    assert!(
        per_page.values().all(|c| *c == 1),
        "{what}: a recorded page was fetched again"
    );
}

/// SIGKILL `child` once `manifest` records `pages` pages; false when it ended first (or did
/// not get there within two minutes).
pub fn kill_after_pages(child: &mut Child, manifest: &Path, pages: usize) -> bool {
    let started = Instant::now();
    let mut reached = false;
    while started.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let n = fs::read_to_string(manifest)
            .map(|m| m.matches("\"kind\":\"page\"").count())
            .unwrap_or(0);
        if n >= pages {
            reached = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    reached
}

/// Read Delta tables with the three Delta readers (`tests/it/read_delta.py`: deltalake, polars,
/// DuckDB's `delta` extension) and compare with SQLite's `table`, row for row. `tables`: one
/// table directory, or several (a split table's shards) joined by `:`. Returns the script's
/// JSON (version, columns, types, rows per reader).
#[track_caller]
pub fn delta_readers_agree(
    tables: &str,
    db: &Path,
    table: &str,
    version: Option<i64>,
) -> serde_json::Value {
    delta_readers_agree_env(tables, db, table, version, &[])
}

/// [`delta_readers_agree`] with these environment variables (an S3 server's, for s3:// tables).
#[track_caller]
pub fn delta_readers_agree_env(
    tables: &str,
    db: &Path,
    table: &str,
    version: Option<i64>,
    envs: &[(&str, String)],
) -> serde_json::Value {
    let mut cmd = Command::new(delta_readers_python());
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    cmd.arg(repo_root().join("tests/it/read_delta.py"))
        .arg(tables)
        .arg(db)
        .arg(table);
    if let Some(v) = version {
        cmd.arg(v.to_string());
    }
    let o = cmd.output().expect("run read_delta.py");
    assert!(
        o.status.success(),
        "Delta readers disagree with SQLite for {table} (version {version:?}):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("read_delta.py prints JSON")
}

/// Every action line of a Delta table's log: (version, line), in version order.
pub fn delta_log(table: &Path) -> Vec<(u64, serde_json::Value)> {
    let mut files: Vec<PathBuf> = fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = vec![];
    for f in files {
        let version: u64 = f.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        for line in fs::read_to_string(&f).unwrap().lines() {
            out.push((version, serde_json::from_str(line).unwrap()));
        }
    }
    out
}

/// The process exited with `code` and its stderr says `text`.
#[track_caller]
pub fn assert_exit_saying(o: &Output, code: i32, text: &str) {
    assert_exit(o, code);
    assert!(
        stderr(o).contains(text),
        "expected {text:?} in:\n{}",
        stderr(o)
    );
}

/// One comparable cell value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    Null,
    Int(i64),
    /// f64 bits, so rows can be sorted and compared exactly.
    Real(u64),
    Text(String),
    Blob(Vec<u8>),
}

pub fn real(f: f64) -> Cell {
    Cell::Real(f.to_bits())
}

/// All rows of a Parquet dataset directory or file (recursively, Hive partition values restored as
/// text columns named by the directory), with its column names and Arrow types.
pub fn read_dataset(dir: &Path) -> (Vec<String>, Vec<DataType>, Vec<Vec<Cell>>) {
    let mut files = vec![];
    if dir.is_file() {
        files.push((dir.to_path_buf(), None));
    } else {
        collect_parts(dir, &mut files);
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no Parquet parts under {}",
        dir.display()
    );
    let mut names: Option<Vec<String>> = None;
    let mut types: Vec<DataType> = vec![];
    let mut rows = vec![];
    for (file, partition) in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let schema = reader.schema();
        let mut these: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut these_types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        if let Some((col, _)) = &partition {
            these.push(col.clone());
            these_types.push(DataType::Utf8);
        }
        match &names {
            None => {
                names = Some(these.clone());
                types = these_types.clone();
            }
            Some(n) => {
                assert_eq!(
                    n,
                    &these,
                    "parts of one dataset disagree on columns: {}",
                    file.display()
                );
                assert_eq!(
                    types,
                    these_types,
                    "parts of one dataset disagree on types: {}",
                    file.display()
                );
            }
        }
        for batch in reader {
            let batch = batch.unwrap();
            for r in 0..batch.num_rows() {
                let mut row: Vec<Cell> = (0..batch.num_columns())
                    .map(|c| cell(batch.column(c), r))
                    .collect();
                if let Some((_, v)) = &partition {
                    row.push(match v {
                        None => Cell::Null,
                        Some(s) => Cell::Text(s.clone()),
                    });
                }
                rows.push(row);
            }
        }
    }
    (names.unwrap(), types, rows)
}

/// A part file and the Hive partition (column, value; `None` value for NULL) it lies in.
type PartFile = (PathBuf, Option<(String, Option<String>)>);

fn collect_parts(dir: &Path, out: &mut Vec<PartFile>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            let mut sub = vec![];
            collect_parts(&p, &mut sub);
            let (col, val) = name.split_once('=').expect("partition dirs are col=value");
            let val = if val == "__HIVE_DEFAULT_PARTITION__" {
                None
            } else {
                Some(percent_decode(val))
            };
            out.extend(
                sub.into_iter()
                    .map(|(f, _)| (f, Some((percent_decode(col), val.clone())))),
            );
        } else if name.ends_with(".parquet") && !name.starts_with('.') {
            out.push((p, None));
        }
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 3 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn cell(a: &dyn Array, i: usize) -> Cell {
    if a.is_null(i) {
        return Cell::Null;
    }
    match a.data_type() {
        DataType::Int64 => Cell::Int(a.as_primitive::<Int64Type>().value(i)),
        DataType::Boolean => Cell::Int(i64::from(a.as_boolean().value(i))),
        DataType::Float64 => real(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Cell::Text(a.as_string::<i32>().value(i).to_string()),
        DataType::Binary => Cell::Blob(a.as_binary::<i32>().value(i).to_vec()),
        DataType::Date32 => Cell::Int(a.as_primitive::<Date32Type>().value(i) as i64),
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            Cell::Int(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        other => panic!("unexpected Arrow type {other:?}"),
    }
}

/// Rows of an SQLite table, converted the way a lossless harvest must have typed them:
/// `types[i]` is the Parquet column's type (Int64, Float64, Utf8, Binary, Date32, Timestamp).
pub fn read_sqlite(db: &Path, sql: &str, types: &[DataType]) -> Vec<Vec<Cell>> {
    use rusqlite::types::ValueRef;
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    assert_eq!(n, types.len(), "column count of {sql:?}");
    let mut rows = stmt.query([]).unwrap();
    let mut out = vec![];
    while let Some(r) = rows.next().unwrap() {
        let mut row = Vec::with_capacity(n);
        for (i, ty) in types.iter().enumerate() {
            let v = r.get_ref(i).unwrap();
            row.push(match (v, ty) {
                (ValueRef::Null, _) => Cell::Null,
                (ValueRef::Integer(x), DataType::Float64) => real(x as f64),
                (ValueRef::Integer(x), _) => Cell::Int(x),
                (ValueRef::Real(x), _) => real(x),
                (ValueRef::Text(t), DataType::Binary) => Cell::Blob(t.to_vec()),
                (ValueRef::Text(t), DataType::Date32) => Cell::Int(
                    harvest::schema::parse_date(std::str::from_utf8(t).unwrap()).unwrap() as i64,
                ),
                (ValueRef::Text(t), DataType::Timestamp(_, _)) => Cell::Int(
                    harvest::schema::parse_timestamp(std::str::from_utf8(t).unwrap()).unwrap(),
                ),
                (ValueRef::Text(t), _) => Cell::Text(String::from_utf8(t.to_vec()).unwrap()),
                (ValueRef::Blob(b), _) => Cell::Blob(b.to_vec()),
            });
        }
        out.push(row);
    }
    out
}

/// Assert two row multisets are equal, showing the first difference.
#[track_caller]
pub fn assert_same_rows(what: &str, mut got: Vec<Vec<Cell>>, mut want: Vec<Vec<Cell>>) {
    got.sort();
    want.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} rows harvested, {} in SQLite",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{what}: first differing row (sorted position {i})");
    }
}

/// Parse every manifest line.
pub fn manifest(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn records<'a>(m: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    m.iter().filter(|r| r["kind"] == kind).collect()
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Column names and declared-free SQL select list for a table, as the harvest names them.
pub fn sqlite_columns(db: &Path, table: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("select name from pragma_table_info(?1)")
        .unwrap();
    stmt.query_map([table], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Compare a harvested dataset with the SQLite table, value for value.
#[track_caller]
pub fn assert_dataset_matches_table(out: &Path, db: &Path, table: &str) {
    let dir = out.join("parquet").join(table);
    let (names, types, got) = read_dataset(&dir);
    let select = names
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("select {select} from {}", quote(table));
    let want = read_sqlite(db, &sql, &types);
    assert_same_rows(table, got, want);
}

pub fn counts_by_kind(m: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for r in m {
        *c.entry(r["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    c
}
