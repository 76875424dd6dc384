//! A `files` table's keys checked and turned into its [`FileTable`]: `path` (a glob), `format`
//! and `name_pattern`, and no key of the sources with a server.

use crate::config::TableConfig;
use crate::error::UsageError;
use crate::source::files::{FileFormat, FileTable};
use crate::source::settings::SourceKind;

pub(super) fn files_table(
    kind: SourceKind,
    t: &TableConfig,
) -> Result<Option<FileTable>, UsageError> {
    let name = &t.name;
    if kind != SourceKind::Files {
        if t.name_pattern.is_some() {
            return Err(UsageError::with_hint(
                format!(
                    "table {name:?}: `name_pattern` is for tables of a kind = \"files\" source"
                ),
                "remove it, or read the files with a kind = \"files\" source",
            ));
        }
        return Ok(None);
    }
    for (key, set) in [
        ("params", !t.params.is_empty()),
        ("page_size", t.page_size.is_some()),
        ("sort", t.sort.is_some()),
        ("parallel", t.parallel.is_some_and(|p| p > 1)),
        ("watermark", t.watermark.is_some()),
        ("records", t.records.is_some()),
        ("paginate", t.paginate.is_some()),
        ("max_pages", t.max_pages.is_some()),
        ("primary_key", !t.primary_key.is_empty()),
        ("watermark_format", t.watermark_format.is_some()),
        ("for_each", t.for_each.is_some()),
        ("method", t.method.is_some()),
        ("body", t.body.is_some()),
        ("window", t.window.is_some()),
        ("records_from", t.records_from.is_some()),
        ("schema", t.schema.as_deref().is_some_and(|s| s != "freeze")),
    ]
    .into_iter()
    .chain(t.row_driven_keys())
    {
        if set {
            return Err(UsageError::with_hint(
                format!("table {name:?}: `{key}` is not available for a files table"),
                "a files table has `path` (a glob), `format`, `name_pattern`, `types`, `partition_by`, `output` and `checks`; each run reads the files that are new or changed",
            ));
        }
    }
    let Some(glob) = t.path.clone() else {
        return Err(UsageError::with_hint(
            format!("table {name:?} of a files source has no `path`"),
            "name its files with a glob, e.g. path = \"data/hired_employees*.csv\"",
        ));
    };
    let format = match t.format.as_deref() {
        None => None,
        Some("csv") => Some(FileFormat::Csv),
        Some("ndjson" | "jsonl") => Some(FileFormat::Ndjson),
        Some("parquet") => Some(FileFormat::Parquet),
        Some(other) => {
            return Err(UsageError::with_hint(
                format!("table {name:?}: format = {other:?} is not a file format harvest reads"),
                "use \"csv\", \"ndjson\" or \"parquet\" (or leave it out: each file's extension says)",
            ));
        }
    };
    let name_pattern = match &t.name_pattern {
        None => None,
        Some(p) => Some(regex::Regex::new(p).map_err(|e| {
            UsageError::with_hint(
                format!("table {name:?}: name_pattern is not a valid regular expression: {e}"),
                "write it in Rust regex syntax, in a TOML literal string: name_pattern = '^hired_employees_\\d{4}\\.csv$'",
            )
        })?),
    };
    Ok(Some(FileTable {
        glob,
        format,
        name_pattern,
    }))
}
