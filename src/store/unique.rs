//! The key index of a dataset's `unique` check: every key the dataset holds, on disk under
//! `state/unique/<dataset>.sqlite`, so that tens of millions of keys cost a bounded page cache
//! (16 MB) and not memory per key.
//!
//! Guarantees:
//! - Each key is written once, tagged with the checkpoint that took its row (a *scope*:
//!   [`checkpoint_id`]). A scope is *pending* until its checkpoint's manifest lines are
//!   written: [`KeyIndex::commit_pending`] makes its keys durable (fsync) before those lines,
//!   and [`KeyIndex::settle`] marks the scope settled after them. On open,
//!   [`KeyIndex::recover`] settles the pending scopes the manifest vouches for and deletes the
//!   keys of the others (their pages are replayed), so a kill -9 anywhere loses no key and
//!   holds none twice.
//! - A key counts only while its scope is live for the dataset (its parts are not
//!   superseded): a complete harvest replaces the dataset, so its keys replace the old ones,
//!   and a file's new version replaces its old version's keys (the caller passes the live
//!   scopes and [`KeyIndex::forget`]s the ones being replaced). A key of a scope that no
//!   longer counts is taken over by the next row with it, without rewriting the index.
//! - Lookups and additions are one statement per [`BATCH`] keys: the cost per key is one
//!   B-tree insert (ascending keys append).
//! - The index is derived state: deleting the file loses only the memory of earlier runs' keys.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::fsutil::{create_dir_all_durable, sanitize_component};

/// Page cache of the index (SQLite's `cache_size`, in KiB when negative).
const CACHE_KIB: i64 = 16 * 1024;

/// Keys looked up and added per statement.
pub const BATCH: usize = 256;

/// Which of `n` keys (`?1`…) a counting scope holds.
fn held_sql(n: usize) -> std::borrow::Cow<'static, str> {
    static FULL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if n == BATCH {
        return FULL.get_or_init(|| held_sql_text(BATCH)).as_str().into();
    }
    held_sql_text(n).into()
}

fn held_sql_text(n: usize) -> String {
    let values: Vec<String> = (0..n).map(|j| format!("?{}", j + 1)).collect();
    format!(
        "SELECT k FROM keys WHERE k IN ({}) AND n IN (SELECT n FROM temp.live)",
        values.join(",")
    )
}

/// Add `n` keys (`?2`…) under scope `?1`, taking over those of scopes that do not count.
fn add_sql(n: usize) -> std::borrow::Cow<'static, str> {
    static FULL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if n == BATCH {
        return FULL.get_or_init(|| add_sql_text(BATCH)).as_str().into();
    }
    add_sql_text(n).into()
}

fn add_sql_text(n: usize) -> String {
    let values: Vec<String> = (0..n).map(|j| format!("(?{})", j + 2)).collect();
    format!(
        "INSERT INTO keys(k, n) SELECT v.column1, ?1 FROM (VALUES {}) AS v WHERE true \
         ON CONFLICT(k) DO UPDATE SET n = excluded.n",
        values.join(",")
    )
}

/// What identifies one checkpoint's keys: the run, the stream (slice) and the first page
/// after the stream's previous checkpoint, as its part lines record them.
pub fn checkpoint_id(run_id: &str, slice: Option<u32>, first_page: u64) -> String {
    match slice {
        Some(k) => format!("{run_id}/s{k}/{first_page}"),
        None => format!("{run_id}/-/{first_page}"),
    }
}

pub struct KeyIndex {
    conn: Connection,
    path: PathBuf,
    /// `<run_id>/`: the prefix of this run's checkpoint ids (all of them count).
    run_prefix: String,
    /// Checkpoint ids the caller said are live.
    live_ids: HashSet<String>,
    in_tx: bool,
    /// When only this run's keys count (a complete harvest): an upper bound of them. A batch
    /// of ascending keys above it holds none that counts, so it needs no lookup (the common
    /// case: pages in key order).
    above: Option<Option<Vec<u8>>>,
}

