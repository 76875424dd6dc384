//! An in-process HTTP/1.1 server for the failures a real server won't produce on demand:
//! any status with any headers, TCP resets, bodies cut off mid-stream, stalled bodies. By
//! default it serves a synthetic Datasette-0.65-shaped table `items` (id, name, price), so a
//! harvest can run against it end to end; a handler decides, per request, what to do instead.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// The request body (as far as Content-Length says).
    pub body: Vec<u8>,
    /// 1-based count of requests this server has seen.
    pub n: u64,
}

impl Request {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub enum Action {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close with RST before answering.
    Reset,
    /// Promise the full body (Content-Length) but send only `keep` bytes, then close.
    Truncate { body: Vec<u8>, keep: usize },
    /// Send `keep` bytes of the body, then nothing for `pause`, then close.
    Stall {
        body: Vec<u8>,
        keep: usize,
        pause: Duration,
    },
    /// Forward the request to `upstream` (a base URL) and relay its answer; `then` may turn
    /// a real 200 answer's body into a fault.
    Proxy {
        upstream: String,
        then: Option<fn(Vec<u8>) -> Action>,
    },
    /// Forward to `upstream` + `target` (a rewritten path and query) and relay the answer.
    ProxyTo { upstream: String, target: String },
    /// Relay the request as it came (method, headers, body) to the loopback `port`, after
    /// `delay`, and its answer as it came back (an S3 server behind the fault server).
    /// With `lose_answer`, the server acts on the request but its answer never arrives (the
    /// connection is reset instead): the client cannot tell whether it happened.
    Forward {
        port: u16,
        delay: Duration,
        lose_answer: bool,
    },
}

pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Action {
    Action::Respond {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.into(),
    }
}

type Handler = dyn Fn(&Request) -> Option<Action> + Send + Sync;

pub struct FaultServer {
    pub port: u16,
    pub url: String,
    pub log: Arc<Mutex<Vec<Request>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The synthetic table: `rows` rows, ids 1..=rows.
#[derive(Clone, Copy)]
pub struct Synthetic {
    pub rows: u64,
}

impl Synthetic {
    /// `category` cycles through values that are unsafe as path components, and NULL.
    pub fn row(id: u64) -> (i64, String, f64, Option<&'static str>) {
        let category = [Some("plain"), Some("a/b"), Some("../../escape"), None][(id % 4) as usize];
        (
            id as i64,
            format!("item {id} «ü»"),
            id as f64 * 1.25,
            category,
        )
    }

