//! The REST source: any paginated JSON API (README §"REST sources").
//!
//! Guarantees:
//! - A page's cursor is the absolute URL of the next page, whatever the paginator (`link`,
//!   `next_url`, `cursor`, `offset`, `page_number`, `none`, or `auto`, which picks one on the
//!   first page and logs and records the choice). So resume continues from the recorded URL,
//!   and one guard stops a URL, cursor, offset or page number that repeats. `max_pages` caps a
//!   table (the run says so).
//! - Records come from a JSON Pointer (RFC 6901; an object there is one record) or, when none
//!   is given, from the body itself if it is an array, else from its only array-valued
//!   top-level field. Several candidates is
//!   a configuration error naming them; a body without the array is refused naming the URL and
//!   what came back; a body cut off is retried.
//! - Nested objects become columns joined with `__` (`owner__login`); arrays become JSON text;
//!   integers stay exact (`i64`). A field that first appears after the first page stops the run
//!   naming the field and the `types` entry that declares it: no field is dropped silently.
//! - A query-parameter API key is added by the HTTP client to each request and stripped from
//!   any URL the server sends back, so it is never part of a recorded URL.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};
use url::Url;

use crate::config::TableSettings;
use crate::error::UsageError;
use crate::http::Fetched;
use crate::planner::TablePlan;
use crate::schema::{ColType, ColumnPlan};
use crate::source::{BodyProblem, Page, Pager, Scanned, json_kind};

/// Separator between the names of nested fields in a column name.
pub const NEST: &str = "__";

/// A marker at the start of a refusal that is the configuration's to fix (exit 2).
pub const CONFIG_PROBLEM: &str = "configuration: ";

/// How a REST table pages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Paginate {
    /// Decide on the first page: a `Link` header, else a next URL or a cursor in the usual
    /// places of the body, else one page.
    Auto,
    /// RFC 8288 `Link: <…>; rel="next"`.
    Link,
    /// A JSON Pointer to the next page's URL (absolute or relative).
    NextUrl { pointer: String },
    /// A JSON Pointer to a token, sent back as query parameter `param`.
    Cursor { pointer: String, param: String },
    /// `offset_param`/`limit_param`; stops on a short or empty page, or at the total.
    Offset {
        offset_param: String,
        limit_param: String,
        limit: u64,
        start: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<Total>,
    },
    /// Page `param` from `start`; stops on an empty page or after the total number of pages.
    PageNumber {
        param: String,
        start: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_pages: Option<Total>,
    },
    /// One request.
    None,
}

/// Where a total (of records, or of pages) is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Total {
    Pointer(String),
    Header(String),
}

impl Paginate {
    pub fn name(&self) -> &'static str {
        match self {
            Paginate::Auto => "auto",
            Paginate::Link => "link",
            Paginate::NextUrl { .. } => "next_url",
            Paginate::Cursor { .. } => "cursor",
            Paginate::Offset { .. } => "offset",
            Paginate::PageNumber { .. } => "page_number",
            Paginate::None => "none",
        }
    }
}

/// What a REST table asks of its server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestTable {
    /// Path under the source URL (`/posts`).
    pub path: String,
    /// JSON Pointer to the records (auto-detected when `None`).
    pub records: Option<String>,
    pub paginate: Paginate,
    pub max_pages: Option<u64>,
    pub primary_key: Vec<String>,
}

/// The first page's URL: the source URL's path joined with the table's path, then the
/// table's parameters and the paginator's starting position.
pub fn first_url(base: &Url, rest: &RestTable, params: &[(String, String)]) -> Url {
    first_url_at(base, &rest.path, rest, params)
}

/// [`first_url`] with another path (a row-driven table's path, filled from an input row,
/// its values already percent-encoded).
pub fn first_url_at(
    base: &Url,
    table_path: &str,
    rest: &RestTable,
    params: &[(String, String)],
) -> Url {
    let mut url = base.clone();
    let path = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        table_path.trim_start_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in base.query_pairs() {
            q.append_pair(&k, &v);
        }
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    match &rest.paginate {
        Paginate::Offset {
            offset_param,
            limit_param,
            limit,
            start,
            ..
        } => {
            set_param(&mut url, offset_param, &start.to_string());
            set_param(&mut url, limit_param, &limit.to_string());
        }
        Paginate::PageNumber { param, start, .. } => {
            set_param(&mut url, param, &start.to_string());
        }
        _ => {}
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

/// `url` with query parameter `name` set to `value` (replacing every earlier value).
pub fn set_param(url: &mut Url, name: &str, value: &str) {
    remove_param(url, name);
    url.query_pairs_mut().append_pair(name, value);
}

/// `url` without query parameter `name` (and without a `?` when nothing is left).
fn remove_param(url: &mut Url, name: &str) {
    if !url.query_pairs().any(|(k, _)| k == name) {
        return;
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(&kept);
    }
}

fn param_value(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .last()
}

/// The links of one or more RFC 8288 `Link` header values: `(target, rels)` in order.
/// Handles several links per header, quoted and unquoted parameters, commas inside quotes
/// and `rel` values that list several relation types.
pub fn parse_link_header(value: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Find `<target>`.
        let Some(lt) = value[i..].find('<').map(|p| p + i) else {
            break;
        };
        let Some(gt) = value[lt..].find('>').map(|p| p + lt) else {
            break;
        };
        let target = value[lt + 1..gt].trim().to_string();
        i = gt + 1;
        let mut rels = Vec::new();
        // Parameters up to the next comma outside quotes.
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            if b[i] == b',' {
                i += 1;
                break;
            }
            if b[i] != b';' {
                // Garbage: skip to the next link.
                match value[i..].find(',') {
                    Some(p) => i += p + 1,
                    None => i = b.len(),
                }
                break;
            }
            i += 1;
            let name_start = i;
            while i < b.len() && !matches!(b[i], b'=' | b';' | b',') {
                i += 1;
            }
            let name = value[name_start..i].trim().to_ascii_lowercase();
            let mut val = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'"' {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' && i + 1 < b.len() {
                            i += 1;
                        }
                        val.push(b[i] as char);
                        i += 1;
                    }
                    i += 1; // closing quote
                } else {
                    let s = i;
                    while i < b.len() && !matches!(b[i], b';' | b',') {
                        i += 1;
                    }
                    val = value[s..i].trim().to_string();
                }
            }
            if name == "rel" {
                rels.extend(val.split_whitespace().map(|r| r.to_ascii_lowercase()));
            }
        }
        out.push((target, rels));
    }
    out
}

