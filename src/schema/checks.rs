//! Row checks (`[source.table.checks]`, `sql-extract --checks`): which rows a dataset accepts,
//! and, for the rows it does not, every reason why.
//!
//! Guarantees:
//! - A row is judged on its values as the writer would store them (after typing): `type` fails
//!   a value its column cannot hold (the error a run without checks stops at), and every other
//!   check of the row is still evaluated, so a quarantined row names **all** it failed, each
//!   with a sentence (`score 130 is above max 100`).
//! - NULL (or an absent field) passes every check but `required`; a key with a NULL part is
//!   not checked for `unique` (as in SQL).
//! - `unique` is judged only for rows that pass every other check (a failed row holds no key),
//!   by the caller's key index; [`Checker::key`] gives the key's bytes: integers big-endian with
//!   the sign flipped (ascending keys stay ascending, so an on-disk B-tree appends), other values
//!   tagged and length-prefixed (no two different keys share bytes), long keys as their sha256.
//! - Nothing here touches disk or logs; values in reasons are cut at 80 characters.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::schema::{ColType, ColumnPlan, describe_value, float_text, misfit, parse_timestamp};

/// The checks of one table, as configured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Checks {
    pub required: Vec<String>,
    pub unique: Vec<String>,
    pub one_of: BTreeMap<String, Vec<Value>>,
    pub pattern: BTreeMap<String, Pattern>,
    pub range: BTreeMap<String, Range>,
    pub max_length: BTreeMap<String, u64>,
    /// Left out of the config digest: raising it lets a stopped run resume.
    #[serde(skip)]
    pub max_failed: Option<MaxFailed>,
}

/// A `pattern` check: the regex must match somewhere in the value (anchor it with `^…$`).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A `range` check: inclusive bounds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Range {
    pub min: Option<Limit>,
    pub max: Option<Limit>,
}

/// One bound of a range: a number, an instant (a date or time, compared as the instant), or
/// other text (compared as text).
#[derive(Debug, Clone)]
pub enum Limit {
    Number(serde_json::Number),
    Instant { micros: i64, text: String },
    Text(String),
}

impl Limit {
    /// A bound written as text: an instant when it reads as a date or time.
    pub fn from_text(s: &str) -> Self {
        match parse_timestamp(s) {
            Some(micros) => Limit::Instant {
                micros,
                text: s.to_string(),
            },
            None => Limit::Text(s.to_string()),
        }
    }

    fn text(&self) -> String {
        match self {
            Limit::Number(n) => n.to_string(),
            Limit::Instant { text, .. } | Limit::Text(text) => text.clone(),
        }
    }

    /// How `v` compares with this bound (`None`: it cannot be compared).
    fn compare(&self, v: &Value) -> Option<std::cmp::Ordering> {
        match (v, self) {
            (Value::Number(a), Limit::Number(b)) => match (a.as_i64(), b.as_i64()) {
                (Some(a), Some(b)) => Some(a.cmp(&b)),
                _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
            },
            (v, Limit::Number(b)) => crate::schema::json::non_finite(v)?.partial_cmp(&b.as_f64()?),
            (Value::String(s), Limit::Instant { micros, .. }) => {
                Some(parse_timestamp(s)?.cmp(micros))
            }
            (Value::String(s), Limit::Text(t)) => Some(s.as_str().cmp(t.as_str())),
            _ => None,
        }
    }
}

impl serde::Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Number(n) => n.serialize(s),
            Limit::Instant { text, .. } | Limit::Text(text) => s.serialize_str(text),
        }
    }
}

/// `max_failed`: how many quarantined rows a run accepts before it stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFailed {
    Count(u64),
    Percent(f64),
}

impl MaxFailed {
    /// `"5%"` or a count.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(MaxFailed::Percent),
            None => s.parse().ok().map(MaxFailed::Count),
        }
    }

    /// Whether `failed` of `seen` rows is past the limit.
    pub fn exceeded(self, failed: u64, seen: u64) -> bool {
        match self {
            MaxFailed::Count(n) => failed > n,
            MaxFailed::Percent(p) => seen > 0 && (failed as f64) * 100.0 > p * seen as f64,
        }
    }

    /// A count is final as soon as it is passed; a share only over the whole table.
    pub fn is_count(self) -> bool {
        matches!(self, MaxFailed::Count(_))
    }
}

