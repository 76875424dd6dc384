//! A REST page's records: strict JSON decoding, the records a JSON Pointer (or auto-detection)
//! selects, and nested objects flattened into `a__b` columns (arrays as JSON text). A body that
//! is cut off is retryable; any other problem is described with what came back.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;

use serde_json::Map;
use serde_json::Value;

use super::rows::NEST;
use super::rows::RowsReader;
use crate::source::BodyProblem;
use crate::source::Page;
use crate::source::json_kind;

/// A marker at the start of a refusal that is the configuration's to fix (exit 2).
pub const CONFIG_PROBLEM: &str = "configuration: ";
/// A marker at the start of a refusal that the table's paginator is the fix for (exit 2).
pub const PAGING_PROBLEM: &str = "paging: ";

/// Decode a body as strict JSON; cut off is retryable, anything else is described.
pub fn decode(body: &[u8]) -> Result<Value, BodyProblem> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            BodyProblem::Truncated(format!(
                "the JSON body ends early after {} bytes ({e})",
                body.len()
            ))
        } else {
            let head = String::from_utf8_lossy(&body[..body.len().min(120)]);
            let head = head.split_whitespace().collect::<Vec<_>>().join(" ");
            if head.starts_with('<') {
                BodyProblem::Wrong(format!("the body is HTML, not JSON (starts with {head:?})"))
            } else {
                BodyProblem::Wrong(format!(
                    "the body is not valid JSON ({e}); it starts with {head:?}"
                ))
            }
        }
    })
}

/// A body checked the cheap way: complete, valid JSON whose top-level fields are kept as raw
/// slices, so the records are counted without being built and a paginator's pointer parses
/// only the field it points into.
pub struct View<'a> {
    pub(super) body: &'a [u8],
    pub(super) top: Top<'a>,
}

pub(super) enum Top<'a> {
    Array(usize),
    Object(BTreeMap<String, &'a serde_json::value::RawValue>),
    Other(Value),
}

impl<'a> View<'a> {
    pub fn new(body: &'a [u8]) -> Result<View<'a>, BodyProblem> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let top = match first {
            Some(b'[') => Top::Array(
                serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body)
                    .map_err(|e| json_problem(body, &e))?
                    .len(),
            ),
            Some(b'{') => {
                Top::Object(serde_json::from_slice(body).map_err(|e| json_problem(body, &e))?)
            }
            _ => Top::Other(decode(body)?),
        };
        Ok(View { body, top })
    }

    /// The value at a JSON Pointer into the body.
    pub fn pointer(&self, p: &str) -> Option<Value> {
        let m = match &self.top {
            Top::Object(m) => m,
            Top::Other(v) => return v.pointer(p).cloned(),
            Top::Array(_) => return None,
        };
        let rest = p.strip_prefix('/')?;
        let (head, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let raw = m.get(&head.replace("~1", "/").replace("~0", "~"))?;
        let v: Value = serde_json::from_str(raw.get()).ok()?;
        if tail.is_empty() {
            Some(v)
        } else {
            v.pointer(tail).cloned()
        }
    }

    /// The raw JSON of the array of records, for the common shapes: the body itself, or a
    /// top-level field (named by a one-step pointer, or the only array when none is given).
    pub(super) fn records_slice(&self, pointer: Option<&str>) -> Option<&'a str> {
        let field = pointer
            .and_then(|p| p.strip_prefix('/'))
            .filter(|k| !k.is_empty() && !k.contains('/'));
        match (&self.top, pointer, field) {
            (Top::Array(_), None | Some(""), _) => std::str::from_utf8(self.body).ok(),
            (Top::Object(m), Some(_), Some(k)) => m
                .get(&k.replace("~1", "/").replace("~0", "~"))
                .map(|r| r.get())
                .filter(|r| r.starts_with('[')),
            (Top::Object(m), None, _) => {
                let mut arrays = m.values().filter(|r| r.get().starts_with('['));
                match (arrays.next(), arrays.next()) {
                    (Some(raw), None) => Some(raw.get()),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Where [`Self::records_slice`] lies in the body, as byte offsets.
    pub(super) fn records_range(&self, pointer: Option<&str>) -> Option<(usize, usize)> {
        let raw = self.records_slice(pointer)?;
        let start = (raw.as_ptr() as usize).checked_sub(self.body.as_ptr() as usize)?;
        (start + raw.len() <= self.body.len()).then_some((start, start + raw.len()))
    }

    /// How many records the body holds, by the rules of [`select_records`] (and with its
    /// refusals).
    pub fn count_records(&self, pointer: Option<&str>) -> Result<usize, BodyProblem> {
        let count = |raw: &serde_json::value::RawValue| {
            serde_json::from_str::<Vec<serde::de::IgnoredAny>>(raw.get())
                .map(|v| v.len())
                .map_err(|e| BodyProblem::Wrong(e.to_string()))
        };
        let field = pointer
            .and_then(|p| p.strip_prefix('/'))
            .filter(|k| !k.is_empty() && !k.contains('/'));
        match (&self.top, pointer, field) {
            (Top::Array(n), None | Some(""), _) => Ok(*n),
            (Top::Object(m), Some(_), Some(k)) => {
                match m.get(&k.replace("~1", "/").replace("~0", "~")) {
                    Some(raw) if raw.get().starts_with('[') => count(raw),
                    _ => self.full_count(pointer),
                }
            }
            (Top::Object(m), None, _) => {
                let mut arrays = m.values().filter(|r| r.get().starts_with('['));
                match (arrays.next(), arrays.next()) {
                    (Some(raw), None) => count(raw),
                    _ => self.full_count(pointer),
                }
            }
            _ => self.full_count(pointer),
        }
    }

    /// The rare shapes (records nested deeper, and every refusal with its message).
    pub(super) fn full_count(&self, pointer: Option<&str>) -> Result<usize, BodyProblem> {
        if let Top::Array(n) = &self.top {
            return Ok(*n);
        }
        select_records(&self.whole(), pointer).map(<[Value]>::len)
    }

    /// The last of the records (by the rules of [`select_records`]), for a cursor read from it.
    pub fn last_record(&self, pointer: Option<&str>) -> Option<Value> {
        if let Some(raw) = self.records_slice(pointer) {
            let all: Vec<&serde_json::value::RawValue> = serde_json::from_str(raw).ok()?;
            return serde_json::from_str(all.last()?.get()).ok();
        }
        select_records(&self.whole(), pointer).ok()?.last().cloned()
    }

    /// The whole body as a value (the rare shapes only: it builds every record).
    fn whole(&self) -> Value {
        match &self.top {
            Top::Array(_) => serde_json::from_slice(self.body).unwrap_or(Value::Null),
            Top::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, r)| {
                        (
                            k.clone(),
                            serde_json::from_str(r.get()).unwrap_or(Value::Null),
                        )
                    })
                    .collect(),
            ),
            Top::Other(v) => v.clone(),
        }
    }
}

