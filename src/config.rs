//! The TOML config file and the resolution of `flags + config + env` into settings.
//!
//! Guarantees:
//! - Resolution is a pure validation step (it reads only the config file and env vars) and
//!   every problem is a [`UsageError`] (exit 2) that names the file, key or flag and the fix.
//! - Unknown keys are errors (`deny_unknown_fields`), so a typo never silently does nothing.
//! - Secrets in the file must be `${ENV_VAR}` references; literals are refused. A referenced
//!   variable that is unset is an error naming it.
//! - Flags override the file (rules in [`resolve_harvest`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::cli::HarvestArgs;
use crate::error::UsageError;
use crate::http::{Auth, HttpSettings};
use crate::parquet_sink::SinkSettings;
use crate::schema::ColType;

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
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub parquet: ParquetConfig,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(default, rename = "extract")]
    pub extracts: Vec<ExtractConfig>,
}

/// `out` as `--out` reads it ([`crate::remote::local_or_url`]).
fn out_location<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    crate::remote::local_or_url(&s)
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
    /// `datasette` (the default) or `rest`.
    pub kind: Option<String>,
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
    Table(PaginateTable),
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
    /// REST only: the fields that identify a record.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// REST only: strftime format of an instant in a `{watermark}` parameter.
    pub watermark_format: Option<String>,
    /// REST only: one request per input row (a row-driven table).
    pub for_each: Option<ForEachConfig>,
    /// Row-driven: GET (the default), POST, PUT, PATCH or DELETE.
    pub method: Option<String>,
    /// Row-driven: the JSON body template (`{Column}` placeholders keep their type).
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
}

