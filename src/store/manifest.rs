//! The append-only, hash-chained provenance log `DIR/manifest.jsonl` (DESIGN.md §"Manifest").
//!
//! Guarantees:
//! - Every line is one JSON object with `version`, `kind`, `run_id`, `seq` (strictly increasing
//!   in the file) and `prev` (sha256 hex of the previous line's bytes, without its newline;
//!   `null` on the first line).
//! - A line is appended with one `write` and fsynced before [`Manifest::append`] returns, so a
//!   record is durable when the caller acts on it.
//! - A torn final line (no trailing newline: a crash mid-append) is cut off on open and reported;
//!   it is never silently kept or chained onto.
//! - Lines pass through [`crate::redact`] before they are hashed and written.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub const FILE_NAME: &str = "manifest.jsonl";
pub const VERSION: u64 = 1;

/// The manifest writer: a handle that concurrent tables of one run clone and append through,
/// one line at a time, so the file stays one hash chain.
#[derive(Clone)]
pub struct Manifest {
    inner: std::sync::Arc<std::sync::Mutex<Inner>>,
    /// Lines appended through this handle (and the handle it was cloned from, before).
    appended: u64,
}

struct Inner {
    file: File,
    path: PathBuf,
    next_seq: u64,
    prev: Option<String>,
    follower: Option<Box<dyn Follower>>,
}

/// Something kept up to date with the records this process appends (the Delta writer's
/// ledger), so it knows what the manifest says without rereading the file. The manifest knows
/// only this trait, not what follows it.
pub trait Follower: std::any::Any + Send {
    /// Whether records of `kind` matter to it (others are not built for it).
    fn wants(&self, kind: &str) -> bool;
    /// One appended record, with its `kind` and `run_id` set.
    fn feed(&mut self, record: &Value);
}

/// What opening the manifest had to repair.
#[derive(Debug, Default)]
pub struct Repair {
    /// Bytes of a torn final line that were cut off.
    pub torn_bytes: u64,
}

/// The time a record is written, as every record and state file spells it (RFC 3339, UTC, ms).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

