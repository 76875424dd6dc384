//! The TOML file's types, exactly as written (serde, `deny_unknown_fields`: a typo is an
//! error), and reading the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::UsageError;

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// A path, a `file://` URL (read as its path), or `s3://…`: as `--out`.
    #[serde(default, deserialize_with = "out_location")]
    #[schemars(with = "Option<String>")]
    pub out: Option<PathBuf>,
    /// With `out = "s3://…"`: the local working copy (`--stage`).
    pub stage: Option<PathBuf>,
    /// Where an S3-compatible server is (`--s3-endpoint`, `--s3-region`).
    #[serde(default)]
    pub s3: S3Config,
    #[schemars(extend("enum" = ["parquet", "delta"]))]
    /// `parquet` (default) or `delta`.
    pub table_format: Option<String>,
    /// Tables of the job harvested at once (`--jobs`).
    pub jobs: Option<u32>,
    /// HTTP client settings for every source (flags override them).
    #[serde(default)]
    pub http: HttpConfig,
    /// Parquet writer settings.
    #[serde(default)]
    pub parquet: ParquetConfig,
    /// `[[source]]`: a Datasette database, a REST API or a set of files, with its tables.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// `[[extract]]`: a SQLite query for `harvest sql-extract`.
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
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The S3 endpoint of an S3-compatible server, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL, else AWS).
    pub endpoint: Option<String>,
    /// The bucket's region (default: AWS_REGION, else us-east-1).
    pub region: Option<String>,
}

/// One `[[extract]]` section for `sql-extract`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// The dataset name under DIR/parquet/.
    pub name: String,
    /// The SQLite database (opened read-only).
    pub db: PathBuf,
    /// The SQL query (one statement).
    pub query: Option<String>,
    /// Read the SQL query from this file.
    pub query_file: Option<PathBuf>,
    /// Named parameters; TOML integers/floats keep their type, strings may use `int:`/`real:`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub params: BTreeMap<String, toml::Value>,
    /// Positional `?` parameters, in order.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub args: Vec<toml::Value>,
    /// Hive partitions by this result column.
    pub partition_by: Option<String>,
    /// Column type overrides: integer, float, text, blob, date, timestamp.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// Write one file here instead of DIR/parquet/<name>/.
    pub output: Option<PathBuf>,
    /// Rows per Arrow batch (default 65536).
    pub chunk_rows: Option<usize>,
    /// Row checks on the query's rows (failed rows go to quarantine/<name>/).
    pub checks: Option<ChecksConfig>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Connect timeout in seconds (default 10).
    pub connect_timeout_secs: Option<f64>,
    /// Whole-request timeout in seconds (default 120).
    pub request_timeout_secs: Option<f64>,
    /// Give up on a body that sends no bytes for this many seconds (default 30).
    pub stall_timeout_secs: Option<f64>,
    /// Attempts per request before giving up, the first included (default 8).
    pub max_attempts: Option<u32>,
    /// Seconds a run may spend on failed attempts and backoff in total (default 900).
    pub retry_budget_secs: Option<f64>,
    /// Client-side request rate limit, e.g. "5/s", "120/min".
    pub rate_limit: Option<String>,
    /// Refuse response bodies larger than this, after decompression (default 256 MiB).
    pub max_body_bytes: Option<u64>,
    /// Ask for gzip, br and zstd responses (default true).
    pub compression: Option<bool>,
    /// Speak HTTP/1.1 only (default: HTTP/2 with HTTPS servers that offer it).
    pub http1_only: Option<bool>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// Close the open Parquet parts (a checkpoint) every N rows (default 1000000).
    pub part_rows: Option<u64>,
    /// Rows per Parquet row group, at most (default 131072).
    pub row_group_rows: Option<usize>,
    /// zstd compression level, 1-22 (default 3).
    pub zstd_level: Option<i32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source's name in raw/<source>/ and the manifest (default: the database name, or the URL's host).
    pub name: Option<String>,
    #[schemars(extend("enum" = ["datasette", "rest", "files"]))]
    /// `datasette` (the default), `rest` or `files`.
    pub kind: Option<String>,
    /// The server (Datasette, REST); none for `files`.
    #[serde(default)]
    pub url: String,
    /// Datasette only: the database name in the URL.
    pub database: Option<String>,
    /// Credentials; every secret is a `${VAR}` read from the environment, never a literal.
    pub auth: Option<AuthConfig>,
    /// REST only: headers sent with every request (`${VAR}` values are read from the
    /// environment and treated as secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Rows per page for every table of the source (Datasette `_size`).
    pub page_size: Option<u32>,
    /// `[[source.table]]`: a table of the source.
    #[serde(default, rename = "table")]
    pub tables: Vec<TableConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A bearer token: "${VAR}".
    pub bearer: Option<String>,
    /// HTTP basic auth user.
    pub user: Option<String>,
    /// HTTP basic auth password: "${VAR}".
    pub password: Option<String>,
    /// Send the credential in this header (with `value`).
    pub header: Option<String>,
    /// An API key sent as this query parameter (with `value`).
    pub query: Option<String>,
    /// The credential sent by `header` or `query`: "${VAR}".
    pub value: Option<String>,
    /// An OAuth2 token endpoint (client credentials or password grant).
    pub oauth2: Option<OAuth2Config>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint's URL.
    pub token_url: String,
    #[schemars(extend("enum" = ["client_credentials", "password"]))]
    /// `client_credentials` (the default) or `password`.
    pub grant: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client secret: "${VAR}".
    pub client_secret: Option<String>,
    /// Scopes asked for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Password grant: the resource owner's name.
    pub username: Option<String>,
    /// Password grant: the resource owner's password, "${VAR}".
    pub password: Option<String>,
}