impl TableConfig {
    /// The keys only a row-driven table may set, and whether this table sets each.
    pub fn row_driven_keys(&self) -> [(&'static str, bool); 6] {
        [
            ("method", self.method.is_some()),
            ("body", self.body.is_some()),
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

/// Everything `harvest harvest` needs, validated.
#[derive(Debug)]
pub struct HarvestSettings {
    /// DIR: snapshots (`raw/`) and datasets (`parquet/`), the paths the manifest names.
    pub out: PathBuf,
    /// Where this process's manifest, lock and state live: DIR, or `DIR/writers/<NAME>` for
    /// one of several writers sharing DIR (`--writer`).
    pub home: PathBuf,
    pub writer: Option<String>,
    /// `--out s3://…`: the store `out` (the stage) publishes to.
    pub remote: Option<std::sync::Arc<crate::remote::Remote>>,
    pub http: HttpSettings,
    pub sink: SinkSettings,
    pub sources: Vec<SourceSettings>,
    pub wait_lock: bool,
    pub restart: bool,
    pub table_format: crate::delta::TableFormat,
    /// `harvest` or `incremental`.
    pub command: &'static str,
    /// sha256 of the resolved settings with secrets removed.
    pub config_digest: String,
    /// The resolved settings as recorded in `run_start` (no secrets).
    pub described: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Datasette,
    Rest,
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
    pub rest: Option<crate::rest::RestTable>,
    /// A row-driven table's input and request templates.
    pub rows: Option<crate::row_driven::RowDriven>,
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
    pub lookback_parsed: Option<crate::watermark::Lookback>,
    pub max_window_rows: usize,
}

pub const DEFAULT_PAGE_SIZE: u32 = 1000;

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

/// `${VAR}` → the variable's value. Anything else is a literal secret and refused.
fn secret_from_ref(key: &str, raw: &str) -> Result<String, UsageError> {
    let name = raw
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let Some(name) = name else {
        return Err(UsageError::with_hint(
            format!(
                "config key `{key}` holds a literal secret; secrets must not be written in config files"
            ),
            format!("put it in an environment variable and write `{key} = \"${{MY_TOKEN}}\"`"),
        ));
    };
    secret_from_env(name, &format!("config key `{key}`"))
}

fn secret_from_env(var: &str, wanted_by: &str) -> Result<String, UsageError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => {
            crate::redact::register(&v);
            Ok(v)
        }
        _ => Err(UsageError::with_hint(
            format!("environment variable {var} (needed by {wanted_by}) is not set or empty"),
            format!("export {var}=… before running, or remove the auth setting"),
        )),
    }
}

fn auth_from_config(a: &AuthConfig) -> Result<Option<Auth>, UsageError> {
    if let Some(o) = &a.oauth2 {
        let others = [
            &a.bearer,
            &a.user,
            &a.password,
            &a.header,
            &a.query,
            &a.value,
        ];
        if others.iter().any(|v| v.is_some()) {
            return Err(UsageError::new(
                "[source.auth] with `oauth2` takes no other key: the token endpoint supplies the bearer token",
            ));
        }
        return oauth2_from_config(o).map(Some);
    }
    match (&a.bearer, &a.user, &a.password, &a.header, &a.value) {
        (Some(b), None, None, None, None) => {
            Ok(Some(Auth::Bearer(secret_from_ref("auth.bearer", b)?)))
        }
        (None, Some(u), Some(p), None, None) => Ok(Some(Auth::Basic {
            user: u.clone(),
            password: secret_from_ref("auth.password", p)?,
        })),
        (None, None, None, Some(h), Some(v)) if a.query.is_none() => Ok(Some(Auth::Header {
            name: h.clone(),
            value: secret_from_ref("auth.value", v)?,
        })),
        (None, None, None, None, Some(v)) if a.query.is_some() => Ok(Some(Auth::Query {
            name: a.query.clone().unwrap_or_default(),
            value: secret_from_ref("auth.value", v)?,
        })),
        _ => Err(UsageError::with_hint(
            "the [source.auth] table must be exactly one of: bearer; user + password; header + value; query + value; oauth2",
            "e.g. auth = { bearer = \"${DATASETTE_TOKEN}\" }",
        )),
    }
}

fn oauth2_from_config(o: &OAuth2Config) -> Result<Auth, UsageError> {
    use crate::oauth2::{Grant, OAuth2};
    let token_url = parse_url(&o.token_url, "auth.oauth2.token_url")?;
    let client_secret = o
        .client_secret
        .as_deref()
        .map(|s| secret_from_ref("auth.oauth2.client_secret", s))
        .transpose()?;
    let grant = match o.grant.as_deref().unwrap_or("client_credentials") {
        "client_credentials" => {
            if o.username.is_some() || o.password.is_some() {
                return Err(UsageError::new(
                    "auth.oauth2: `username`/`password` are for grant = \"password\"",
                ));
            }
            if client_secret.is_none() {
                return Err(UsageError::with_hint(
                    "auth.oauth2: the client_credentials grant needs `client_secret`",
                    "client_secret = \"${CLIENT_SECRET}\"",
                ));
            }
            Grant::ClientCredentials
        }
        "password" => match (&o.username, &o.password) {
            (Some(u), Some(p)) => Grant::Password {
                username: u.clone(),
                password: secret_from_ref("auth.oauth2.password", p)?,
            },
            _ => {
                return Err(UsageError::with_hint(
                    "auth.oauth2: the password grant needs `username` and `password`",
                    "username = \"harvest\", password = \"${API_PASSWORD}\"",
                ));
            }
        },
        other => {
            return Err(UsageError::with_hint(
                format!("auth.oauth2: unknown grant {other:?}"),
                "use grant = \"client_credentials\" (the default) or \"password\"",
            ));
        }
    };
    Ok(Auth::OAuth2(std::sync::Arc::new(OAuth2::new(
        token_url,
        grant,
        o.client_id.clone(),
        client_secret,
        o.scopes.clone(),
    ))))
}

fn auth_from_flags(args: &HarvestArgs) -> Result<Option<Auth>, UsageError> {
    if let Some(var) = &args.token_env {
        return Ok(Some(Auth::Bearer(secret_from_env(var, "--token-env")?)));
    }
    if let (Some(user), Some(var)) = (&args.basic_user, &args.password_env) {
        return Ok(Some(Auth::Basic {
            user: user.clone(),
            password: secret_from_env(var, "--password-env")?,
        }));
    }
    if let (Some(name), Some(var)) = (&args.auth_header, &args.auth_header_env) {
        return Ok(Some(Auth::Header {
            name: name.clone(),
            value: secret_from_env(var, "--auth-header-env")?,
        }));
    }
    Ok(None)
}

fn parse_url(raw: &str, what: &str) -> Result<Url, UsageError> {
    let url = Url::parse(raw).map_err(|e| {
        UsageError::with_hint(
            format!("{what} {raw:?} is not a valid URL: {e}"),
            "write it like http://127.0.0.1:8001",
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UsageError::new(format!(
            "{what} {raw:?} must be http:// or https://"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UsageError::with_hint(
            format!("{what} must not carry credentials"),
            "use --basic-user/--password-env or [source.auth] instead",
        ));
    }
    Ok(url)
}

/// `5/s`, `120/min`, `1000/h` or a bare number (per second) → requests per second.
pub fn parse_rate(raw: &str) -> Result<f64, UsageError> {
    let bad = || {
        UsageError::with_hint(
            format!("rate limit {raw:?} is not understood"),
            "write it as N/s, N/min or N/h, e.g. 5/s",
        )
    };
    let (n, unit) = raw.split_once('/').unwrap_or((raw, "s"));
    let n: f64 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    if !(n > 0.0 && n.is_finite()) {
        return Err(bad());
    }
    Ok(n / per)
}

pub(crate) fn split_kv(raw: &str, flag: &str) -> Result<(String, String), UsageError> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(UsageError::with_hint(
            format!("{flag} {raw:?} is not KEY=VALUE"),
            format!("e.g. {flag} ShipCountry=USA"),
        )),
    }
}

/// Repeated `--type COL=TYPE` flags.
pub(crate) fn parse_type_flags(raw: &[String]) -> Result<BTreeMap<String, ColType>, UsageError> {
    parse_types(
        raw.iter()
            .map(|t| split_kv(t, "--type"))
            .collect::<Result<Vec<_>, _>>()?,
    )
}

pub(crate) fn parse_types(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, ColType>, UsageError> {
    let mut out = BTreeMap::new();
    for (col, ty) in pairs {
        let t = ColType::parse_override(&ty).ok_or_else(|| {
            UsageError::with_hint(
                format!("unknown type {ty:?} for column {col:?}"),
                format!("use one of: {}", ColType::OVERRIDE_NAMES),
            )
        })?;
        out.insert(col, t);
    }
    Ok(out)
}

fn secs(v: f64, what: &str) -> Result<Duration, UsageError> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            UsageError::new(format!(
                "{what} must be a positive number of seconds, not {v}"
            ))
        })
}

fn toml_scalar(key: &str, v: &toml::Value) -> Result<String, UsageError> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
        _ => {
            return Err(UsageError::new(format!(
                "param {key:?} must be a string, number or boolean"
            )));
        }
    })
}

/// A REST watermark may be given as a JSON Pointer (`/meta/updated`): the flattened column.
fn watermark_column(kind: SourceKind, raw: &str) -> String {
    match (kind, raw.strip_prefix('/')) {
        (SourceKind::Rest, Some(p)) => p
            .split('/')
            .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
            .collect::<Vec<_>>()
            .join(crate::rest::NEST),
        _ => raw.to_string(),
    }
}

