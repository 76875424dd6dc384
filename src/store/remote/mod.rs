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

mod lease;
mod sync;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _};

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
    let digest = crate::store::manifest::sha256_hex(key.as_bytes());
    base.join("stage").join(&digest[..16])
}

fn store_error(e: object_store::Error, what: &str) -> anyhow::Error {
    let hint = match crate::error::object_store_exit(&e) {
        Some(crate::error::Exit::Auth) => {
            "; check the AWS credentials in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a role)"
        }
        _ if matches!(e, object_store::Error::NotFound { .. }) => "; does the bucket exist?",
        _ => "; a rerun with the same settings resumes",
    };
    anyhow::Error::new(e).context(format!("{what}{hint}"))
}

/// A failure of the store that a repeat may not meet (see [`crate::error::object_store_exit`]).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<object_store::Error>()
            .and_then(crate::error::object_store_exit)
            .is_some_and(|k| k == crate::error::Exit::RetryBudget)
    })
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

    /// The objects directly under the location (not under a further `/`), as (name, size),
    /// in name order.
    pub fn list_files(&self) -> anyhow::Result<Vec<(String, u64)>> {
        self.run(async {
            Ok(self
                .list("")
                .await?
                .into_iter()
                .filter(|(rel, _)| !rel.contains('/'))
                .collect())
        })
    }

    /// Stream object `rel` into `w` (never whole in memory); returns its size.
    pub fn read_into(&self, rel: &str, w: &mut (dyn std::io::Write + Send)) -> anyhow::Result<u64> {
        self.run(async {
            let what = format!("cannot read {}{rel}", self.url);
            let r = self
                .store
                .get(&self.key(rel))
                .await
                .map_err(|e| store_error(e, &what))?;
            let mut s = r.into_stream();
            let mut n = 0u64;
            while let Some(chunk) = s.next().await {
                let chunk = chunk.map_err(|e| store_error(e, &what))?;
                w.write_all(&chunk)
                    .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                n += chunk.len() as u64;
            }
            Ok(n)
        })
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
    crate::store::fsutil::create_dir_all_durable(dest)
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
                crate::store::fsutil::create_dir_all_durable(&dir)?;
                crate::store::fsutil::atomic_write(
                    &dir.join(crate::store::manifest::FILE_NAME),
                    &manifest,
                )?;
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
