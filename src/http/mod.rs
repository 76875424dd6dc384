//! The one retrying HTTP client every command uses (DESIGN.md §"HTTP behaviour").
//!
//! Guarantees:
//! - Retries exactly the transient failures: 408, 429, 500, 502, 503, 504, connect errors,
//!   timeouts, stalled and cut-off bodies, and whatever the caller's validator calls transient
//!   (e.g. JSON that ends early). Other 4xx are never retried; 401/403 are auth failures.
//! - Waits use exponential backoff with full jitter, capped per wait; `Retry-After` (seconds or
//!   HTTP-date) overrides the schedule when longer, and holds back every request of the client
//!   (concurrent pages, slices and tables) until it has passed. `X-RateLimit-*`/`RateLimit-*` headers that
//!   say the quota is spent pause the next request until the reset.
//! - A retry budget (attempts per request and total time spent failing and waiting per run)
//!   ends the run with [`HttpError::BudgetExhausted`] (exit 5) instead of retrying forever.
//! - Connect, per-request and stall (no bytes for N s) timeouts are always on; bodies above a
//!   cap are refused.
//! - Credentials go only into request headers, are registered with [`crate::redact`], and never
//!   appear in an error's text.
//! - Credentials never leave the origin they were meant for: with `auth` set, a redirect to
//!   another origin (scheme, host or port) is refused rather than followed (reqwest would drop
//!   `Authorization` but forward a custom key header; a query key is the server's URL).
//! - `HARVEST_NO_RETRY_SLEEP=1` turns every wait into zero (tests), the accounting stays.
//!
//! The folder: the client (this file), OAuth2 tokens ([`oauth2`]) and compressed bodies
//! ([`content_encoding`]).
//!
//! Architecture invariant: the base layer. HTTP knows no source, table or file: callers hand it
//! a request and a body validator and get bytes back (or a typed [`HttpError`]).

pub mod content_encoding;
pub mod oauth2;
mod origin;
mod settings;

pub use self::origin::*;
pub use self::settings::{Auth, HttpSettings};

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rand::RngExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use url::Url;

use self::content_encoding::DecodeError;

/// One request to send: a GET of a URL, or any method with headers and a JSON body.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: reqwest::Method,
    pub url: &'a Url,
    /// Sent after the source's own headers.
    pub headers: &'a [(String, String)],
    /// A JSON body (sent with `Content-Type: application/json`).
    pub body: Option<&'a [u8]>,
    /// Non-2xx statuses whose responses are returned (body read in full) instead of failing,
    /// e.g. 404 for a row-driven table that records missing ids. Never 401/403 or a retried
    /// status (the config refuses those).
    pub keep: &'a [u16],
}

impl<'a> Request<'a> {
    pub fn get(url: &'a Url) -> Self {
        Self {
            method: reqwest::Method::GET,
            url,
            headers: &[],
            body: None,
            keep: &[],
        }
    }
}

/// A response body received in full, with what the manifest records about it.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    /// The body the server meant: decoded when it was sent compressed.
    pub body: Vec<u8>,
    /// The `Content-Encoding` the body crossed the wire in (`None`: as is).
    pub content_encoding: Option<String>,
    /// Bytes that crossed the wire for the body (its compressed size, when compressed).
    pub wire_bytes: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    /// The response headers (paginators read `Link` and totals from them).
    pub headers: HeaderMap,
    /// Attempts this response took, the successful one included.
    pub attempts: u32,
    pub elapsed_ms: u64,
    pub fetched_at: chrono::DateTime<chrono::Utc>,
    /// The HTTP version the response came in, when not HTTP/1.1 (`HTTP/2.0`).
    pub http_version: Option<String>,
}

/// What a caller's validator says about a 2xx body.
pub enum Verdict<T> {
    Accept(T),
    /// The body is damaged in a way a retry may fix (e.g. cut off).
    Retry(String),
    /// The body is wrong and retrying will not help.
    Reject(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{url} answered {status}: the server rejected our credentials{}",
        with_colon(detail)
    )]
    Auth {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url} answered {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error(
        "gave up on {url} after {attempts} attempt{} ({elapsed:.0?} spent retrying): last error: {last}",
        if *attempts == 1 { "" } else { "s" }
    )]
    BudgetExhausted {
        url: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error("the response body from {url} is larger than the {limit}-byte cap")]
    BodyTooLarge { url: String, limit: u64 },
    #[error("unexpected response from {url}: {reason}")]
    BadBody { url: String, reason: String },
    #[error("could not build a request for {url}: {reason}")]
    Request { url: String, reason: String },
    #[error(
        "the TLS certificate of {url} is not trusted ({reason}); if the server's certificate comes from a private CA, point SSL_CERT_FILE at that CA's certificate (PEM) and rerun"
    )]
    Untrusted { url: String, reason: String },
    #[error("{url} redirected to another origin ({to}): {advice}")]
    CrossOrigin {
        url: String,
        to: String,
        advice: String,
    },
}