fn source_kind(s: &SourceConfig) -> Result<SourceKind, UsageError> {
    match s.kind.as_deref() {
        None | Some("datasette") => Ok(SourceKind::Datasette),
        Some("rest") => {
            if s.database.is_some() {
                return Err(UsageError::with_hint(
                    "`database` is for Datasette sources, not kind = \"rest\"",
                    "put the whole path of each table in its `path`",
                ));
            }
            Ok(SourceKind::Rest)
        }
        Some(other) => Err(UsageError::with_hint(
            format!("unknown source kind {other:?}"),
            "use kind = \"datasette\" (the default) or kind = \"rest\"",
        )),
    }
}

/// A table's REST settings, checked: REST keys only on REST sources, Datasette-only keys
/// refused on them, and a paginator with the options it needs.
fn rest_table(
    kind: SourceKind,
    t: &TableConfig,
) -> Result<Option<crate::rest::RestTable>, UsageError> {
    let name = &t.name;
    if kind == SourceKind::Datasette {
        for (key, set) in [
            ("path", t.path.is_some()),
            ("records", t.records.is_some()),
            ("paginate", t.paginate.is_some()),
            ("max_pages", t.max_pages.is_some()),
            ("primary_key", !t.primary_key.is_empty()),
            ("watermark_format", t.watermark_format.is_some()),
            ("for_each", t.for_each.is_some()),
        ]
        .into_iter()
        .chain(t.row_driven_keys())
        {
            if set {
                return Err(UsageError::with_hint(
                    format!("table {name:?}: `{key}` is for REST tables"),
                    "set kind = \"rest\" on the source, or remove the key",
                ));
            }
        }
        return Ok(None);
    }
    for (key, set) in [
        ("page_size", t.page_size.is_some()),
        ("sort", t.sort.is_some()),
        ("parallel", t.parallel.is_some_and(|p| p > 1)),
    ] {
        if set {
            return Err(UsageError::with_hint(
                format!("table {name:?}: `{key}` is not available for REST tables"),
                match key {
                    "page_size" => {
                        "set the API's own page-size parameter in `params` (e.g. params = { _limit = 100 }) or in `paginate`"
                    }
                    "parallel" => {
                        "a REST table's pages are reachable only by following its paginator, so it is read with one cursor"
                    }
                    _ => "pass the API's own sort parameter in `params`",
                },
            ));
        }
    }
    if let Some(p) = &t.records
        && !(p.is_empty() || p.starts_with('/'))
    {
        return Err(UsageError::with_hint(
            format!("table {name:?}: records = {p:?} is not a JSON Pointer"),
            "a JSON Pointer starts with / (e.g. \"/data\" or \"/result/items\"); \"\" is the body itself",
        ));
    }
    let path = t.path.clone().unwrap_or_else(|| format!("/{name}"));
    if path.contains('?') || path.contains("://") {
        return Err(UsageError::with_hint(
            format!("table {name:?}: path {path:?} must be a path under the source URL"),
            "put query parameters in `params`, and the host in the source's `url`",
        ));
    }
    let row_driven = t.for_each.is_some();
    Ok(Some(crate::rest::RestTable {
        path,
        // A row-driven response is usually one object or one array: the body itself.
        records: match (&t.records, row_driven) {
            (None, true) => Some(String::new()),
            (r, _) => r.clone(),
        },
        paginate: match (&t.paginate, row_driven) {
            (None, true) => crate::rest::Paginate::None,
            (p, _) => paginate(name, p.as_ref())?,
        },
        max_pages: match t.max_pages {
            Some(0) => {
                return Err(UsageError::new(format!(
                    "table {name:?}: max_pages must be at least 1"
                )));
            }
            other => other,
        },
        primary_key: t.primary_key.clone(),
    }))
}

