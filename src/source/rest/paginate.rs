//! Where a REST table's next page is: the paginators (`link`, `next_url`, `cursor`, `offset`,
//! `page_number`, `none`, and `auto`, which picks one from the first page, see [`super::auto`]),
//! the stop conditions any of them may add (`has_more`, `done`, `stop_on_empty`), and the first
//! URL. Every paginator turns one response into the next request (an absolute URL, and for a
//! token sent in the body or a header, the token), without I/O of its own; a flag saying there
//! is more while no next request is found is an error, never an end.

use reqwest::header::HeaderMap;
use serde_json::Value;
use url::Url;

use super::link::link_next;
use crate::source::json_kind;

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
    /// A token read from the body (`pointer`), the last record (`last_record`) or a response
    /// header (`from_header`), sent back as query parameter `param`, at `body_field` (a JSON
    /// Pointer into the request body; the token keeps its JSON type) or in header `to_header`.
    /// Exactly one source and one destination are set (the config checks).
    Cursor {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pointer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_record: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_header: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        param: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body_field: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_header: Option<String>,
    },
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

    /// A cursor read at `pointer` in the body and sent back as query parameter `param`.
    pub fn cursor(pointer: &str, param: &str) -> Self {
        Paginate::Cursor {
            pointer: Some(pointer.into()),
            last_record: None,
            from_header: None,
            param: Some(param.into()),
            body_field: None,
            to_header: None,
        }
    }

    /// A cursor read from the last record at `pointer` and sent back as query parameter
    /// `param` (Stripe's `starting_after`, `since_id` APIs).
    pub fn after_last_record(pointer: &str, param: &str) -> Self {
        Paginate::Cursor {
            pointer: None,
            last_record: Some(pointer.into()),
            from_header: None,
            param: Some(param.into()),
            body_field: None,
            to_header: None,
        }
    }

    /// Where a cursor paginator reads its token (`None` for other kinds).
    pub fn token_from(&self) -> Option<TokenFrom<'_>> {
        let Paginate::Cursor {
            pointer,
            last_record,
            from_header,
            ..
        } = self
        else {
            return None;
        };
        match (pointer, last_record, from_header) {
            (Some(p), _, _) => Some(TokenFrom::Body(p)),
            (_, Some(p), _) => Some(TokenFrom::LastRecord(p)),
            (_, _, Some(h)) => Some(TokenFrom::Header(h)),
            _ => None,
        }
    }

    /// Where a cursor paginator sends its token back (`None` for other kinds).
    pub fn token_to(&self) -> Option<TokenTo<'_>> {
        let Paginate::Cursor {
            param,
            body_field,
            to_header,
            ..
        } = self
        else {
            return None;
        };
        match (param, body_field, to_header) {
            (Some(p), _, _) => Some(TokenTo::Query(p)),
            (_, Some(p), _) => Some(TokenTo::Body(p)),
            (_, _, Some(h)) => Some(TokenTo::Header(h)),
            _ => None,
        }
    }
}