impl HttpError {
    pub fn is_auth(&self) -> bool {
        matches!(self, HttpError::Auth { .. })
    }
    pub fn is_budget_exhausted(&self) -> bool {
        matches!(self, HttpError::BudgetExhausted { .. })
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Auth { status, .. } | HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Counters for the run summary and `run_end`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpStats {
    pub requests: u64,
    pub retries: u64,
    /// Body bytes as decoded, and as they crossed the wire.
    pub bytes: u64,
    pub wire_bytes: u64,
}

struct State {
    stats: HttpStats,
    /// Time spent on failed attempts and backoff waits, whole run.
    spent_retrying: Duration,
    /// The end of the latest failure-and-wait interval counted in `spent_retrying`.
    retry_covered_until: Option<Instant>,
    /// Earliest moment the next request may start (rate limit and server quota).
    not_before: Option<Instant>,
}

pub struct Client {
    inner: reqwest::Client,
    settings: HttpSettings,
    no_sleep: bool,
    state: Mutex<State>,
}

/// One failed attempt, classified.
enum Failure {
    Transient {
        reason: String,
        retry_after: Option<Duration>,
        /// The HTTP status, when the failure was one (logged as a field).
        status: Option<u16>,
    },
    Fatal(HttpError),
}

impl Failure {
    /// A failure worth retrying that is not an HTTP status (a reset, a timeout, a cut body).
    fn transient(reason: String) -> Self {
        Failure::Transient {
            reason,
            retry_after: None,
            status: None,
        }
    }
}

impl Client {
    pub fn new(settings: HttpSettings) -> Result<Self, HttpError> {
        if let Some(a) = &settings.auth {
            a.register_secrets();
        }
        // TLS uses rustls with the ring provider, installed once per process: delta-rs builds
        // rustls with aws-lc as well, and with two providers compiled in rustls picks neither
        // by itself. An error only means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            // Node (json-server) and uvicorn (Datasette) close idle keep-alive connections
            // after 5 s; reusing one the server is closing fails the request ("connection
            // closed before message completed", resets), so idle ones are dropped sooner.
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(8)
            // HTTP/2 where an HTTPS server offers it in the TLS handshake (ALPN), so requests in
            // flight at once share one connection; HTTP/1.1 keep-alive everywhere else.
            .user_agent(concat!("harvest/", env!("CARGO_PKG_VERSION")))
            .redirect(redirect_policy(
                settings.credentials || settings.auth.is_some(),
            ));
        let builder = if settings.http1_only {
            builder.http1_only()
        } else {
            builder
        };
        let inner = builder.build().map_err(|e| HttpError::Request {
            url: String::new(),
            reason: e.to_string(),
        })?;
        let no_sleep = std::env::var("HARVEST_NO_RETRY_SLEEP").is_ok_and(|v| v == "1");
        Ok(Self {
            inner,
            settings,
            no_sleep,
            state: Mutex::new(State {
                stats: HttpStats::default(),
                spent_retrying: Duration::ZERO,
                retry_covered_until: None,
                not_before: None,
            }),
        })
    }

    pub fn stats(&self) -> HttpStats {
        self.state.lock().map(|s| s.stats).unwrap_or_default()
    }

    /// GET `url`, retrying transient failures, and hand each 2xx body to `validate`.
    pub async fn get<T>(
        &self,
        url: &Url,
        validate: impl Fn(&Fetched) -> Verdict<T>,
    ) -> Result<(Fetched, T), HttpError> {
        self.send(&Request::get(url), validate).await
    }

    /// Send `req`, retrying transient failures, and hand each 2xx body (and each body with a
    /// status in `req.keep`) to `validate`.
    pub async fn send<T>(
        &self,
        req: &Request<'_>,
        validate: impl Fn(&Fetched) -> Verdict<T>,
    ) -> Result<(Fetched, T), HttpError> {
        let url = req.url;
        let shown = display_url(url);
        let mut attempt: u32 = 0;
        // OAuth2: the token a request was refused with (401), renewed once per request.
        let mut stale: Option<String> = None;
        let mut renewed = false;
        loop {
            attempt += 1;
            self.wait_turn().await;
            let started = Instant::now();
            let bearer = match self.oauth2_token(stale.as_deref()).await {
                Ok(t) => t,
                Err(f) => {
                    self.settle_failure(f, attempt, started.elapsed(), &shown)
                        .await?;
                    continue;
                }
            };
            let outcome = self.attempt(req, &shown, bearer.as_deref()).await;
            if let Err(Failure::Fatal(HttpError::Auth { status: 401, .. })) = &outcome
                && bearer.is_some()
                && !renewed
            {
                tracing::warn!("{shown} refused the OAuth2 token (401): getting a new one");
                renewed = true;
                stale = bearer;
                continue;
            }
            let elapsed = started.elapsed();
            let failure = match outcome {
                Ok(mut fetched) => {
                    fetched.attempts = attempt;
                    fetched.elapsed_ms = elapsed.as_millis() as u64;
                    match validate(&fetched) {
                        Verdict::Accept(v) => {
                            if let Ok(mut s) = self.state.lock() {
                                s.stats.bytes += fetched.body.len() as u64;
                                s.stats.wire_bytes += fetched.wire_bytes;
                            }
                            return Ok((fetched, v));
                        }
                        Verdict::Retry(reason) => Failure::transient(reason),
                        Verdict::Reject(reason) => Failure::Fatal(HttpError::BadBody {
                            url: shown.clone(),
                            reason,
                        }),
                    }
                }
                Err(f) => f,
            };
            self.settle_failure(failure, attempt, elapsed, &shown)
                .await?;
        }
    }

    /// After a failed attempt: give up (`Err`) when the failure is fatal or the retry budget
    /// is spent, else wait out the backoff.
    async fn settle_failure(
        &self,
        failure: Failure,
        attempt: u32,
        elapsed: Duration,
        shown: &str,
    ) -> Result<(), HttpError> {
        let (reason, retry_after, status) = match failure {
            Failure::Fatal(e) => return Err(e),
            Failure::Transient {
                reason,
                retry_after,
                status,
            } => (reason, retry_after, status),
        };
        let last_reason = reason;
        let wait = self.backoff(attempt, retry_after);
        let spent = {
            let mut s = self.state.lock().map_err(|_| HttpError::Request {
                url: shown.to_string(),
                reason: "internal lock poisoned".into(),
            })?;
            // Wall time spent failing and waiting: requests failing at the same moment (a
            // row-driven table's concurrent requests) count the time once, not once each.
            let now = Instant::now();
            let start = now.checked_sub(elapsed).unwrap_or(now);
            let (add, covered) = union_extend(s.retry_covered_until, start, now + wait);
            s.spent_retrying += add;
            s.retry_covered_until = Some(covered);
            s.stats.retries += 1;
            // The server said when to come back: no request of this client starts before
            // then (concurrent pages and tables share the wait, as they share the quota).
            if retry_after.is_some() {
                let until = now + wait;
                s.not_before = Some(s.not_before.map_or(until, |t| t.max(until)));
            }
            s.spent_retrying
        };
        if attempt >= self.settings.max_attempts || spent > self.settings.retry_budget {
            return Err(HttpError::BudgetExhausted {
                url: shown.to_string(),
                attempts: attempt,
                elapsed: spent,
                last: last_reason,
            });
        }
        tracing::warn!(
            url = shown,
            attempt,
            max_attempts = self.settings.max_attempts,
            status,
            wait_ms = wait.as_millis() as u64,
            "attempt {attempt} of {} for {shown} failed: {last_reason}; retrying in {:.1}s",
            self.settings.max_attempts,
            wait.as_secs_f64()
        );
        self.sleep(wait).await;
        Ok(())
    }

    /// The OAuth2 token for the next attempt (`None` without OAuth2).
    async fn oauth2_token(&self, stale: Option<&str>) -> Result<Option<String>, Failure> {
        let Some(Auth::OAuth2(o)) = &self.settings.auth else {
            return Ok(None);
        };
        match o.token(&self.inner, stale).await {
            Ok(t) => Ok(Some(t)),
            Err(crate::http::oauth2::TokenError::Transient(reason)) => {
                Err(Failure::transient(reason))
            }
            Err(crate::http::oauth2::TokenError::Refused { status, detail }) => {
                Err(Failure::Fatal(HttpError::Auth {
                    url: display_url(&o.token_url),
                    status,
                    detail,
                }))
            }
        }
    }

    async fn sleep(&self, d: Duration) {
        if !self.no_sleep && !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// Honour the client-side rate limit and any server-announced quota reset.
    async fn wait_turn(&self) {
        let wait_until = {
            let Ok(mut s) = self.state.lock() else { return };
            let now = Instant::now();
            let start = s.not_before.map_or(now, |t| t.max(now));
            // The next request starts no earlier than this one (a pause another request was
            // told to take holds for all), and with a rate limit one interval later.
            s.not_before = Some(match self.settings.rate_limit.filter(|r| *r > 0.0) {
                Some(r) => start + Duration::from_secs_f64(1.0 / r),
                None => start,
            });
            s.stats.requests += 1;
            start
        };
        let now = Instant::now();
        if wait_until > now {
            self.sleep(wait_until - now).await;
        }
    }

    /// Full jitter: a random wait in [0, min(cap, base·2^(attempt-1))], never below Retry-After.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.settings.backoff_cap);
        let jitter =
            Duration::from_secs_f64(rand::rng().random_range(0.0..=exp.as_secs_f64().max(0.0)));
        match retry_after {
            // The server knows best, but a hostile header must not park us for a day.
            Some(ra) => ra.min(self.settings.retry_budget).max(jitter.min(ra)),
            None => jitter,
        }
    }

    async fn attempt(
        &self,
        req: &Request<'_>,
        shown: &str,
        bearer: Option<&str>,
    ) -> Result<Fetched, Failure> {
        let fut = self.attempt_inner(req, shown, bearer);
        match tokio::time::timeout(self.settings.request_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Failure::transient(format!(
                "no complete response within {:?}",
                self.settings.request_timeout
            ))),
        }
    }

    async fn attempt_inner(
        &self,
        request: &Request<'_>,
        shown: &str,
        bearer: Option<&str>,
    ) -> Result<Fetched, Failure> {
        let url = match &self.settings.auth {
            Some(Auth::Query { name, value }) => {
                let mut u = request.url.clone();
                u.query_pairs_mut().append_pair(name, value);
                u
            }
            _ => request.url.clone(),
        };
        let mut req = self.inner.request(request.method.clone(), url);
        for (k, v) in &self.settings.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        for (k, v) in request.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(body) = request.body {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        if self.settings.compression {
            req = req.header(header::ACCEPT_ENCODING, content_encoding::ACCEPT);
        }
        match &self.settings.auth {
            Some(Auth::Bearer(t)) => req = req.bearer_auth(t),
            Some(Auth::Basic { user, password }) => req = req.basic_auth(user, Some(password)),
            Some(Auth::Header { name, value }) => req = req.header(name.as_str(), value.as_str()),
            Some(Auth::Query { .. } | Auth::OAuth2(_)) | None => {}
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let fetched_at = chrono::Utc::now();
        let mut resp = req.send().await.map_err(|e| {
            match std::error::Error::source(&e).and_then(|c| c.downcast_ref::<LeftOrigin>()) {
                Some(LeftOrigin { to, advice }) => Failure::Fatal(HttpError::CrossOrigin {
                    url: shown.to_string(),
                    to: to.clone(),
                    advice: advice.clone(),
                }),
                None => match untrusted_certificate(&e) {
                    // Retrying cannot make a certificate trusted.
                    Some(reason) => Failure::Fatal(HttpError::Untrusted {
                        url: shown.to_string(),
                        reason,
                    }),
                    None => Failure::transient(describe_reqwest_error(&e)),
                },
            }
        })?;
        let status = resp.status();
        let version = resp.version();
        let headers = resp.headers().clone();
        self.note_quota(&headers);
        if !status.is_success() && !request.keep.contains(&status.as_u16()) {
            // Read a little of the body for the error message; ignore failures doing so.
            let detail = match tokio::time::timeout(self.settings.stall_timeout, resp.chunk()).await
            {
                Ok(Ok(Some(b))) => snippet(&b),
                _ => String::new(),
            };
            return Err(classify_status(status, &headers, shown, detail));
        }
        if let Some(len) = resp.content_length()
            && len > self.settings.max_body_bytes
        {
            return Err(Failure::Fatal(HttpError::BodyTooLarge {
                url: shown.to_string(),
                limit: self.settings.max_body_bytes,
            }));
        }
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(64 * 1024) as usize);
        loop {
            match tokio::time::timeout(self.settings.stall_timeout, resp.chunk()).await {
                Err(_) => {
                    return Err(Failure::transient(format!(
                        "body stalled: no bytes for {:?} after {} bytes",
                        self.settings.stall_timeout,
                        body.len()
                    )));
                }
                Ok(Err(e)) => {
                    return Err(Failure::transient(format!(
                        "body cut off after {} bytes: {}",
                        body.len(),
                        describe_reqwest_error(&e)
                    )));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    body.extend_from_slice(&chunk);
                    if body.len() as u64 > self.settings.max_body_bytes {
                        return Err(Failure::Fatal(HttpError::BodyTooLarge {
                            url: shown.to_string(),
                            limit: self.settings.max_body_bytes,
                        }));
                    }
                }
            }
        }
        let header_str = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let wire_bytes = body.len() as u64;
        let encoding = header_str(header::CONTENT_ENCODING);
        let encodings = content_encoding::parse(encoding.as_deref());
        let body = if encodings.is_empty() {
            body
        } else {
            self.decode_body(&encodings, body, shown)?
        };
        Ok(Fetched {
            status: status.as_u16(),
            body,
            content_encoding: (!encodings.is_empty()).then(|| encodings.join(", ")),
            wire_bytes,
            etag: header_str(header::ETAG),
            last_modified: header_str(header::LAST_MODIFIED),
            content_type: header_str(header::CONTENT_TYPE),
            headers,
            attempts: 0,
            elapsed_ms: 0,
            fetched_at,
            http_version: (version != reqwest::Version::HTTP_11).then(|| format!("{version:?}")),
        })
    }

    /// The body the server meant, from one it sent compressed.
    fn decode_body(
        &self,
        encodings: &[String],
        wire: Vec<u8>,
        shown: &str,
    ) -> Result<Vec<u8>, Failure> {
        let wire_len = wire.len();
        content_encoding::decode(encodings, wire, self.settings.max_body_bytes).map_err(|e| {
            match e {
                DecodeError::TooLarge => Failure::Fatal(HttpError::BodyTooLarge {
                    url: shown.to_string(),
                    limit: self.settings.max_body_bytes,
                }),
                DecodeError::Unsupported(enc) => Failure::Fatal(HttpError::BadBody {
                    url: shown.to_string(),
                    reason: format!(
                        "the body is in the content encoding {enc:?}, which harvest did not ask for (it accepts {}); rerun with --no-compression if a proxy adds it",
                        content_encoding::ACCEPT
                    ),
                }),
                DecodeError::Damaged(why) => Failure::transient(format!(
                        "the {} body ({wire_len} bytes on the wire) does not decode: {why}",
                        encodings.join(", ")
                    )),
            }
        })
    }

    /// `X-RateLimit-Remaining: 0` / `RateLimit-Remaining: 0` with a reset: pause until then.
    fn note_quota(&self, headers: &HeaderMap) {
        let get = |names: &[&str]| {
            names.iter().find_map(|n| {
                headers
                    .get(*n)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse::<f64>().ok())
            })
        };
        let remaining = get(&["x-ratelimit-remaining", "ratelimit-remaining"]);
        if remaining.is_none_or(|r| r > 0.0) {
            return;
        }
        let Some(reset) = get(&["x-ratelimit-reset", "ratelimit-reset"]) else {
            return;
        };
        // Large values are epoch seconds (GitHub style); small ones a delta (IETF draft).
        let delta = if reset > 1.0e9 {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            (reset - now).max(0.0)
        } else {
            reset.max(0.0)
        };
        let delta =
            Duration::from_secs_f64(delta.min(self.settings.backoff_cap.as_secs_f64() * 10.0));
        tracing::info!(
            "server says the rate-limit quota is spent; pausing {:.1}s",
            delta.as_secs_f64()
        );
        if let Ok(mut s) = self.state.lock() {
            s.not_before = Some(Instant::now() + delta);
        }
    }
}

/// Add the interval `start..end` to a union of intervals that ends at `covered`: the time it
/// adds beyond what is already covered, and the union's new end.
/// The reason a server's TLS certificate was refused, if that is why `e` happened: rustls's
/// `InvalidCertificate` error, which reaches here inside an I/O error (as its text: the I/O
/// error's `source` skips it, and the boxed error does not downcast to `rustls::Error`).
fn untrusted_certificate(e: &reqwest::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            let text = inner.to_string();
            if text.starts_with("invalid peer certificate") {
                return Some(text);
            }
        }
        cur = c.source();
    }
    None
}

