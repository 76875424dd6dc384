//! The lease that stands in for the flock on the store: taken by conditional put, renewed by
//! a conditional update on its ETag, taken over only once expired or provably abandoned, and
//! released at the end; store calls retried while the lease holds.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::PutMode;
use object_store::PutPayload;
use object_store::UpdateVersion;

use crate::error::UsageError;
use crate::store::remote::LEASE;
use crate::store::remote::LEASE_TTL;
use crate::store::remote::RENEW_EVERY;
use crate::store::remote::Remote;
use crate::store::remote::hostname;
use crate::store::remote::is_transient;
use crate::store::remote::store_error;

impl Remote {
    pub(super) fn lease_body(&self) -> Vec<u8> {
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

    pub(super) fn start_renewal(self: &Arc<Self>) {
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

    pub(super) fn renew(&self) -> anyhow::Result<()> {
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
    pub(super) fn retrying_with_progress<T>(
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
}