impl KeyIndex {
    /// Open (or create) the index of `output` for run `run_id`; keys of the checkpoints
    /// `live` (and of this run's) count as held.
    pub fn open(
        home: &Path,
        output: &str,
        run_id: &str,
        live: &HashSet<String>,
    ) -> anyhow::Result<Self> {
        let dir = home.join("state").join("unique");
        create_dir_all_durable(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}.sqlite", sanitize_component(output)));
        let fail = |e: rusqlite::Error| {
            anyhow::anyhow!(
                "the key index {} of the `unique` check is unusable ({e}); remove it to rebuild it from new runs only, or rerun after freeing disk space",
                path.display()
            )
        };
        let conn = Connection::open(&path).map_err(fail)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA cache_size=-{CACHE_KIB};
             CREATE TABLE IF NOT EXISTS scopes(n INTEGER PRIMARY KEY, ck TEXT NOT NULL UNIQUE,
                                               settled INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS keys(k BLOB PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TEMP TABLE live(n INTEGER PRIMARY KEY);"
        ))
        .map_err(fail)?;
        let run_prefix = format!("{run_id}/");
        let mut ix = Self {
            conn,
            path,
            run_prefix,
            live_ids: live.clone(),
            in_tx: false,
            above: None,
        };
        let scopes = ix.scopes()?;
        let mut mine = false;
        for (n, ck, _) in scopes {
            if ix.counts(&ck) {
                mine = true;
                ix.conn
                    .execute("INSERT INTO temp.live(n) VALUES (?1)", params![n])
                    .map_err(|e| ix.fail(e))?;
            }
        }
        if live.is_empty() {
            // A resumed run: its own keys so far bound the ones that count (a scan, once).
            let top: Option<Vec<u8>> = if mine {
                ix.conn
                    .query_row(
                        "SELECT max(k) FROM keys WHERE n IN (SELECT n FROM temp.live)",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(|e| ix.fail(e))?
            } else {
                None
            };
            ix.above = Some(top);
        }
        Ok(ix)
    }

    fn fail(&self, e: rusqlite::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "the key index {} of the `unique` check failed ({e}); rerun to resume",
            self.path.display()
        )
    }

    /// Whether the keys of scope `ck` count.
    fn counts(&self, ck: &str) -> bool {
        ck.starts_with(&self.run_prefix) || self.live_ids.contains(ck)
    }