impl std::fmt::Display for MaxFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxFailed::Count(n) => write!(f, "{n}"),
            MaxFailed::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// One check a row failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub check: &'static str,
    pub reason: String,
}

impl Checks {
    /// The checks applied to rows of these columns (by name; a column the rows lack is absent
    /// in every row).
    pub fn bind<'a>(&'a self, columns: &'a [ColumnPlan]) -> Checker<'a> {
        let at = |name: &str| columns.iter().position(|c| c.name == name);
        Checker {
            checks: self,
            columns,
            required: self.required.iter().map(|c| (c.as_str(), at(c))).collect(),
            unique: self.unique.iter().map(|c| (c.as_str(), at(c))).collect(),
            one_of: self
                .one_of
                .iter()
                .map(|(c, v)| (c.as_str(), at(c), v))
                .collect(),
            pattern: self
                .pattern
                .iter()
                .map(|(c, p)| (c.as_str(), at(c), p))
                .collect(),
            range: self
                .range
                .iter()
                .map(|(c, r)| (c.as_str(), at(c), r))
                .collect(),
            max_length: self
                .max_length
                .iter()
                .map(|(c, n)| (c.as_str(), at(c), *n))
                .collect(),
        }
    }
}

type Rule<'a, T> = (&'a str, Option<usize>, T);

/// The checks, resolved against one column list.
pub struct Checker<'a> {
    pub checks: &'a Checks,
    columns: &'a [ColumnPlan],
    required: Vec<(&'a str, Option<usize>)>,
    unique: Vec<(&'a str, Option<usize>)>,
    one_of: Vec<Rule<'a, &'a Vec<Value>>>,
    pattern: Vec<Rule<'a, &'a Pattern>>,
    range: Vec<Rule<'a, &'a Range>>,
    max_length: Vec<Rule<'a, u64>>,
}

fn cell(row: &[Value], at: Option<usize>) -> &Value {
    at.and_then(|i| row.get(i)).unwrap_or(&Value::Null)
}

/// Equal as values: numbers by their value (1 and 1.0 are equal), the rest as JSON.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// The value as the text a pattern or a length is judged on.
fn as_text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => s.as_str().into(),
        v => match crate::schema::json::non_finite(v) {
            Some(f) => float_text(f).into(),
            None => v.to_string().into(),
        },
    }
}