/// Where a cursor token is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFrom<'a> {
    /// A JSON Pointer into the response body.
    Body(&'a str),
    /// A JSON Pointer into the page's last record.
    LastRecord(&'a str),
    /// A response header.
    Header(&'a str),
}

/// Where a cursor token is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTo<'a> {
    /// A query parameter (the token's text).
    Query(&'a str),
    /// A JSON Pointer into the request body (the token's JSON value).
    Body(&'a str),
    /// A request header (the token's text).
    Header(&'a str),
}

/// When to stop besides the paginator's own end, on any kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stops {
    /// Stop when the boolean here is false or absent (`has_more`, `hasMore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<String>,
    /// Stop when the boolean here is true (`done`, `end_of_stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<String>,
    /// Stop on a page without records (default: see [`Paging::stop_on_empty`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_on_empty: Option<bool>,
}

impl Paginate {
    /// Why `parallel` cannot fetch this paginator's pages ahead (`None`: it can): a page's
    /// request must be known without the response before it. `windowed`: the table reads
    /// time windows, which are independent of each other.
    pub fn not_addressable(&self, windowed: bool) -> Option<String> {
        match self {
            Paginate::Offset { .. } | Paginate::PageNumber { .. } => None,
            Paginate::None if windowed => None,
            Paginate::None => Some(
                "it is read in one request (paginate = \"none\"), so there is nothing to fetch ahead"
                    .into(),
            ),
            Paginate::Auto => Some(
                "paginate = \"auto\" decides on the first page, and only offset and page_number paging can be fetched ahead; set `paginate` to the API's offset or page_number paging".into(),
            ),
            other => Some(format!(
                "its {} paginator finds each next page in the previous response, so pages can only be fetched one after another (only offset and page_number paging, or one request per time window, can be fetched ahead)",
                other.name()
            )),
        }
    }

    /// The request after the one at `url` when that page is full, without its response
    /// (offset and page-number paging): `None` for other paginators, or when `total` (records
    /// for offset, pages for page numbers, learned from an earlier page) says it is past the
    /// end.
    pub fn predict_next(&self, url: &Url, total: Option<u64>) -> Option<Url> {
        let mut u = url.clone();
        match self {
            Paginate::Offset {
                offset_param,
                limit,
                start,
                ..
            } => {
                let after = number_at(url, offset_param, *start) + limit;
                if total.is_some_and(|t| after >= t) {
                    return None;
                }
                set_param(&mut u, offset_param, &after.to_string());
            }
            Paginate::PageNumber { param, start, .. } => {
                let at = number_at(url, param, *start);
                if total.is_some_and(|p| at + 1 >= start + p) {
                    return None;
                }
                set_param(&mut u, param, &(at + 1).to_string());
            }
            _ => return None,
        }
        Some(u)
    }

    /// Where this paginator reads its total, if it has one.
    pub fn total_at(&self) -> Option<&Total> {
        match self {
            Paginate::Offset { total, .. } => total.as_ref(),
            Paginate::PageNumber { total_pages, .. } => total_pages.as_ref(),
            _ => None,
        }
    }
}

/// A paginator with its stop conditions: what a page line records as `paging` (the
/// paginator's keys and the stop keys in one object), and what a resumed run reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    pub paginate: Paginate,
    pub stops: Stops,
}

impl Paging {
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.paginate).unwrap_or(Value::Null);
        if let (Value::Object(m), Ok(Value::Object(s))) =
            (&mut v, serde_json::to_value(&self.stops))
        {
            m.extend(s);
        }
        v
    }

    /// A recorded `paging` object (older runs recorded the paginator alone).
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Paging {
            paginate: serde_json::from_value(v.clone()).ok()?,
            stops: serde_json::from_value(v.clone()).unwrap_or_default(),
        })
    }

    /// Whether a page without records ends the table: as set, else yes for `offset`,
    /// `page_number` and a `last_record` cursor (an empty page has no last record), and no
    /// for paginators that follow what the server sends (`link`, `next_url`, other cursors),
    /// which may legitimately pass through an empty page.
    pub fn stop_on_empty(&self) -> bool {
        self.stops.stop_on_empty.unwrap_or(match &self.paginate {
            Paginate::Offset { .. } | Paginate::PageNumber { .. } => true,
            Paginate::Cursor { .. } => {
                matches!(self.paginate.token_from(), Some(TokenFrom::LastRecord(_)))
            }
            _ => false,
        })
    }

    /// Whether the number of records (and the last one) must be known to find the next page.
    pub fn needs_records(&self) -> bool {
        self.stop_on_empty()
            || matches!(
                self.paginate,
                Paginate::Offset { .. } | Paginate::PageNumber { .. } | Paginate::Auto
            )
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
    /// Stop conditions on top of the paginator's own end.
    pub stops: Stops,
    /// GET, or POST for a search that pages with a body (`body`, `body_field`).
    pub method: String,
    /// The JSON body of every request (a `body_field` token is set into it).
    pub body: Option<Value>,
    /// Read one time window after another, each paged by the paginator.
    pub window: Option<super::position::Window>,
    /// JSON (the default), NDJSON or CSV pages.
    pub format: super::formats::BodyFormat,
    /// Records as an array (the default) or as the values of an object keyed by id.
    pub records_from: super::formats::RecordsFrom,
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
pub(super) fn remove_param(url: &mut Url, name: &str) {
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

pub(super) fn param_value(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .last()
}

/// The offset or page number `url` asks for in `param` (`start` when it names none).
fn number_at(url: &Url, param: &str, start: u64) -> u64 {
    param_value(url, param)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(start)
}

pub(super) fn looks_like_url(s: &str) -> bool {
    s.starts_with("http://")
        || s.starts_with("https://")
        || s.starts_with('/')
        || s.starts_with('?')
}

/// A JSON Pointer lookup into a response body.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<Value>;

/// What one response says, as the paginators read it.
pub struct Response<'a> {
    /// The URL the page was fetched from.
    pub url: &'a Url,
    pub headers: &'a HeaderMap,
    pub body: Lookup<'a>,
    /// How many records the page holds (0 when the paginator did not need them counted).
    pub records: usize,
    /// The page's last record, when the paginator reads a token from it.
    pub last: Option<Value>,
}

/// The request after a page: its URL and, for a token sent in the body or a header, the
/// token (its JSON value).
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    pub url: Url,
    pub token: Option<Value>,
}