fn union_extend(covered: Option<Instant>, start: Instant, end: Instant) -> (Duration, Instant) {
    let from = match covered {
        Some(c) if c > start => c,
        _ => start,
    };
    let add = end.saturating_duration_since(from);
    (add, covered.map_or(end, |c| c.max(end)))
}

fn classify_status(status: StatusCode, headers: &HeaderMap, url: &str, detail: String) -> Failure {
    let code = status.as_u16();
    let detail_sfx = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    match code {
        401 | 403 => Failure::Fatal(HttpError::Auth {
            url: url.to_string(),
            status: code,
            detail,
        }),
        408 | 429 | 500 | 502 | 503 | 504 => Failure::Transient {
            reason: format!("HTTP {code}{detail_sfx}"),
            retry_after: parse_retry_after(headers),
            status: Some(code),
        },
        _ => Failure::Fatal(HttpError::Status {
            url: url.to_string(),
            status: code,
            detail: detail_sfx,
        }),
    }
}

/// `" (detail)"`, or nothing for an empty detail.
fn with_colon(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(300)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&u("http://a/x?p=1"), &u("http://a:80/y")));
        assert!(same_origin(&u("https://a/x"), &u("https://a:443/z")));
        assert!(!same_origin(&u("http://a/x"), &u("https://a/x")));
        assert!(!same_origin(&u("http://a:8001/x"), &u("http://a:8002/x")));
        assert!(!same_origin(&u("http://a/x"), &u("http://b/x")));
        assert!(!same_origin(&u("http://a/x"), &u("http://a.evil/x")));
        assert_eq!(origin_of(&u("http://a:8001/x?q=1")), "http://a:8001");
        assert_eq!(origin_of(&u("https://a:443/x")), "https://a");
        // A downgrade is named as such (a proxy's inner scheme), anything else as an address.
        let down = left_origin_advice(&u("https://api/x"), &u("http://api/x?_next=2"));
        assert!(down.contains("unencrypted") && down.contains("force_https_urls"));
        let away = left_origin_advice(&u("http://api/x"), &u("http://10.0.0.5:8001/x"));
        assert!(away.contains("set the source's `url`") && away.contains("`cursor`"));
    }

    #[test]
    fn concurrent_failures_count_their_wall_time_once() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        // Two sequential failures: both count.
        let (a, c) = union_extend(None, s(0), s(100));
        let (b, c) = union_extend(Some(c), s(200), s(300));
        assert_eq!((a + b, c), (Duration::from_millis(200), s(300)));
        // Eight at once (a row-driven burst of 429s): counted once.
        let mut total = Duration::ZERO;
        let mut cov = None;
        for _ in 0..8 {
            let (add, c) = union_extend(cov, s(1000), s(2000));
            total += add;
            cov = Some(c);
        }
        assert_eq!(total, Duration::from_millis(1000));
        // Overlapping: only the part past the covered end.
        let (add, c) = union_extend(cov, s(1500), s(2500));
        assert_eq!((add, c), (Duration::from_millis(500), s(2500)));
    }

    #[test]
    fn retry_after_both_forms() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        let future = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(future)).unwrap(),
        );
        let d = parse_retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn backoff_is_capped_jittered_and_respects_retry_after() {
        let c = Client::new(HttpSettings::default()).unwrap();
        for attempt in 1..30 {
            let w = c.backoff(attempt, None);
            assert!(w <= Duration::from_secs(60), "attempt {attempt}: {w:?}");
        }
        assert!(c.backoff(1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        // Jitter: not every wait is the same.
        let waits: std::collections::HashSet<_> = (0..20).map(|_| c.backoff(6, None)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn status_classes() {
        let h = HeaderMap::new();
        for code in [408u16, 429, 500, 502, 503, 504] {
            assert!(matches!(
                classify_status(StatusCode::from_u16(code).unwrap(), &h, "u", String::new()),
                Failure::Transient { .. }
            ));
        }
        for code in [400u16, 404, 410, 422] {
            assert!(matches!(
                classify_status(StatusCode::from_u16(code).unwrap(), &h, "u", String::new()),
                Failure::Fatal(HttpError::Status { .. })
            ));
        }
        for code in [401u16, 403] {
            assert!(matches!(
                classify_status(StatusCode::from_u16(code).unwrap(), &h, "u", String::new()),
                Failure::Fatal(HttpError::Auth { .. })
            ));
        }
    }
}
