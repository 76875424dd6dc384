//! Small values of the config and the flags checked and converted: URLs, rates, `K=V` pairs,
//! column types, durations and scalars.

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use crate::config::SourceConfig;
use crate::error::UsageError;
use crate::schema::ColType;
use crate::source::settings::SourceKind;

pub(super) fn parse_url(raw: &str, what: &str) -> Result<Url, UsageError> {
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

pub(super) fn secs(v: f64, what: &str) -> Result<Duration, UsageError> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            UsageError::new(format!(
                "{what} must be a positive number of seconds, not {v}"
            ))
        })
}

pub(super) fn toml_scalar(key: &str, v: &toml::Value) -> Result<String, UsageError> {
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
pub(super) fn watermark_column(kind: SourceKind, raw: &str) -> String {
    match (kind, raw.strip_prefix('/')) {
        (SourceKind::Rest, Some(p)) => p
            .split('/')
            .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
            .collect::<Vec<_>>()
            .join(crate::source::rest::NEST),
        _ => raw.to_string(),
    }
}

pub(super) fn source_kind(s: &SourceConfig) -> Result<SourceKind, UsageError> {
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
        Some("files") => {
            for (key, set) in [
                ("url", !s.url.is_empty()),
                ("database", s.database.is_some()),
                ("auth", s.auth.is_some()),
                ("headers", !s.headers.is_empty()),
                ("page_size", s.page_size.is_some()),
            ] {
                if set {
                    return Err(UsageError::with_hint(
                        format!("`{key}` is for sources with a server, not kind = \"files\""),
                        "a files source names its files with each table's `path` (a glob)",
                    ));
                }
            }
            Ok(SourceKind::Files)
        }
        Some(other) => Err(UsageError::with_hint(
            format!("unknown source kind {other:?}"),
            "use kind = \"datasette\" (the default), \"rest\" or \"files\"",
        )),
    }
}
