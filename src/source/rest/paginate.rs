//! Where a REST table's next page is: the paginators (`link`, `next_url`, `cursor`, `offset`,
//! `page_number`, `none`, and `auto`, which picks one from the first page), and the first URL.
//! Every paginator turns one response into the absolute URL of the next page (or none), so
//! resume continues from a recorded URL.

use reqwest::header::HeaderMap;
use serde_json::Value;
use url::Url;

use super::link::{has_links, link_next};
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

/// Where `auto` looks for a next URL, in order.
pub(super) const NEXT_URL_POINTERS: [&str; 8] = [
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
pub(super) const CURSOR_POINTERS: [&str; 5] = [
    "/next_cursor",
    "/nextCursor",
    "/meta/next_cursor",
    "/pagination/next_cursor",
    "/response_metadata/next_cursor",
];

pub(super) fn looks_like_url(s: &str) -> bool {
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
pub(super) fn token(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("is {} rather than a string", json_kind(other))),
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