fn paginate(table: &str, c: Option<&PaginateConfig>) -> Result<crate::rest::Paginate, UsageError> {
    use crate::rest::{Paginate, Total};
    let kinds = "auto, link, next_url, cursor, offset, page_number, none";
    let t = match c {
        None => return Ok(Paginate::Auto),
        Some(PaginateConfig::Name(n)) => {
            return match n.as_str() {
                "auto" => Ok(Paginate::Auto),
                "link" => Ok(Paginate::Link),
                "none" => Ok(Paginate::None),
                "next_url" | "cursor" | "offset" | "page_number" => Err(UsageError::with_hint(
                    format!("table {table:?}: paginate = {n:?} needs options"),
                    match n.as_str() {
                        "next_url" => {
                            "e.g. paginate = { kind = \"next_url\", pointer = \"/links/next\" }"
                        }
                        "cursor" => {
                            "e.g. paginate = { kind = \"cursor\", pointer = \"/meta/next_cursor\", param = \"cursor\" }"
                        }
                        "offset" => {
                            "e.g. paginate = { kind = \"offset\", offset_param = \"offset\", limit_param = \"limit\", limit = 100 }"
                        }
                        _ => {
                            "e.g. paginate = { kind = \"page_number\", param = \"page\", start = 1 }"
                        }
                    },
                )),
                other => Err(UsageError::with_hint(
                    format!("table {table:?}: unknown paginator {other:?}"),
                    format!("use one of: {kinds}"),
                )),
            };
        }
        Some(PaginateConfig::Table(t)) => t,
    };
    let need = |v: &Option<String>, key: &str| {
        v.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            UsageError::new(format!(
                "table {table:?}: paginate kind {:?} needs `{key}`",
                t.kind
            ))
        })
    };
    let pointer = |v: String| {
        if v.starts_with('/') {
            Ok(v)
        } else {
            Err(UsageError::with_hint(
                format!("table {table:?}: {v:?} in `paginate` is not a JSON Pointer"),
                "a JSON Pointer starts with /, e.g. \"/meta/next\"",
            ))
        }
    };
    let total = |p: &Option<String>, h: &Option<String>| -> Result<Option<Total>, UsageError> {
        match (p, h) {
            (Some(p), None) => Ok(Some(Total::Pointer(pointer(p.clone())?))),
            (None, Some(h)) => Ok(Some(Total::Header(h.clone()))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(UsageError::new(format!(
                "table {table:?}: give total_pointer or total_header, not both"
            ))),
        }
    };
    let allowed: &[&str] = match t.kind.as_str() {
        "auto" | "link" | "none" => &[],
        "next_url" => &["pointer"],
        "cursor" => &["pointer", "param"],
        "offset" => &[
            "offset_param",
            "limit_param",
            "limit",
            "start",
            "total_pointer",
            "total_header",
        ],
        "page_number" => &["param", "start", "total_pointer", "total_header"],
        other => {
            return Err(UsageError::with_hint(
                format!("table {table:?}: unknown paginator {other:?}"),
                format!("use one of: {kinds}"),
            ));
        }
    };
    for (key, set) in [
        ("pointer", t.pointer.is_some()),
        ("param", t.param.is_some()),
        ("offset_param", t.offset_param.is_some()),
        ("limit_param", t.limit_param.is_some()),
        ("limit", t.limit.is_some()),
        ("start", t.start.is_some()),
        ("total_pointer", t.total_pointer.is_some()),
        ("total_header", t.total_header.is_some()),
    ] {
        if set && !allowed.contains(&key) {
            return Err(UsageError::new(format!(
                "table {table:?}: paginate kind {:?} has no option `{key}`",
                t.kind
            )));
        }
    }
    Ok(match t.kind.as_str() {
        "auto" => Paginate::Auto,
        "link" => Paginate::Link,
        "none" => Paginate::None,
        "next_url" => Paginate::NextUrl {
            pointer: pointer(need(&t.pointer, "pointer")?)?,
        },
        "cursor" => Paginate::Cursor {
            pointer: pointer(need(&t.pointer, "pointer")?)?,
            param: need(&t.param, "param")?,
        },
        "offset" => Paginate::Offset {
            offset_param: t.offset_param.clone().unwrap_or_else(|| "offset".into()),
            limit_param: t.limit_param.clone().unwrap_or_else(|| "limit".into()),
            limit: match t.limit {
                Some(0) | None => {
                    return Err(UsageError::with_hint(
                        format!("table {table:?}: the offset paginator needs `limit` (at least 1)"),
                        "set it to the page size the API allows, e.g. limit = 100",
                    ));
                }
                Some(n) => n,
            },
            start: t.start.unwrap_or(0),
            total: total(&t.total_pointer, &t.total_header)?,
        },
        _ => Paginate::PageNumber {
            param: t.param.clone().unwrap_or_else(|| "page".into()),
            start: t.start.unwrap_or(1),
            total_pages: total(&t.total_pointer, &t.total_header)?,
        },
    })
}

/// The most concurrent cursors one table may use.
pub const MAX_PARALLEL: u32 = 16;

/// Flags + config + env → settings. Rules: `--table` on the command line defines the job's
/// tables (with `--param/--partition-by/--sort/--type/--page-size`), taking URL and database
/// from `--url/--db` or else from the config's only source. Without `--table`, the config's
/// tables run and `--page-size`, `--url`, `--db` override them. Every other flag overrides the
/// matching config key.
pub fn resolve_harvest(args: &HarvestArgs) -> Result<HarvestSettings, UsageError> {
    resolve(args, false)
}

/// `--table` with a config of REST sources selects tables of the config by name (a REST table
/// needs its path and paginator, which flags do not give); afterwards there are no `--table`
/// flags left to apply. With Datasette sources `--table` keeps its meaning (the tables to page).
fn select_rest_tables(file: &mut ConfigFile, wanted: &[String]) -> Result<bool, UsageError> {
    let rest = |s: &SourceConfig| s.kind.as_deref() == Some("rest");
    if wanted.is_empty() || file.sources.is_empty() || !file.sources.iter().all(rest) {
        return Ok(false);
    }
    let known: Vec<&str> = file
        .sources
        .iter()
        .flat_map(|s| s.tables.iter().map(|t| t.name.as_str()))
        .collect();
    if let Some(missing) = wanted.iter().find(|w| !known.contains(&w.as_str())) {
        return Err(UsageError::with_hint(
            format!("--table {missing:?} is not a table of the config's REST sources"),
            format!("its tables are: {}", known.join(", ")),
        ));
    }
    // A row-driven table reads its parent's records in the same run: the parent must be picked.
    for t in file.sources.iter().flat_map(|s| &s.tables) {
        let parent = t.for_each.as_ref().and_then(|f| f.table.as_ref());
        if let Some(p) = parent.filter(|p| wanted.contains(&t.name) && !wanted.contains(p)) {
            return Err(UsageError::with_hint(
                format!(
                    "--table {:?} is row-driven: it reads the records of table {p:?}, which is not picked",
                    t.name
                ),
                format!(
                    "add --table {p:?} (it is harvested first and feeds {:?})",
                    t.name
                ),
            ));
        }
    }
    for s in &mut file.sources {
        s.tables.retain(|t| wanted.contains(&t.name));
    }
    file.sources.retain(|s| !s.tables.is_empty());
    Ok(true)
}