impl Next {
    pub(super) fn at(url: Url) -> Self {
        Next { url, token: None }
    }
}

/// A cursor token: `None` for null, absent, false, empty text or an empty array.
pub(super) fn token_value(v: Option<Value>) -> Option<Value> {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        other => other,
    }
}

/// A token as the text sent in a query parameter or a header.
pub(super) fn token_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!(
            "is {}, which has no text form for a query parameter or header (send it in the request body with `body_field`)",
            json_kind(other)
        )),
    }
}

/// A boolean flag in the body: `true`/`false` (also as text); `None` when absent or null.
pub(super) fn flag(v: Option<Value>, at: &str) -> Result<Option<bool>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(other) => Err(format!(
            "the flag at {at} is {other} rather than true or false"
        )),
    }
}

pub(super) fn total(
    t: &Total,
    headers: &HeaderMap,
    body: Lookup<'_>,
) -> Result<Option<u64>, String> {
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

/// The request after the page `r` describes, by `paging` (already resolved, never `auto`):
/// the paginator's next request, unless a stop condition ends the table. A flag outranks
/// `stop_on_empty`, and a flag that says there is more while the paginator finds no next
/// request is an error, not an end.
pub fn next_page(paging: &Paging, r: &Response<'_>) -> Result<Option<Next>, String> {
    let found = next_by_paginator(&paging.paginate, r)?;
    let stops = &paging.stops;
    let more = match &stops.has_more {
        // Stop when false or absent.
        Some(p) => Some(flag((r.body)(p), p)?.unwrap_or(false)),
        None => None,
    };
    let done = match &stops.done {
        Some(p) => flag((r.body)(p), p)?,
        None => None,
    };
    if more == Some(false) || done == Some(true) {
        return Ok(None);
    }
    let insists = more == Some(true) || done == Some(false);
    // An empty page ends the table unless a flag says there is more.
    if !insists && paging.stop_on_empty() && r.records == 0 {
        return Ok(None);
    }
    if found.is_none() && insists {
        let (key, at) = match (&stops.has_more, &stops.done) {
            (Some(p), _) if more == Some(true) => ("has_more", p),
            (_, Some(p)) => ("done", p),
            (Some(p), None) => ("has_more", p),
            (None, None) => return Ok(None),
        };
        return Err(format!(
            "the page says there is more ({key} at {at} is {}) but the {} paginator finds no next page in it; check the paginator's settings",
            if key == "done" { "false" } else { "true" },
            paging.paginate.name()
        ));
    }
    Ok(found)
}

fn next_by_paginator(p: &Paginate, r: &Response<'_>) -> Result<Option<Next>, String> {
    let url = r.url;
    let n = r.records as u64;
    match p {
        Paginate::Auto | Paginate::None => Ok(None),
        Paginate::Link => Ok(link_next(r.headers, url)?.map(Next::at)),
        Paginate::NextUrl { pointer } => match (r.body)(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => url
                .join(&s)
                .map(|u| Some(Next::at(u)))
                .map_err(|e| format!("the next URL {s:?} at {pointer} is invalid: {e}")),
            Some(other) => Err(format!(
                "the next URL at {pointer} is {} rather than a string",
                json_kind(&other)
            )),
        },
        Paginate::Cursor { .. } => cursor_next(p, r),
        Paginate::Offset {
            offset_param,
            limit,
            start,
            total: t,
            ..
        } => {
            let after = number_at(url, offset_param, *start) + n;
            let whole = match t {
                Some(t) => total(t, r.headers, r.body)?,
                None => None,
            };
            if n == 0 || n < *limit || whole.is_some_and(|w| after >= w) {
                return Ok(None);
            }
            let mut u = url.clone();
            set_param(&mut u, offset_param, &after.to_string());
            Ok(Some(Next::at(u)))
        }
        Paginate::PageNumber {
            param,
            start,
            total_pages,
        } => {
            let at = number_at(url, param, *start);
            let pages = match total_pages {
                Some(t) => total(t, r.headers, r.body)?,
                None => None,
            };
            // Page numbers from `start`: the last is start + pages - 1.
            if n == 0 || pages.is_some_and(|p| at + 1 >= start + p) {
                return Ok(None);
            }
            let mut u = url.clone();
            set_param(&mut u, param, &(at + 1).to_string());
            Ok(Some(Next::at(u)))
        }
    }
}

/// A cursor paginator's next request: the token read where it is, sent where it goes.
fn cursor_next(p: &Paginate, r: &Response<'_>) -> Result<Option<Next>, String> {
    let (raw, at) = match p.token_from() {
        Some(TokenFrom::Body(ptr)) => ((r.body)(ptr), format!("the cursor at {ptr}")),
        Some(TokenFrom::LastRecord(ptr)) => (
            r.last.as_ref().and_then(|rec| rec.pointer(ptr).cloned()),
            format!("the last record's {ptr}"),
        ),
        Some(TokenFrom::Header(h)) => (
            r.headers
                .get(h)
                .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).trim().to_string())),
            format!("the {h} header"),
        ),
        None => return Err("the cursor paginator has no token source".into()),
    };
    let Some(tok) = token_value(raw) else {
        return Ok(None);
    };
    match p.token_to() {
        Some(TokenTo::Query(param)) => {
            let text = token_text(&tok).map_err(|why| format!("{at} {why}"))?;
            let mut u = r.url.clone();
            set_param(&mut u, param, &text);
            Ok(Some(Next::at(u)))
        }
        Some(TokenTo::Header(_)) => {
            token_text(&tok).map_err(|why| format!("{at} {why}"))?;
            Ok(Some(Next {
                url: r.url.clone(),
                token: Some(tok),
            }))
        }
        Some(TokenTo::Body(_)) => Ok(Some(Next {
            url: r.url.clone(),
            token: Some(tok),
        })),
        None => Err("the cursor paginator has no token destination".into()),
    }
}

