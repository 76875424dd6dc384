//! HTTPS against a real server that offers HTTP/2: Datasette 0.65.5 served over TLS by
//! hypercorn (PyPI), with a private CA made by trustme (PyPI). harvest speaks HTTP/2 where the
//! TLS handshake offers it and records it per page, `--http1` keeps HTTP/1.1, the rows are
//! the same either way, and a certificate that is not trusted stops the run at once (exit 1,
//! naming SSL_CERT_FILE) instead of being retried as a network failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Datasette behind hypercorn on TLS, killed on drop.
struct TlsDatasette {
    child: Child,
    url: String,
    /// The private CA's certificate (PEM): what SSL_CERT_FILE names to trust the server.
    ca: PathBuf,
}

impl Drop for TlsDatasette {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const APP: &str = "import os\nfrom datasette.app import Datasette\napp = Datasette([os.environ[\"TLS_DB\"]]).app()\n";

const CERTS: &str = r#"
import sys, trustme
d = sys.argv[1]
ca = trustme.CA()
leaf = ca.issue_cert("127.0.0.1")
ca.cert_pem.write_to_path(d + "/ca.pem")
leaf.private_key_pem.write_to_path(d + "/key.pem")
with open(d + "/cert.pem", "wb") as f:
    for pem in leaf.cert_chain_pems:
        f.write(pem.bytes())
"#;

impl TlsDatasette {
    fn start(db: &Path, dir: &Path) -> TlsDatasette {
        let bin = datasette_bin_with(V0_65, &["hypercorn>=0.17,<1", "trustme>=1,<2"]);
        let venv_bin = bin.parent().unwrap();
        let o = Command::new(venv_bin.join("python"))
            .args(["-c", CERTS])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "trustme: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::write(dir.join("tlsapp.py"), APP).unwrap();
        for _ in 0..5 {
            let port = free_port();
            let log = dir.join(format!("hypercorn-{port}.log"));
            let child = Command::new(venv_bin.join("hypercorn"))
                .args(["--certfile", "cert.pem", "--keyfile", "key.pem", "-b"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("tlsapp:app")
                .current_dir(dir)
                .env("TLS_DB", db)
                .env("PYTHONPATH", dir)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut server = TlsDatasette {
                child,
                url: format!("https://127.0.0.1:{port}"),
                ca: dir.join("ca.pem"),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break;
                }
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Running on https://") {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = server.child.kill();
        }
        panic!("hypercorn did not start; see {}", dir.display());
    }
}

#[test]
fn https_speaks_http2_where_offered_and_refuses_an_untrusted_certificate_at_once() {
    let work = TempDir::new("tls");
    let db = make_db(
        &work,
        "tls",
        "create table items(id integer primary key, name text);\n\
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 2500)\n\
         insert into items select i, 'item ' || i from n;",
    );
    let server = TlsDatasette::start(&db, work.path());
    let run = |name: &str, extra: &[&str], envs: &[(&str, &str)]| {
        let out = work.path().join(name);
        let mut args = job_args(
            "harvest",
            &server.url,
            "tls",
            out.to_str().unwrap(),
            &["--table", "items", "--page-size", "200", "--parallel", "3"],
        );
        args.extend(extra.iter().map(|a| a.to_string()));
        (harvest(&strs(&args), envs), out)
    };
    // Not trusted: one attempt, a clear error, nothing recorded as a page.
    let started = Instant::now();
    let (o, out) = run("untrusted", &[], &[]);
    assert_exit_saying(&o, 1, "is not trusted");
    assert!(stderr(&o).contains("SSL_CERT_FILE"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("retrying"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(records(&manifest(&out), "page").is_empty());

    let ca = server.ca.to_str().unwrap();
    let (o, h2) = run("h2", &[], &[("SSL_CERT_FILE", ca)]);
    assert_exit(&o, 0);
    let pages = records(&manifest(&h2), "page")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert!(pages.len() >= 13);
    assert!(
        pages.iter().all(|p| p["http_version"] == "HTTP/2.0"),
        "every page came over HTTP/2"
    );
    assert_dataset_matches_table(&h2, &db, "items");

    let (o, h1) = run("h1", &["--http1"], &[("SSL_CERT_FILE", ca)]);
    assert_exit(&o, 0);
    assert!(
        records(&manifest(&h1), "page")
            .iter()
            .all(|p| p.get("http_version").is_none()),
        "--http1 pages came over HTTP/1.1"
    );
    assert_dataset_matches_table(&h1, &db, "items");
    for out in [&h2, &h1] {
        let v = harvest(&["verify", "--out", out.to_str().unwrap()], &[]);
        assert_exit(&v, 0);
    }
}