/// The settings of `harvest` (or, with `incremental`, the common part of `incremental`'s:
/// every table paged with one cursor, so `--shard` deals it out whole).
fn resolve(args: &HarvestArgs, incremental: bool) -> Result<HarvestSettings, UsageError> {
    let mut file = match &args.config {
        Some(p) => load_config(p)?,
        None => ConfigFile::default(),
    };
    let rest_selected = select_rest_tables(&mut file, &args.tables)?;
    if rest_selected {
        let table_flags = [
            ("--param", !args.params.is_empty()),
            ("--page-size", args.page_size.is_some()),
            ("--partition-by", args.partition_by.is_some()),
            ("--sort", args.sort.is_some()),
            ("--type", !args.types.is_empty()),
        ];
        if let Some((flag, _)) = table_flags.iter().find(|(_, given)| *given) {
            return Err(UsageError::with_hint(
                format!(
                    "{flag} describes command-line Datasette tables; with REST sources --table only picks tables of the config"
                ),
                format!("set it on the [[source.table]] in the config instead of passing {flag}"),
            ));
        }
    }
    let out = args.out.clone().or(file.out.clone()).ok_or_else(|| {
        UsageError::with_hint(
            "no output directory",
            "pass --out DIR or set `out` in the config",
        )
    })?;

    let mut http = HttpSettings::default();
    let h = &file.http;
    if let Some(v) = args.connect_timeout.or(h.connect_timeout_secs) {
        http.connect_timeout = secs(v, "connect timeout")?;
    }
    if let Some(v) = args.request_timeout.or(h.request_timeout_secs) {
        http.request_timeout = secs(v, "request timeout")?;
    }
    if let Some(v) = args.stall_timeout.or(h.stall_timeout_secs) {
        http.stall_timeout = secs(v, "stall timeout")?;
    }
    if let Some(v) = args.retry_budget.or(h.retry_budget_secs) {
        http.retry_budget = secs(v, "retry budget")?;
    }
    if let Some(v) = args.max_attempts.or(h.max_attempts) {
        if v == 0 {
            return Err(UsageError::new("max attempts must be at least 1"));
        }
        http.max_attempts = v;
    }
    if let Some(r) = args.rate_limit.as_ref().or(h.rate_limit.as_ref()) {
        http.rate_limit = Some(parse_rate(r)?);
    }
    if let Some(v) = args.max_body_bytes.or(h.max_body_bytes) {
        http.max_body_bytes = v;
    }
    // Compression changes only the bytes on the wire, never a snapshot, so it is left out of
    // the described settings (and the config digest): a resumed run may toggle it.
    http.compression = !args.no_compression && h.compression.unwrap_or(true);

    let mut sink = SinkSettings::default();
    if let Some(v) = args.part_rows.or(file.parquet.part_rows) {
        sink.part_rows = v.max(1);
    }
    if let Some(v) = args.row_group_rows.or(file.parquet.row_group_rows) {
        sink.row_group_rows = v.max(1);
    }
    if let Some(v) = args.zstd_level.or(file.parquet.zstd_level) {
        if !(1..=22).contains(&v) {
            return Err(UsageError::new(format!(
                "zstd level must be 1 to 22, not {v}"
            )));
        }
        sink.zstd_level = v;
    }

    let flag_auth = auth_from_flags(args)?;
    let mut sources = Vec::new();
    if !args.tables.is_empty() && !rest_selected {
        let only = match file.sources.as_slice() {
            [one] => Some(one),
            _ => None,
        };
        let url = args
            .url
            .clone()
            .or(only.map(|s| s.url.clone()))
            .ok_or_else(|| {
                UsageError::with_hint(
                    "no Datasette URL",
                    "pass --url http://HOST:PORT (or a config with one source)",
                )
            })?;
        let database = args
            .db
            .clone()
            .or(only.and_then(|s| s.database.clone()))
            .ok_or_else(|| {
                UsageError::with_hint(
                    "no database name",
                    "pass --db NAME (the path segment after the host)",
                )
            })?;
        let auth = match flag_auth {
            Some(a) => Some(a),
            None => match only.and_then(|s| s.auth.as_ref()) {
                Some(a) => auth_from_config(a)?,
                None => None,
            },
        };
        let params = args
            .params
            .iter()
            .map(|p| split_kv(p, "--param"))
            .collect::<Result<Vec<_>, _>>()?;
        let types = parse_type_flags(&args.types)?;
        let tables = args
            .tables
            .iter()
            .map(|t| TableSettings {
                name: t.clone(),
                output: t.clone(),
                params: params.clone(),
                page_size: args.page_size.unwrap_or(DEFAULT_PAGE_SIZE),
                page_size_given: args.page_size.is_some(),
                partition_by: args.partition_by.clone(),
                sort: args.sort.clone(),
                types: types.clone(),
                watermark: None,
                parallel: args.parallel.unwrap_or(1),
                rest: None,
                rows: None,
                shard: None,
            })
            .collect();
        sources.push(SourceSettings {
            name: args.source_name.clone().unwrap_or_else(|| database.clone()),
            kind: SourceKind::Datasette,
            base: parse_url(&url, "--url")?,
            database,
            headers: Vec::new(),
            secret_headers: false,
            auth,
            tables,
        });
    } else {
        if file.sources.is_empty() {
            return Err(UsageError::with_hint(
                "nothing to harvest: no --table and no [[source]] in a config",
                "pass --url, --db and --table, or --config harvest.toml",
            ));
        }
        if file.sources.len() > 1 && (args.url.is_some() || args.db.is_some()) {
            return Err(UsageError::new(
                "--url/--db can only override a config with exactly one [[source]]",
            ));
        }
        for s in &file.sources {
            let kind = source_kind(s)?;
            if kind == SourceKind::Rest && (args.db.is_some() || args.page_size.is_some()) {
                return Err(UsageError::with_hint(
                    "--db and --page-size are for Datasette sources, and the config has a kind = \"rest\" source",
                    "for a REST table, set its page size in `params` or `paginate`",
                ));
            }
            let database = match kind {
                SourceKind::Rest => String::new(),
                SourceKind::Datasette => args.db.clone().or(s.database.clone()).ok_or_else(|| {
                    UsageError::with_hint(
                        format!(
                            "source {:?} has no `database`",
                            s.name.as_deref().unwrap_or(&s.url)
                        ),
                        "set `database = \"NAME\"` (the path segment after the host), or `kind = \"rest\"` for a JSON API that is not Datasette",
                    )
                })?,
            };
            let headers = s
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = if v.starts_with("${") {
                        secret_from_ref(&format!("headers.{k}"), v)?
                    } else {
                        v.clone()
                    };
                    Ok((k.clone(), v))
                })
                .collect::<Result<Vec<_>, UsageError>>()?;
            let auth = match (&flag_auth, &s.auth) {
                (Some(a), _) => Some(a.clone()),
                (None, Some(a)) => auth_from_config(a)?,
                (None, None) => None,
            };
            let mut tables = Vec::new();
            for t in &s.tables {
                let params = t
                    .params
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), toml_scalar(k, v)?)))
                    .collect::<Result<Vec<_>, UsageError>>()?;
                let page_size = args.page_size.or(t.page_size).or(s.page_size);
                tables.push(TableSettings {
                    name: t.name.clone(),
                    output: t.output.clone().unwrap_or_else(|| t.name.clone()),
                    params,
                    page_size: page_size.unwrap_or(DEFAULT_PAGE_SIZE),
                    page_size_given: page_size.is_some(),
                    partition_by: t.partition_by.clone(),
                    sort: t.sort.clone(),
                    parallel: args.parallel.or(t.parallel).unwrap_or(1),
                    types: parse_types(t.types.clone())?,
                    watermark: match &t.watermark {
                        None => None,
                        Some(col) => Some(WatermarkSettings {
                            column: watermark_column(kind, col),
                            format: t.watermark_format.clone(),
                            initial: t
                                .initial
                                .as_ref()
                                .map(|v| toml_scalar("initial", v))
                                .transpose()?,
                            lookback: t
                                .lookback
                                .as_ref()
                                .map(|v| toml_scalar("lookback", v))
                                .transpose()?
                                .unwrap_or_default(),
                            lookback_parsed: None,
                            max_window_rows: crate::watermark::DEFAULT_MAX_WINDOW_IDS,
                        }),
                    },
                    rest: rest_table(kind, t)?,
                    rows: crate::row_driven::RowDriven::from_config(
                        kind == SourceKind::Rest,
                        t,
                        &s.tables,
                    )?,
                    shard: None,
                });
            }
            if tables.is_empty() {
                return Err(UsageError::with_hint(
                    format!(
                        "source {:?} lists no tables",
                        s.name.as_deref().unwrap_or(&s.url)
                    ),
                    "add [[source.table]] entries with a name",
                ));
            }
            sources.push(SourceSettings {
                name: s.name.clone().unwrap_or_else(|| match kind {
                    SourceKind::Datasette => database.clone(),
                    SourceKind::Rest => s.url.clone(),
                }),
                kind,
                base: parse_url(args.url.as_deref().unwrap_or(&s.url), "source url")?,
                database,
                secret_headers: s.headers.values().any(|v| v.starts_with("${")),
                headers,
                auth,
                tables,
            });
        }
    }

    // Validate what the sources ask for.
    let mut outputs = std::collections::BTreeSet::new();
    for s in &sources {
        for t in &s.tables {
            if t.parallel == 0 || t.parallel > MAX_PARALLEL {
                return Err(UsageError::with_hint(
                    format!(
                        "parallel for table {:?} is {}, outside 1..={MAX_PARALLEL}",
                        t.name, t.parallel
                    ),
                    "a local Datasette runs 3 SQL threads; 2-4 cursors are usually enough",
                ));
            }
            if t.rest.is_some() && t.parallel > 1 {
                return Err(UsageError::with_hint(
                    format!("--parallel cannot split the REST table {:?}", t.name),
                    "a REST table's pages are reachable only by following its paginator, so it is read with one cursor; drop --parallel",
                ));
            }
            if t.page_size == 0 {
                return Err(UsageError::new(format!(
                    "page size for table {:?} must be at least 1",
                    t.name
                )));
            }
            if !outputs.insert(crate::fsutil::sanitize_component(&t.output)) {
                return Err(UsageError::with_hint(
                    format!(
                        "two tables would write to the same dataset parquet/{}/",
                        t.output
                    ),
                    "give one of them another `output = \"…\"` name in the config",
                ));
            }
        }
    }

    let table_format = match args.table_format.as_ref().or(file.table_format.as_ref()) {
        Some(f) => crate::delta::TableFormat::parse(f)?,
        None => crate::delta::TableFormat::default(),
    };
    sink.ascii_paths = table_format == crate::delta::TableFormat::Delta;
    if incremental {
        // A config's `parallel` is for `harvest`; incremental pages in watermark order.
        for t in sources.iter_mut().flat_map(|s| s.tables.iter_mut()) {
            t.parallel = 1;
        }
    }
    let shard = match &args.shard {
        Some(spec) => Some(take_shard(&mut sources, spec)?),
        None => None,
    };
    // Object storage: the run works in a local stage and publishes to the store.
    let location = out.clone();
    let remote = match crate::remote::is_remote(&location) {
        false => None,
        true => {
            let loc = location.to_string_lossy().to_string();
            let (url, _, _) = crate::remote::parse_url(&loc)?;
            let stage = args
                .stage
                .clone()
                .or(file.stage.clone())
                .unwrap_or_else(|| crate::remote::default_stage(&url, args.writer.as_deref()));
            let opts = crate::remote::S3Options {
                endpoint: args.s3.s3_endpoint.clone().or(file.s3.endpoint.clone()),
                region: args.s3.s3_region.clone().or(file.s3.region.clone()),
                retry: Some((http.max_attempts, http.retry_budget)),
            };
            Some(std::sync::Arc::new(crate::remote::Remote::new(
                &loc,
                &opts,
                stage,
                args.writer.as_deref(),
            )?))
        }
    };
    let out = match &remote {
        Some(r) => r.stage().to_path_buf(),
        None => out,
    };
    let home = match &args.writer {
        None => out.clone(),
        Some(name) => {
            if !crate::writers::valid_name(name) {
                return Err(UsageError::with_hint(
                    format!("--writer {name:?} is not a usable writer name"),
                    "use letters, digits, '.', '_' and '-' (up to 64, not starting with '.'), e.g. --writer shard-2",
                ));
            }
            if table_format != crate::delta::TableFormat::Delta {
                return Err(UsageError::with_hint(
                    "--writer shares DIR's datasets between processes, which needs a table format with a commit protocol",
                    "add --table-format delta (or `table_format = \"delta\"` in the config)",
                ));
            }
            crate::writers::home(&out, name)
        }
    };
    let mut described = describe(&location, &http, &sink, &sources);
    if let Some(s) = shard {
        described["shard"] = s;
    }
    if let Some(w) = &args.writer {
        described["writer"] = serde_json::json!(w);
    }
    if table_format != crate::delta::TableFormat::Parquet {
        described["table_format"] = serde_json::json!(table_format);
    }
    let config_digest = crate::manifest::sha256_hex(described.to_string().as_bytes());
    Ok(HarvestSettings {
        out,
        home,
        writer: args.writer.clone(),
        remote,
        http,
        sink,
        sources,
        wait_lock: args.wait_lock,
        restart: args.restart,
        table_format,
        command: "harvest",
        config_digest,
        described,
    })
}