/// A body serde could not read, described as [`decode`] would.
pub(super) fn json_problem(body: &[u8], e: &serde_json::Error) -> BodyProblem {
    match decode(body) {
        Err(p) => p,
        Ok(_) => BodyProblem::Wrong(format!("the body could not be read: {e}")),
    }
}

/// The records of `body`, owned (by the rules of [`select_records`]).
pub fn take_records(body: Value, pointer: Option<&str>) -> Result<Vec<Value>, BodyProblem> {
    select_records(&body, pointer)?;
    let mut body = body;
    let target = match pointer {
        Some(p) => body.pointer_mut(p),
        None => match &mut body {
            Value::Object(m) => m.values_mut().find(|v| v.is_array()),
            whole => Some(whole),
        },
    };
    Ok(match target.map(Value::take) {
        Some(Value::Array(a)) => a,
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    })
}

/// The array of records in `body`: at `pointer`, or auto-detected (see the module docs).
pub fn select_records<'a>(
    body: &'a Value,
    pointer: Option<&str>,
) -> Result<&'a [Value], BodyProblem> {
    if let Some(p) = pointer {
        return match body.pointer(p) {
            Some(Value::Array(a)) => Ok(a),
            // An object named explicitly is one record (a single-resource endpoint).
            Some(one @ Value::Object(_)) => Ok(std::slice::from_ref(one)),
            Some(other) => Err(BodyProblem::Wrong(format!(
                "`records = {p:?}` points at {} rather than an array of records",
                json_kind(other)
            ))),
            None => Err(BodyProblem::Wrong(format!(
                "the body has nothing at `records = {p:?}`{}",
                describe_fields(body)
            ))),
        };
    }
    match body {
        Value::Array(a) => Ok(a),
        Value::Object(m) => {
            let arrays: Vec<&String> = m
                .iter()
                .filter(|(_, v)| v.is_array())
                .map(|(k, _)| k)
                .collect();
            match arrays.as_slice() {
                [one] => Ok(m[one.as_str()].as_array().map_or(&[][..], Vec::as_slice)),
                [] => Err(BodyProblem::Wrong(format!(
                    "the body holds no array of records{}; if they are nested deeper, set `records` to their JSON Pointer",
                    describe_fields(body)
                ))),
                several => Err(BodyProblem::Wrong(format!(
                    "{CONFIG_PROBLEM}the body has several arrays that could be the records ({}); set `records` to one of {}",
                    several
                        .iter()
                        .map(|k| format!("{k:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    several
                        .iter()
                        .map(|k| format!("\"/{}\"", escape_pointer(k)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
        other => Err(BodyProblem::Wrong(format!(
            "the body is {} rather than an array of records or an object holding one",
            json_kind(other)
        ))),
    }
}

pub(super) fn escape_pointer(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

pub(super) fn describe_fields(body: &Value) -> String {
    match body {
        Value::Object(m) => format!(
            " (its top-level fields: {})",
            m.keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!(" (it is {})", json_kind(other)),
    }
}

/// One record as `(column, value)` pairs: nested objects flattened with [`NEST`], arrays as
/// JSON text, a record that is not an object as the column `value`. Two fields that flatten
/// to the same column name are refused.
pub fn flatten(record: Value) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    match record {
        Value::Object(m) => flatten_into("", m, &mut out),
        Value::Array(_) => out.push(("value".into(), Value::String(record.to_string()))),
        scalar => out.push(("value".into(), scalar)),
    }
    if let Some(k) = first_repeated_name(&out) {
        return Err(format!(
            "two fields of a record both become the column {k:?} (a nested field and a field whose name holds {NEST:?})"
        ));
    }
    Ok(out)
}

/// A column name two fields of one record flattened to. Two fields can only meet in one
/// name through the separator, so records without it are not hashed.
pub(super) fn first_repeated_name(pairs: &[(String, Value)]) -> Option<&str> {
    if !pairs.iter().any(|(k, _)| k.contains(NEST)) {
        return None;
    }
    let mut seen = HashSet::with_capacity(pairs.len());
    pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|k| !seen.insert(*k))
}

pub(super) fn flatten_into(prefix: &str, m: Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (k, v) in m {
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}{NEST}{k}")
        };
        match v {
            Value::Object(inner) => flatten_into(&name, inner, out),
            Value::Array(_) => out.push((name, Value::String(v.to_string()))),
            scalar => out.push((name, scalar)),
        }
    }
}

/// A page of records as rows: the columns are the fields this page holds, in first-seen
/// order, each row with NULL where its record lacks a field.
pub fn records_page(records: Vec<Value>) -> Result<Page, String> {
    let flat = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| flatten(r).map_err(|why| format!("record {}: {why}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    pairs_page(flat)
}

/// Flattened records (see [`flatten`]) as a page.
pub(super) fn pairs_page(records: Vec<Vec<(String, Value)>>) -> Result<Page, String> {
    let mut columns: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(records.len());
    for pairs in records {
        // The common case: the same fields in the same order as the columns so far.
        if pairs.len() == columns.len() && pairs.iter().zip(&columns).all(|((k, _), c)| k == c) {
            rows.push(pairs.into_iter().map(|(_, v)| v).collect());
            continue;
        }
        for (k, _) in &pairs {
            if !index.contains_key(k) {
                index.insert(k.clone(), columns.len());
                columns.push(k.clone());
            }
        }
        let mut row = vec![Value::Null; columns.len()];
        for (k, v) in pairs {
            row[index[&k]] = v;
        }
        rows.push(row);
    }
    // Columns are only ever appended: earlier rows get NULL for the later ones.
    for row in &mut rows {
        row.resize(columns.len(), Value::Null);
    }
    Ok(Page {
        columns: Some(columns),
        rows,
        sparse: true,
        ..Page::default()
    })
}

/// A recorded REST snapshot's rows (resume replays pages with this).
pub fn parse_snapshot(body: &[u8], records: Option<&str>) -> Result<Page, String> {
    let range = View::new(body).ok().and_then(|v| v.records_range(records));
    parse_records(body, records, range)
}

/// The page of `body`, whose array of records lies at byte `range` when a [`View`] found it:
/// the common shapes are read straight into rows (see [`RowsReader`]), fields in the API's order;
/// anything else (or anything that fails there) takes the general path with its messages.
pub(super) fn parse_records(
    body: &[u8],
    records: Option<&str>,
    range: Option<(usize, usize)>,
) -> Result<Page, String> {
    if let Some(page) = range
        .and_then(|(a, b)| body.get(a..b))
        .and_then(RowsReader::read)
    {
        return Ok(page);
    }
    let v = decode(body).map_err(BodyProblem::into_reason)?;
    records_page(take_records(v, records).map_err(BodyProblem::into_reason)?)
}
