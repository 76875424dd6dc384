//! `[source.table.checks]`, `[extract.checks]` and `sql-extract --checks FILE` resolved into
//! [`Checks`]: every rule checked for what it can be checked on here (a regex that compiles,
//! a bound that is a number, date or text, a `max_failed` that is a count or a share), so that a
//! typo stops the run before any request, naming the table, the key and the fix.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::file::{ChecksConfig, RangeConfig};
use crate::error::UsageError;
use crate::schema::checks::{Checks, Limit, MaxFailed, Pattern, Range};

/// Resolve one table's checks; `what` names it in messages (`table "events"`).
pub(super) fn checks(what: &str, c: &ChecksConfig) -> Result<Checks, UsageError> {
    let mut one_of = BTreeMap::new();
    for (col, values) in &c.one_of {
        if values.is_empty() {
            return Err(UsageError::with_hint(
                format!("{what}: checks.one_of.{col} lists no value, so every row would fail"),
                format!("list the allowed values, e.g. one_of = {{ {col} = [\"a\", \"b\"] }}"),
            ));
        }
        let v = values
            .iter()
            .map(|v| scalar(v).ok_or_else(|| bad_scalar(what, &format!("one_of.{col}"), v)))
            .collect::<Result<Vec<Value>, _>>()?;
        one_of.insert(col.clone(), v);
    }
    let mut pattern = BTreeMap::new();
    for (col, p) in &c.pattern {
        let re = regex::Regex::new(p).map_err(|e| {
            UsageError::with_hint(
                format!("{what}: checks.pattern.{col} is not a valid regular expression: {e}"),
                "write it in Rust regex syntax (https://docs.rs/regex/#syntax), in a TOML literal string: pattern = { email = '^[^@]+@[^@]+$' }",
            )
        })?;
        pattern.insert(col.clone(), Pattern(re));
    }
    let mut range = BTreeMap::new();
    for (col, RangeConfig { min, max }) in &c.range {
        if min.is_none() && max.is_none() {
            return Err(UsageError::with_hint(
                format!("{what}: checks.range.{col} has neither min nor max"),
                format!("e.g. range = {{ {col} = {{ min = 0, max = 100 }} }}"),
            ));
        }
        let limit = |v: &Option<toml::Value>, side: &str| -> Result<Option<Limit>, UsageError> {
            v.as_ref()
                .map(|v| {
                    limit(v).ok_or_else(|| bad_scalar(what, &format!("range.{col}.{side}"), v))
                })
                .transpose()
        };
        range.insert(
            col.clone(),
            Range {
                min: limit(min, "min")?,
                max: limit(max, "max")?,
            },
        );
    }
    let max_failed = match &c.max_failed {
        None => None,
        Some(v) => Some(max_failed(what, v)?),
    };
    Ok(Checks {
        required: c.required.clone(),
        unique: c.unique.clone(),
        one_of,
        pattern,
        range,
        max_length: c.max_length.clone(),
        max_failed,
    })
}

/// `max_failed` (config) or `--max-failed` (flag): `"5%"` or a count.
pub(super) fn max_failed(what: &str, v: &toml::Value) -> Result<MaxFailed, UsageError> {
    let parsed = match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok().map(MaxFailed::Count),
        toml::Value::String(s) => MaxFailed::parse(s),
        _ => None,
    };
    parsed.ok_or_else(|| {
        UsageError::with_hint(
            format!("{what}: max_failed = {v} is neither a count nor a share"),
            "write a count of rows (max_failed = 10) or a share of the rows (max_failed = \"5%\", 0 to 100)",
        )
    })
}

/// `[extract.checks]` of `sql-extract`'s extract `name`.
pub fn extract_checks(name: &str, c: &ChecksConfig) -> Result<Checks, UsageError> {
    checks(&format!("extract {name:?}"), c)
}

/// `sql-extract --checks FILE`: a TOML file with the keys of a checks section.
pub fn checks_file(path: &std::path::Path) -> Result<Checks, UsageError> {
    let hint = "its keys are those of a [source.table.checks] section: required, unique, one_of, pattern, range, max_length, max_failed";
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError::with_hint(
            format!("cannot read the checks file {}: {e}", path.display()),
            hint,
        )
    })?;
    let c: ChecksConfig = toml::from_str(&text).map_err(|e| {
        UsageError::with_hint(
            format!("the checks file {} is not valid: {e}", path.display()),
            hint,
        )
    })?;
    checks(&format!("checks file {}", path.display()), &c)
}

fn scalar(v: &toml::Value) -> Option<Value> {
    Some(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(serde_json::Number::from_f64(*f)?),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        _ => return None,
    })
}

fn limit(v: &toml::Value) -> Option<Limit> {
    match scalar(v)? {
        Value::Number(n) => Some(Limit::Number(n)),
        Value::String(s) => Some(Limit::from_text(&s)),
        _ => None,
    }
}

fn bad_scalar(what: &str, key: &str, v: &toml::Value) -> UsageError {
    UsageError::with_hint(
        format!("{what}: checks.{key} = {v} is not a number, text or date"),
        "write numbers bare (min = 0), and dates or times as text or TOML dates (min = \"2020-01-01\")",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Checks, UsageError> {
        let c: ChecksConfig = toml::from_str(text).unwrap();
        checks("table \"t\"", &c)
    }

    #[test]
    fn every_key_reads_and_bounds_keep_their_kind() {
        let c = parse(
            r#"
            required = ["id"]
            unique = ["id"]
            one_of = { type = ["A", "B"] }
            pattern = { email = '^[^@\s]+@[^@\s]+$' }
            range = { score = { min = 0, max = 100 }, at = { min = 2020-01-01 } }
            max_length = { name = 200 }
            max_failed = "5%"
            "#,
        )
        .unwrap();
        assert!(matches!(c.range["score"].min, Some(Limit::Number(_))));
        assert!(matches!(c.range["at"].min, Some(Limit::Instant { .. })));
        assert_eq!(c.max_failed, Some(MaxFailed::Percent(5.0)));
    }

    #[test]
    fn mistakes_are_named_with_their_fix() {
        let e = parse("pattern = { email = '(' }").unwrap_err().to_string();
        assert!(
            e.contains("checks.pattern.email") && e.contains("hint:"),
            "{e}"
        );
        let e = parse("range = { x = {} }").unwrap_err().to_string();
        assert!(e.contains("neither min nor max"), "{e}");
        let e = parse("max_failed = \"lots\"").unwrap_err().to_string();
        assert!(e.contains("neither a count nor a share"), "{e}");
        let e = parse("one_of = { t = [] }").unwrap_err().to_string();
        assert!(e.contains("lists no value"), "{e}");
    }
}