/// `paginate = "link"`, or a table with the paginator's options.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PaginateConfig {
    Name(
        #[schemars(extend("enum" = ["auto", "link", "none", "next_url", "cursor", "offset", "page_number"]))]
         String,
    ),
    Table(Box<PaginateTable>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaginateTable {
    /// The paginator.
    #[schemars(extend("enum" = ["auto", "link", "next_url", "cursor", "offset", "page_number", "none"]))]
    pub kind: String,
    /// next_url: JSON Pointer to the next page's URL; cursor: JSON Pointer to the next token.
    pub pointer: Option<String>,
    /// cursor: the query parameter that carries the token; page_number: the page parameter.
    pub param: Option<String>,
    /// offset: the offset query parameter (default "offset").
    pub offset_param: Option<String>,
    /// offset: the limit query parameter (default "limit").
    pub limit_param: Option<String>,
    /// offset: records per page.
    pub limit: Option<u64>,
    /// page_number: the first page's number (default 1); offset: the first offset (default 0).
    pub start: Option<u64>,
    /// JSON Pointer to the server's total of records (or pages), to stop without an empty page.
    pub total_pointer: Option<String>,
    /// A response header with the total of records, e.g. X-Total-Count.
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
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// The query parameter of a window's start.
    pub start_param: String,
    /// The query parameter of a window's end.
    pub end_param: String,
    /// The first window's start: a date or datetime (or an integer).
    #[schemars(with = "serde_json::Value")]
    pub from: toml::Value,
    /// The last window's end (default: now).
    #[schemars(with = "Option<serde_json::Value>")]
    pub to: Option<toml::Value>,
    /// The window's length: 90s, 15m, 36h, 7d.
    pub step: String,
    /// strftime format of the bounds sent (default RFC 3339).
    pub format: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The table (Datasette), the path's last segment (REST), or the files' name (files).
    pub name: String,
    /// Dataset name under parquet/ (default: the table name).
    pub output: Option<String>,
    /// Query parameters sent with every page (Datasette filters such as ShipCountry = "USA").
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub params: BTreeMap<String, toml::Value>,
    /// Rows per page (Datasette `_size`; REST: the paginator's limit).
    pub page_size: Option<u32>,
    /// Write Hive-style partitions <COL>=<value>/ by this column.
    pub partition_by: Option<String>,
    /// Page in this column's order (Datasette `_sort`).
    pub sort: Option<String>,
    /// Concurrent key-range cursors for this table (`--parallel` overrides).
    pub parallel: Option<u32>,
    /// Column type overrides: integer, float, text, blob, date, timestamp.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// `incremental` only: the watermark column, first-run lower bound, and lookback.
    pub watermark: Option<String>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub initial: Option<toml::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub lookback: Option<toml::Value>,
    /// REST: the path under the source URL (default `/<name>`); files: a glob naming the files.
    pub path: Option<String>,
    /// REST only: JSON Pointer to the array of records.
    pub records: Option<String>,
    /// REST only: how the API pages.
    pub paginate: Option<PaginateConfig>,
    /// REST only: stop after this many pages.
    pub max_pages: Option<u64>,
    /// REST only: read one time window after another.
    pub window: Option<WindowConfig>,
    #[schemars(extend("enum" = ["json", "ndjson", "csv", "jsonl", "parquet"]))]
    /// REST: `json` (default), `ndjson` or `csv` pages; files: `csv`, `ndjson` (`jsonl`) or
    /// `parquet` (default: each file's extension).
    pub format: Option<String>,
    #[schemars(extend("enum" = ["array", "values"]))]
    /// REST only: `values` reads records from an object keyed by id.
    pub records_from: Option<String>,
    /// Files only: read only files whose name matches this regex (others are reported).
    pub name_pattern: Option<String>,
    #[schemars(extend("enum" = ["evolve", "freeze"]))]
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
    #[schemars(with = "Option<serde_json::Value>")]
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
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChecksConfig {
    /// Columns that must be present and not null.
    #[serde(default)]
    pub required: Vec<String>,
    /// Columns whose values together must not repeat (across runs, for incremental).
    #[serde(default)]
    pub unique: Vec<String>,
    /// Column → the values it may take.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<serde_json::Value>>")]
    pub one_of: BTreeMap<String, Vec<toml::Value>>,
    /// Column → a regex its text must match.
    #[serde(default)]
    pub pattern: BTreeMap<String, String>,
    /// Column → { min, max } bounds, inclusive.
    #[serde(default)]
    pub range: BTreeMap<String, RangeConfig>,
    /// Column → the most characters its text may have.
    #[serde(default)]
    pub max_length: BTreeMap<String, u64>,
    /// `"5%"` or a count of rows.
    #[schemars(with = "Option<serde_json::Value>")]
    pub max_failed: Option<toml::Value>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    /// The least value allowed.
    #[schemars(with = "Option<serde_json::Value>")]
    pub min: Option<toml::Value>,
    /// The greatest value allowed.
    #[schemars(with = "Option<serde_json::Value>")]
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
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEachConfig {
    /// A SQLite database (with `query` and optional `params`).
    pub sqlite: Option<PathBuf>,
    /// The SQL query giving the input rows (with `sqlite`).
    pub query: Option<String>,
    /// With `sqlite`: the query's named parameters.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub params: BTreeMap<String, toml::Value>,
    /// A Parquet file or dataset directory (with optional `columns`).
    pub parquet: Option<PathBuf>,
    /// With `parquet`: the input columns to read (default: all).
    #[serde(default)]
    pub columns: Vec<String>,
    /// A table of the same source listed earlier (with `fields`: column → JSON Pointer).
    pub table: Option<String>,
    /// With `table`: input column → JSON Pointer into each of the parent's records.
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

/// The config file's JSON Schema (draft-07, which editors' TOML servers and validators all
/// read), generated from [`ConfigFile`] and the types under it: the same types the file is
/// parsed into, so the schema cannot drift from what `harvest` accepts. Objects are closed
/// (`additionalProperties: false`), as `deny_unknown_fields` is.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<ConfigFile>();
    schema.insert(
        "title".into(),
        "harvest config (harvest -c FILE, incremental, sql-extract, plan)".into(),
    );
    schema.insert(
        "description".into(),
        "A harvest TOML config: sources with their tables, [[extract]] queries, output and HTTP \
         settings. Generated by `harvest config schema`; see harvest.example.toml and \
         examples/rest.toml."
            .into(),
    );
    let mut value = schema.to_value();
    drop_null(&mut value);
    value
}

/// TOML has no null (an optional key is left out), so the `null` schemars allows for each
/// `Option` is taken out: `"type": ["string", "null"]` becomes `"type": "string"`, and
/// `anyOf: [{$ref}, {type: null}]` the `$ref`. An editor then flags `key = ""`-style mistakes
/// by type, not a null TOML cannot write.
fn drop_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
                if any.len() == 1
                    && let Some(Value::Object(only)) = any.pop()
                {
                    map.remove("anyOf");
                    for (k, val) in only {
                        map.entry(k).or_insert(val);
                    }
                }
            }
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}
