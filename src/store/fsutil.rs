//! File-system primitives behind the crash-safety protocol (DESIGN.md §"Crash safety").
//!
//! Guarantees: a file written through [`atomic_write`] or [`AtomicFile`] becomes visible under
//! its final name only complete and durable (temp name in the same directory, fsync, rename,
//! fsync of the directory). Temp names start with `.` and end with [`TEMP_SUFFIX`], so dataset
//! readers (pyarrow, DuckDB) ignore them and the next run can find and remove them.
//! [`sanitize_component`] turns any name into a single safe path component. [`failpoint`]s
//! mark the points between durable steps where the crash tests abort the process.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Every temp file this crate creates ends with this suffix.
pub const TEMP_SUFFIX: &str = ".harvest-tmp";

/// fsync a directory so that a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory that holds `path`: its parent, or `.` for a bare file name (`o.parquet`,
/// whose `Path::parent()` is the empty path, which cannot be opened).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create `dir` and its parents, fsyncing each parent that gained a new entry.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir);
    if parent != Path::new(".") {
        create_dir_all_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    fsync_dir(parent)
}

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()))
}

/// Write `bytes` to `path` atomically and durably.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// A file being written under a temp name; [`AtomicFile::commit`] publishes it.
/// Dropping it uncommitted removes the temp file.
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> io::Result<Self> {
        let temp = temp_path_for(dest);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        Ok(Self {
            file: Some(file),
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// fsync the data, rename into place, fsync the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("AtomicFile committed twice");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.dest)?;
        fsync_dir(parent_dir(&self.dest))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("write after commit")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Every regular file under `dir`, recursively; a missing `dir` has none.
pub fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}

/// `path` relative to `root`, with `/` separators (the form the manifest records).
pub fn rel_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .map(|r| r.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default()
}

/// A Parquet part file as the sink names them (`part-<run_id>-<n>.parquet`).
pub fn is_part_file(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))
}

/// Make `name` one path component of ASCII letters, digits, `-`, `_`, `.` and `~` only, every
/// other byte written as `%XX` (and a leading `.` too). The partition directories of Delta
/// tables are spelled so: the Delta log percent-encodes that name once more, and the readers
/// (delta-rs, DuckDB, polars) all find the file by decoding it once.
pub fn ascii_component(name: &str) -> String {
    if name.is_empty() {
        return "%00".to_string();
    }
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Make `name` safe as one path component: no separators, no `..`, no control characters,
/// no leading dot (that would hide it from dataset readers). Unsafe bytes are written as
/// `%XX` (the Hive convention, which pyarrow decodes), so distinct names stay distinct.
pub fn sanitize_component(name: &str) -> String {
    if name.is_empty() {
        return "%00".to_string();
    }
    let mut out = String::with_capacity(name.len());
    for (i, ch) in name.char_indices() {
        let unsafe_char = matches!(
            ch,
            '/' | '\\' | '%' | ':' | '*' | '?' | '"' | '<' | '>' | '|' | '='
        ) || ch.is_control()
            || (i == 0 && ch == '.');
        if unsafe_char {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Test-only crash points: when `HARVEST_FAILPOINT` equals `name`, abort the process right
/// here, as a power cut would. Used by the tests of the commit protocol; inert otherwise.
pub fn failpoint(name: &str) {
    if std::env::var("HARVEST_FAILPOINT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_blocks_traversal_and_separators() {
        assert_eq!(sanitize_component("Order Details"), "Order Details");
        assert_eq!(sanitize_component("../etc"), "%2E.%2Fetc");
        assert_eq!(sanitize_component(".."), "%2E.");
        assert_eq!(sanitize_component("a/b\\c"), "a%2Fb%5Cc");
        assert_eq!(sanitize_component("x\ny"), "x%0Ay");
        assert_eq!(sanitize_component(""), "%00");
        assert_eq!(sanitize_component("50%"), "50%25");
        for s in ["..", ".", "a/../b", "/"] {
            let c = sanitize_component(s);
            assert!(
                !c.contains('/') && c != ".." && c != "." && !c.starts_with('.'),
                "{s} -> {c}"
            );
        }
    }

    #[test]
    fn atomic_write_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("harvest-fsutil-{}", std::process::id()));
        create_dir_all_durable(&dir).unwrap();
        let p = dir.join("f.json");
        atomic_write(&p, b"hello").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        {
            let mut f = AtomicFile::create(&dir.join("g")).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!dir.join("g").exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
