//! The TOML file's types, exactly as written (serde, `deny_unknown_fields`: a typo is an
//! error), and reading the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::UsageError;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// A path, a `file://` URL (read as its path), or `s3://…`: as `--out`.
    #[serde(default, deserialize_with = "out_location")]
    pub out: Option<PathBuf>,
    /// With `out = "s3://…"`: the local working copy (`--stage`).
    pub stage: Option<PathBuf>,
    #[serde(default)]
    pub s3: S3Config,
    /// `parquet` (default) or `delta`.
    pub table_format: Option<String>,
    /// Tables of the job harvested at once (`--jobs`).
    pub jobs: Option<u32>,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub parquet: ParquetConfig,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(default, rename = "extract")]
    pub extracts: Vec<ExtractConfig>,
}

/// `out` as `--out` reads it ([`crate::store::remote::local_or_url`]).
pub(super) fn out_location<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    crate::store::remote::local_or_url(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `[s3]`: where an S3-compatible server is (never credentials: those come from the AWS
/// environment).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// One `[[extract]]` section for `sql-extract`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    pub name: String,
    pub db: PathBuf,
    pub query: Option<String>,
    pub query_file: Option<PathBuf>,
    /// Named parameters; TOML integers/floats keep their type, strings may use `int:`/`real:`.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// Positional `?` parameters, in order.
    #[serde(default)]
    pub args: Vec<toml::Value>,
    pub partition_by: Option<String>,
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// Write one file here instead of DIR/parquet/<name>/.
    pub output: Option<PathBuf>,
    pub chunk_rows: Option<usize>,
    /// Row checks on the query's rows (failed rows go to quarantine/<name>/).
    pub checks: Option<ChecksConfig>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub connect_timeout_secs: Option<f64>,
    pub request_timeout_secs: Option<f64>,
    pub stall_timeout_secs: Option<f64>,
    pub max_attempts: Option<u32>,
    pub retry_budget_secs: Option<f64>,
    pub rate_limit: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub compression: Option<bool>,
    pub http1_only: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    pub part_rows: Option<u64>,
    pub row_group_rows: Option<usize>,
    pub zstd_level: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: Option<String>,
    /// `datasette` (the default), `rest` or `files`.
    pub kind: Option<String>,
    /// The server (Datasette, REST); none for `files`.
    #[serde(default)]
    pub url: String,
    /// Datasette only: the database name in the URL.
    pub database: Option<String>,
    pub auth: Option<AuthConfig>,
    /// REST only: headers sent with every request (`${VAR}` values are read from the
    /// environment and treated as secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub page_size: Option<u32>,
    #[serde(default, rename = "table")]
    pub tables: Vec<TableConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub bearer: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub header: Option<String>,
    /// An API key sent as this query parameter (with `value`).
    pub query: Option<String>,
    pub value: Option<String>,
    /// An OAuth2 token endpoint (client credentials or password grant).
    pub oauth2: Option<OAuth2Config>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    pub token_url: String,
    /// `client_credentials` (the default) or `password`.
    pub grant: Option<String>,
    pub client_id: String,
    pub client_secret: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Password grant: the resource owner's name and (`${VAR}`) password.
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `paginate = "link"`, or a table with the paginator's options.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PaginateConfig {
    Name(String),
    Table(Box<PaginateTable>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginateTable {
    pub kind: String,
    pub pointer: Option<String>,
    pub param: Option<String>,
    pub offset_param: Option<String>,
    pub limit_param: Option<String>,
    pub limit: Option<u64>,
    pub start: Option<u64>,
    pub total_pointer: Option<String>,
    pub total_header: Option<String>,
    /// Cursor: the token is this JSON Pointer into the page's last record.
    pub last_record: Option<String>,
    /// Cursor: the token is this response header.
    pub from_header: Option<String>,
    /// Cursor: send the token at this JSON Pointer into the request body.
    pub body_field: Option<String>,
    /// Cursor: send the token in this request header.
    pub to_header: Option<String>,
    /// Any paginator: stop when the boolean here is false or absent.
    pub has_more: Option<String>,
    /// Any paginator: stop when the boolean here is true.
    pub done: Option<String>,
    /// Any paginator: stop on a page without records.
    pub stop_on_empty: Option<bool>,
}

/// `window`: read a table one time window after another.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub start_param: String,
    pub end_param: String,
    pub from: toml::Value,
    pub to: Option<toml::Value>,
    pub step: String,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    /// Dataset name under parquet/ (default: the table name).
    pub output: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    pub page_size: Option<u32>,
    pub partition_by: Option<String>,
    pub sort: Option<String>,
    /// Concurrent key-range cursors for this table (`--parallel` overrides).
    pub parallel: Option<u32>,
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// `incremental` only: the watermark column, first-run lower bound, and lookback.
    pub watermark: Option<String>,
    pub initial: Option<toml::Value>,
    pub lookback: Option<toml::Value>,
    /// REST only: the path under the source URL (default `/<name>`).
    pub path: Option<String>,
    /// REST only: JSON Pointer to the array of records.
    pub records: Option<String>,
    /// REST only: how the API pages.
    pub paginate: Option<PaginateConfig>,
    /// REST only: stop after this many pages.
    pub max_pages: Option<u64>,
    /// REST only: read one time window after another.
    pub window: Option<WindowConfig>,
    /// REST only: `json` (default), `ndjson` or `csv` pages.
    pub format: Option<String>,
    /// REST only: `values` reads records from an object keyed by id.
    pub records_from: Option<String>,
    /// Files only: read only files whose name matches this regex (others are reported).
    pub name_pattern: Option<String>,
    /// REST only: `evolve` (default) or `freeze` the columns planned from the first page.
    pub schema: Option<String>,
    /// REST only: the fields that identify a record.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// REST only: strftime format of an instant in a `{watermark}` parameter.
    pub watermark_format: Option<String>,
    /// REST only: one request per input row (a row-driven table).
    pub for_each: Option<ForEachConfig>,
    /// GET (the default), POST, PUT, PATCH or DELETE (paged tables: GET or POST).
    pub method: Option<String>,
    /// The JSON body (row-driven: a template, `{Column}` placeholders keep their type).
    pub body: Option<toml::Value>,
    /// Row-driven: request headers (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Row-driven: requests in flight.
    pub concurrency: Option<u32>,
    /// Row-driven: send each request's id in this header (e.g. `Idempotency-Key`).
    pub request_id_header: Option<String>,
    /// Row-driven: error statuses recorded as responses instead of failing the run.
    pub record_status: Option<Vec<u16>>,
    /// Row checks: failed rows go to quarantine/<output>/ with their reasons.
    pub checks: Option<ChecksConfig>,
}

/// `[source.table.checks]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChecksConfig {
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub unique: Vec<String>,
    #[serde(default)]
    pub one_of: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    pub pattern: BTreeMap<String, String>,
    #[serde(default)]
    pub range: BTreeMap<String, RangeConfig>,
    #[serde(default)]
    pub max_length: BTreeMap<String, u64>,
    /// `"5%"` or a count of rows.
    pub max_failed: Option<toml::Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    pub min: Option<toml::Value>,
    pub max: Option<toml::Value>,
}

impl TableConfig {
    /// The keys only a row-driven table may set, and whether this table sets each.
    pub fn row_driven_keys(&self) -> [(&'static str, bool); 4] {
        [
            ("headers", !self.headers.is_empty()),
            ("concurrency", self.concurrency.is_some()),
            ("request_id_header", self.request_id_header.is_some()),
            ("record_status", self.record_status.is_some()),
        ]
    }
}

/// `for_each`: where a row-driven table's input rows come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForEachConfig {
    /// A SQLite database (with `query` and optional `params`).
    pub sqlite: Option<PathBuf>,
    pub query: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// A Parquet file or dataset directory (with optional `columns`).
    pub parquet: Option<PathBuf>,
    #[serde(default)]
    pub columns: Vec<String>,
    /// A table of the same source listed earlier (with `fields`: column → JSON Pointer).
    pub table: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

pub fn load_config(path: &Path) -> Result<ConfigFile, UsageError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError::with_hint(
            format!("cannot read the config file {}: {e}", path.display()),
            "check the --config path",
        )
    })?;
    toml::from_str(&text).map_err(|e| {
        UsageError::with_hint(
            format!(
                "the config file {} is not valid: {}",
                path.display(),
                e.to_string().trim()
            ),
            "see harvest.example.toml (Datasette) and examples/rest.toml (REST) for every key",
        )
    })
}