/// `--shard I/N`: keep this shard's tables (dealt out in config order, so the share is the
/// same on every machine given the same config; a row-driven child goes with its parent) and
/// drop the sources left without tables. A Datasette table harvested with `--parallel P`
/// (P >= N) is not dealt out but split: every shard keeps it and pages its share of the
/// slices ([`SliceShare`]). Returns what the run records about the shard.
fn take_shard(
    sources: &mut Vec<SourceSettings>,
    spec: &str,
) -> Result<serde_json::Value, UsageError> {
    let bad = || {
        UsageError::with_hint(
            format!("--shard {spec:?} is not I/N"),
            "write the shard as I/N with 1 <= I <= N, e.g. --shard 2/3 for the second of three",
        )
    };
    let (i, n) = spec.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    let share = SliceShare { index: i, count: n };
    const EVERY_SHARD: u32 = u32::MAX;
    let mut dealt = 0u32;
    let mut shard_of: BTreeMap<String, u32> = BTreeMap::new();
    let (mut mine, mut split) = (vec![], vec![]);
    for s in sources.iter_mut() {
        let tables = std::mem::take(&mut s.tables);
        for mut t in tables {
            if n > 1 && t.parallel > 1 && t.rest.is_none() && t.rows.is_none() {
                if t.parallel < n {
                    return Err(UsageError::with_hint(
                        format!(
                            "table {:?} is split into {} slices (--parallel), fewer than the {n} shards",
                            t.name, t.parallel
                        ),
                        format!(
                            "give it at least --parallel {n} (a multiple of {n} gives every shard as many slices)"
                        ),
                    ));
                }
                shard_of.insert(t.output.clone(), EVERY_SHARD);
                t.shard = Some(share);
                split.push(t.output.clone());
                s.tables.push(t);
                continue;
            }
            let parent = t.rows.as_ref().and_then(|r| match &r.input {
                crate::inputs::InputSpec::Parent { table, .. } => Some(table.clone()),
                _ => None,
            });
            let k = match parent.and_then(|p| shard_of.get(&p).copied()) {
                Some(k) => k,
                None => {
                    dealt += 1;
                    (dealt - 1) % n
                }
            };
            shard_of.insert(t.output.clone(), k);
            // A row-driven child of a split table sends the requests of its shard's rows.
            if k == EVERY_SHARD {
                split.push(t.output.clone());
                t.shard = Some(share);
                s.tables.push(t);
            } else if k == i - 1 {
                mine.push(t.output.clone());
                s.tables.push(t);
            }
        }
    }
    sources.retain(|s| !s.tables.is_empty());
    if mine.is_empty() && split.is_empty() {
        tracing::warn!(
            "shard {i}/{n} has no tables: the job has {} table(s) to deal out",
            shard_of.len()
        );
    }
    let mut rec = serde_json::json!({ "index": i, "count": n, "tables": mine });
    if !split.is_empty() {
        rec["split"] = serde_json::json!(split);
    }
    Ok(rec)
}

