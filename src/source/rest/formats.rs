//! Pages that are not a JSON array of records, turned into one so every other part of the REST
//! source reads them unchanged: NDJSON (a record per line), CSV (a header row, then a record
//! per row) and records kept as the values of an object keyed by id (`records_from =
//! "values"`, the key kept as the column `_key`).
//!
//! Guarantees: the snapshot is always the body as received; this only builds the array the
//! rows are read from, so replay from a snapshot gives the same rows. Field order is kept
//! (CSV: the header's; NDJSON: each line's; keyed values: by key). A NDJSON line that does not
//! parse is refused naming its line (a last line cut off mid-JSON is retried); a CSV row with
//! another number of fields than the header is refused naming the row. CSV values are text,
//! an empty field is NULL, and a column `types` declares `integer`, `float` or `boolean` is
//! converted (a value that does not convert is kept as text, and the writer names it). A
//! UTF-8 byte order mark before an NDJSON or CSV body is skipped.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::schema::ColType;
use crate::source::BodyProblem;

/// What a REST page's body is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Json,
    Ndjson,
    Csv,
}

/// Where the records are in a JSON body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordsFrom {
    /// An array (or one object) at `records`.
    #[default]
    Array,
    /// The values of an object keyed by id, the key kept as `_key`.
    Values,
}

/// The column a keyed record's key is kept in.
pub const KEY_COLUMN: &str = "_key";