impl Checker<'_> {
    /// Every check but `unique` that `row` (in column order) fails, in this order: `type`,
    /// `required`, `one_of`, `pattern`, `range`, `max_length`.
    pub fn failures(&self, row: &[Value], out: &mut Vec<Failure>) {
        for (c, v) in self.columns.iter().zip(row) {
            if let Some(why) = misfit(v, c) {
                out.push(Failure {
                    check: "type",
                    reason: format!(
                        "{} {} {why} (column type {})",
                        c.name,
                        describe_value(v),
                        c.ty.name()
                    ),
                });
            }
        }
        for (name, at) in &self.required {
            let missing = at.is_none_or(|i| i >= row.len());
            let v = cell(row, *at);
            if missing || v.is_null() {
                out.push(Failure {
                    check: "required",
                    reason: if missing {
                        format!("{name} is missing")
                    } else {
                        format!("{name} is NULL")
                    },
                });
            }
        }
        for (name, at, allowed) in &self.one_of {
            let v = cell(row, *at);
            if !v.is_null() && !allowed.iter().any(|a| same(a, v)) {
                let list: Vec<String> = allowed.iter().map(|a| as_text(a).into_owned()).collect();
                out.push(Failure {
                    check: "one_of",
                    reason: format!(
                        "{name} {} is not one of {}",
                        describe_value(v),
                        list.join(", ")
                    ),
                });
            }
        }
        for (name, at, p) in &self.pattern {
            let v = cell(row, *at);
            if !v.is_null() && !p.0.is_match(&as_text(v)) {
                out.push(Failure {
                    check: "pattern",
                    reason: format!(
                        "{name} {} does not match {}",
                        describe_value(v),
                        p.0.as_str()
                    ),
                });
            }
        }
        for (name, at, r) in &self.range {
            let v = cell(row, *at);
            if v.is_null() {
                continue;
            }
            for (limit, side, wrong) in [
                (&r.min, "min", std::cmp::Ordering::Less),
                (&r.max, "max", std::cmp::Ordering::Greater),
            ] {
                let Some(limit) = limit else { continue };
                let reason = match limit.compare(v) {
                    Some(o) if o == wrong => {
                        let rel = if side == "min" { "below" } else { "above" };
                        format!(
                            "{name} {} is {rel} {side} {}",
                            describe_value(v),
                            limit.text()
                        )
                    }
                    Some(_) => continue,
                    None => format!(
                        "{name} {} cannot be compared with {side} {}",
                        describe_value(v),
                        limit.text()
                    ),
                };
                out.push(Failure {
                    check: "range",
                    reason,
                });
            }
        }
        for (name, at, max) in &self.max_length {
            let v = cell(row, *at);
            if v.is_null() {
                continue;
            }
            let n = as_text(v).chars().count() as u64;
            if n > *max {
                out.push(Failure {
                    check: "max_length",
                    reason: format!("{name} is {n} characters long, over max_length {max}"),
                });
            }
        }
    }

    /// The `unique` key of `row` as bytes for the key index (`None`: no key is configured, or
    /// a part of it is NULL or absent).
    pub fn key(&self, row: &[Value]) -> Option<Vec<u8>> {
        if self.unique.is_empty() {
            return None;
        }
        let mut key = Vec::with_capacity(16);
        for (_, at) in &self.unique {
            let v = cell(row, *at);
            match v {
                Value::Null => return None,
                Value::Number(n) if n.is_i64() => {
                    key.push(b'i');
                    let i = n.as_i64().unwrap_or_default();
                    key.extend_from_slice(&((i as u64) ^ (1 << 63)).to_be_bytes());
                }
                v => {
                    let text = match v {
                        Value::String(s) => {
                            key.push(b's');
                            std::borrow::Cow::Borrowed(s.as_str())
                        }
                        v => {
                            key.push(b'j');
                            std::borrow::Cow::Owned(v.to_string())
                        }
                    };
                    key.extend_from_slice(&(text.len() as u32).to_be_bytes());
                    key.extend_from_slice(text.as_bytes());
                }
            }
        }
        if key.len() > 64 {
            let mut h = vec![b'h'];
            h.extend_from_slice(&Sha256::digest(&key));
            return Some(h);
        }
        Some(key)
    }

    /// The failure a row whose key was seen before gets.
    pub fn duplicate(&self, row: &[Value]) -> Failure {
        let mut key = String::new();
        for (i, (name, at)) in self.unique.iter().enumerate() {
            if i > 0 {
                key.push_str(", ");
            }
            let _ = write!(key, "{name} {}", describe_value(cell(row, *at)));
        }
        Failure {
            check: "unique",
            reason: format!("{key} was harvested before (a duplicate key; the first is kept)"),
        }
    }
}

/// The columns a quarantine part adds after the row's own.
pub const QUARANTINE_META: [&str; 7] = [
    "_checks",
    "_reason",
    "_run_id",
    "_page",
    "_row",
    "_snapshot",
    "_request_id",
];

/// A quarantine part's columns: the table's, each as text (a value as received: a string as
/// itself, anything else as its JSON text), then [`QUARANTINE_META`].
pub fn quarantine_columns(columns: &[ColumnPlan]) -> Vec<ColumnPlan> {
    let text = |name: &str, ty| ColumnPlan {
        name: name.to_string(),
        ty,
        reason: "quarantine".into(),
        numbers_as_text: false,
    };
    let mut out: Vec<ColumnPlan> = columns
        .iter()
        .filter(|c| !QUARANTINE_META.contains(&c.name.as_str()))
        .map(|c| text(&c.name, ColType::Text))
        .collect();
    for m in QUARANTINE_META {
        let ty = if m == "_page" || m == "_row" {
            ColType::Integer
        } else {
            ColType::Text
        };
        out.push(text(m, ty));
    }
    out
}