/// The resolved settings without secrets, for `run_start` and the config digest.
fn describe(
    out: &Path,
    http: &HttpSettings,
    sink: &SinkSettings,
    sources: &[SourceSettings],
) -> serde_json::Value {
    serde_json::json!({
        "out": out.display().to_string(),
        "http": {
            "connect_timeout_secs": http.connect_timeout.as_secs_f64(),
            "request_timeout_secs": http.request_timeout.as_secs_f64(),
            "stall_timeout_secs": http.stall_timeout.as_secs_f64(),
            "max_attempts": http.max_attempts,
            "retry_budget_secs": http.retry_budget.as_secs_f64(),
            "rate_limit_per_sec": http.rate_limit,
            "max_body_bytes": http.max_body_bytes,
        },
        "parquet": {
            "part_rows": sink.part_rows,
            "row_group_rows": sink.row_group_rows,
            "zstd_level": sink.zstd_level,
        },
        "sources": sources.iter().map(|s| serde_json::json!({
            "name": s.name,
            "url": crate::http::display_url(&s.base),
            "kind": match s.kind { SourceKind::Datasette => "datasette", SourceKind::Rest => "rest" },
            "database": s.database,
            "headers": s.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "auth": s.auth.as_ref().map(|a| format!("{a:?}")),
            "tables": s.tables,
        })).collect::<Vec<_>>(),
    })
}

