//! Object storage as `--out` (`s3://bucket/prefix`, S3 or an S3-compatible server).
//!
//! A run works in a local *stage* directory exactly as it would on a local `--out` (flock,
//! temp + fsync + rename, fsynced manifest appends, resume) and publishes to the bucket what
//! is durable there. What replaces each local mechanism on the store:
//! - **Atomic publish**: an object appears under its key only complete — one PUT, or for a
//!   file above [`MULTIPART_ABOVE`] the completion of a multipart upload.
//! - **No overwrite**: snapshots, parts and manifest segments are put with `If-None-Match: *`
//!   (conditional put). An object already there is accepted only when it is the same size as
//!   the local file (the upload of a process killed before it noted it); anything else stops
//!   the run, naming the key.
//! - **Append-only manifest**: the store has no append, so the manifest is a sequence of
//!   segments `manifest.d/<byte offset>.jsonl`, each of whole lines, each put only after every
//!   file its lines name. Their concatenation is the local `manifest.jsonl` byte for byte.
//! - **Lock**: a lease object `state/lease.json`, created by conditional put, renewed every
//!   [`RENEW_EVERY`] by a conditional update on its ETag, taken over (again by a conditional
//!   update, so two contenders cannot both win) only once expired, or when its holder ran on
//!   this host and is provably gone (its stage's flock is ours, or its pid no longer exists).
//!   A run that cannot renew stops before it publishes anything more.
//! - **Orphans**: objects a killed process uploaded that no published manifest line names are
//!   deleted when the next run attaches (it holds the lease), so a key is never trusted
//!   unless the manifest vouches for it. Their copies in the stage go too: a resumed run
//!   writes those keys anew, and only its own bytes may reach the store.
//! - **Delete after record**: a part a plain-Parquet run supersedes is deleted from the store
//!   only after the segment recording the supersession is published.
//! - **Resume anywhere**: a stage that is empty or behind the store (the stage was deleted, or
//!   another machine ran last) is first restored from it; a stage that disagrees with the
//!   store stops the run and says to remove the stage.
//!
//! Credentials come from the AWS environment chain (`AWS_ACCESS_KEY_ID`, …, web identity,
//! instance metadata), never from flags; they are never logged. Requests go through
//! object_store's S3 client and its retries (5xx, resets, timeouts) with backoff.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use object_store::path::Path as Key;
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};

use crate::error::UsageError;

/// Files above this go up in a multipart upload (8 MiB parts); smaller ones in one PUT.
pub const MULTIPART_ABOVE: u64 = 8 << 20;
/// How long a lease holds without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(60);
const SEGMENTS: &str = "manifest.d";
const LEASE: &str = "state/lease.json";

/// An `--out` as written (flag or config): a `file://` URL becomes its path; any other
/// `scheme://` is kept for [`is_remote`] (and refused later if it is not `s3://`).
pub fn local_or_url(s: &str) -> Result<PathBuf, String> {
    if s.starts_with("file://") {
        let url =
            url::Url::parse(s).map_err(|e| format!("{s:?} is not a usable file:// URL: {e}"))?;
        return url
            .to_file_path()
            .map_err(|()| format!("{s:?} is not a local path (write file:///absolute/path)"));
    }
    Ok(PathBuf::from(s))
}

/// `--out` names object storage.
pub fn is_remote(out: &Path) -> bool {
    out.to_str().is_some_and(|s| s.contains("://"))
}

/// Endpoint and region for S3-compatible servers (flags or config; the AWS environment
/// variables apply when these are unset).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// The run's HTTP retry rules, applied to store requests too (`None`: the defaults).
    pub retry: Option<(u32, Duration)>,
}

/// One `s3://bucket/prefix` and the local stage that works for it.
pub struct Remote {
    url: url::Url,
    prefix: String,
    store: Arc<dyn ObjectStore>,
    /// Always `Some` until dropped (then shut down without blocking: a `Remote` may be
    /// dropped inside the run's async context).
    rt: Option<tokio::runtime::Runtime>,
    stage: PathBuf,
    /// `""` or `writers/NAME`: where this process's manifest and lease live.
    home_rel: String,
    state: Mutex<State>,
    /// Attempts and time budget for one store operation (the run's HTTP retry rules).
    retry: (u32, Duration),
    no_sleep: bool,
    lease_lost: Arc<AtomicBool>,
    stop_renewal: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    /// Data files known to be on the store (relative path → size).
    published: HashMap<String, u64>,
    /// Bytes of the local manifest the store's segments hold.
    manifest_len: u64,
    /// State files as last uploaded (relative path → content).
    state_files: HashMap<String, Vec<u8>>,
    lease: Option<object_store::PutResult>,
}

/// What [`Remote::publish`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    pub files: u64,
    pub bytes: u64,
    pub deleted: u64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

