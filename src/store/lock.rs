//! One run per output directory (DESIGN.md crash-safety rule 6).
//!
//! Guarantee: while a [`DirLock`] lives, no other `harvest` process holds the lock on the same
//! DIR. The lock is an OS advisory lock (`flock`) on `DIR/state/lock`, so the kernel releases
//! it when the holder dies — a killed run never leaves a stale lock behind. The file's text
//! (pid and start time) only serves the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::UsageError;

pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock on `dir`; fail at once if another run holds it, or wait when `wait`.
    pub fn acquire(dir: &Path, wait: bool) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if dir.exists() && !dir.is_dir() {
            return Err(UsageError::with_hint(
                format!("the output {} is a file, not a directory", dir.display()),
                "pass a directory (new or from an earlier run) as --out or `out`",
            )
            .into());
        }
        let state = dir.join("state");
        crate::store::fsutil::create_dir_all_durable(&state)
            .with_context(|| format!("cannot create {}", state.display()))?;
        let path = state.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another harvest process".to_string()
                } else {
                    holder.to_string()
                };
                if !wait {
                    return Err(UsageError::with_hint(
                        format!("the output directory {} is locked by {who}", dir.display()),
                        "another run is writing there; wait for it to finish, or pass --wait-lock to queue behind it",
                    )
                    .into());
                }
                tracing::info!(
                    "{} is locked by {who}; waiting (--wait-lock)",
                    dir.display()
                );
                file.lock()
                    .with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        write!(
            file,
            "pid {} since {}",
            std::process::id(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
        file.flush()?;
        Ok(Self { _file: file })
    }
}
