//! What a source and each of its tables are, resolved: the plain settings the config layer
//! produces ([`crate::config`]) and the sources and the run read. No parsing and no I/O here.

use std::collections::BTreeMap;

use url::Url;

use crate::http::Auth;
use crate::schema::ColType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Datasette,
    Rest,
    /// Local files (CSV, NDJSON, Parquet) matched by a glob.
    Files,
}

#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub name: String,
    pub kind: SourceKind,
    pub base: Url,
    /// The Datasette database (empty for a REST source).
    pub database: String,
    /// REST: headers for every request (values may be secrets: never described).
    pub headers: Vec<(String, String)>,
    /// Some header value is a `${VAR}` secret.
    pub secret_headers: bool,
    pub auth: Option<Auth>,
    pub tables: Vec<TableSettings>,
}

impl SourceSettings {
    /// Whether requests to this source carry a secret (`auth` or a `${VAR}` header): such a
    /// source's requests never follow the server to another origin.
    pub fn sends_credentials(&self) -> bool {
        self.auth.is_some() || self.secret_headers
    }

    /// The query parameter that carries an API key: stripped from every URL a server sends.
    pub fn secret_param(&self) -> Option<String> {
        match &self.auth {
            Some(Auth::Query { name, .. }) => Some(name.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableSettings {
    pub name: String,
    pub output: String,
    pub params: Vec<(String, String)>,
    pub page_size: u32,
    /// The page size was given (flag or config), not defaulted: a server limit below it is
    /// an error rather than a reason to use smaller pages.
    #[serde(skip)]
    pub page_size_given: bool,
    pub partition_by: Option<String>,
    pub sort: Option<String>,
    pub types: BTreeMap<String, ColType>,
    pub watermark: Option<WatermarkSettings>,
    /// Concurrent key-range cursors (`--parallel`); 1 pages the table with one cursor.
    pub parallel: u32,
    /// A REST table's request and paging (`None` for a Datasette table).
    pub rest: Option<crate::source::rest::paginate::RestTable>,
    /// A row-driven table's input and request templates.
    pub rows: Option<crate::source::rows::RowDriven>,
    /// A `files` table's glob, format and name pattern.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<crate::source::files::FileTable>,
    /// `schema = "freeze"`: a field or value the first page's columns cannot hold stops the
    /// run (default: the columns evolve, see [`crate::schema::evolve`]).
    pub schema_frozen: bool,
    /// Row checks: failed rows go to quarantine instead of the dataset (and a value that does
    /// not fit its column is a failed row, not a stopped run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<crate::schema::checks::Checks>,
    /// `--shard I/N` on a `--parallel` table: this run pages only its share of the slices (on a
    /// row-driven child of such a table: it sends the requests of its shard's parent rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<SliceShare>,
}

/// One shard's share of a `--parallel` table's slices: those whose index `k` has
/// `k % count == index - 1` (so shards take turns along the key range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceShare {
    /// 1-based, as written in `--shard I/N`.
    pub index: u32,
    pub count: u32,
}

impl SliceShare {
    pub fn owns(&self, slice: u32) -> bool {
        slice % self.count == self.index - 1
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WatermarkSettings {
    pub column: String,
    /// REST: how an instant is written into a `{watermark}` parameter (strftime).
    pub format: Option<String>,
    pub initial: Option<String>,
    pub lookback: String,
    #[serde(skip)]
    pub lookback_parsed: Option<crate::store::watermark::Lookback>,
    pub max_window_rows: usize,
}