/// Parse `s3://bucket[/prefix]` into the bucket URL (with a trailing slash) and the prefix.
pub fn parse_url(s: &str) -> Result<(url::Url, String, String), UsageError> {
    let bad = |why: &str| {
        UsageError::with_hint(
            format!("--out {s:?} is not a usable object-storage location: {why}"),
            "write it as s3://BUCKET/PREFIX (a local DIR needs no scheme)",
        )
    };
    // Checked on the text: URL parsing would resolve `..` away.
    if s.split('/').skip(3).any(|c| c == "." || c == "..") {
        return Err(bad("`.` and `..` are not prefix components"));
    }
    let url = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "s3" {
        return Err(bad(&format!(
            "the {:?} scheme is not supported (only s3://)",
            url.scheme()
        )));
    }
    let bucket = url.host_str().unwrap_or_default().to_string();
    if bucket.is_empty() {
        return Err(bad("no bucket"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad("no query, fragment or credentials belong in it"));
    }
    let prefix = url.path().trim_matches('/').to_string();
    if prefix.split('/').any(|c| c == "." || c == "..") {
        return Err(bad("`.` and `..` are not prefix components"));
    }
    let canonical = if prefix.is_empty() {
        format!("s3://{bucket}/")
    } else {
        format!("s3://{bucket}/{prefix}/")
    };
    let url = url::Url::parse(&canonical).map_err(|e| bad(&e.to_string()))?;
    Ok((url, bucket, prefix))
}

/// The default stage for a location and writer: under the user's cache directory, one per
/// (location, writer), so reruns on this machine find it.
pub fn default_stage(url: &url::Url, writer: Option<&str>) -> PathBuf {
    let base = std::env::var_os("HARVEST_STAGE_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("harvest")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/harvest")))
        .unwrap_or_else(|| std::env::temp_dir().join("harvest"));
    let key = format!("{url}\n{}", writer.unwrap_or(""));
    let digest = crate::manifest::sha256_hex(key.as_bytes());
    base.join("stage").join(&digest[..16])
}

fn store_error(e: object_store::Error, what: &str) -> anyhow::Error {
    let hint = match exit_kind(&e) {
        Some(crate::error::Exit::Auth) => {
            "; check the AWS credentials in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a role)"
        }
        _ if matches!(e, object_store::Error::NotFound { .. }) => "; does the bucket exist?",
        _ => "; a rerun with the same settings resumes",
    };
    anyhow::Error::new(e).context(format!("{what}{hint}"))
}

/// A failure of the store that a repeat may not meet (see [`exit_kind`]).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<object_store::Error>()
            .and_then(exit_kind)
            .is_some_and(|k| k == crate::error::Exit::RetryBudget)
    })
}

/// The exit code an object-store error means: refused credentials are exit 4; a request to
/// S3 that failed after the retries (5xx, resets, timeouts, an unreachable endpoint) is
/// exit 5, safe to rerun. Other errors keep the default.
pub fn exit_kind(e: &object_store::Error) -> Option<crate::error::Exit> {
    use crate::error::Exit;
    match e {
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => Some(Exit::Auth),
        object_store::Error::Generic { store: "S3", .. } => Some(Exit::RetryBudget),
        _ => None,
    }
}

/// One profile of the AWS shared files: keys from `~/.aws/credentials`
/// (`AWS_SHARED_CREDENTIALS_FILE`), region and endpoint from `~/.aws/config`
/// (`AWS_CONFIG_FILE`); the profile is `AWS_PROFILE`, else `default`. Only static keys:
/// `credential_process`, SSO and role chaining are not followed.
#[derive(Debug, Default, PartialEq)]
struct Profile {
    key_id: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
}