/// `body` with the value at JSON Pointer `pointer` set to `value`, creating objects on the
/// way (an array index must exist).
pub fn set_pointer(body: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    let mut at = body;
    let keys: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|k| k.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let last = i + 1 == keys.len();
        if at.is_null() {
            *at = Value::Object(serde_json::Map::new());
        }
        at = match at {
            Value::Object(m) => {
                if last {
                    m.insert(k.clone(), value);
                    return Ok(());
                }
                m.entry(k.clone()).or_insert(Value::Null)
            }
            Value::Array(a) => {
                let idx: usize = k
                    .parse()
                    .map_err(|_| format!("{pointer}: {k:?} is not an index of an array"))?;
                let slot = a
                    .get_mut(idx)
                    .ok_or_else(|| format!("{pointer}: the array has no element {idx}"))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            other => {
                return Err(format!(
                    "{pointer}: the body holds {} where an object is needed",
                    json_kind(other)
                ));
            }
        };
    }
    *at = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paging(p: Paginate, stops: Stops) -> Paging {
        Paging { paginate: p, stops }
    }

    fn next(
        pg: &Paging,
        url: &str,
        headers: &HeaderMap,
        body: &Value,
        records: usize,
        last: Option<Value>,
    ) -> Result<Option<Next>, String> {
        let u = Url::parse(url).unwrap();
        next_page(
            pg,
            &Response {
                url: &u,
                headers,
                body: &|q: &str| body.pointer(q).cloned(),
                records,
                last,
            },
        )
    }

    fn last_record_cursor() -> Paginate {
        Paginate::after_last_record("/id", "starting_after")
    }

    #[test]
    fn has_more_and_done_stop_or_insist() {
        let h = HeaderMap::new();
        let stops = Stops {
            has_more: Some("/has_more".into()),
            ..Stops::default()
        };
        let pg = paging(last_record_cursor(), stops);
        let rec = Some(json!({"id": "cus_9"}));
        let n = next(
            &pg,
            "http://h/c?limit=2",
            &h,
            &json!({"has_more": true}),
            2,
            rec.clone(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.url.as_str(), "http://h/c?limit=2&starting_after=cus_9");
        // false or absent: the end, whatever the records say.
        for body in [json!({"has_more": false}), json!({})] {
            assert_eq!(
                next(&pg, "http://h/c", &h, &body, 2, rec.clone()).unwrap(),
                None
            );
        }
        // More promised but no token: an error, not an end.
        let why = next(&pg, "http://h/c", &h, &json!({"has_more": true}), 0, None).unwrap_err();
        assert!(why.contains("says there is more"), "{why}");
        assert!(next(&pg, "http://h/c", &h, &json!({"has_more": "yes"}), 2, rec).is_err());
        // Zendesk: `done` ends the table although a next URL is still there.
        let z = paging(
            Paginate::NextUrl {
                pointer: "/after_url".into(),
            },
            Stops {
                done: Some("/end_of_stream".into()),
                ..Stops::default()
            },
        );
        let body = json!({"after_url": "/x?cursor=2", "end_of_stream": true});
        assert_eq!(next(&z, "http://h/x", &h, &body, 5, None).unwrap(), None);
        let body = json!({"after_url": "/x?cursor=2", "end_of_stream": false});
        assert!(
            next(&z, "http://h/x", &h, &body, 5, None)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn stop_on_empty_defaults_by_kind() {
        let cursor = Paginate::cursor("/next", "c");
        assert!(!paging(cursor.clone(), Stops::default()).stop_on_empty());
        assert!(paging(last_record_cursor(), Stops::default()).stop_on_empty());
        let h = HeaderMap::new();
        let body = json!({"next": "t2"});
        let follow = paging(cursor.clone(), Stops::default());
        assert!(
            next(&follow, "http://h/x", &h, &body, 0, None)
                .unwrap()
                .is_some()
        );
        let stop = paging(
            cursor,
            Stops {
                stop_on_empty: Some(true),
                ..Stops::default()
            },
        );
        assert_eq!(next(&stop, "http://h/x", &h, &body, 0, None).unwrap(), None);
    }

    #[test]
    fn tokens_go_to_the_body_or_a_header_with_their_types() {
        let h = HeaderMap::new();
        let body_cursor = Paginate::Cursor {
            pointer: None,
            last_record: Some("/sort".into()),
            from_header: None,
            param: None,
            body_field: Some("/search_after".into()),
            to_header: None,
        };
        let pg = paging(body_cursor, Stops::default());
        let n = next(
            &pg,
            "http://h/s",
            &h,
            &json!({}),
            3,
            Some(json!({"sort": [17, "b"]})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.url.as_str(), "http://h/s");
        assert_eq!(n.token, Some(json!([17, "b"])));
        // A header cursor, in and out.
        let mut rh = HeaderMap::new();
        rh.insert("x-next-cursor", "abc".parse().unwrap());
        let hc = paging(
            Paginate::Cursor {
                pointer: None,
                last_record: None,
                from_header: Some("X-Next-Cursor".into()),
                param: None,
                body_field: None,
                to_header: Some("X-Cursor".into()),
            },
            Stops::default(),
        );
        let n = next(&hc, "http://h/e", &rh, &json!([]), 3, None)
            .unwrap()
            .unwrap();
        assert_eq!(n.token, Some(json!("abc")));
        assert_eq!(
            next(&hc, "http://h/e", &h, &json!([]), 3, None).unwrap(),
            None
        );
        // An array cannot be a query parameter: the fix is named.
        let q = paging(Paginate::cursor("/next", "c"), Stops::default());
        let why = next(&q, "http://h/x", &h, &json!({"next": [1]}), 1, None).unwrap_err();
        assert!(why.contains("body_field"), "{why}");
    }

    #[test]
    fn pointers_are_set_into_bodies() {
        let mut b = json!({"query": "q", "variables": {"first": 10}});
        set_pointer(&mut b, "/variables/after", json!("c1")).unwrap();
        assert_eq!(b["variables"], json!({"first": 10, "after": "c1"}));
        let mut b = json!({});
        set_pointer(&mut b, "/a/b~1c", json!([1, 2])).unwrap();
        assert_eq!(b, json!({"a": {"b/c": [1, 2]}}));
        let mut b = json!({"a": 5});
        assert!(set_pointer(&mut b, "/a/b", json!(1)).is_err());
    }

    #[test]
    fn paging_records_and_reads_back_with_its_stops() {
        let pg = paging(
            last_record_cursor(),
            Stops {
                has_more: Some("/has_more".into()),
                ..Stops::default()
            },
        );
        let v = pg.to_json();
        assert_eq!(v["kind"], "cursor");
        assert_eq!(v["has_more"], "/has_more");
        assert_eq!(Paging::from_json(&v), Some(pg));
        // What older runs recorded still reads.
        let old = json!({"kind": "cursor", "pointer": "/next_cursor", "param": "cursor"});
        let back = Paging::from_json(&old).unwrap();
        assert_eq!(back.paginate, Paginate::cursor("/next_cursor", "cursor"));
        assert_eq!(back.stops, Stops::default());
    }
}