/// Where a quarantined row came from.
pub struct Origin<'a> {
    pub run_id: &'a str,
    pub page: u64,
    /// 1-based, in the page as received.
    pub row: u64,
    pub snapshot: &'a str,
    pub request_id: Option<&'a str>,
}

/// A failed row as a quarantine row (for [`quarantine_columns`] of the same `columns`).
pub fn quarantine_row(
    columns: &[ColumnPlan],
    row: &[Value],
    failures: &[Failure],
    origin: &Origin<'_>,
) -> Vec<Value> {
    let mut out: Vec<Value> = columns
        .iter()
        .zip(row)
        .filter(|(c, _)| !QUARANTINE_META.contains(&c.name.as_str()))
        .map(|(_, v)| match v {
            Value::Null => Value::Null,
            v => Value::String(as_text(v).into_owned()),
        })
        .collect();
    // A row shorter than its columns (never from the pipeline, which aligns rows first).
    out.resize(
        columns
            .iter()
            .filter(|c| !QUARANTINE_META.contains(&c.name.as_str()))
            .count(),
        Value::Null,
    );
    let mut names: Vec<&str> = Vec::new();
    for f in failures {
        if !names.contains(&f.check) {
            names.push(f.check);
        }
    }
    let reasons: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
    out.push(Value::String(names.join(",")));
    out.push(Value::String(reasons.join("; ")));
    out.push(Value::String(origin.run_id.to_string()));
    out.push(Value::from(origin.page));
    out.push(Value::from(origin.row));
    out.push(if origin.snapshot.is_empty() {
        Value::Null // a query's rows have no snapshot
    } else {
        Value::String(origin.snapshot.to_string())
    });
    // A row-driven table's rows carry their request's id as a column.
    let request_id = origin.request_id.map(str::to_string).or_else(|| {
        columns
            .iter()
            .position(|c| c.name == "_request_id")
            .and_then(|i| row.get(i))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    out.push(request_id.map_or(Value::Null, Value::String));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn col(name: &str, ty: ColType) -> ColumnPlan {
        ColumnPlan {
            name: name.into(),
            ty,
            reason: "test".into(),
            numbers_as_text: false,
        }
    }

    fn checks() -> Checks {
        Checks {
            required: vec!["id".into(), "type".into()],
            unique: vec!["id".into()],
            one_of: [("type".to_string(), vec![json!("Push"), json!("Watch")])].into(),
            pattern: [(
                "email".to_string(),
                Pattern(regex::Regex::new(r"^[^@\s]+@[^@\s]+$").unwrap()),
            )]
            .into(),
            range: [
                (
                    "score".to_string(),
                    Range {
                        min: Some(Limit::Number(0.into())),
                        max: Some(Limit::Number(100.into())),
                    },
                ),
                (
                    "at".to_string(),
                    Range {
                        min: Some(Limit::from_text("2020-01-01")),
                        max: None,
                    },
                ),
            ]
            .into(),
            max_length: [("email".to_string(), 12)].into(),
            max_failed: None,
        }
    }

    fn columns() -> Vec<ColumnPlan> {
        vec![
            col("id", ColType::Integer),
            col("type", ColType::Text),
            col("email", ColType::Text),
            col("score", ColType::Integer),
            col("at", ColType::Timestamp),
        ]
    }

    fn fails(row: Value) -> Vec<Failure> {
        let (c, cols) = (checks(), columns());
        let k = c.bind(&cols);
        let mut out = vec![];
        let row: Vec<Value> = row.as_array().unwrap().clone();
        k.failures(&row, &mut out);
        out
    }

    #[test]
    fn a_good_row_fails_nothing_and_nulls_pass_all_but_required() {
        assert_eq!(
            fails(json!([1, "Push", "a@b.c", 100, "2020-01-01"])),
            vec![]
        );
        assert_eq!(fails(json!([1, "Push", null, null, null])), vec![]);
        let f = fails(json!([null, null, null, null, null]));
        let names: Vec<&str> = f.iter().map(|f| f.check).collect();
        assert_eq!(names, ["required", "required"]);
        assert_eq!(f[0].reason, "id is NULL");
    }

    #[test]
    fn every_failed_check_of_a_row_is_named_with_a_sentence() {
        let f = fails(json!([
            "x",
            "Fork",
            "not an address",
            130,
            "2019-05-01T00:00:00Z"
        ]));
        let got: Vec<(&str, &str)> = f.iter().map(|f| (f.check, f.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                ("type", "id \"x\" is not an integer (column type integer)"),
                ("one_of", "type \"Fork\" is not one of Push, Watch"),
                (
                    "pattern",
                    "email \"not an address\" does not match ^[^@\\s]+@[^@\\s]+$"
                ),
                (
                    "range",
                    "at \"2019-05-01T00:00:00Z\" is below min 2020-01-01"
                ),
                ("range", "score 130 is above max 100"),
                (
                    "max_length",
                    "email is 14 characters long, over max_length 12"
                ),
            ]
        );
        let f = fails(json!([1, "Push", null, -1, "yesterday"]));
        let got: Vec<&str> = f.iter().map(|f| f.reason.as_str()).collect();
        assert!(got.contains(&"score -1 is below min 0"), "{got:?}");
        assert!(
            got.iter()
                .any(|r| r.starts_with("at \"yesterday\" is not a timestamp"))
        );
        assert!(got.contains(&"at \"yesterday\" cannot be compared with min 2020-01-01"));
    }

    #[test]
    fn keys_keep_integer_order_and_never_collide_across_kinds() {
        let (c, cols) = (checks(), columns());
        let k = c.bind(&cols);
        let key = |v: Value| k.key(&[v, json!("Push")]);
        assert!(key(json!(-5)) < key(json!(3)));
        assert!(key(json!(3)) < key(json!(70_000)));
        assert_ne!(key(json!(3)), key(json!("3")));
        assert_eq!(key(json!(null)), None);
        let long = key(json!("x".repeat(200))).unwrap();
        assert_eq!(long.len(), 33);
        assert_eq!(
            k.duplicate(&[json!(7)]).reason,
            "id 7 was harvested before (a duplicate key; the first is kept)"
        );
    }

    #[test]
    fn max_failed_reads_a_count_or_a_share() {
        assert_eq!(MaxFailed::parse("5%"), Some(MaxFailed::Percent(5.0)));
        assert_eq!(MaxFailed::parse("12"), Some(MaxFailed::Count(12)));
        assert_eq!(MaxFailed::parse("150%"), None);
        assert!(MaxFailed::Count(2).exceeded(3, 10));
        assert!(!MaxFailed::Count(3).exceeded(3, 10));
        assert!(MaxFailed::Percent(5.0).exceeded(6, 100));
        assert!(!MaxFailed::Percent(5.0).exceeded(5, 100));
    }

    #[test]
    fn a_quarantine_row_keeps_values_as_received_with_its_reasons() {
        let cols = columns();
        let q = quarantine_columns(&cols);
        assert_eq!(q.len(), cols.len() + QUARANTINE_META.len());
        let f = fails(json!([1, "Fork", null, 130, null]));
        let row = quarantine_row(
            &cols,
            &[
                json!(1),
                json!("Fork"),
                json!(null),
                json!(130),
                json!(null),
            ],
            &f,
            &Origin {
                run_id: "r1",
                page: 3,
                row: 9,
                snapshot: "raw/s/t/r1/page-000003.json",
                request_id: None,
            },
        );
        assert_eq!(row.len(), q.len());
        assert_eq!(row[0], json!("1"));
        assert_eq!(row[2], json!(null));
        assert_eq!(row[5], json!("one_of,range"));
        assert_eq!(
            row[6],
            json!("type \"Fork\" is not one of Push, Watch; score 130 is above max 100")
        );
        assert_eq!(row[8], json!(3));
        assert_eq!(row[11], json!(null));
    }
}