/// The `rel="next"` target of the response's `Link` headers, resolved against `url`.
fn link_next(headers: &HeaderMap, url: &Url) -> Result<Option<Url>, String> {
    for v in headers.get_all(reqwest::header::LINK) {
        let Ok(v) = v.to_str() else { continue };
        for (target, rels) in parse_link_header(v) {
            if rels.iter().any(|r| r == "next") {
                return url
                    .join(&target)
                    .map(Some)
                    .map_err(|e| format!("the Link header's next URL {target:?} is invalid: {e}"));
            }
        }
    }
    Ok(None)
}

fn has_links(headers: &HeaderMap) -> bool {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| !parse_link_header(s).is_empty()))
}

/// Where `auto` looks for a next URL, in order.
const NEXT_URL_POINTERS: [&str; 8] = [
    "/next",
    "/next_url",
    "/links/next",
    "/links/next/href",
    "/_links/next/href",
    "/paging/next",
    "/pagination/next",
    "/meta/next",
];
/// Where `auto` looks for a cursor token (sent back as `cursor`), in order.
const CURSOR_POINTERS: [&str; 5] = [
    "/next_cursor",
    "/nextCursor",
    "/meta/next_cursor",
    "/pagination/next_cursor",
    "/response_metadata/next_cursor",
];

fn looks_like_url(s: &str) -> bool {
    s.starts_with("http://")
        || s.starts_with("https://")
        || s.starts_with('/')
        || s.starts_with('?')
}

/// A JSON Pointer lookup into a response body.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<Value>;

/// `auto`: the paginator the first page's response shows.
pub fn detect(headers: &HeaderMap, body: Lookup<'_>) -> Paginate {
    if has_links(headers) {
        return Paginate::Link;
    }
    for p in NEXT_URL_POINTERS {
        if body(p)
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(looks_like_url)
        {
            return Paginate::NextUrl {
                pointer: p.to_string(),
            };
        }
    }
    for p in CURSOR_POINTERS {
        if token(body(p).as_ref()).ok().flatten().is_some() {
            return Paginate::Cursor {
                pointer: p.to_string(),
                param: "cursor".into(),
            };
        }
    }
    Paginate::None
}

/// A cursor token: a non-empty string or a number; `None` for null, absent, empty or false.
fn token(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("is {} rather than a string", json_kind(other))),
    }
}

fn total(t: &Total, headers: &HeaderMap, body: Lookup<'_>) -> Result<Option<u64>, String> {
    match t {
        Total::Header(h) => match headers.get(h.as_str()) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map(Some)
                .ok_or_else(|| format!("the {h} header {v:?} is not a count")),
        },
        Total::Pointer(p) => match body(p) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .map(Some)
                .ok_or_else(|| format!("the total at {p} is {v} rather than a count")),
        },
    }
}

/// The URL of the page after the one fetched from `url`, by paginator `p` (already resolved,
/// never `Auto`), from its response headers, body and number of records.
pub fn next_url(
    p: &Paginate,
    url: &Url,
    headers: &HeaderMap,
    body: Lookup<'_>,
    records: usize,
) -> Result<Option<Url>, String> {
    let n = records as u64;
    match p {
        Paginate::Auto | Paginate::None => Ok(None),
        Paginate::Link => link_next(headers, url),
        Paginate::NextUrl { pointer } => match body(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => url
                .join(&s)
                .map(Some)
                .map_err(|e| format!("the next URL {s:?} at {pointer} is invalid: {e}")),
            Some(other) => Err(format!(
                "the next URL at {pointer} is {} rather than a string",
                json_kind(&other)
            )),
        },
        Paginate::Cursor { pointer, param } => {
            let tok = token(body(pointer).as_ref())
                .map_err(|why| format!("the cursor at {pointer} {why}"))?;
            Ok(tok.map(|t| {
                let mut u = url.clone();
                set_param(&mut u, param, &t);
                u
            }))
        }
        Paginate::Offset {
            offset_param,
            limit,
            start,
            total: t,
            ..
        } => {
            let at = param_value(url, offset_param)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(*start);
            let after = at + n;
            let whole = match t {
                Some(t) => total(t, headers, body)?,
                None => None,
            };
            if n == 0 || n < *limit || whole.is_some_and(|w| after >= w) {
                return Ok(None);
            }
            let mut u = url.clone();
            set_param(&mut u, offset_param, &after.to_string());
            Ok(Some(u))
        }
        Paginate::PageNumber {
            param,
            start,
            total_pages,
        } => {
            let at = param_value(url, param)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(*start);
            let pages = match total_pages {
                Some(t) => total(t, headers, body)?,
                None => None,
            };
            // Page numbers from `start`: the last is start + pages - 1.
            if n == 0 || pages.is_some_and(|p| at + 1 >= start + p) {
                return Ok(None);
            }
            let mut u = url.clone();
            set_param(&mut u, param, &(at + 1).to_string());
            Ok(Some(u))
        }
    }
}

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
    body: &'a [u8],
    top: Top<'a>,
}