    /// Every scope: number, checkpoint id, settled.
    fn scopes(&self) -> anyhow::Result<Vec<(i64, String, bool)>> {
        let mut st = self
            .conn
            .prepare("SELECT n, ck, settled FROM scopes")
            .map_err(|e| self.fail(e))?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.fail(e))
    }

    /// The number of scope `ck`, created (pending, and counting) when new.
    fn scope(&mut self, ck: &str) -> anyhow::Result<i64> {
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT n FROM scopes WHERE ck = ?1")
            .and_then(|mut st| st.query_row(params![ck], |r| r.get(0)).optional())
            .map_err(|e| self.fail(e))?;
        if let Some(n) = found {
            return Ok(n);
        }
        self.conn
            .execute("INSERT INTO scopes(ck) VALUES (?1)", params![ck])
            .map_err(|e| self.fail(e))?;
        let n = self.conn.last_insert_rowid();
        if self.counts(ck) {
            self.conn
                .execute("INSERT INTO temp.live(n) VALUES (?1)", params![n])
                .map_err(|e| self.fail(e))?;
        }
        Ok(n)
    }

    /// The keys of checkpoint `ck` stop counting (its parts are being replaced).
    pub fn forget(&mut self, ck: &str) -> anyhow::Result<()> {
        self.live_ids.remove(ck);
        self.conn
            .execute(
                "DELETE FROM temp.live WHERE n IN (SELECT n FROM scopes WHERE ck = ?1)",
                params![ck],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// After a crash: pending scopes in `vouched` are settled (their part lines are all in
    /// the manifest); the others' keys go (their pages are replayed). Returns how many
    /// scopes were settled and dropped.
    pub fn recover(&mut self, vouched: &HashSet<String>) -> anyhow::Result<(u64, u64)> {
        let (mut settled, mut dropped) = (0, 0);
        for (n, ck, done) in self.scopes()? {
            if done {
                continue;
            }
            if vouched.contains(&ck) {
                self.conn
                    .execute("UPDATE scopes SET settled = 1 WHERE n = ?1", params![n])
                    .map_err(|e| self.fail(e))?;
                settled += 1;
            } else {
                self.drop_scope(n)?;
                dropped += 1;
            }
        }
        Ok((settled, dropped))
    }

    fn drop_scope(&mut self, n: i64) -> anyhow::Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| anyhow::anyhow!("the key index {} failed ({e})", self.path.display()))?;
        tx.execute("DELETE FROM keys WHERE n = ?1", params![n])
            .and_then(|_| tx.execute("DELETE FROM scopes WHERE n = ?1", params![n]))
            .and_then(|_| tx.execute("DELETE FROM temp.live WHERE n = ?1", params![n]))
            .and_then(|_| tx.commit())
            .map_err(|e| anyhow::anyhow!("the key index {} failed ({e})", self.path.display()))
    }

    /// Whether `key` is held by a counting scope; if not, it is added under checkpoint `ck`
    /// (the row is the first with it) and `false` is returned.
    #[cfg(test)]
    pub fn seen(&mut self, key: &[u8], ck: &str) -> anyhow::Result<bool> {
        Ok(self.seen_many(&[key.to_vec()], ck)?[0])
    }

    /// [`KeyIndex::seen`] for many keys at once, in order (a key that repeats within `keys`
    /// is seen from its second time on).
    pub fn seen_many(&mut self, keys: &[Vec<u8>], ck: &str) -> anyhow::Result<Vec<bool>> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN").map_err(|e| self.fail(e))?;
            self.in_tx = true;
        }
        let n = self.scope(ck)?;
        let mut seen = Vec::with_capacity(keys.len());
        let mut batch: HashSet<&[u8]> = HashSet::with_capacity(BATCH);
        for chunk in keys.chunks(BATCH) {
            // Held already (usually none), then repeated within the batch.
            let mut held: HashSet<Vec<u8>> = HashSet::new();
            let ascending_above = match &self.above {
                Some(top) => {
                    chunk.windows(2).all(|w| w[0] < w[1])
                        && top.as_ref().is_none_or(|t| chunk[0] > *t)
                }
                None => false,
            };
            if let (Some(top), Some(last)) = (self.above.as_mut(), chunk.iter().max())
                && top.as_ref().is_none_or(|t| last > t)
            {
                *top = Some(last.clone());
            }
            let lookup = |held: &mut HashSet<Vec<u8>>| -> rusqlite::Result<()> {
                let mut st = self.conn.prepare_cached(&held_sql(chunk.len()))?;
                for (j, k) in chunk.iter().enumerate() {
                    st.raw_bind_parameter(j + 1, k.as_slice())?;
                }
                let mut rows = st.raw_query();
                while let Some(r) = rows.next()? {
                    held.insert(r.get::<_, Vec<u8>>(0)?);
                }
                Ok(())
            };
            if !ascending_above {
                lookup(&mut held).map_err(|e| self.fail(e))?;
            }
            batch.clear();
            let mut new: Vec<&[u8]> = Vec::with_capacity(chunk.len());
            for k in chunk {
                let dup = held.contains(k) || !batch.insert(k.as_slice());
                if !dup {
                    new.push(k);
                }
                seen.push(dup);
            }
            if new.is_empty() {
                continue;
            }
            let add = || -> rusqlite::Result<()> {
                let mut st = self.conn.prepare_cached(&add_sql(new.len()))?;
                st.raw_bind_parameter(1, n)?;
                for (j, k) in new.iter().enumerate() {
                    st.raw_bind_parameter(j + 2, *k)?;
                }
                st.raw_execute().map(|_| ())
            };
            add().map_err(|e| self.fail(e))?;
        }
        Ok(seen)
    }

    /// Forget the keys of checkpoint `ck`, which is still open (its rows are taken again).
    pub fn drop_pending(&mut self, ck: &str) -> anyhow::Result<()> {
        self.commit_pending()?;
        let n: Option<i64> = self
            .conn
            .query_row("SELECT n FROM scopes WHERE ck = ?1", params![ck], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.fail(e))?;
        match n {
            Some(n) => self.drop_scope(n),
            None => Ok(()),
        }
    }

    /// Make every key added so far durable: before the manifest lines of a checkpoint.
    pub fn commit_pending(&mut self) -> anyhow::Result<()> {
        if std::mem::take(&mut self.in_tx) {
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// After checkpoint `ck`'s manifest lines: its keys are held for good.
    pub fn settle(&mut self, ck: &str) -> anyhow::Result<()> {
        self.commit_pending()?;
        self.conn
            .execute("UPDATE scopes SET settled = 1 WHERE ck = ?1", params![ck])
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Keys of counting scopes: a full count, for tests.
    #[cfg(test)]
    pub fn held(&self) -> anyhow::Result<u64> {
        let c: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM keys WHERE n IN (SELECT n FROM temp.live)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.fail(e))?;
        Ok(c as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_key_is_seen_once_and_held_across_runs_only_while_live() {
        let dir = tempfile_dir();
        let mut ix = KeyIndex::open(&dir, "t", "r1", &live(&[])).unwrap();
        let ck = checkpoint_id("r1", None, 1);
        assert_eq!(
            ix.seen_many(&[b"a".to_vec(), b"b".to_vec(), b"a".to_vec()], &ck)
                .unwrap(),
            [false, false, true]
        );
        assert!(ix.seen(b"a", &ck).unwrap(), "pending counts");
        ix.commit_pending().unwrap();
        ix.settle(&ck).unwrap();
        assert!(ix.seen(b"a", &checkpoint_id("r1", None, 5)).unwrap());
        drop(ix);
        // An incremental run: r1's keys count.
        let mut ix = KeyIndex::open(&dir, "t", "r2", &live(&[&ck])).unwrap();
        assert!(ix.seen(b"a", &checkpoint_id("r2", None, 1)).unwrap());
        drop(ix);
        // A complete harvest replaces the dataset: only its own keys count.
        let mut ix = KeyIndex::open(&dir, "t", "r3", &live(&[])).unwrap();
        let ck3 = checkpoint_id("r3", None, 1);
        assert!(!ix.seen(b"a", &ck3).unwrap());
        ix.settle(&ck3).unwrap();
        assert_eq!(ix.held().unwrap(), 1);
        drop(ix);
        // A checkpoint being replaced (a file's new version): its keys stop counting.
        let mut ix = KeyIndex::open(&dir, "t", "r4", &live(&[&ck3])).unwrap();
        let ck4 = checkpoint_id("r4", None, 1);
        assert!(ix.seen(b"a", &ck4).unwrap());
        ix.forget(&ck3).unwrap();
        assert!(!ix.seen(b"a", &ck4).unwrap());
    }

    #[test]
    fn recovery_settles_vouched_checkpoints_and_drops_the_rest() {
        let dir = tempfile_dir();
        let mut ix = KeyIndex::open(&dir, "t", "r1", &live(&[])).unwrap();
        let (c1, c2) = (checkpoint_id("r1", None, 1), checkpoint_id("r1", None, 4));
        ix.seen(b"a", &c1).unwrap();
        ix.seen(b"b", &c2).unwrap();
        ix.commit_pending().unwrap();
        drop(ix); // a crash after c1's lines, before settling; c2 never got lines
        let mut ix = KeyIndex::open(&dir, "t", "r1", &live(&[])).unwrap();
        assert_eq!(ix.recover(&live(&[&c1])).unwrap(), (1, 1));
        assert!(ix.seen(b"a", &c2).unwrap());
        assert!(!ix.seen(b"b", &c2).unwrap(), "b's page is replayed");
    }

    fn tempfile_dir() -> PathBuf {
        use rand::RngExt;
        let d = std::env::temp_dir().join(format!(
            "harvest-unique-{}-{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
