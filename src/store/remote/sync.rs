//! Keeping the stage and the store in step: attaching (orphans removed, a stage behind the
//! store restored from it) and publishing (files before the manifest segment that names
//! them, each by conditional put).

use std::collections::HashMap;
use std::collections::HashSet;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Context;
use anyhow::bail;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::PutMode;
use object_store::PutOptions;
use object_store::PutPayload;

use crate::error::UsageError;
use crate::store::remote::LEASE;
use crate::store::remote::MULTIPART_ABOVE;
use crate::store::remote::Published;
use crate::store::remote::Remote;
use crate::store::remote::SEGMENTS;
use crate::store::remote::first_few;
use crate::store::remote::store_error;

impl Remote {
    /// The store's manifest segments for this home, checked contiguous: (offset, size).
    pub(super) async fn segments(&self, home_rel: &str) -> anyhow::Result<Vec<(u64, u64, String)>> {
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
    pub(super) fn owned(&self, rel: &str, own_runs: &HashSet<String>) -> bool {
        if rel.contains("/_delta_log/") || rel.starts_with("_delta_log/") {
            return false;
        }
        if rel.starts_with("writers/") || rel.starts_with(SEGMENTS) || rel.starts_with("state/") {
            return false;
        }
        self.home_rel.is_empty() || crate::store::writers::written_by(rel, own_runs)
    }

    /// Before a run: bring the stage and the store into agreement. A stage that is empty or
    /// a prefix of the store is restored from it; one the store lacks lines of is published
    /// by the next [`Self::publish`]; one that disagrees is refused.
    pub fn attach(&self) -> anyhow::Result<()> {
        self.retrying(&format!("attach to {}", self.url), || self.attach_once())
    }

    pub(super) fn attach_once(&self) -> anyhow::Result<()> {
        let local_manifest = self
            .stage
            .join(&self.home_rel)
            .join(crate::store::manifest::FILE_NAME);
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
                && (!stage_ahead || crate::store::manifest::first_chain_break(&local[..end]).is_none());
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
            let own_runs = crate::store::writers::runs_of(&records);
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
    pub(super) fn remove_unrecorded_from_stage(
        &self,
        referenced: &HashSet<&str>,
        own_runs: &HashSet<String>,
    ) -> std::io::Result<Vec<String>> {
        let mut removed = vec![];
        for path in crate::store::fsutil::files_under(&self.stage)? {
            let rel = crate::store::fsutil::rel_path(&self.stage, &path);
            let name = rel.rsplit('/').next().unwrap_or_default();
            if name.ends_with(crate::store::fsutil::TEMP_SUFFIX)
                || rel == crate::store::manifest::FILE_NAME
                || referenced.contains(rel.as_str())
                || !self.owned(&rel, own_runs)
            {
                continue;
            }
            std::fs::remove_file(&path)?;
            if let Some(dir) = path.parent() {
                crate::store::fsutil::fsync_dir(dir)?;
            }
            removed.push(rel);
        }
        removed.sort();
        Ok(removed)
    }

    /// Download what the stage lacks: the manifest, the data files, the state files.
    pub(super) async fn restore(
        &self,
        manifest: &[u8],
        files: &HashMap<String, u64>,
    ) -> anyhow::Result<()> {
        let home = self.stage.join(&self.home_rel);
        crate::store::fsutil::create_dir_all_durable(&home)
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
        crate::store::fsutil::atomic_write(&home.join(crate::store::manifest::FILE_NAME), manifest)
            .with_context(|| format!("cannot write the manifest into {}", home.display()))?;
        tracing::info!(
            "restored the stage {} from {}: the manifest ({} bytes) and {fetched} file(s)",
            self.stage.display(),
            self.url,
            manifest.len()
        );
        Ok(())
    }

    pub(super) async fn download(&self, rel: &str, dest: &Path) -> anyhow::Result<()> {
        if let Some(parent) = dest.parent() {
            crate::store::fsutil::create_dir_all_durable(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let r = self
            .store
            .get(&self.key(rel))
            .await
            .map_err(|e| store_error(e, &format!("cannot read {}{rel}", self.url)))?;
        let mut out = crate::store::fsutil::AtomicFile::create(dest)
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

    pub(super) fn publish_once(&self) -> anyhow::Result<Published> {
        if self.lease_lost.load(Ordering::SeqCst) {
            bail!(
                "lost the lease on {}: another run took it over; this run stops before publishing more (rerun later)",
                self.url
            );
        }
        let home = self.stage.join(&self.home_rel);
        let mut todo = vec![];
        let mut present = HashSet::new();
        for path in crate::store::fsutil::files_under(&self.stage)
            .with_context(|| format!("cannot list the stage {}", self.stage.display()))?
        {
            let rel = crate::store::fsutil::rel_path(&self.stage, &path);
            let name = rel.rsplit('/').next().unwrap_or_default();
            if name.ends_with(crate::store::fsutil::TEMP_SUFFIX)
                || rel.starts_with("writers/")
                || rel.starts_with("state/")
                || rel == crate::store::manifest::FILE_NAME
            {
                continue;
            }
            present.insert(rel.clone());
            if !self.lock_state().published.contains_key(&rel) {
                todo.push((rel, path));
            }
        }
        let manifest_path = home.join(crate::store::manifest::FILE_NAME);
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
            for path in crate::store::fsutil::files_under(&home.join("state"))? {
                let rel = crate::store::fsutil::rel_path(&self.stage, &path);
                if path.file_name().is_some_and(|n| n == "lock")
                    || rel.ends_with(crate::store::fsutil::TEMP_SUFFIX)
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
                .filter(|rel| !present.contains(*rel) && crate::store::fsutil::is_part_file(Path::new(rel)))
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
    pub(super) async fn upload(&self, rel: &str, path: &Path) -> anyhow::Result<u64> {
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
