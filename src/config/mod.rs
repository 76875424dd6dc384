//! The TOML config file and the resolution of `flags + config + env` into settings.
//!
//! Guarantees:
//! - Resolution is a pure validation step (it reads only the config file and env vars) and
//!   every problem is a [`UsageError`] (exit 2) that names the file, key or flag and the fix.
//! - Unknown keys are errors (`deny_unknown_fields`), so a typo never silently does nothing.
//! - Secrets in the file must be `${ENV_VAR}` references; literals are refused. A referenced
//!   variable that is unset is an error naming it.
//! - Flags override the file (rules in [`resolve_harvest`]).
//!
//! The folder: the file's types and resolution (this file) and `for_each` tables ([`rows`]).
//!
//! Architecture invariant: config produces plain settings that the layers below define
//! ([`crate::run::settings`], [`crate::source::settings`], the sink's and the HTTP client's);
//! nothing below names a config file type.

mod auth;
mod checks;
pub use self::checks::{checks_file, extract_checks};
pub mod file;
mod files;
mod rest;
mod rows;
mod values;
mod window;

use self::auth::*;
pub use self::file::*;
use self::files::files_table;
use self::rest::*;
pub use self::values::*;

use std::collections::BTreeMap;
use std::path::Path;

use crate::cli::HarvestArgs;
use crate::error::UsageError;
use crate::http::{Auth, HttpSettings};
use crate::run::settings::HarvestSettings;
use crate::source::settings::{
    SliceShare, SourceKind, SourceSettings, TableSettings, WatermarkSettings,
};
use crate::store::parts::SinkSettings;

pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// The most concurrent cursors one table may use.
pub const MAX_PARALLEL: u32 = 16;
/// The most tables `--jobs` keeps in flight.
pub const MAX_JOBS: u32 = 64;

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
    let rest = |s: &SourceConfig| matches!(s.kind.as_deref(), Some("rest" | "files"));
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

    let http = http_settings(args, &file.http)?;
    let mut sink = sink_settings(args, &file.parquet)?;
    let flag_auth = auth_from_flags(args)?;
    let mut sources = if !args.tables.is_empty() && !rest_selected {
        vec![flag_source(args, &file, flag_auth)?]
    } else {
        config_sources(args, &file, flag_auth.as_ref())?
    };

    check_tables(&sources)?;

    let table_format = match args.table_format.as_ref().or(file.table_format.as_ref()) {
        Some(f) => crate::store::delta::TableFormat::parse(f)?,
        None => crate::store::delta::TableFormat::default(),
    };
    sink.ascii_paths = table_format == crate::store::delta::TableFormat::Delta;
    if incremental {
        // A config's `parallel` is for `harvest`; incremental pages in watermark order.
        for t in sources.iter_mut().flat_map(|s| s.tables.iter_mut()) {
            t.parallel = 1;
        }
    }
    let shard = match shard_spec(args)? {
        Some(spec) => Some(take_shard(&mut sources, &spec)?),
        None => None,
    };
    // Object storage: the run works in a local stage and publishes to the store.
    let location = out.clone();
    let s3 = crate::store::remote::S3Options {
        endpoint: args.s3.s3_endpoint.clone().or(file.s3.endpoint.clone()),
        region: args.s3.s3_region.clone().or(file.s3.region.clone()),
        retry: Some((http.max_attempts, http.retry_budget)),
    };
    let remote = match crate::store::remote::is_remote(&location) {
        false => None,
        true => {
            let loc = location.to_string_lossy().to_string();
            let (url, _, _) = crate::store::remote::parse_url(&loc)?;
            let stage = args
                .stage
                .clone()
                .or(file.stage.clone())
                .unwrap_or_else(|| {
                    crate::store::remote::default_stage(&url, args.writer.as_deref())
                });
            Some(std::sync::Arc::new(crate::store::remote::Remote::new(
                &loc,
                &s3,
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
            if !crate::store::writers::valid_name(name) {
                return Err(UsageError::with_hint(
                    format!("--writer {name:?} is not a usable writer name"),
                    "use letters, digits, '.', '_' and '-' (up to 64, not starting with '.'), e.g. --writer shard-2",
                ));
            }
            if table_format != crate::store::delta::TableFormat::Delta {
                return Err(UsageError::with_hint(
                    "--writer shares DIR's datasets between processes, which needs a table format with a commit protocol",
                    "add --table-format delta (or `table_format = \"delta\"` in the config)",
                ));
            }
            crate::store::writers::home(&out, name)
        }
    };
    let mut described = describe(&location, &http, &sink, &sources);
    if let Some(s) = shard {
        described["shard"] = s;
    }
    if let Some(w) = &args.writer {
        described["writer"] = serde_json::json!(w);
    }
    if table_format != crate::store::delta::TableFormat::Parquet {
        described["table_format"] = serde_json::json!(table_format);
    }
    let config_digest = crate::store::manifest::sha256_hex(described.to_string().as_bytes());
    let jobs = args.jobs.or(file.jobs).unwrap_or(1);
    if jobs == 0 || jobs > MAX_JOBS {
        return Err(UsageError::with_hint(
            format!("jobs is {jobs}, outside 1..={MAX_JOBS}"),
            "each table in flight holds its own pages and open Parquet parts; 2-8 is usually enough to hide network latency",
        ));
    }
    Ok(HarvestSettings {
        jobs: jobs as usize,
        s3,
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

/// What the sources ask for, checked: cursors per table, page sizes, one dataset per table.
fn check_tables(sources: &[SourceSettings]) -> Result<(), UsageError> {
    let mut outputs = std::collections::BTreeSet::new();
    for s in sources {
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
            if t.page_size == 0 {
                return Err(UsageError::new(format!(
                    "page size for table {:?} must be at least 1",
                    t.name
                )));
            }
            if !outputs.insert(crate::store::fsutil::sanitize_component(&t.output)) {
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
    Ok(())
}

/// `[http]` and the HTTP flags (flags win).
fn http_settings(args: &HarvestArgs, h: &HttpConfig) -> Result<HttpSettings, UsageError> {
    let mut http = HttpSettings::default();
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
    // The HTTP version changes no byte of a body either.
    http.http1_only = args.http1 || h.http1_only.unwrap_or(false);
    Ok(http)
}

/// `[parquet]` and the Parquet flags (flags win).
fn sink_settings(args: &HarvestArgs, p: &ParquetConfig) -> Result<SinkSettings, UsageError> {
    let mut sink = SinkSettings::default();
    if let Some(v) = args.part_rows.or(p.part_rows) {
        sink.part_rows = v.max(1);
    }
    if let Some(v) = args.row_group_rows.or(p.row_group_rows) {
        sink.row_group_rows = v.max(1);
    }
    if let Some(v) = args.zstd_level.or(p.zstd_level) {
        if !(1..=22).contains(&v) {
            return Err(UsageError::new(format!(
                "zstd level must be 1 to 22, not {v}"
            )));
        }
        sink.zstd_level = v;
    }
    Ok(sink)
}

/// The source `--table` flags describe: command-line Datasette tables, with URL and database
/// from `--url`/`--db` or else the config's only source.
fn flag_source(
    args: &HarvestArgs,
    file: &ConfigFile,
    flag_auth: Option<Auth>,
) -> Result<SourceSettings, UsageError> {
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
    // `--max-failed` alone: the `type` check, with that limit.
    let flag_checks = match &args.max_failed {
        None => None,
        Some(m) => Some(crate::schema::checks::Checks {
            max_failed: Some(checks::max_failed(
                "--max-failed",
                &toml::Value::String(m.clone()),
            )?),
            ..Default::default()
        }),
    };
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
            files: None,
            schema_frozen: false,
            checks: flag_checks.clone(),
            shard: None,
        })
        .collect();
    Ok(SourceSettings {
        name: args.source_name.clone().unwrap_or_else(|| database.clone()),
        kind: SourceKind::Datasette,
        base: parse_url(&url, "--url")?,
        database,
        headers: Vec::new(),
        secret_headers: false,
        auth,
        tables,
    })
}

/// The sources of the config file, each resolved, after the checks that concern them all.
fn config_sources(
    args: &HarvestArgs,
    file: &ConfigFile,
    flag_auth: Option<&Auth>,
) -> Result<Vec<SourceSettings>, UsageError> {
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
    file.sources
        .iter()
        .map(|s| config_source(args, s, flag_auth))
        .collect()
}

/// One `[[source]]` of the config, resolved (`--url`, `--db` and the auth flags override it).
fn config_source(
    args: &HarvestArgs,
    s: &SourceConfig,
    flag_auth: Option<&Auth>,
) -> Result<SourceSettings, UsageError> {
    let kind = source_kind(s)?;
    if kind == SourceKind::Rest && (args.db.is_some() || args.page_size.is_some()) {
        return Err(UsageError::with_hint(
            "--db and --page-size are for Datasette sources, and the config has a kind = \"rest\" source",
            "for a REST table, set its page size in `params` or `paginate`",
        ));
    }
    let database = match kind {
        SourceKind::Rest | SourceKind::Files => String::new(),
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
    let auth = match (flag_auth, &s.auth) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(a)) => auth_from_config(a)?,
        (None, None) => None,
    };
    let mut tables = Vec::new();
    for t in &s.tables {
        tables.push(table_settings(args, kind, s, t)?);
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
    Ok(SourceSettings {
        name: s.name.clone().unwrap_or_else(|| match kind {
            SourceKind::Datasette => database.clone(),
            SourceKind::Rest => s.url.clone(),
            SourceKind::Files => "files".to_string(),
        }),
        kind,
        base: match kind {
            // Files have no server; the URL only names the source in records.
            SourceKind::Files => {
                url::Url::parse("file:///").map_err(|e| UsageError::new(e.to_string()))?
            }
            _ => parse_url(args.url.as_deref().unwrap_or(&s.url), "source url")?,
        },
        database,
        secret_headers: s.headers.values().any(|v| v.starts_with("${")),
        headers,
        auth,
        tables,
    })
}

/// One `[[source.table]]` of a config source, resolved (flags override its keys).
fn table_settings(
    args: &HarvestArgs,
    kind: SourceKind,
    s: &SourceConfig,
    t: &TableConfig,
) -> Result<TableSettings, UsageError> {
    let params = t
        .params
        .iter()
        .map(|(k, v)| Ok((k.clone(), toml_scalar(k, v)?)))
        .collect::<Result<Vec<_>, UsageError>>()?;
    let page_size = args.page_size.or(t.page_size).or(s.page_size);
    Ok(TableSettings {
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
                max_window_rows: crate::store::watermark::DEFAULT_MAX_WINDOW_IDS,
            }),
        },
        rest: if kind == SourceKind::Files {
            None
        } else {
            rest_table(kind, t)?
        },
        files: files_table(kind, t)?,
        rows: rows::row_driven(kind == SourceKind::Rest, t, &s.tables)?,
        schema_frozen: match t.schema.as_deref() {
            // A row-driven table keeps its first response's columns; a files table its first
            // file's.
            None if t.for_each.is_some() || kind == SourceKind::Files => true,
            Some("evolve") if t.for_each.is_some() => {
                return Err(UsageError::with_hint(
                    format!(
                        "table {:?}: a row-driven table's columns do not evolve",
                        t.name
                    ),
                    "declare late fields in `types`; schema evolution is for paged tables",
                ));
            }
            None | Some("evolve") => false,
            Some("freeze") => true,
            Some(other) => {
                return Err(UsageError::with_hint(
                    format!("table {:?}: schema = {other:?} is not known", t.name),
                    "use \"evolve\" (the default: new fields become columns, misfit values variant columns) or \"freeze\" (stop the run instead)",
                ));
            }
        },
        checks: table_checks(args, t)?,
        shard: None,
    })
}

/// A table's `checks`, with `--max-failed` over its `max_failed`.
fn table_checks(
    args: &HarvestArgs,
    t: &TableConfig,
) -> Result<Option<crate::schema::checks::Checks>, UsageError> {
    let what = format!("table {:?}", t.name);
    let mut c = match &t.checks {
        None => None,
        Some(c) => Some(checks::checks(&what, c)?),
    };
    if let Some(m) = &args.max_failed {
        let m = checks::max_failed("--max-failed", &toml::Value::String(m.clone()))?;
        c.get_or_insert_with(Default::default).max_failed = Some(m);
    }
    Ok(c)
}

/// The shard to run as `I/N`: `--shard`, or `--shard-index-env VAR --shards N` with the
/// 0-based index an engine sets in VAR (Kubernetes' JOB_COMPLETION_INDEX, …).
fn shard_spec(args: &HarvestArgs) -> Result<Option<String>, UsageError> {
    let (Some(var), Some(n)) = (&args.shard_index_env, args.shards) else {
        return Ok(args.shard.clone());
    };
    let raw = std::env::var(var).map_err(|_| {
        UsageError::with_hint(
            format!("--shard-index-env {var}: the environment variable {var} is not set"),
            format!(
                "run under an engine that sets it (a Kubernetes Indexed Job sets JOB_COMPLETION_INDEX), export {var}=0 … {} yourself, or pass --shard I/N",
                n.saturating_sub(1)
            ),
        )
    })?;
    let index: u32 = raw.trim().parse().map_err(|_| {
        UsageError::with_hint(
            format!("--shard-index-env {var}: {var}={raw:?} is not a shard index"),
            format!(
                "it must be a whole number from 0 to {}",
                n.saturating_sub(1)
            ),
        )
    })?;
    if n == 0 || index >= n {
        return Err(UsageError::with_hint(
            format!("--shard-index-env {var}: {var}={index} is not below --shards {n}"),
            "the index counts from 0 (the first of three shards is 0, the last 2); check --shards",
        ));
    }
    Ok(Some(format!("{}/{n}", index + 1)))
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
                crate::source::rows::inputs::InputSpec::Parent { table, .. } => Some(table.clone()),
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
            "kind": match s.kind { SourceKind::Datasette => "datasette", SourceKind::Rest => "rest", SourceKind::Files => "files" },
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
                    max_window_rows: crate::store::watermark::DEFAULT_MAX_WINDOW_IDS,
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
            wm.lookback_parsed = Some(
                crate::store::watermark::Lookback::parse(&wm.lookback).map_err(|m| {
                    UsageError::with_hint(
                        m,
                        "e.g. --lookback 2d for dates, --lookback 500 for integer ids",
                    )
                })?,
            );
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
    settings.config_digest =
        crate::store::manifest::sha256_hex(settings.described.to_string().as_bytes());
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