impl Profile {
    fn load() -> Option<Self> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let file = |var: &str, rel: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(rel)))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default()
        };
        let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let p = Self::parse(
            &name,
            &file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
            &file("AWS_CONFIG_FILE", ".aws/config"),
        );
        (p != Self::default()).then_some(p)
    }

    fn parse(name: &str, credentials: &str, config: &str) -> Self {
        let section = |text: &str, wanted: &[String]| {
            let mut inside = false;
            let mut keys = HashMap::new();
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                    continue;
                }
                if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    inside = wanted.iter().any(|w| w == h.trim());
                    continue;
                }
                if inside && let Some((k, v)) = line.split_once('=') {
                    keys.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            keys
        };
        let mut cred = section(credentials, &[name.to_string()]);
        // In the config file a profile other than default is `[profile NAME]`.
        let mut conf = section(config, &[format!("profile {name}"), name.to_string()]);
        Self {
            key_id: cred.remove("aws_access_key_id"),
            secret: cred.remove("aws_secret_access_key"),
            token: cred.remove("aws_session_token"),
            region: conf.remove("region"),
            endpoint: conf.remove("endpoint_url"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The first five of `rels`, for a log line about many files.
fn first_few(rels: &[String]) -> String {
    rels.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
}

impl Remote {
    /// The store for `s3://…` (no request is made yet).
    pub fn new(
        location: &str,
        opts: &S3Options,
        stage: PathBuf,
        writer: Option<&str>,
    ) -> Result<Self, UsageError> {
        let (url, bucket, prefix) = parse_url(location)?;
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
        // No keys in the environment: the shared files' profile (AWS_PROFILE, else default).
        let profile = Profile::load();
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && let Some(p) = &profile
            && let (Some(id), Some(secret)) = (&p.key_id, &p.secret)
        {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = &p.token {
                b = b.with_token(t);
            }
        }
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| profile.as_ref().and_then(|p| p.endpoint.clone()));
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        let region = opts
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .or_else(|| profile.as_ref().and_then(|p| p.region.clone()));
        if let Some(r) = &region {
            b = b.with_region(r);
        }
        // The shared retry rules (DESIGN.md): 5xx, 408/429, resets and timeouts retried with
        // exponential backoff and jitter, up to the attempts and the time budget.
        let defaults = crate::http::HttpSettings::default();
        let (attempts, budget) = opts
            .retry
            .unwrap_or((defaults.max_attempts, defaults.retry_budget));
        let no_sleep = std::env::var("HARVEST_NO_RETRY_SLEEP").is_ok_and(|v| v == "1");
        b = b.with_retry(object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(if no_sleep { 1 } else { 200 }),
                max_backoff: Duration::from_millis(if no_sleep { 5 } else { 30_000 }),
                base: 2.0,
            },
            max_retries: attempts.saturating_sub(1) as usize,
            retry_timeout: budget,
        });
        let store = b.build().map_err(|e| {
            UsageError::with_hint(
                format!("cannot set up the S3 client for {url}: {e}"),
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or a role) and, for an S3-compatible server, --s3-endpoint and --s3-region",
            )
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("harvest-s3")
            .enable_all()
            .build()
            .map_err(|e| {
                UsageError::new(format!("cannot start the object-storage runtime: {e}"))
            })?;
        register_delta_logstore();
        Ok(Self {
            url,
            prefix,
            store: Arc::new(store),
            rt: Some(rt),
            stage,
            home_rel: writer.map(|w| format!("writers/{w}")).unwrap_or_default(),
            state: Mutex::new(State::default()),
            retry: (attempts.max(1), budget),
            no_sleep,
            lease_lost: Arc::new(AtomicBool::new(false)),
            stop_renewal: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    pub fn stage(&self) -> &Path {
        &self.stage
    }

    /// The bucket's store (root = the bucket), for delta-rs.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL of `rel` (a directory) under the prefix.
    pub fn url_of_dir(&self, rel: &str) -> anyhow::Result<url::Url> {
        self.url
            .join(&format!("{}/", rel.trim_end_matches('/')))
            .with_context(|| format!("cannot make a URL of {rel} under {}", self.url))
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn rel_of(&self, key: &Key) -> String {
        let k = key.as_ref();
        match self.prefix.is_empty() {
            true => k.to_string(),
            false => k
                .strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(k)
                .to_string(),
        }
    }

    fn home_join(&self, rel: &str) -> String {
        match self.home_rel.is_empty() {
            true => rel.to_string(),
            false => format!("{}/{rel}", self.home_rel),
        }
    }

    /// Run `f` on this store's runtime from any thread (also from inside another runtime).
    pub fn run<T: Send>(
        &self,
        f: impl Future<Output = anyhow::Result<T>> + Send,
    ) -> anyhow::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| match &self.rt {
                Some(rt) => rt.block_on(f),
                None => bail!("the object-storage runtime is shut down"),
            })
            .join()
            .unwrap_or_else(|_| bail!("the object-storage thread panicked"))
        })
    }

    /// Every object under `rel` (a directory), as (relative path, size).
    async fn list(&self, rel: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let prefix = match (self.prefix.is_empty(), rel.is_empty()) {
            (true, true) => None,
            (true, false) => Some(Key::from(rel)),
            (false, true) => Some(Key::from(self.prefix.as_str())),
            (false, false) => Some(self.key(rel)),
        };
        let mut out = vec![];
        let mut s = self.store.list(prefix.as_ref());
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| store_error(e, &format!("cannot list {}", self.url)))?;
            out.push((self.rel_of(&m.location), m.size));
        }
        out.sort();
        Ok(out)
    }

    async fn get(&self, rel: &str) -> anyhow::Result<bytes::Bytes> {
        let r = self
            .store
            .get(&self.key(rel))
            .await
            .map_err(|e| store_error(e, &format!("cannot read {}{rel}", self.url)))?;
        r.bytes()
            .await
            .map_err(|e| store_error(e, &format!("cannot read {}{rel}", self.url)))
    }

    /// Whether the Delta table at `rel` has a log on the store.
    pub fn has_delta_log(&self, rel: &str) -> anyhow::Result<bool> {
        let log = format!("{}/_delta_log", rel.trim_end_matches('/'));
        self.run(async {
            let mut s = self.store.list(Some(&self.key(&log)));
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| store_error(e, &format!("cannot list {}{log}", self.url)))?;
                if m.location.as_ref().ends_with(".json") {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Whether the data file `rel` is on the store (as far as this process knows).
    pub fn is_published(&self, rel: &str) -> bool {
        self.lock_state().published.contains_key(rel)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---------------------------------------------------------------- lease

    fn lease_body(&self) -> Vec<u8> {
        let now = chrono::Utc::now();
        let until = now + chrono::Duration::from_std(LEASE_TTL).unwrap_or_default();
        serde_json::json!({
            "holder": format!("pid {} on {}", std::process::id(), hostname()),
            "host": hostname(),
            "pid": std::process::id(),
            "stage": self.stage.display().to_string(),
            "renewed_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "expires_at": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .to_string()
        .into_bytes()
    }

    /// Take the lease on this prefix (and writer); fail at once if a live run holds it, or
    /// wait when `wait`. The caller already holds the stage's flock.
    pub fn acquire_lease(self: &Arc<Self>, wait: bool) -> anyhow::Result<()> {
        let key = self.key(&self.home_join(LEASE));
        let shown = format!("{}{}", self.url, self.home_join(LEASE));
        let mut announced = false;
        loop {
            let body = self.lease_body();
            let got = self.run(async {
                match self
                    .store
                    .put_opts(&key, PutPayload::from(body.clone()), PutMode::Create.into())
                    .await
                {
                    Ok(r) => Ok(Ok(r)),
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        let r = self
                            .store
                            .get(&key)
                            .await
                            .map_err(|e| store_error(e, &format!("cannot read {shown}")))?;
                        let meta = r.meta.clone();
                        let held = r
                            .bytes()
                            .await
                            .map_err(|e| store_error(e, &format!("cannot read {shown}")))?;
                        Ok(Err((meta, held)))
                    }
                    Err(e) => Err(store_error(e, &format!("cannot create the lease {shown}"))),
                }
            })?;
            let (meta, held) = match got {
                Ok(r) => {
                    self.lock_state().lease = Some(r);
                    break;
                }
                Err(x) => x,
            };
            let held: serde_json::Value = serde_json::from_slice(&held).unwrap_or_default();
            let expired = held["expires_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_none_or(|t| t < chrono::Utc::now());
            // On this host the holder's death is visible: its stage's flock is ours now, or
            // its process is gone.
            let here = held["host"].as_str() == Some(hostname().as_str());
            let ours = here
                && (held["stage"].as_str() == Some(self.stage.display().to_string().as_str())
                    || held["pid"]
                        .as_u64()
                        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()));
            if expired || ours {
                let version = UpdateVersion {
                    e_tag: meta.e_tag.clone(),
                    version: meta.version.clone(),
                };
                let taken = self.run(async {
                    match self
                        .store
                        .put_opts(
                            &key,
                            PutPayload::from(body),
                            PutMode::Update(version).into(),
                        )
                        .await
                    {
                        Ok(r) => Ok(Some(r)),
                        Err(object_store::Error::Precondition { .. })
                        | Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(store_error(e, &format!("cannot take over {shown}"))),
                    }
                })?;
                if let Some(r) = taken {
                    tracing::warn!(
                        "took over the lease {shown} from {} ({})",
                        held["holder"].as_str().unwrap_or("?"),
                        if ours {
                            "an earlier run on this host that is no longer alive"
                        } else {
                            "it had expired"
                        }
                    );
                    self.lock_state().lease = Some(r);
                    break;
                }
                continue;
            }
            let who = held["holder"].as_str().unwrap_or("another harvest process");
            let until = held["expires_at"].as_str().unwrap_or("?");
            if !wait {
                return Err(UsageError::with_hint(
                    format!("{} is locked by {who} (lease {shown}, until {until} unless renewed)", self.url),
                    "another run is writing there; wait for it to finish, or pass --wait-lock to queue behind it (a lease whose holder died expires within 5 minutes)",
                )
                .into());
            }
            if !announced {
                tracing::info!("{} is locked by {who}; waiting (--wait-lock)", self.url);
                announced = true;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        self.start_renewal();
        Ok(())
    }

    fn start_renewal(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let stop = self.stop_renewal.clone();
        // HARVEST_LEASE_RENEW_MS shortens the interval (the tests renew many times a run).
        let every = std::env::var("HARVEST_LEASE_RENEW_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(RENEW_EVERY, Duration::from_millis);
        let tick = every.min(Duration::from_millis(200));
        std::thread::spawn(move || {
            loop {
                let mut slept = Duration::ZERO;
                while slept < every {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(tick);
                    slept += tick;
                }
                let Some(me) = weak.upgrade() else { return };
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match me.renew() {
                    Ok(()) => tracing::debug!("renewed the lease on {}", me.url),
                    Err(e) => {
                        tracing::error!("{e:#}");
                        me.lease_lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
    }

    fn renew(&self) -> anyhow::Result<()> {
        let key = self.key(&self.home_join(LEASE));
        let Some(held) = self.lock_state().lease.clone() else {
            return Ok(());
        };
        let version = UpdateVersion {
            e_tag: held.e_tag.clone(),
            version: held.version.clone(),
        };
        let body = self.lease_body();
        let lost = || {
            anyhow::anyhow!(
                "lost the lease on {}: another run took it over (this run stops before publishing more; rerun later)",
                self.url
            )
        };
        let r = self.retrying("renew the lease", || {
            self.run(async {
                match self
                    .store
                    .put_opts(
                        &key,
                        PutPayload::from(body.clone()),
                        PutMode::Update(version.clone()).into(),
                    )
                    .await
                {
                    Ok(r) => Ok(r),
                    // Our own update whose answer was lost looks the same as a takeover:
                    // the lease then holds exactly what we sent.
                    Err(object_store::Error::Precondition { .. }) => {
                        let got = self
                            .store
                            .get(&key)
                            .await
                            .map_err(|e| store_error(e, "cannot read the lease"))?;
                        let meta = got.meta.clone();
                        let now = got
                            .bytes()
                            .await
                            .map_err(|e| store_error(e, "cannot read the lease"))?;
                        if now.as_ref() != body.as_slice() {
                            return Err(lost());
                        }
                        Ok(object_store::PutResult {
                            e_tag: meta.e_tag,
                            version: meta.version,
                        })
                    }
                    Err(e) => Err(store_error(
                        e,
                        &format!("cannot renew the lease on {}", self.url),
                    )),
                }
            })
        })?;
        self.lock_state().lease = Some(r);
        Ok(())
    }

    /// Run a store operation that is safe to repeat, again after a transient failure (a 5xx,
    /// reset, timeout or lost answer that object_store's own retries did not cover), with
    /// exponential backoff and full jitter, within the run's attempts and time budget.
    pub fn retrying<T>(
        &self,
        what: &str,
        f: impl FnMut() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.retrying_with_progress(what, || 0, f)
    }

    /// [`Self::retrying`] for an operation made of many requests that keeps what it did
    /// (`progress` grows with it): the attempts count failures in a row, so a long publish
    /// through a flaky network is not cut short by faults spread over many files.
    fn retrying_with_progress<T>(
        &self,
        what: &str,
        progress: impl Fn() -> u64,
        mut f: impl FnMut() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        use rand::RngExt as _;
        let (attempts, budget) = self.retry;
        let mut started = std::time::Instant::now();
        let mut attempt = 1;
        let mut done = progress();
        loop {
            match f() {
                Err(e) if is_transient(&e) && progress() > done => {
                    done = progress();
                    attempt = 1;
                    started = std::time::Instant::now();
                    tracing::debug!("{what}: {}; retrying", e.root_cause());
                }
                Err(e) if is_transient(&e) && attempt < attempts && started.elapsed() < budget => {
                    let cap = 200u64.saturating_mul(1 << attempt.min(8)).min(30_000);
                    let wait = match self.no_sleep {
                        true => 0,
                        false => rand::rng().random_range(0..=cap),
                    };
                    tracing::warn!(
                        "{what}: {} ({}); retrying in {wait} ms (attempt {} of {attempts})",
                        e,
                        e.root_cause(),
                        attempt + 1
                    );
                    std::thread::sleep(Duration::from_millis(wait));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// Stop renewing the lease (it expires on the store unless released).
    pub fn stop_renewal(&self) {
        self.stop_renewal.store(true, Ordering::SeqCst);
    }

    /// Stop renewing and remove the lease (at the end of a run, after the last publish).
    pub fn release_lease(&self) -> anyhow::Result<()> {
        self.stop_renewal.store(true, Ordering::SeqCst);
        if self.lease_lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.lock_state().lease.take().is_none() {
            return Ok(());
        }
        let key = self.key(&self.home_join(LEASE));
        self.run(async {
            self.store
                .delete(&key)
                .await
                .map_err(|e| store_error(e, &format!("cannot remove the lease {}", key)))
        })
    }

    // ---------------------------------------------------------------- segments

    /// The store's manifest segments for this home, checked contiguous: (offset, size).
    async fn segments(&self, home_rel: &str) -> anyhow::Result<Vec<(u64, u64, String)>> {
        let dir = match home_rel.is_empty() {
            true => SEGMENTS.to_string(),
            false => format!("{home_rel}/{SEGMENTS}"),
        };
        let mut segs = vec![];
        for (rel, size) in self.list(&dir).await? {
            let name = rel.rsplit('/').next().unwrap_or_default();
            let Some(off) = name
                .strip_suffix(".jsonl")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            segs.push((off, size, rel));
        }
        segs.sort();
        let mut end = 0;
        for (off, size, rel) in &segs {
            if *off != end {
                bail!(
                    "the manifest segments under {}{dir}/ are not contiguous: {rel} starts at byte {off}, the one before ends at {end}; `harvest verify --out {}` reports the damage",
                    self.url,
                    self.url
                );
            }
            end = off + size;
        }
        Ok(segs)
    }

    /// The data files (snapshots, parts, ...) of this writer on the store.
    fn owned(&self, rel: &str, own_runs: &HashSet<String>) -> bool {
        if rel.contains("/_delta_log/") || rel.starts_with("_delta_log/") {
            return false;
        }
        if rel.starts_with("writers/") || rel.starts_with(SEGMENTS) || rel.starts_with("state/") {
            return false;
        }
        self.home_rel.is_empty() || crate::writers::written_by(rel, own_runs)
    }

    /// Before a run: bring the stage and the store into agreement. A stage that is empty or
    /// a prefix of the store is restored from it; one the store lacks lines of is published
    /// by the next [`Self::publish`]; one that disagrees is refused.
    pub fn attach(&self) -> anyhow::Result<()> {
        self.retrying(&format!("attach to {}", self.url), || self.attach_once())
    }

    fn attach_once(&self) -> anyhow::Result<()> {
        let local_manifest = self
            .stage
            .join(&self.home_rel)
            .join(crate::manifest::FILE_NAME);
        let local = std::fs::read(&local_manifest).unwrap_or_default();
        // A torn last line (a kill mid-append) is not part of the agreement; Manifest::open cuts it.
        let local_len = local
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p as u64 + 1);
        let local = &local[..local_len as usize];
        self.run(async {
            let segs = self.segments(&self.home_rel).await?;
            let remote_len = segs.last().map_or(0, |(o, s, _)| o + s);
            // The stage has every published line: only the last segment is read and compared
            // with the stage's bytes there, so a run's start does not grow with the number of
            // segments ever published. Otherwise the whole manifest is read, to restore the
            // stage from it.
            let stage_ahead = remote_len <= local_len;
            let read = match stage_ahead {
                true => &segs[segs.len().saturating_sub(1)..],
                false => &segs[..],
            };
            let from = read.first().map_or(0, |(off, _, _)| *off as usize);
            let mut remote = Vec::new();
            for (_, _, rel) in read {
                remote.extend_from_slice(&self.get(rel).await?);
            }
            let end = (from + remote.len()).min(local.len());
            // When only the last segment was read, the stage's own hash chain up to it
            // stands for the earlier ones: its first line's `prev` names the line before.
            let agree = local.get(from..end) == remote.get(..end.saturating_sub(from))
                && (!stage_ahead || crate::manifest::first_chain_break(&local[..end]).is_none());
            if !agree {
                bail!(UsageError::with_hint(
                    format!(
                        "the stage {} and {} hold different manifests (another machine wrote there since this stage last ran)",
                        self.stage.display(),
                        self.url
                    ),
                    format!(
                        "the stage is only a working copy: remove {} and rerun to continue from what the store holds",
                        self.stage.display()
                    ),
                ));
            }
            // The longer of the two manifests (they agree where both have lines).
            let full = if stage_ahead { local } else { &remote[..] };
            let records: Vec<serde_json::Value> = full
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice(l).ok())
                .collect();
            let own_runs = crate::writers::runs_of(&records);
            let referenced: HashSet<&str> = records
                .iter()
                .filter_map(|r| r.get("path").and_then(serde_json::Value::as_str))
                .collect();
            let mut published = HashMap::new();
            let mut orphans = vec![];
            for (rel, size) in self.list("").await? {
                if !self.owned(&rel, &own_runs) {
                    continue;
                }
                // Uploaded by a process killed before the manifest lines naming it were
                // published: no reader trusts it, and this run may write that key anew.
                if referenced.contains(rel.as_str()) {
                    published.insert(rel, size);
                } else {
                    orphans.push(rel);
                }
            }
            for rel in &orphans {
                match self.store.delete(&self.key(rel)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_error(e, &format!("cannot delete {}{rel}", self.url))),
                }
            }
            if !orphans.is_empty() {
                tracing::warn!(
                    "removed {} object(s) from {} that no published manifest line names (left by an interrupted run): {}",
                    orphans.len(),
                    self.url,
                    first_few(&orphans)
                );
            }
            // The same files in the stage: a resumed run writes those keys anew (a page it
            // fetches again differs from the killed process's copy, by a timing field if
            // nothing else), and a publish must never send the stale copy in its place.
            let stale = self
                .remove_unrecorded_from_stage(&referenced, &own_runs)
                .with_context(|| format!("cannot clean the stage {}", self.stage.display()))?;
            if !stale.is_empty() {
                tracing::warn!(
                    "removed {} file(s) from the stage {} that no manifest line names (left by an interrupted run; a resumed run fetches them again): {}",
                    stale.len(),
                    self.stage.display(),
                    first_few(&stale)
                );
            }
            if remote_len > local_len {
                self.restore(&remote, &published).await?;
            }
            let mut st = self.lock_state();
            st.published = published;
            st.manifest_len = remote_len;
            Ok(())
        })
    }

    /// Remove the stage's data files of this writer that no manifest line names (what a
    /// publish would send); returns their relative paths.
    fn remove_unrecorded_from_stage(
        &self,
        referenced: &HashSet<&str>,
        own_runs: &HashSet<String>,
    ) -> std::io::Result<Vec<String>> {
        let mut removed = vec![];
        for path in crate::fsutil::files_under(&self.stage)? {
            let rel = crate::fsutil::rel_path(&self.stage, &path);
            let name = rel.rsplit('/').next().unwrap_or_default();
            if name.ends_with(crate::fsutil::TEMP_SUFFIX)
                || rel == crate::manifest::FILE_NAME
                || referenced.contains(rel.as_str())
                || !self.owned(&rel, own_runs)
            {
                continue;
            }
            std::fs::remove_file(&path)?;
            if let Some(dir) = path.parent() {
                crate::fsutil::fsync_dir(dir)?;
            }
            removed.push(rel);
        }
        removed.sort();
        Ok(removed)
    }

    /// Download what the stage lacks: the manifest, the data files, the state files.
    async fn restore(&self, manifest: &[u8], files: &HashMap<String, u64>) -> anyhow::Result<()> {
        let home = self.stage.join(&self.home_rel);
        crate::fsutil::create_dir_all_durable(&home)
            .with_context(|| format!("cannot create the stage {}", home.display()))?;
        let mut fetched = 0u64;
        for (rel, size) in files {
            let dest = self.stage.join(rel);
            if std::fs::metadata(&dest).is_ok_and(|m| m.len() == *size) {
                continue;
            }
            self.download(rel, &dest).await?;
            fetched += 1;
        }
        let state_dir = self.home_join("state");
        for (rel, _) in self.list(&state_dir).await? {
            if rel.ends_with("/lease.json") || rel == LEASE {
                continue;
            }
            self.download(&rel, &self.stage.join(&rel)).await?;
        }
        crate::fsutil::atomic_write(&home.join(crate::manifest::FILE_NAME), manifest)
            .with_context(|| format!("cannot write the manifest into {}", home.display()))?;
        tracing::info!(
            "restored the stage {} from {}: the manifest ({} bytes) and {fetched} file(s)",
            self.stage.display(),
            self.url,
            manifest.len()
        );
        Ok(())
    }

    async fn download(&self, rel: &str, dest: &Path) -> anyhow::Result<()> {
        if let Some(parent) = dest.parent() {
            crate::fsutil::create_dir_all_durable(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let r = self
            .store
            .get(&self.key(rel))
            .await
            .map_err(|e| store_error(e, &format!("cannot read {}{rel}", self.url)))?;
        let mut out = crate::fsutil::AtomicFile::create(dest)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        let mut body = r.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| store_error(e, &format!("cannot read {}{rel}", self.url)))?;
            out.write_all(&chunk)
                .with_context(|| format!("cannot write {}", dest.display()))?;
        }
        out.commit()
            .with_context(|| format!("cannot write {}", dest.display()))
    }

    // ---------------------------------------------------------------- publish

    /// Publish what is durable in the stage: new data files (conditional put), then the new
    /// manifest lines as one segment, then the state files; then delete superseded parts the
    /// stage no longer has.
    pub fn publish(&self) -> anyhow::Result<Published> {
        let progress = || {
            let st = self.lock_state();
            st.published.len() as u64 + st.manifest_len + st.state_files.len() as u64
        };
        self.retrying_with_progress(&format!("publish to {}", self.url), progress, || {
            self.publish_once()
        })
    }

    fn publish_once(&self) -> anyhow::Result<Published> {
        if self.lease_lost.load(Ordering::SeqCst) {
            bail!(
                "lost the lease on {}: another run took it over; this run stops before publishing more (rerun later)",
                self.url
            );
        }
        let home = self.stage.join(&self.home_rel);
        let mut todo = vec![];
        let mut present = HashSet::new();
        for path in crate::fsutil::files_under(&self.stage)
            .with_context(|| format!("cannot list the stage {}", self.stage.display()))?
        {
            let rel = crate::fsutil::rel_path(&self.stage, &path);
            let name = rel.rsplit('/').next().unwrap_or_default();
            if name.ends_with(crate::fsutil::TEMP_SUFFIX)
                || rel.starts_with("writers/")
                || rel.starts_with("state/")
                || rel == crate::manifest::FILE_NAME
            {
                continue;
            }
            present.insert(rel.clone());
            if !self.lock_state().published.contains_key(&rel) {
                todo.push((rel, path));
            }
        }
        let manifest_path = home.join(crate::manifest::FILE_NAME);
        let mut done = Published::default();
        self.run(async {
            for (rel, path) in &todo {
                let size = self.upload(rel, path).await?;
                self.lock_state().published.insert(rel.clone(), size);
                done.files += 1;
                done.bytes += size;
            }
            // The manifest's new lines (whole lines only) as one segment.
            let from = self.lock_state().manifest_len;
            let mut f = std::fs::File::open(&manifest_path)
                .with_context(|| format!("cannot read {}", manifest_path.display()))?;
            let mut tail = vec![];
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from))?;
            f.read_to_end(&mut tail)?;
            let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            tail.truncate(whole);
            if !tail.is_empty() {
                let rel = self.home_join(&format!("{SEGMENTS}/{from:020}.jsonl"));
                let len = tail.len() as u64;
                match self
                    .store
                    .put_opts(&self.key(&rel), PutPayload::from(tail.clone()), PutMode::Create.into())
                    .await
                {
                    Ok(_) => {}
                    Err(object_store::Error::AlreadyExists { .. }) if self.get(&rel).await? == tail => {}
                    Err(object_store::Error::AlreadyExists { .. }) => bail!(
                        "{}{rel} already holds other manifest lines: another process wrote to this prefix; stop it, remove the stage {} and rerun",
                        self.url,
                        self.stage.display()
                    ),
                    Err(e) => {
                        return Err(store_error(e, &format!("cannot publish {}{rel}", self.url)));
                    }
                }
                self.lock_state().manifest_len = from + len;
                done.bytes += len;
            }
            // State files (watermarks): small, rewritten in place, so put over.
            for path in crate::fsutil::files_under(&home.join("state"))? {
                let rel = crate::fsutil::rel_path(&self.stage, &path);
                if path.file_name().is_some_and(|n| n == "lock")
                    || rel.ends_with(crate::fsutil::TEMP_SUFFIX)
                {
                    continue;
                }
                let body = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if self.lock_state().state_files.get(&rel) == Some(&body) {
                    continue;
                }
                self.store
                    .put(&self.key(&rel), PutPayload::from(body.clone()))
                    .await
                    .map_err(|e| store_error(e, &format!("cannot publish {}{rel}", self.url)))?;
                self.lock_state().state_files.insert(rel, body);
            }
            // Parts the stage no longer has were superseded (now recorded on the store).
            let gone: Vec<String> = self
                .lock_state()
                .published
                .keys()
                .filter(|rel| !present.contains(*rel) && crate::fsutil::is_part_file(Path::new(rel)))
                .cloned()
                .collect();
            for rel in gone {
                match self.store.delete(&self.key(&rel)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_error(e, &format!("cannot delete {}{rel}", self.url))),
                }
                self.lock_state().published.remove(&rel);
                done.deleted += 1;
            }
            Ok(())
        })?;
        if done.files + done.deleted > 0 {
            tracing::debug!(
                "published {} file(s), {} bytes to {}; deleted {}",
                done.files,
                done.bytes,
                self.url,
                done.deleted
            );
        }
        Ok(done)
    }

    /// Put one file under its key if no object is there; returns its size.
    async fn upload(&self, rel: &str, path: &Path) -> anyhow::Result<u64> {
        let key = self.key(rel);
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if size <= MULTIPART_ABOVE {
            let body =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            match self
                .store
                .put_opts(
                    &key,
                    PutPayload::from(body),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => return Ok(size),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => {
                    return Err(store_error(e, &format!("cannot publish {}{rel}", self.url)));
                }
            }
        } else {
            // Multipart: no conditional completion in the client, so look first; the key
            // is unique to this run (run id in the name), so only this run could race itself.
            match self.store.head(&key).await {
                Err(object_store::Error::NotFound { .. }) => {
                    let upload = self.store.put_multipart(&key).await.map_err(|e| {
                        store_error(e, &format!("cannot publish {}{rel}", self.url))
                    })?;
                    let mut w = object_store::WriteMultipart::new_with_chunk_size(
                        upload,
                        MULTIPART_ABOVE as usize,
                    );
                    let mut f = std::fs::File::open(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = f.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        w.wait_for_capacity(2).await.map_err(|e| {
                            store_error(e, &format!("cannot publish {}{rel}", self.url))
                        })?;
                        w.write(&buf[..n]);
                    }
                    w.finish().await.map_err(|e| {
                        store_error(e, &format!("cannot publish {}{rel}", self.url))
                    })?;
                    return Ok(size);
                }
                Ok(_) => {}
                Err(e) => return Err(store_error(e, &format!("cannot look up {}{rel}", self.url))),
            }
        }
        // Already there: the same file if the same size (a killed process's upload).
        let there = self
            .store
            .head(&key)
            .await
            .map_err(|e| store_error(e, &format!("cannot look up {}{rel}", self.url)))?;
        if there.size != size {
            bail!(
                "{}{rel} already exists with {} bytes, the stage's file has {size}: another process wrote to this prefix; stop it, remove the stage {} and rerun",
                self.url,
                there.size,
                self.stage.display()
            );
        }
        Ok(size)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop_renewal.store(true, Ordering::SeqCst);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A local copy of what an `s3://…` location holds, read by `verify`, `history` and
/// `export`; the scratch directory is removed when this is dropped.
pub struct LocalCopy(PathBuf);

impl LocalCopy {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copy `location` into a fresh scratch directory: each home's manifest segments joined into
/// its `manifest.jsonl`, and the data files `keep` accepts (paths relative to the prefix) as
/// they are. The lease is never copied.
pub fn local_copy(
    location: &Path,
    opts: &S3Options,
    keep: impl Fn(&str) -> bool + Sync,
) -> anyhow::Result<LocalCopy> {
    use rand::RngExt as _;
    let loc = location.to_string_lossy();
    let copy = LocalCopy(std::env::temp_dir().join(format!(
        "harvest-copy-{}-{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )));
    let dest = copy.path();
    crate::fsutil::create_dir_all_durable(dest)
        .with_context(|| format!("cannot create the scratch directory {}", dest.display()))?;
    let remote = Remote::new(&loc, opts, dest.to_path_buf(), None)?;
    let (remote, keep) = (&remote, &keep);
    let (n, bytes) = remote.retrying(&format!("read {loc}"), || {
        remote.run(async {
            let (mut n, mut bytes) = (0u64, 0u64);
            let mut homes = BTreeSet::new();
            for (rel, size) in remote.list("").await? {
                if rel.ends_with(LEASE) {
                    continue;
                }
                if let Some(i) = rel.find(&format!("{SEGMENTS}/")) {
                    homes.insert(rel[..i].trim_end_matches('/').to_string());
                } else if keep(&rel) {
                    remote.download(&rel, &dest.join(&rel)).await?;
                    n += 1;
                    bytes += size;
                }
            }
            for home in &homes {
                let mut manifest = vec![];
                for (_, _, rel) in remote.segments(home).await? {
                    manifest.extend_from_slice(&remote.get(&rel).await?);
                }
                let dir = dest.join(home);
                crate::fsutil::create_dir_all_durable(&dir)?;
                crate::fsutil::atomic_write(&dir.join(crate::manifest::FILE_NAME), &manifest)?;
                n += 1;
                bytes += manifest.len() as u64;
            }
            Ok((n, bytes))
        })
    })?;
    tracing::info!(
        "read {n} object(s), {:.1} MB from {}",
        bytes as f64 / 1e6,
        location.display()
    );
    Ok(copy)
}

static MOUNTS: Mutex<Vec<(PathBuf, Arc<Remote>)>> = Mutex::new(Vec::new());

/// Make `remote` the store behind its stage for this process: the Delta code asks
/// [`mounted`] whether a DIR it is handed is a stage, and then talks to the store.
pub fn mount(remote: Arc<Remote>) {
    let mut m = MOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    m.retain(|(d, _)| d != remote.stage());
    m.push((remote.stage().to_path_buf(), remote));
}

/// The store whose stage is `dir`, if any.
pub fn mounted(dir: &Path) -> Option<Arc<Remote>> {
    let m = MOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    m.iter().find(|(d, _)| d == dir).map(|(_, r)| r.clone())
}

/// delta-rs looks a log store up by URL scheme; s3 gets its default one (commits by
/// conditional put), with the store harvest hands it.
fn register_delta_logstore() {
    struct Conditional;
    impl deltalake_core::logstore::LogStoreFactory for Conditional {
        fn with_options(
            &self,
            prefixed: deltalake_core::logstore::ObjectStoreRef,
            root: deltalake_core::logstore::ObjectStoreRef,
            location: &url::Url,
            options: &deltalake_core::logstore::StorageConfig,
        ) -> deltalake_core::DeltaResult<deltalake_core::logstore::LogStoreRef> {
            Ok(deltalake_core::logstore::default_logstore(
                prefixed, root, location, options,
            ))
        }
    }
    if let Ok(u) = url::Url::parse("s3://") {
        deltalake_core::logstore::logstore_factories()
            .entry(u)
            .or_insert_with(|| Arc::new(Conditional));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_read_from_the_shared_files() {
        let credentials = "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n# x\n[bench]\nAWS_ACCESS_KEY_ID=B\naws_secret_access_key=BS\naws_session_token = BT\n";
        let config = "[default]\nregion = eu-west-1\n[profile bench]\nregion = us-east-2\nendpoint_url = http://127.0.0.1:9000\n";
        assert_eq!(
            Profile::parse("bench", credentials, config),
            Profile {
                key_id: Some("B".into()),
                secret: Some("BS".into()),
                token: Some("BT".into()),
                region: Some("us-east-2".into()),
                endpoint: Some("http://127.0.0.1:9000".into()),
            }
        );
        let d = Profile::parse("default", credentials, config);
        assert_eq!(
            (d.key_id.as_deref(), d.region.as_deref()),
            (Some("D"), Some("eu-west-1"))
        );
        assert_eq!(
            Profile::parse("none", credentials, config),
            Profile::default()
        );
    }

    #[test]
    fn locations_are_parsed_strictly() {
        let (url, bucket, prefix) = parse_url("s3://lake/a/b/").unwrap();
        assert_eq!(
            (url.as_str(), bucket.as_str(), prefix.as_str()),
            ("s3://lake/a/b/", "lake", "a/b")
        );
        assert_eq!(parse_url("s3://lake").unwrap().0.as_str(), "s3://lake/");
        for bad in [
            "s3://",
            "gs://b/p",
            "s3://b/a/../c",
            "s3://b/p?x=1",
            "s3://k:s@b/p",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