enum Top<'a> {
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
    fn records_slice(&self, pointer: Option<&str>) -> Option<&'a str> {
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
    fn records_range(&self, pointer: Option<&str>) -> Option<(usize, usize)> {
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
    fn full_count(&self, pointer: Option<&str>) -> Result<usize, BodyProblem> {
        let whole = match &self.top {
            Top::Array(n) => return Ok(*n),
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
        };
        select_records(&whole, pointer).map(<[Value]>::len)
    }
}

/// A body serde could not read, described as [`decode`] would.
fn json_problem(body: &[u8], e: &serde_json::Error) -> BodyProblem {
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

fn escape_pointer(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn describe_fields(body: &Value) -> String {
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
fn first_repeated_name(pairs: &[(String, Value)]) -> Option<&str> {
    if !pairs.iter().any(|(k, _)| k.contains(NEST)) {
        return None;
    }
    let mut seen = HashSet::with_capacity(pairs.len());
    pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|k| !seen.insert(*k))
}

fn flatten_into(prefix: &str, m: Map<String, Value>, out: &mut Vec<(String, Value)>) {
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
fn pairs_page(records: Vec<Vec<(String, Value)>>) -> Result<Page, String> {
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
fn parse_records(
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

/// Records read straight from JSON into rows, as [`records_page`] builds them from
/// [`flatten`]ed records: columns in first-seen order (the API's field order), nested objects
/// flattened with [`NEST`], arrays as their JSON text, NULL where a record lacks a field.
/// Field names are matched against the columns as bytes, without being copied (a name other
/// than the expected column's is checked as UTF-8 before it is looked up), so a page costs
/// one allocation per row (and one per text value). Anything else fails, and the page takes the general path
/// with its messages: a record that is not an object, two fields of one record that name one
/// column, or a name that is not UTF-8.
#[derive(Default)]
struct RowsReader {
    columns: Vec<String>,
    index: HashMap<String, usize>,
    rows: Vec<Vec<Value>>,
    /// Per column, the number (from 1) of the last record that set it: a second value from
    /// the same record is a name collision.
    set_by: Vec<usize>,
    /// The current field's column name, after the names of the objects it is nested in.
    name: Vec<u8>,
    /// The column the next field probably has: the one after the previous field's.
    hint: usize,
}

impl RowsReader {
    /// The page of `raw`, a JSON array of records; `None` where the general path must decide.
    fn read(raw: &[u8]) -> Option<Page> {
        let mut reader = RowsReader::default();
        let mut de = serde_json::Deserializer::from_slice(raw);
        serde::de::DeserializeSeed::deserialize(&mut reader, &mut de).ok()?;
        de.end().ok()?;
        let width = reader.columns.len();
        for row in &mut reader.rows {
            row.resize(width, Value::Null);
        }
        Some(Page {
            columns: Some(reader.columns),
            rows: reader.rows,
            sparse: true,
            ..Page::default()
        })
    }

    /// The column named `self.name`, added if new; `None` if the name is not UTF-8.
    fn column(&mut self) -> Option<usize> {
        let col = match self.columns.get(self.hint) {
            Some(c) if c.as_bytes() == self.name => self.hint,
            _ => {
                let name = std::str::from_utf8(&self.name).ok()?;
                match self.index.get(name) {
                    Some(&i) => i,
                    None => {
                        self.index.insert(name.to_string(), self.columns.len());
                        self.columns.push(name.to_string());
                        self.set_by.push(0);
                        self.columns.len() - 1
                    }
                }
            }
        };
        self.hint = col + 1;
        Some(col)
    }

    /// Put `v` in the current record's column `self.name`; `false` if the record has one
    /// (or the name is not UTF-8).
    fn set(&mut self, v: Value) -> bool {
        let Some(col) = self.column() else {
            return false;
        };
        let record = self.rows.len();
        let Some(row) = self.rows.last_mut() else {
            return false;
        };
        if self.set_by[col] == record {
            return false;
        }
        self.set_by[col] = record;
        if row.len() <= col {
            row.resize(col + 1, Value::Null);
        }
        row[col] = v;
        true
    }

    /// The fields of an object whose own name is `self.name[..prefix]` (top level: 0).
    fn fields<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        prefix: usize,
        mut map: A,
    ) -> Result<(), A::Error> {
        while map.next_key_seed(FieldName { r: self, prefix })?.is_some() {
            map.next_value_seed(FieldValue(self))?;
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut RowsReader {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut RowsReader {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Record(&mut *self))?.is_some() {}
        Ok(())
    }
}

/// One record of a [`RowsReader`]: a new row.
struct Record<'r>(&'r mut RowsReader);

impl<'de> serde::de::DeserializeSeed<'de> for Record<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Record<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let r = self.0;
        r.rows.push(vec![Value::Null; r.columns.len()]);
        r.hint = 0;
        r.fields(0, map)
    }
}

/// A field's name: written to `name` after its object's name (and [`NEST`]).
struct FieldName<'r> {
    r: &'r mut RowsReader,
    prefix: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldName<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldName<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_bytes<E: serde::de::Error>(self, k: &[u8]) -> Result<(), E> {
        let name = &mut self.r.name;
        name.truncate(self.prefix);
        if self.prefix > 0 {
            name.extend_from_slice(NEST.as_bytes());
        }
        name.extend_from_slice(k);
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<(), E> {
        self.visit_bytes(k.as_bytes())
    }
}

/// A field's value: a scalar goes to the field's column, an object's fields to columns under
/// the field's name, an array to the field's column as its JSON text.
struct FieldValue<'r>(&'r mut RowsReader);

impl FieldValue<'_> {
    fn put<E: serde::de::Error>(self, v: Value) -> Result<(), E> {
        if self.0.set(v) {
            Ok(())
        } else {
            Err(E::custom("two fields of a record name one column"))
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldValue<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldValue<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.put(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.put(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.put(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.put(Value::from(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.put(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.put(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.put(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.put(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let v = <Value as serde::Deserialize>::deserialize(
            serde::de::value::SeqAccessDeserializer::new(seq),
        )?;
        self.put(Value::String(v.to_string()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let prefix = self.0.name.len();
        self.0.fields(prefix, map)
    }
}

/// One REST table as a [`Pager`].
pub struct RestPager {
    first: Url,
    rest: RestTable,
    /// The paginator in use: `auto` until the first page decides.
    resolved: Mutex<Paginate>,
    /// The query parameter that carries an API key: never part of a recorded URL.
    secret_param: Option<String>,
    /// The source sends credentials: a next URL on another origin is refused, not followed.
    credentials: bool,
    table: String,
    /// A row-driven request's pager (one per input row).
    per_row: bool,
}

impl RestPager {
    /// `resolved`: the paginator a resumed run recorded (for `auto`).
    pub fn new(
        base: &Url,
        table: &TableSettings,
        params: &[(String, String)],
        rest: &RestTable,
        resolved: Option<Paginate>,
        secret_param: Option<String>,
    ) -> Self {
        Self {
            first: first_url(base, rest, params),
            resolved: Mutex::new(resolved.unwrap_or_else(|| rest.paginate.clone())),
            rest: rest.clone(),
            secret_param,
            credentials: false,
            table: table.output.clone(),
            per_row: false,
        }
    }

    /// A pager whose first page is `first` (a row-driven request's URL).
    pub fn starting_at(
        first: Url,
        output: &str,
        rest: &RestTable,
        resolved: Option<Paginate>,
        secret_param: Option<String>,
    ) -> Self {
        Self {
            first,
            resolved: Mutex::new(resolved.unwrap_or_else(|| rest.paginate.clone())),
            rest: rest.clone(),
            secret_param,
            credentials: false,
            table: output.to_string(),
            per_row: true,
        }
    }

    /// Refuse (exit 1) a server-sent next URL on another origin than the page it came from,
    /// when the source sends credentials: they would go with it.
    pub fn carrying_credentials(mut self, credentials: bool) -> Self {
        self.credentials = credentials;
        self
    }

    fn paginator(&self) -> Paginate {
        self.resolved
            .lock()
            .map(|p| p.clone())
            .unwrap_or(Paginate::None)
    }
}

impl Pager for RestPager {
    fn url(&self, page_no: u64, cursor: Option<&str>) -> anyhow::Result<Url> {
        match cursor {
            None if page_no == 1 => Ok(self.first.clone()),
            None => anyhow::bail!("page {page_no} of {:?} has no URL to fetch", self.table),
            Some(c) => Url::parse(c).map_err(|e| {
                anyhow::anyhow!(
                    "the recorded next URL {c:?} is not a URL ({e}); rerun with --restart"
                )
            }),
        }
    }

    fn scan(
        &self,
        page_no: u64,
        url: &Url,
        fetched: &Fetched,
        _known: Option<&[String]>,
    ) -> Result<Scanned, BodyProblem> {
        let view = View::new(&fetched.body)?;
        let pointer = self.rest.records.as_deref();
        // Where the records are, for the common shapes (no pass over them).
        let range = view.records_range(pointer);
        let lookup = |ptr: &str| view.pointer(ptr);
        let mut p = self.paginator();
        if p == Paginate::Auto {
            p = detect(&fetched.headers, &lookup);
            let note = match &p {
                Paginate::None => format!(
                    "{}: paginate = \"auto\" found no Link header, next URL or cursor on the first page: taking one page (set `paginate` if the API pages differently)",
                    self.table
                ),
                other => format!(
                    "{}: paginate = \"auto\" chose {}",
                    self.table,
                    serde_json::to_string(other).unwrap_or_default()
                ),
            };
            if self.per_row {
                // One pager per input row: the choice is in every batch entry, not the log.
                tracing::debug!("{note}");
            } else if p == Paginate::None {
                tracing::warn!("{note}");
            } else {
                tracing::info!("{note}");
            }
            if let Ok(mut r) = self.resolved.lock() {
                *r = p.clone();
            }
        }
        // Counting the records is a pass over them: only where the paginator needs the count,
        // or the shape is unusual (where it also refuses a body without its records).
        let n = if range.is_none()
            || matches!(p, Paginate::Offset { .. } | Paginate::PageNumber { .. })
        {
            view.count_records(pointer)?
        } else {
            0
        };
        let mut next =
            next_url(&p, url, &fetched.headers, &lookup, n).map_err(BodyProblem::Wrong)?;
        if let (Some(u), Some(secret)) = (next.as_mut(), &self.secret_param) {
            remove_param(u, secret);
        }
        if let Some(u) = &next
            && self.credentials
            && !crate::http::same_origin(url, u)
        {
            return Err(BodyProblem::Wrong(format!(
                "its next page is on another origin ({}): {}",
                crate::http::display_url(u),
                crate::http::left_origin_advice(url, u)
            )));
        }
        if let Some(max) = self.rest.max_pages
            && page_no >= max
            && next.is_some()
        {
            tracing::warn!(
                "{}: stopping after max_pages = {max}; the server has more pages",
                self.table
            );
            next = None;
        }
        let count = fetched
            .headers
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        let pointer = self.rest.records.clone();
        let body = fetched.body.clone();
        let next = next.map(|u| u.to_string());
        let cursor = next.clone();
        Ok(Scanned {
            next,
            columns: None,
            paging: Some(json!(p)),
            work: Box::new(move || {
                let mut page = parse_records(&body, pointer.as_deref(), range)?;
                page.count = count;
                page.next = cursor;
                Ok(page)
            }),
        })
    }

    fn repeated(&self, cursor: &str, page_no: u64) -> String {
        format!(
            "table {:?}: the server led back to {} after page {page_no}, a page already fetched; following it would loop forever (check the paginator settings, or cap the table with max_pages)",
            self.table,
            crate::redact::redact(cursor)
        )
    }
}

/// A REST table's side of the source seam ([`crate::source::TableSource`]).
pub struct RestSource {
    base: Url,
    table: TableSettings,
    rest: RestTable,
    /// The query parameter that carries an API key (stripped from server-sent URLs).
    secret_param: Option<String>,
    /// The source sends credentials (see [`RestPager::carrying_credentials`]).
    credentials: bool,
}

impl RestSource {
    pub fn new(source: &crate::config::SourceSettings, table: &TableSettings) -> Option<Self> {
        Some(Self {
            base: source.base.clone(),
            rest: table.rest.clone()?,
            table: table.clone(),
            secret_param: source.secret_param(),
            credentials: source.sends_credentials(),
        })
    }

    pub fn plan(&self, first: &Page) -> anyhow::Result<TablePlan> {
        plan_table(&self.table, &self.rest, first)
    }

    /// A cursor for the table; `paging`: the paginator a resumed run recorded.
    pub fn pager(&self, params: &[(String, String)], paging: Option<&Value>) -> RestPager {
        let resolved = paging.and_then(|p| serde_json::from_value(p.clone()).ok());
        RestPager::new(
            &self.base,
            &self.table,
            params,
            &self.rest,
            resolved,
            self.secret_param.clone(),
        )
        .carrying_credentials(self.credentials)
    }

    pub fn parse_snapshot(&self, body: &[u8]) -> Result<Page, String> {
        parse_snapshot(body, self.rest.records.as_deref())
    }

    /// Incremental: `{watermark}` in a parameter value becomes the lower bound (see
    /// [`crate::watermark::Mark::param_text`]); without a bound (first run, no `initial`)
    /// such parameters are left out and every record is taken. Without such a parameter the
    /// API cannot filter: every page is read, and the tracker writes only rows at or past
    /// the bound.
    pub fn watermark_params(
        &self,
        params: &mut Vec<(String, String)>,
        lower: Option<&crate::watermark::Mark>,
        wm: &crate::config::WatermarkSettings,
    ) {
        const SLOT: &str = "{watermark}";
        let out = &self.table.output;
        let slotted = params.iter().any(|(_, v)| v.contains(SLOT));
        match lower {
            Some(l) => {
                let text = l.param_text(wm.format.as_deref());
                if slotted {
                    tracing::info!(
                        "{out}: asking the API for records with {} >= {text:?}",
                        wm.column
                    );
                } else {
                    tracing::warn!(
                        "{out}: no parameter carries {SLOT}, so the API cannot filter: reading every page and writing only records with {} >= {text:?}",
                        wm.column
                    );
                }
                for (_, v) in params.iter_mut() {
                    *v = v.replace(SLOT, &text);
                }
            }
            None => {
                tracing::info!(
                    "{out}: no stored watermark and no initial value: taking every record"
                );
                params.retain(|(_, v)| !v.contains(SLOT));
            }
        }
    }

    /// A fetch failure, naming the REST table's likely causes.
    pub fn fetch_error(&self, page_no: u64, error: anyhow::Error) -> anyhow::Error {
        use crate::http::HttpError;
        let out = &self.table.output;
        if let Some(HttpError::BadBody { url, reason }) = error.downcast_ref::<HttpError>()
            && let Some(why) = reason.strip_prefix(CONFIG_PROBLEM)
        {
            return UsageError::with_hint(
                format!("table {out:?}: {url}: {why}"),
                "set `records` on the table to the JSON Pointer of the array of records",
            )
            .into();
        }
        match error
            .downcast_ref::<HttpError>()
            .and_then(HttpError::status)
        {
            Some(404) if page_no == 1 => UsageError::with_hint(
                format!(
                    "table {out:?}: {} answered 404 Not Found for its first page",
                    crate::http::display_url(&self.base)
                ),
                format!(
                    "check the source `url` and the table's `path` ({:?})",
                    self.rest.path
                ),
            )
            .into(),
            _ => error.context(format!("table {out:?}, page {page_no}")),
        }
    }
}

/// The table's columns and types from its first page: the page's fields in order, then the
/// fields declared in `types` that the page lacks. Per column: the override, else the JSON
/// values on the first page (booleans, integers, numbers with a fraction, text).
pub fn plan_table(
    table: &TableSettings,
    rest: &RestTable,
    first: &Page,
) -> anyhow::Result<TablePlan> {
    let mut columns = first.columns.clone().unwrap_or_default();
    for c in table.types.keys() {
        if !columns.contains(c) {
            columns.push(c.clone());
        }
    }
    for (col, what) in table
        .partition_by
        .iter()
        .map(|c| (c, "partition_by"))
        .chain(rest.primary_key.iter().map(|c| (c, "primary_key")))
    {
        if !columns.contains(col) {
            return Err(UsageError::with_hint(
                format!(
                    "{what} names field {col:?}, which the first page of {:?} does not hold",
                    table.output
                ),
                format!(
                    "its fields are: {} (nested fields are joined with {NEST:?}); or declare it in `types`",
                    columns.join(", ")
                ),
            )
            .into());
        }
    }
    let mut plans = Vec::with_capacity(columns.len());
    for (idx, name) in columns.iter().enumerate() {
        let mut seen = BTreeMap::new();
        for r in &first.rows {
            let kind = match r.get(idx) {
                Some(Value::Bool(_)) => "boolean",
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "integer",
                Some(Value::Number(_)) => "float",
                Some(Value::String(_)) => "text",
                _ => continue,
            };
            *seen.entry(kind).or_insert(0u64) += 1;
        }
        let plan = |ty, reason: &str| ColumnPlan {
            name: name.clone(),
            ty,
            reason: reason.to_string(),
            numbers_as_text: false,
        };
        let p = if let Some(ty) = table.types.get(name) {
            let mut p = plan(*ty, "override");
            p.numbers_as_text = *ty == ColType::Text;
            p
        } else {
            let has = |k: &str| seen.contains_key(k);
            let numeric = has("integer") || has("float");
            if has("text") && (numeric || has("boolean")) || has("boolean") && numeric {
                return Err(UsageError::with_hint(
                    format!(
                        "{}: field {name:?} holds values of several JSON types on the first page ({})",
                        table.output,
                        seen.keys().copied().collect::<Vec<_>>().join(", ")
                    ),
                    format!("choose how to keep it with `types = {{ {name} = \"text\" }}` (values are written as their JSON text)"),
                )
                .into());
            }
            if has("boolean") {
                plan(ColType::Boolean, "booleans on the first page")
            } else if has("float") {
                plan(ColType::Float, "numbers on the first page")
            } else if has("integer") {
                plan(ColType::Integer, "integers on the first page")
            } else if has("text") {
                plan(ColType::Text, "text on the first page")
            } else {
                plan(ColType::Text, "only nulls on the first page")
            }
        };
        plans.push(p);
    }
    Ok(TablePlan {
        columns: plans,
        is_view: false,
        count: first.count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, LINK};

    fn nx(
        p: &Paginate,
        u: &Url,
        h: &HeaderMap,
        body: &Value,
        n: usize,
    ) -> Result<Option<Url>, String> {
        next_url(p, u, h, &|q: &str| body.pointer(q).cloned(), n)
    }

    fn dt(h: &HeaderMap, body: &Value) -> Paginate {
        detect(h, &|q: &str| body.pointer(q).cloned())
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn link_headers_parse_every_form() {
        let links = parse_link_header(
            r#"<http://h/p?_page=1>; rel="first", <http://h/p?_page=3>; rel="next", </p?x=1,2>; title="a, b"; rel=last"#,
        );
        assert_eq!(links.len(), 3);
        assert_eq!(links[1], ("http://h/p?_page=3".into(), vec!["next".into()]));
        assert_eq!(links[2], ("/p?x=1,2".into(), vec!["last".into()]));
        let several = parse_link_header(r#"<a>; rel="prev next""#);
        assert_eq!(several[0].1, vec!["prev", "next"]);
        // Relative targets resolve against the request URL; two Link headers are both read.
        let h = headers(&[
            ("link", r#"<?page=1>; rel="prev""#),
            ("link", "<?page=3>; rel=next"),
        ]);
        let next = link_next(&h, &url("http://h/api/items?page=2")).unwrap();
        assert_eq!(next.unwrap().as_str(), "http://h/api/items?page=3");
        assert_eq!(
            link_next(&HeaderMap::new(), &url("http://h/")).unwrap(),
            None
        );
        let _ = LINK;
    }

    #[test]
    fn next_url_and_cursor_stop_on_null_absent_or_empty() {
        let u = url("http://h/v1/items?limit=2");
        let p = Paginate::NextUrl {
            pointer: "/links/next".into(),
        };
        let h = HeaderMap::new();
        let body = json!({"links": {"next": "/v1/items?limit=2&after=5"}});
        assert_eq!(
            nx(&p, &u, &h, &body, 2).unwrap().unwrap().as_str(),
            "http://h/v1/items?limit=2&after=5"
        );
        for end in [
            json!({"links": {"next": null}}),
            json!({}),
            json!({"links": {"next": ""}}),
        ] {
            assert_eq!(nx(&p, &u, &h, &end, 2).unwrap(), None);
        }
        assert!(nx(&p, &u, &h, &json!({"links": {"next": 5}}), 2).is_err());
        let c = Paginate::Cursor {
            pointer: "/meta/cursor".into(),
            param: "after".into(),
        };
        let body = json!({"meta": {"cursor": "abc=="}});
        let n = nx(&c, &u, &h, &body, 2).unwrap().unwrap();
        assert_eq!(param_value(&n, "after").as_deref(), Some("abc=="));
        // The token replaces the previous one rather than adding a second parameter.
        let n2 = nx(&c, &n, &h, &json!({"meta": {"cursor": 7}}), 2)
            .unwrap()
            .unwrap();
        assert_eq!(n2.query_pairs().filter(|(k, _)| k == "after").count(), 1);
        assert_eq!(param_value(&n2, "after").as_deref(), Some("7"));
        assert_eq!(
            nx(&c, &u, &h, &json!({"meta": {"cursor": null}}), 2).unwrap(),
            None
        );
    }

    #[test]
    fn offset_stops_on_short_empty_or_total() {
        let p = Paginate::Offset {
            offset_param: "_start".into(),
            limit_param: "_limit".into(),
            limit: 10,
            start: 0,
            total: Some(Total::Header("X-Total-Count".into())),
        };
        let u = url("http://h/posts?_start=20&_limit=10");
        let none = HeaderMap::new();
        let n = nx(&p, &u, &none, &json!([]), 10).unwrap().unwrap();
        assert_eq!(param_value(&n, "_start").as_deref(), Some("30"));
        assert_eq!(nx(&p, &u, &none, &json!([]), 9).unwrap(), None);
        assert_eq!(nx(&p, &u, &none, &json!([]), 0).unwrap(), None);
        let h = headers(&[("x-total-count", "30")]);
        assert_eq!(nx(&p, &u, &h, &json!([]), 10).unwrap(), None);
        let h = headers(&[("x-total-count", "31")]);
        assert!(nx(&p, &u, &h, &json!([]), 10).unwrap().is_some());
        let bad = headers(&[("x-total-count", "many")]);
        assert!(nx(&p, &u, &bad, &json!([]), 10).is_err());
    }

    #[test]
    fn page_numbers_stop_on_empty_or_total_pages() {
        let p = Paginate::PageNumber {
            param: "page".into(),
            start: 1,
            total_pages: Some(Total::Pointer("/total_pages".into())),
        };
        let u = url("http://h/items?page=2");
        let n = nx(&p, &u, &HeaderMap::new(), &json!({"total_pages": 3}), 5)
            .unwrap()
            .unwrap();
        assert_eq!(param_value(&n, "page").as_deref(), Some("3"));
        let last = url("http://h/items?page=3");
        let body = json!({"total_pages": 3});
        assert_eq!(nx(&p, &last, &HeaderMap::new(), &body, 5).unwrap(), None);
        assert_eq!(nx(&p, &u, &HeaderMap::new(), &json!({}), 0).unwrap(), None);
    }

    #[test]
    fn auto_prefers_link_then_next_url_then_cursor() {
        let body = json!({"next": "/x?page=2", "next_cursor": "c"});
        assert_eq!(
            dt(&headers(&[("link", "<x>; rel=next")]), &body),
            Paginate::Link
        );
        assert_eq!(
            dt(&HeaderMap::new(), &body),
            Paginate::NextUrl {
                pointer: "/next".into()
            }
        );
        // Datasette's `next` is a token, not a URL: not a next URL.
        let body = json!({"next": "3", "meta": {"next_cursor": "c"}});
        assert_eq!(
            dt(&HeaderMap::new(), &body),
            Paginate::Cursor {
                pointer: "/meta/next_cursor".into(),
                param: "cursor".into()
            }
        );
        assert_eq!(dt(&HeaderMap::new(), &json!([1])), Paginate::None);
    }

    /// Records read straight into rows match the general path field for field, and keep
    /// the API's field order.
    #[test]
    fn records_read_straight_match_the_general_path() {
        let bodies = [
            r#"[{"z": 1, "a": {"y": [1, {"b": 2}], "x": null, "e": {}}, "big": 18446744073709551615, "f": 0.1, "s": "é\"", "t": true},
                {"a": {"x": 5}, "new": -9223372036854775808}]"#,
            r#"{"meta": {"n": 2}, "rows": [{"id": 1, "o": {"k": "v"}}, {"id": 2}]}"#,
            // Fields in another order, a column first seen in a later record, a nested field
            // under an empty name, an empty object (no column).
            r#"[{"b": 1, "a": "x"}, {"a": "y", "c": {"d": [1, 2]}, "b": 2}, {"": {"k": 1}, "e": {}}, {}]"#,
            // A name given twice in one record takes the general path.
            r#"[{"a": 1, "a": 2}, {"a": 3}]"#,
            // Escaped names are read as the text they stand for.
            r#"[{"caf\u00e9": 1, "x": {"\u00e9\"": 2}}, {"café": 3}]"#,
        ];
        for body in bodies {
            let fast = parse_snapshot(body.as_bytes(), None).unwrap();
            let slow = records_page(
                take_records(serde_json::from_str(body).unwrap(), None)
                    .ok()
                    .unwrap(),
            )
            .unwrap();
            let by_name = |p: &Page| -> Vec<BTreeMap<String, Value>> {
                p.rows
                    .iter()
                    .map(|r| {
                        p.columns
                            .clone()
                            .unwrap()
                            .into_iter()
                            .zip(r.iter().cloned())
                            .collect()
                    })
                    .collect()
            };
            assert_eq!(by_name(&fast), by_name(&slow), "{body}");
        }
        // The bare arrays are read straight, except the one naming a field twice.
        let straight = |b: &str| RowsReader::read(b.as_bytes()).is_some();
        assert!(straight(bodies[0]) && straight(bodies[2]) && !straight(bodies[3]));
        assert!(straight(bodies[4]));
        // A name that is not UTF-8 is left to the general path (which refuses the body).
        assert!(RowsReader::read(b"[{\"a\xff\": 1}]").is_none());
        assert!(parse_snapshot(b"[{\"a\xff\": 1}]", None).is_err());
        let first = parse_snapshot(bodies[0].as_bytes(), None).unwrap();
        assert_eq!(first.columns.unwrap()[..3], ["z", "a__y", "a__x"]);
        // A name collision is still refused (by the general path).
        assert!(parse_snapshot(br#"[{"a": {"b": 1}, "a__b": 2}]"#, None).is_err());
    }

    /// The cheap view counts what the full parse selects, and refuses what it refuses.
    #[test]
    fn the_view_agrees_with_the_full_parse() {
        let bodies = [
            (r#"[{"a": 1}, {"a": 2}]"#, None),
            (
                r#" {"data": [1, 2, 3], "meta": {"next": "/x?p=2", "n": 3}}"#,
                None,
            ),
            (
                r#"{"data": [1, 2, 3], "meta": {"next": "/x?p=2"}}"#,
                Some("/data"),
            ),
            (r#"{"result": {"items": [1]}}"#, Some("/result/items")),
            (r#"{"result": {"items": [1]}}"#, Some("/result")),
            (r#"{"a~b": [1, 2]}"#, Some("/a~0b")),
        ];
        for (body, pointer) in bodies {
            let full: Value = serde_json::from_str(body).unwrap();
            let view = View::new(body.as_bytes()).ok().unwrap();
            assert_eq!(
                view.count_records(pointer).ok(),
                select_records(&full, pointer).ok().map(<[Value]>::len),
                "{body}"
            );
            for p in ["/meta/next", "/meta", "/data/1", "/nothing"] {
                assert_eq!(view.pointer(p), full.pointer(p).cloned(), "{body} {p}");
            }
        }
        let two = View::new(br#"{"a": [1], "b": []}"#).ok().unwrap();
        let why = two.count_records(None).err().unwrap().into_reason();
        assert!(why.starts_with(CONFIG_PROBLEM), "{why}");
        assert!(matches!(
            View::new(br#"{"a": [1, 2"#),
            Err(BodyProblem::Truncated(_))
        ));
        assert!(matches!(
            View::new(b"<html>nope</html>"),
            Err(BodyProblem::Wrong(w)) if w.contains("HTML")
        ));
    }

    #[test]
    fn records_are_found_or_refused_with_the_candidates() {
        let arr = json!([{"a": 1}]);
        assert_eq!(select_records(&arr, None).ok().unwrap().len(), 1);
        let one = json!({"data": [1, 2], "meta": {"n": 2}});
        assert_eq!(select_records(&one, None).ok().unwrap().len(), 2);
        let two = json!({"data": [1], "errors": []});
        let why = select_records(&two, None).err().unwrap().into_reason();
        assert!(
            why.starts_with(CONFIG_PROBLEM) && why.contains("\"/data\""),
            "{why}"
        );
        let none = json!({"message": "rate limited"});
        let why = select_records(&none, None).err().unwrap().into_reason();
        assert!(why.contains("\"message\""), "{why}");
        let nested = json!({"result": {"items": [1]}});
        assert_eq!(
            select_records(&nested, Some("/result/items"))
                .ok()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            select_records(&nested, Some("/result")).ok().unwrap().len(),
            1
        );
        assert!(select_records(&nested, Some("/result/items/0")).is_err());
    }

    #[test]
    fn records_flatten_with_exact_integers_and_json_arrays() {
        let body: Value = serde_json::from_str(
            r#"[{"id": 9007199254740993, "owner": {"login": "a", "site": {"id": 1}}, "tags": ["x", 1]},
                {"id": 2, "extra": true}]"#,
        )
        .unwrap();
        let page = records_page(body.as_array().unwrap().clone()).unwrap();
        let cols = page.columns.clone().unwrap();
        assert_eq!(
            cols,
            ["id", "owner__login", "owner__site__id", "tags", "extra"]
        );
        assert_eq!(page.rows[0][0].as_i64(), Some(9007199254740993));
        assert_eq!(page.rows[0][3], json!("[\"x\",1]"));
        assert_eq!(page.rows[1][1], Value::Null);
        assert_eq!(page.rows[1][4], json!(true));
        let clash = json!({"a": {"b": 1}, "a__b": 2});
        assert!(flatten(clash).is_err());
    }

    #[test]
    fn first_url_keeps_the_base_path_and_adds_the_start() {
        let rest = RestTable {
            path: "/posts".into(),
            records: None,
            paginate: Paginate::Offset {
                offset_param: "offset".into(),
                limit_param: "limit".into(),
                limit: 50,
                start: 0,
                total: None,
            },
            max_pages: None,
            primary_key: vec![],
        };
        let u = first_url(
            &url("http://h:1/api/v2/"),
            &rest,
            &[("q".into(), "a b".into())],
        );
        assert_eq!(
            u.as_str(),
            "http://h:1/api/v2/posts?q=a+b&offset=0&limit=50"
        );
    }
}