    /// The 0.65-shaped answer to a table page request.
    pub fn page(&self, req: &Request) -> Action {
        let size: u64 = req
            .param("_size")
            .and_then(|s| s.parse().ok())
            .unwrap_or(100);
        let after: u64 = req.param("_next").and_then(|s| s.parse().ok()).unwrap_or(0);
        let last = (after + size).min(self.rows);
        let rows: Vec<String> = (after + 1..=last)
            .map(|id| {
                let (i, n, p, c) = Self::row(id);
                format!(
                    "[{i}, {}, {p:?}, {}]",
                    serde_json::Value::String(n),
                    serde_json::json!(c)
                )
            })
            .collect();
        let next = if last < self.rows {
            format!("\"{last}\"")
        } else {
            "null".into()
        };
        let count = if req.param("_nocount").is_some() {
            "null".to_string()
        } else {
            self.rows.to_string()
        };
        json(
            200,
            format!(
                "{{\"database\": \"db\", \"table\": \"items\", \"is_view\": false, \"rows\": [{}], \"truncated\": false, \"filtered_table_rows_count\": {count}, \"columns\": [\"id\", \"name\", \"price\", \"category\"], \"primary_keys\": [\"id\"], \"next\": {next}}}",
                rows.join(", ")
            ),
        )
    }
}

/// Default routing: versions, SQL (refused, as on a server with SQL disabled) and the table.
pub fn default_action(syn: Synthetic, req: &Request) -> Action {
    if req.path == "/-/versions.json" {
        return json(
            200,
            r#"{"python": {"version": "3.11"}, "datasette": {"version": "0.65.5"}}"#,
        );
    }
    if req.path == "/db.json" {
        return json(
            400,
            r#"{"ok": false, "error": "SQL is disabled on this instance"}"#,
        );
    }
    // `items`, also reachable under the hostile name `../evil` (tilde-encoded).
    if req.path == "/db/items.json" || req.path == "/db/~2E~2E~2Fevil.json" {
        return syn.page(req);
    }
    json(
        404,
        r#"{"ok": false, "error": "Table not found", "status": 404}"#,
    )
}

impl FaultServer {
    /// Start serving; `handler` returns `Some(action)` to override the default for a request.
    pub fn start(
        syn: Synthetic,
        handler: impl Fn(&Request) -> Option<Action> + Send + Sync + 'static,
    ) -> Self {
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let log2 = log.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let counter = Arc::new(AtomicU64::new(0));
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        acc = listener.accept() => {
                            let Ok((sock, _)) = acc else { continue };
                            let (h, l, c) = (handler.clone(), log2.clone(), counter.clone());
                            tokio::spawn(async move { let _ = serve(sock, syn, h, l, c).await; });
                        }
                    }
                }
            });
        });
        let port = port_rx.recv().unwrap();
        FaultServer {
            port,
            url: format!("http://127.0.0.1:{port}"),
            log,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    mut sock: TcpStream,
    syn: Synthetic,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Request>>>,
    counter: Arc<AtomicU64>,
) -> std::io::Result<()> {
    // One request per connection (we always answer `Connection: close`).
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let method = first.split(' ').next().unwrap_or("GET").to_string();
    let target = first.split(' ').nth(1).unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let url = url::Url::parse(&format!("http://x{target}")).unwrap();
    // The body, as far as Content-Length says.
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_len + length {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let req = Request {
        method,
        path: url.path().to_string(),
        query: url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        headers,
        body: buf[head_len..head_len + length].to_vec(),
        n: counter.fetch_add(1, Ordering::SeqCst) + 1,
    };
    log.lock().unwrap().push(req.clone());
    let mut action = handler(&req).unwrap_or_else(|| default_action(syn, &req));
    if let Action::Forward {
        port,
        delay,
        lose_answer,
    } = action
    {
        // The request as it came, body included (read above), asking for one answer only.
        tokio::time::sleep(delay).await;
        let mut up = TcpStream::connect(("127.0.0.1", port)).await?;
        let head_text = String::from_utf8_lossy(&buf[..head_len - 4]).into_owned();
        let mut out = String::new();
        for (i, line) in head_text.split("\r\n").enumerate() {
            if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        up.write_all(out.as_bytes()).await?;
        up.write_all(&buf[head_len..]).await?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        if lose_answer {
            sock.set_zero_linger()?;
            drop(sock);
            return Ok(());
        }
        sock.write_all(&answer).await?;
        sock.shutdown().await?;
        return Ok(());
    }
    if let Action::ProxyTo { upstream, target } = action {
        action = proxy(&upstream, &target).await;
    }
    if let Action::Proxy { upstream, then } = action {
        let real = proxy(&upstream, &target).await;
        action = match (then, real) {
            (
                Some(f),
                Action::Respond {
                    status: 200, body, ..
                },
            ) => f(body),
            (_, real) => real,
        };
    }
    match action {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(&body).await?;
            sock.shutdown().await?;
        }
        Action::Reset => {
            sock.set_zero_linger()?;
            drop(sock);
        }
        Action::Truncate { body, keep } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(&body[..keep.min(body.len())]).await?;
            sock.flush().await?;
            sock.set_zero_linger()?;
            drop(sock);
        }
        Action::Proxy { .. } | Action::ProxyTo { .. } | Action::Forward { .. } => {
            unreachable!("resolved above")
        }
        Action::Stall { body, keep, pause } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(&body[..keep.min(body.len())]).await?;
            sock.flush().await?;
            tokio::time::sleep(pause).await;
        }
    }
    Ok(())
}

async fn proxy(upstream: &str, target: &str) -> Action {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    });
    match client.get(format!("{upstream}{target}")).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            // Relay what paginators read, too.
            let mut headers = vec![("Content-Type".to_string(), ct)];
            for name in ["link", "x-total-count"] {
                for v in r.headers().get_all(name) {
                    if let Ok(v) = v.to_str() {
                        headers.push((name.to_string(), v.to_string()));
                    }
                }
            }
            match r.bytes().await {
                Ok(b) => Action::Respond {
                    status,
                    headers,
                    body: b.to_vec(),
                },
                Err(_) => Action::Reset,
            }
        }
        Err(_) => Action::Reset,
    }
}

/// The body of a default answer (for building truncated/stalled variants of it).
pub fn body_of(a: &Action) -> Vec<u8> {
    match a {
        Action::Respond { body, .. }
        | Action::Truncate { body, .. }
        | Action::Stall { body, .. } => body.clone(),
        Action::Reset | Action::Proxy { .. } | Action::ProxyTo { .. } | Action::Forward { .. } => {
            vec![]
        }
    }
}
