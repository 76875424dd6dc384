//! Several `harvest` processes sharing one output directory (`--writer NAME`).
//!
//! Guarantees:
//! - Each writer has a home, `DIR/writers/<NAME>/`, holding its own `manifest.jsonl` and
//!   `state/` (lock, watermarks). Snapshots and parts go where a single writer puts them
//!   (`DIR/raw/…`, `DIR/parquet/<table>/…`), under names that carry the writer's run ids, and
//!   the manifest names them relative to DIR, so every writer's records read the same way.
//! - A writer's start-up clean-up (temp files, unrecorded parts) touches only files of its own
//!   runs: another writer's file in flight is never removed.
//! - The two layouts do not mix: a DIR with a top-level `manifest.jsonl` takes no `--writer`,
//!   and a DIR with writers takes no run without one (both usage errors naming the fix).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::UsageError;

/// The directory under DIR that holds the writers' homes.
pub const WRITERS_DIR: &str = "writers";

/// Letters, digits, `.`, `_`, `-`; 1 to 64 of them; not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `DIR/writers/<name>`.
pub fn home(out: &Path, name: &str) -> PathBuf {
    out.join(WRITERS_DIR).join(name)
}

/// The writers of DIR that have a manifest, by name, sorted.
pub fn list(out: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(out.join(WRITERS_DIR)) else {
        return vec![];
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join(crate::store::manifest::FILE_NAME).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| valid_name(n))
        .collect();
    names.sort();
    names
}

/// Refuse to mix a single-writer DIR and a shared one.
pub fn check_layout(out: &Path, writer: Option<&str>) -> Result<(), UsageError> {
    match writer {
        Some(name) if out.join(crate::store::manifest::FILE_NAME).is_file() => {
            Err(UsageError::with_hint(
                format!(
                    "{} is a single writer's output (it has {}), so --writer {name} cannot share it",
                    out.display(),
                    crate::store::manifest::FILE_NAME
                ),
                "give the shared writers a new --out, or drop --writer to keep writing this DIR alone",
            ))
        }
        None => {
            let writers = list(out);
            if writers.is_empty() {
                return Ok(());
            }
            Err(UsageError::with_hint(
                format!(
                    "{} is shared by writers ({}), and a run without --writer would not see their records",
                    out.display(),
                    writers.join(", ")
                ),
                "pass --writer NAME (one of them to continue its work, or a new name)",
            ))
        }
        Some(_) => Ok(()),
    }
}

/// The run ids a manifest started.
pub fn runs_of<'a>(records: impl IntoIterator<Item = &'a Value>) -> HashSet<String> {
    records
        .into_iter()
        .filter(|r| r["kind"] == "run_start")
        .filter_map(|r| r["run_id"].as_str())
        .map(str::to_string)
        .collect()
}

/// Whether `rel` (a path under DIR, or a temp file's) was written by one of `runs`: a part
/// named `part-<run>-…`, a snapshot under a `<run>/` directory, or the temp file of either.
pub fn written_by(rel: &str, runs: &HashSet<String>) -> bool {
    let mut parts = rel.split('/');
    let name = parts.next_back().unwrap_or_default();
    let name = name.strip_prefix('.').unwrap_or(name);
    if let Some(rest) = name.strip_prefix("part-")
        && runs.iter().any(|r| {
            rest.strip_prefix(r.as_str())
                .is_some_and(|t| t.starts_with('-'))
        })
    {
        return true;
    }
    parts.any(|c| runs.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["shard-1", "a", "w.2_b", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn files_of_own_runs() {
        let runs: HashSet<String> = ["20261123T1Z-ab12".to_string()].into();
        for mine in [
            "parquet/t/part-20261123T1Z-ab12-00001.parquet",
            "parquet/t/part-20261123T1Z-ab12-s3-00001.parquet",
            "parquet/t/k=v/.part-20261123T1Z-ab12-00002.parquet.77.harvest-tmp",
            "raw/src/t/20261123T1Z-ab12/page-000001.json",
            "raw/src/t/20261123T1Z-ab12/slice-2/.page-000003.json.9.harvest-tmp",
        ] {
            assert!(written_by(mine, &runs), "{mine}");
        }
        for other in [
            "parquet/t/part-20261123T1Z-ab13-00001.parquet",
            "parquet/t/part-20261123T1Z-ab123-00001.parquet",
            "raw/src/t/20261123T1Z-cd34/page-000001.json",
            "parquet/t/_delta_log/00000000000000000001.json",
        ] {
            assert!(!written_by(other, &runs), "{other}");
        }
    }
}