/// The records of `body` as a JSON array (bytes), when the body is not one already: `None`
/// for a JSON body whose records are an array.
pub fn records_array(
    format: BodyFormat,
    from: RecordsFrom,
    body: &[u8],
    records: Option<&str>,
    types: &BTreeMap<String, ColType>,
) -> Result<Option<Vec<u8>>, BodyProblem> {
    // A UTF-8 byte order mark (spreadsheet exports write one) is not part of the first field.
    let text_body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match (format, from) {
        (BodyFormat::Json, RecordsFrom::Array) => Ok(None),
        (BodyFormat::Json, RecordsFrom::Values) => keyed(body, records).map(Some),
        (BodyFormat::Ndjson, _) => ndjson(text_body).map(Some),
        (BodyFormat::Csv, _) => csv(text_body, types).map(Some),
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The raw JSON at a JSON Pointer, each step parsed only as far as it goes.
fn raw_at<'a>(body: &'a str, pointer: &str) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let mut at: &'a RawValue = serde_json::from_str(body)?;
    for key in pointer.split('/').skip(1) {
        let key = key.replace("~1", "/").replace("~0", "~");
        let text = at.get();
        at = if text.starts_with('{') {
            let m: BTreeMap<String, &'a RawValue> = serde_json::from_str(text)?;
            match m.get(&key) {
                Some(v) => v,
                None => return Ok(None),
            }
        } else if text.starts_with('[') {
            let a: Vec<&'a RawValue> = serde_json::from_str(text)?;
            match key.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(v) => v,
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
    }
    Ok(Some(at))
}

/// `{"items": {"a1": {…}, …}}` → `[{"_key": "a1", …}, …]`, keys in order, each record's
/// fields as sent.
fn keyed(body: &[u8], records: Option<&str>) -> Result<Vec<u8>, BodyProblem> {
    let whole = super::records::decode(body)?;
    let at = records.unwrap_or("");
    let text = std::str::from_utf8(body).map_err(|e| BodyProblem::Wrong(e.to_string()))?;
    let found = raw_at(text, at).map_err(|e| BodyProblem::Wrong(e.to_string()))?;
    let Some(raw) = found else {
        return Err(BodyProblem::Wrong(format!(
            "the body has nothing at `records = {at:?}`{}",
            super::records::describe_fields(&whole)
        )));
    };
    if !raw.get().starts_with('{') {
        return Err(BodyProblem::Wrong(format!(
            "records_from = \"values\" needs an object keyed by id at `records = {at:?}`, but it is {}",
            whole
                .pointer(at)
                .map_or("nothing", crate::source::json_kind)
        )));
    }
    let obj: BTreeMap<String, &RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| BodyProblem::Wrong(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + obj.len() * 12);
    out.push(b'[');
    for (i, (k, v)) in obj.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(KEY_COLUMN.as_bytes());
        out.extend_from_slice(b"\":");
        push_json_str(&mut out, k);
        let text = v.get();
        if text.starts_with('{') {
            let inner = &text[1..text.len() - 1];
            if !inner.trim().is_empty() {
                out.push(b',');
                out.extend_from_slice(inner.as_bytes());
            }
        } else {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(text.as_bytes());
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(out)
}

/// One JSON value per non-empty line → an array of them, each line as received.
fn ndjson(body: &[u8]) -> Result<Vec<u8>, BodyProblem> {
    let text = std::str::from_utf8(body)
        .map_err(|e| BodyProblem::Wrong(format!("the NDJSON body is not UTF-8 ({e})")))?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(b'[');
    let mut first = true;
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = serde_json::from_str::<&RawValue>(line) {
            let last = i + 1 == lines.len() && !text.ends_with('\n');
            return Err(if e.is_eof() && last {
                BodyProblem::Truncated(format!(
                    "the NDJSON body ends early, in line {} ({e})",
                    i + 1
                ))
            } else {
                BodyProblem::Wrong(format!("NDJSON line {} is not JSON ({e})", i + 1))
            });
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(line.as_bytes());
    }
    out.push(b']');
    Ok(out)
}

/// A CSV value under its declared type.
pub fn csv_value(text: &str, ty: Option<&ColType>) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    let converted = match ty {
        Some(ColType::Integer) => text.trim().parse::<i64>().ok().map(Value::from),
        Some(ColType::Float) => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Some(ColType::Boolean) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" => Some(Value::Bool(true)),
            "false" | "0" | "f" | "no" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    converted.unwrap_or_else(|| Value::String(text.to_string()))
}

/// A header row, then one record per row → an array of objects in the header's order.
fn csv(body: &[u8], types: &BTreeMap<String, ColType>) -> Result<Vec<u8>, BodyProblem> {
    let mut r = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body);
    let headers: Vec<String> = r
        .headers()
        .map_err(|e| BodyProblem::Wrong(format!("the CSV header row is unreadable ({e})")))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = headers.iter().find(|h| !seen.insert(h.as_str())) {
        return Err(BodyProblem::Wrong(format!(
            "the CSV header names the column {dup:?} twice"
        )));
    }
    let keys: Vec<Vec<u8>> = headers
        .iter()
        .map(|h| {
            let mut k = Vec::new();
            push_json_str(&mut k, h);
            k
        })
        .collect();
    let tys: Vec<Option<&ColType>> = headers.iter().map(|h| types.get(h)).collect();
    let mut out = Vec::with_capacity(body.len() * 2);
    out.push(b'[');
    for (i, row) in r.records().enumerate() {
        let row =
            row.map_err(|e| BodyProblem::Wrong(format!("CSV row {} is unreadable ({e})", i + 2)))?;
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        for (j, field) in row.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&keys[j]);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, &csv_value(field, tys[j]));
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(format: BodyFormat, from: RecordsFrom, body: &str, p: Option<&str>) -> Value {
        let mut types = BTreeMap::new();
        types.insert("n".to_string(), ColType::Integer);
        types.insert("ok".to_string(), ColType::Boolean);
        let b = records_array(format, from, body.as_bytes(), p, &types)
            .ok()
            .unwrap()
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn ndjson_csv_and_keyed_values_become_arrays() {
        // A byte order mark is not part of the first column's name.
        assert_eq!(
            array(BodyFormat::Csv, RecordsFrom::Array, "\u{feff}n\n5\n", None),
            serde_json::json!([{"n": 5}])
        );
        let v = array(
            BodyFormat::Ndjson,
            RecordsFrom::Array,
            "{\"a\":1}\n\n{\"a\":2,\"b\":\"x\"}\n",
            None,
        );
        assert_eq!(v, serde_json::json!([{"a": 1}, {"a": 2, "b": "x"}]));
        let v = array(
            BodyFormat::Csv,
            RecordsFrom::Array,
            "n,name,ok\n1,\"a, b\",true\n,\"say \"\"hi\"\"\",0\n",
            None,
        );
        assert_eq!(
            v,
            serde_json::json!([{"n": 1, "name": "a, b", "ok": true}, {"n": null, "name": "say \"hi\"", "ok": false}])
        );
        let v = array(
            BodyFormat::Json,
            RecordsFrom::Values,
            r#"{"items": {"a1": {"x": 1}, "b2": {}, "c3": 7}, "next": null}"#,
            Some("/items"),
        );
        assert_eq!(
            v,
            serde_json::json!([{"_key": "a1", "x": 1}, {"_key": "b2"}, {"_key": "c3", "value": 7}])
        );
    }

    #[test]
    fn broken_lines_and_rows_are_named() {
        let t = BTreeMap::new();
        let cut = records_array(
            BodyFormat::Ndjson,
            RecordsFrom::Array,
            b"{\"a\":1}\n{\"a\":",
            None,
            &t,
        );
        assert!(matches!(cut, Err(BodyProblem::Truncated(_))));
        let bad = records_array(
            BodyFormat::Ndjson,
            RecordsFrom::Array,
            b"{\"a\":1}\nnope\n",
            None,
            &t,
        );
        assert!(matches!(bad, Err(BodyProblem::Wrong(w)) if w.contains("line 2")));
        let ragged = records_array(
            BodyFormat::Csv,
            RecordsFrom::Array,
            b"a,b\n1,2\n3\n",
            None,
            &t,
        );
        assert!(matches!(ragged, Err(BodyProblem::Wrong(w)) if w.contains("row 3")));
        let not_obj = records_array(
            BodyFormat::Json,
            RecordsFrom::Values,
            br#"{"items": [1]}"#,
            Some("/items"),
            &t,
        );
        assert!(matches!(not_obj, Err(BodyProblem::Wrong(w)) if w.contains("keyed by id")));
    }
}