impl Manifest {
    /// Open (or create) `dir/manifest.jsonl`, repairing a torn tail.
    pub fn open(dir: &Path) -> anyhow::Result<(Self, Repair)> {
        use anyhow::Context as _;
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("cannot open the manifest {}", path.display()))?;
        let mut repair = Repair::default();
        let mut next_seq = 1;
        let mut prev = None;
        let mut good_len: u64 = 0;
        {
            let mut reader = BufReader::new(&file);
            let mut line = Vec::new();
            let mut lineno = 0u64;
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                lineno += 1;
                if line.last() != Some(&b'\n') {
                    repair.torn_bytes = n as u64;
                    break;
                }
                let body = &line[..line.len() - 1];
                let v: Value = serde_json::from_slice(body).with_context(|| {
                    format!(
                        "{} line {lineno} is not valid JSON; the manifest is damaged (run `harvest verify` to see all problems)",
                        path.display()
                    )
                })?;
                let seq = v.get("seq").and_then(Value::as_u64).with_context(|| {
                    format!("{} line {lineno} has no numeric \"seq\"", path.display())
                })?;
                next_seq = seq + 1;
                prev = Some(sha256_hex(body));
                good_len += n as u64;
            }
        }
        if repair.torn_bytes > 0 {
            file.set_len(good_len)
                .with_context(|| format!("cannot cut the torn last line off {}", path.display()))?;
            file.sync_all()?;
            tracing::warn!(
                "repaired {}: removed a torn last line of {} bytes left by an interrupted run",
                path.display(),
                repair.torn_bytes
            );
        }
        file.seek(SeekFrom::End(0))?;
        Ok((
            Self {
                inner: std::sync::Arc::new(std::sync::Mutex::new(Inner {
                    file,
                    path,
                    next_seq,
                    prev,
                    follower: None,
                })),
                appended: 0,
            },
            repair,
        ))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Keep `follower` (built from the records read at start) up to date with every record
    /// this process appends.
    pub fn follow(&mut self, follower: Box<dyn Follower>) {
        self.inner().follower = Some(follower);
    }

    /// `f` of the follower given to [`Self::follow`], if it is a `T`.
    pub fn follower<T: Follower, R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let inner = self.inner();
        let any: &dyn std::any::Any = inner.follower.as_deref()?;
        any.downcast_ref().map(f)
    }

    /// The `seq` the next record will get (it changes only when a record is appended).
    pub fn next_seq(&self) -> u64 {
        self.inner().next_seq
    }

    /// How many lines were appended through this handle: what one table recorded, while
    /// other tables append through their own handles.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Append one record and fsync it. `fields` go after the common header.
    pub fn append(
        &mut self,
        kind: &str,
        run_id: &str,
        fields: Map<String, Value>,
    ) -> anyhow::Result<u64> {
        use anyhow::Context as _;
        let inner = std::sync::Arc::clone(&self.inner);
        let mut guard = lock(&inner);
        let me = &mut *guard;
        let seq = me.next_seq;
        // serde_json's Map keeps keys sorted; build the line by hand so the header comes first.
        let mut line = String::with_capacity(256);
        line.push_str(&format!(
            "{{\"version\":{VERSION},\"kind\":{},\"run_id\":{},\"seq\":{seq},\"prev\":{}",
            Value::String(kind.into()),
            Value::String(run_id.into()),
            me.prev
                .as_ref()
                .map_or("null".to_string(), |p| format!("\"{p}\"")),
        ));
        for (k, v) in &fields {
            line.push(',');
            line.push_str(&Value::String(k.clone()).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
        line.push('}');
        let line = crate::redact::redact(&line).into_owned();
        let mut bytes = line.into_bytes();
        let hash = sha256_hex(&bytes);
        bytes.push(b'\n');
        me.file
            .write_all(&bytes)
            .and_then(|_| me.file.sync_data())
            .with_context(|| format!("cannot append to the manifest {}", me.path.display()))?;
        me.prev = Some(hash);
        me.next_seq += 1;
        if let Some(follower) = me.follower.as_mut()
            && follower.wants(kind)
        {
            let mut v = Value::Object(fields);
            v["kind"] = Value::String(kind.into());
            v["run_id"] = Value::String(run_id.into());
            follower.feed(&v);
        }
        drop(guard);
        self.appended += 1;
        Ok(seq)
    }
}

/// A panic while appending leaves no half-line behind a later append: the line is written
/// with one call, and a torn one is cut on the next open.
fn lock(inner: &std::sync::Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// The number (1-based) of the first line of `bytes` (whole manifest lines) that is not a
/// JSON object whose `prev` is the sha256 of the line before it; `None` when the chain holds.
pub fn first_chain_break(bytes: &[u8]) -> Option<u64> {
    let mut prev = Value::Null;
    for (n, line) in bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let v: Option<Value> = serde_json::from_slice(line).ok();
        if v.as_ref().and_then(|v| v.get("prev")) != Some(&prev) {
            return Some(n as u64 + 1);
        }
        prev = Value::String(sha256_hex(line));
    }
    None
}

/// Read every parseable record (for resume, supersede and verify-like checks). The
/// per-request entries of row-driven batches (`requests`) are left out, so memory stays
/// proportional to pages and parts, not to requests; [`for_each_record`] streams them.
pub fn read_records(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut out = vec![];
    for_each_record(dir, |mut v| {
        if let Some(m) = v.as_object_mut() {
            m.remove("requests");
        }
        out.push(v);
    })?;
    Ok(out)
}

/// Hand every parseable record to `f`, one line at a time.
pub fn for_each_record(dir: &Path, mut f: impl FnMut(Value)) -> anyhow::Result<()> {
    let path = dir.join(FILE_NAME);
    let Ok(file) = File::open(&path) else {
        return Ok(());
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if let Ok(v) = serde_json::from_slice::<Value>(&line) {
            f(v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_torn_tail() {
        let dir = std::env::temp_dir().join(format!("harvest-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let (mut m, _) = Manifest::open(&dir).unwrap();
            let mut f = Map::new();
            f.insert("rows".into(), Value::from(3));
            assert_eq!(m.append("page", "r1", f.clone()).unwrap(), 1);
            assert_eq!(m.append("page", "r1", f).unwrap(), 2);
        }
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let second: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            second["prev"],
            Value::String(sha256_hex(lines[0].as_bytes()))
        );
        assert!(lines[0].starts_with(
            "{\"version\":1,\"kind\":\"page\",\"run_id\":\"r1\",\"seq\":1,\"prev\":null"
        ));
        assert_eq!(first_chain_break(text.as_bytes()), None);
        let edited = text.replacen("\"rows\":3", "\"rows\":4", 1);
        assert_eq!(first_chain_break(edited.as_bytes()), Some(2));
        assert_eq!(first_chain_break(b"{\"prev\":null}\nnot json\n"), Some(2));
        // Simulate a crash mid-append.
        OpenOptions::new()
            .append(true)
            .open(dir.join(FILE_NAME))
            .unwrap()
            .write_all(b"{\"version\":1,\"ki")
            .unwrap();
        let (mut m, repair) = Manifest::open(&dir).unwrap();
        assert_eq!(repair.torn_bytes, 16);
        assert_eq!(m.append("run_end", "r1", Map::new()).unwrap(), 3);
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