/// `incremental`: the harvest settings plus a watermark for every table.
pub fn resolve_incremental(
    args: &crate::cli::IncrementalArgs,
) -> Result<HarvestSettings, UsageError> {
    if args.harvest.parallel.is_some_and(|n| n > 1) {
        return Err(UsageError::with_hint(
            "--parallel is for full harvests: `incremental` reads rows in watermark order with one cursor",
            "drop --parallel, or use `harvest --parallel N` for the first full load",
        ));
    }
    let mut settings = resolve(&args.harvest, true)?;
    settings.command = "incremental";
    for s in &mut settings.sources {
        for t in &mut s.tables {
            if t.rows.is_some() {
                return Err(UsageError::with_hint(
                    format!(
                        "table {:?} is row-driven (`for_each`), and `incremental` does not run row-driven tables",
                        t.name
                    ),
                    "run it with `harvest harvest` (filter its input query to the rows you need), from a config of its own",
                ));
            }
            // Command-line tables are Datasette's; with REST sources `--table` only selects.
            let from_flags = !args.harvest.tables.is_empty() && s.kind == SourceKind::Datasette;
            let mut wm = match (&t.watermark, from_flags) {
                (Some(w), false) => w.clone(),
                _ => WatermarkSettings {
                    format: None,
                    column: args.watermark_column.clone().ok_or_else(|| {
                        UsageError::with_hint(
                            format!("table {:?} has no watermark column", t.name),
                            "pass --watermark-column COL, or set `watermark = \"COL\"` on the table in the config",
                        )
                    })?,
                    initial: None,
                    lookback: String::new(),
                    lookback_parsed: None,
                    max_window_rows: crate::watermark::DEFAULT_MAX_WINDOW_IDS,
                },
            };
            if let Some(c) = &args.watermark_column {
                wm.column = c.clone();
            }
            if let Some(v) = &args.since {
                wm.initial = Some(v.clone());
            }
            if let Some(v) = &args.lookback {
                wm.lookback = v.clone();
            }
            if let Some(v) = args.max_window_rows {
                wm.max_window_rows = v.max(1);
            }
            wm.lookback_parsed = Some(crate::watermark::Lookback::parse(&wm.lookback).map_err(
                |m| {
                    UsageError::with_hint(
                        m,
                        "e.g. --lookback 2d for dates, --lookback 500 for integer ids",
                    )
                },
            )?);
            if t.sort.as_ref().is_some_and(|s| *s != wm.column) {
                return Err(UsageError::new(format!(
                    "table {:?}: incremental pages in watermark order, so `sort` must be unset or {:?}",
                    t.name, wm.column
                )));
            }
            // A REST API is read in its own order (the tracker needs none); Datasette pages in
            // watermark order.
            if t.rest.is_none() {
                t.sort = Some(wm.column.clone());
            }
            t.watermark = Some(wm);
        }
    }
    let mut described = describe(
        &settings.out,
        &settings.http,
        &settings.sink,
        &settings.sources,
    );
    for key in ["shard", "table_format", "writer"] {
        if let Some(v) = settings.described.get(key) {
            described[key] = v.clone();
        }
    }
    described["command"] = serde_json::json!("incremental");
    settings.described = described;
    settings.config_digest = crate::manifest::sha256_hex(settings.described.to_string().as_bytes());
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("5/s").unwrap(), 5.0);
        assert_eq!(parse_rate("120/min").unwrap(), 2.0);
        assert_eq!(parse_rate("2").unwrap(), 2.0);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0/s").is_err());
    }

    #[test]
    fn literal_secrets_are_refused() {
        let e = secret_from_ref("auth.bearer", "dstok_abc").unwrap_err();
        assert!(e.message.contains("literal secret"), "{e}");
        let e = secret_from_ref("auth.bearer", "${HARVEST_TEST_SURELY_UNSET_VAR}").unwrap_err();
        assert!(e.message.contains("HARVEST_TEST_SURELY_UNSET_VAR"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let r: Result<ConfigFile, _> =
            toml::from_str("[[source]]\nurl='http://x'\ndatabase='d'\npage_sise=5\n");
        assert!(r.unwrap_err().to_string().contains("page_sise"));
    }
}
