//! The Datasette page source (DESIGN.md §"Datasette source"; facts in NOTES.md).
//!
//! Guarantees:
//! - Database and table names are tilde-encoded the way Datasette decodes them.
//! - Both JSON shapes parse into one [`Page`]: 0.6x (`columns` + array rows) and 1.0
//!   (`ok` + object rows, columns via `_extra=columns`). Integers stay exact `i64`; floats
//!   round-trip exactly.
//! - Every page request carries an explicit `_size`; 0.6x requests add
//!   `_nocount=1&_nofacet=1&_nosuggest=1` (except the first page, whose row count is used
//!   for reconciliation).
//! - `next` is followed verbatim as `_next`; the caller rejects a token that repeats.
//! - A body that ends early is reported as transient (a retry may fix it); HTML, non-JSON or
//!   JSON of the wrong shape is rejected with a message saying what arrived.
//!
//! The folder: this file speaks Datasette's JSON API; [`table`] is Datasette's side of the
//! source seam, [`planner`] types a table before its first row, [`slices`] splits one table into
//! key ranges for `--parallel`.
//!
//! Architecture invariant: outside `source/`, only the run's per-source set-up (`run/job.rs`
//! builds each table's [`crate::source::TableSource`]) and `--parallel`'s slice plan (which the
//! pipeline pages, and resume and `verify` read back) name this folder; the pipeline drives a
//! Datasette table through the seam alone.

pub mod planner;
pub mod slices;
pub mod table;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::http::{Client, Fetched, HttpError, Verdict};
pub use crate::source::{BodyProblem, Page, verdict};
use crate::source::{PageRequest, Pager, Scanned};

/// Which JSON API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Flavor {
    /// 0.6x: array rows, `columns` always present.
    V0,
    /// 1.0 alphas: object rows, `_extra=` for columns and count.
    V1,
}

/// Tilde-encoding: keep `[A-Za-z0-9_-]`, everything else `~XX` per UTF-8 byte.
/// (Datasette also accepts `+` for space; `~20` is unambiguous, so we always send that.)
pub fn tilde_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct RawPage {
    ok: Option<bool>,
    error: Option<Value>,
    rows: Option<Vec<Value>>,
    columns: Option<Vec<String>>,
    next: Option<Value>,
    count: Option<u64>,
    count_truncated: Option<bool>,
    filtered_table_rows_count: Option<u64>,
    primary_keys: Option<Vec<String>>,
    is_view: Option<bool>,
}

/// Parse a table-page body. `known_columns` orders object rows when the body lacks `columns`.
pub fn parse_page(body: &[u8], known_columns: Option<&[String]>) -> Result<Page, BodyProblem> {
    let raw: RawPage = decode(body)?;
    check_ok(raw.ok, raw.error)?;
    let Some(raw_rows) = raw.rows else {
        return Err(no_rows());
    };
    let columns = raw.columns.clone();
    let order: Option<&[String]> = columns.as_deref().or(known_columns);
    let mut rows = Vec::with_capacity(raw_rows.len());
    for (i, r) in raw_rows.into_iter().enumerate() {
        match r {
            Value::Array(a) => {
                if let Some(cols) = order
                    && a.len() != cols.len()
                {
                    return Err(BodyProblem::Wrong(format!(
                        "row {i} has {} values but there are {} columns",
                        a.len(),
                        cols.len()
                    )));
                }
                rows.push(a);
            }
            Value::Object(mut m) => {
                let Some(cols) = order else {
                    return Err(BodyProblem::Wrong(
                        "object rows without a column list (ask with _extra=columns)".into(),
                    ));
                };
                if m.len() != cols.len() {
                    return Err(BodyProblem::Wrong(format!(
                        "row {i} has {} keys but there are {} columns",
                        m.len(),
                        cols.len()
                    )));
                }
                let mut row = Vec::with_capacity(cols.len());
                for c in cols {
                    match m.remove(c) {
                        Some(v) => row.push(v),
                        None => {
                            return Err(BodyProblem::Wrong(format!("row {i} lacks column {c:?}")));
                        }
                    }
                }
                rows.push(row);
            }
            other => {
                return Err(BodyProblem::Wrong(format!(
                    "row {i} is {} rather than an array or object",
                    crate::source::json_kind(&other)
                )));
            }
        }
    }
    let next = next_token(raw.next)?;
    let count = match (raw.count, raw.count_truncated) {
        (Some(c), Some(false) | None) => Some(c),
        (Some(_), Some(true)) => None,
        (None, _) => raw.filtered_table_rows_count,
    };
    Ok(Page {
        columns,
        rows,
        next,
        count,
        primary_keys: raw.primary_keys,
        is_view: raw.is_view,
        sparse: false,
    })
}

/// What the cursor needs from a page before its rows are parsed.
#[derive(Debug, Clone)]
pub struct PageHead {
    pub next: Option<String>,
    pub columns: Option<Vec<String>>,
    pub flavor: Flavor,
}

#[derive(Deserialize)]
struct RawHead {
    ok: Option<bool>,
    error: Option<Value>,
    rows: Option<serde::de::IgnoredAny>,
    columns: Option<Vec<String>>,
    next: Option<Value>,
}

/// Check a table-page body the cheap way: complete, valid JSON of the right shape, skipping
/// over the rows without building them, and read its `next` token. [`parse_page`] builds the
/// rows later (and may still find a malformed row, which is never retryable).
pub fn scan_page(body: &[u8]) -> Result<PageHead, BodyProblem> {
    let raw: RawHead = decode(body)?;
    let flavor = check_ok(raw.ok, raw.error)?;
    if raw.rows.is_none() {
        return Err(no_rows());
    }
    Ok(PageHead {
        next: next_token(raw.next)?,
        columns: raw.columns,
        flavor,
    })
}

/// Deserialize a page body; a body cut off mid-JSON is [`BodyProblem::Truncated`].
///
/// Strict JSON first. Only if that fails and the body holds the bare tokens `Infinity`,
/// `-Infinity` or `NaN` outside strings (what Datasette sends for ±Infinity when asked with
/// `_json_infinity=on`) is it parsed again with each token replaced by a marker object that
/// [`non_finite`](crate::schema::json::non_finite) reads back; anything else invalid is reported as before.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BodyProblem> {
    let strict = serde_json::from_slice(body);
    let result = match strict {
        Err(e) if !e.is_eof() => match crate::schema::json::replace_non_finite_tokens(body) {
            Some(rewritten) => serde_json::from_slice(&rewritten),
            None => Err(e),
        },
        other => other,
    };
    result.map_err(|e| {
        if e.is_eof() {
            BodyProblem::Truncated(format!(
                "the JSON body ends early after {} bytes ({e})",
                body.len()
            ))
        } else {
            BodyProblem::Wrong(describe_non_json(body, &e))
        }
    })
}

/// Refuse a body that reports an error; otherwise its shape: 1.0 bodies carry `ok`.
fn check_ok(ok: Option<bool>, error: Option<Value>) -> Result<Flavor, BodyProblem> {
    if ok == Some(false) || error.as_ref().is_some_and(|e| !e.is_null()) {
        let msg = error
            .map(|e| e.to_string())
            .unwrap_or_else(|| "ok: false".into());
        return Err(BodyProblem::Wrong(format!(
            "the server reported an error: {msg}"
        )));
    }
    Ok(if ok.is_some() { Flavor::V1 } else { Flavor::V0 })
}

fn no_rows() -> BodyProblem {
    BodyProblem::Wrong(
        "the JSON has no \"rows\" array: this does not look like a Datasette table page".into(),
    )
}

fn next_token(next: Option<Value>) -> Result<Option<String>, BodyProblem> {
    match next {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(BodyProblem::Wrong(format!(
            "\"next\" is {} rather than a string",
            crate::source::json_kind(&other)
        ))),
    }
}

fn describe_non_json(body: &[u8], e: &serde_json::Error) -> String {
    let head = String::from_utf8_lossy(&body[..body.len().min(120)]);
    let head = head.split_whitespace().collect::<Vec<_>>().join(" ");
    if head.trim_start().starts_with('<') {
        format!(
            "the body is HTML, not JSON (starts with {head:?}); is the URL a Datasette instance?"
        )
    } else {
        format!("the body is not valid JSON ({e}); it starts with {head:?}")
    }
}

/// What we ask of one Datasette table.
#[derive(Debug, Clone)]
pub struct TableRequest {
    pub base: Url,
    pub database: String,
    pub table: String,
    /// User filters (`ShipCountry=USA`, `OrderID__gte=10`), sent verbatim on every page.
    pub params: Vec<(String, String)>,
    pub page_size: u32,
    /// `_sort` column, for views or a chosen order.
    pub sort: Option<String>,
}

impl TableRequest {
    /// The URL of one page. `first` asks for the row count; `cursor` is the `_next` token.
    pub fn page_url(&self, flavor: Flavor, cursor: Option<&str>, first: bool) -> Url {
        let mut url = self.base.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .expect("http(s) URLs have path segments");
            segs.pop_if_empty();
            // Push pre-encoded: tilde-encoding only produces URL-safe characters.
            segs.push(&tilde_encode(&self.database));
            segs.push(&format!("{}.json", tilde_encode(&self.table)));
        }
        {
            let mut q = url.query_pairs_mut();
            q.clear();
            for (k, v) in &self.params {
                q.append_pair(k, v);
            }
            q.append_pair("_size", &self.page_size.to_string());
            // ±Infinity would otherwise arrive as null (see `schema::json::replace_non_finite_tokens`).
            q.append_pair("_json_infinity", "on");
            if let Some(s) = &self.sort {
                q.append_pair("_sort", s);
            }
            match flavor {
                Flavor::V0 => {
                    if !first {
                        q.append_pair("_nocount", "1");
                    }
                    q.append_pair("_nofacet", "1");
                    q.append_pair("_nosuggest", "1");
                }
                Flavor::V1 => {
                    q.append_pair("_extra", if first { "columns,count" } else { "columns" });
                }
            }
            if let Some(c) = cursor {
                q.append_pair("_next", c);
            }
        }
        url
    }
}

/// A Datasette table as a [`Pager`]: `_next` tokens are the cursor. The JSON shape comes from
/// `/-/versions.json` or, when the server would not say, from the first page's body.
pub struct DatasettePager {
    request: TableRequest,
    /// True once the shape is certain; until then the first reply decides it.
    flavor_known: bool,
    v0: std::sync::atomic::AtomicBool,
}

impl DatasettePager {
    pub fn new(request: TableRequest, flavor: Flavor, flavor_known: bool) -> Self {
        Self {
            request,
            flavor_known,
            v0: std::sync::atomic::AtomicBool::new(flavor == Flavor::V0),
        }
    }

    fn flavor(&self) -> Flavor {
        if self.v0.load(std::sync::atomic::Ordering::Relaxed) {
            Flavor::V0
        } else {
            Flavor::V1
        }
    }
}

impl Pager for DatasettePager {
    fn request(&self, page_no: u64, cursor: Option<&str>) -> anyhow::Result<PageRequest> {
        Ok(PageRequest::get(self.request.page_url(
            self.flavor(),
            cursor,
            page_no == 1,
        )))
    }

    fn scan(
        &self,
        page_no: u64,
        _url: &Url,
        _cursor: Option<&str>,
        fetched: &Fetched,
        known: Option<&[String]>,
    ) -> Result<Scanned, BodyProblem> {
        let head = scan_page(&fetched.body)?;
        if page_no == 1 && !self.flavor_known {
            // An undetected server answered in its own shape: use its parameters from now on.
            self.v0.store(
                head.flavor == Flavor::V0,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let body = fetched.body.clone();
        let order = head
            .columns
            .clone()
            .or_else(|| known.map(<[String]>::to_vec));
        Ok(Scanned {
            next: head.next,
            columns: head.columns,
            paging: None,
            work: Box::new(move || {
                parse_page(&body, order.as_deref()).map_err(BodyProblem::into_reason)
            }),
        })
    }

    fn repeated(&self, cursor: &str, page_no: u64) -> String {
        format!(
            "the server sent the pagination token {cursor:?} a second time (page {page_no}); following it would loop forever. \
This is a known Datasette bug with some sort orders and primary keys; harvest with a different `sort` or filters"
        )
    }
}

/// GET one of the server's `/-/NAME.json` documents; `Null` when it answers with an error
/// status or something that is not JSON (an auth failure is still an error).
async fn meta_json(client: &Client, base: &Url, name: &str) -> Result<Value, HttpError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("http(s) URLs have path segments")
        .pop_if_empty()
        .push("-")
        .push(name);
    let res = client
        .get(&url, |f| match serde_json::from_slice::<Value>(&f.body) {
            Ok(v) => Verdict::Accept(v),
            Err(e) if e.is_eof() => Verdict::Retry(format!("{name} ended early")),
            Err(_) => Verdict::Accept(Value::Null),
        })
        .await;
    match res {
        Ok((_, v)) => Ok(v),
        Err(e) if e.is_auth() => Err(e),
        Err(HttpError::Status { .. }) => Ok(Value::Null),
        Err(e) => Err(e),
    }
}

/// Ask `/-/versions.json` which API the server speaks. `None` when it will not say.
pub async fn detect_flavor(
    client: &Client,
    base: &Url,
) -> Result<Option<(Flavor, String)>, HttpError> {
    let v = meta_json(client, base, "versions.json").await?;
    let Some(version) = v.pointer("/datasette/version").and_then(Value::as_str) else {
        return Ok(None);
    };
    let flavor = if version.starts_with("0.") {
        Flavor::V0
    } else {
        Flavor::V1
    };
    Ok(Some((flavor, version.to_string())))
}

/// The server's `max_returned_rows` (the largest `_size` it accepts), from `/-/settings.json`;
/// `None` when it will not say.
pub async fn max_returned_rows(client: &Client, base: &Url) -> Result<Option<u32>, HttpError> {
    let v = meta_json(client, base, "settings.json").await?;
    Ok(v.get("max_returned_rows")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0))
}

/// Run a read-only SQL query through the database's JSON endpoint; `None` if the server does
/// not allow it (SQL disabled, time limit hit, permission). Parameters bind as strings.
pub async fn sql_rows(
    client: &Client,
    base: &Url,
    database: &str,
    sql: &str,
    params: &[(&str, &str)],
) -> Result<Option<Vec<serde_json::Map<String, Value>>>, HttpError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("http(s) URLs have path segments")
        .pop_if_empty()
        .push(&format!("{}.json", tilde_encode(database)));
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("sql", sql);
        q.append_pair("_shape", "objects");
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    #[derive(Deserialize)]
    struct SqlResult {
        ok: Option<bool>,
        rows: Option<Vec<serde_json::Map<String, Value>>>,
        truncated: Option<bool>,
    }
    let res = client
        .get(&url, |f| match decode::<SqlResult>(&f.body) {
            Ok(r) => Verdict::Accept(r),
            Err(BodyProblem::Truncated(_)) => Verdict::Retry("SQL result ended early".into()),
            Err(BodyProblem::Wrong(_)) => Verdict::Accept(SqlResult {
                ok: Some(false),
                rows: None,
                truncated: None,
            }),
        })
        .await;
    match res {
        Ok((_, r)) if r.ok != Some(false) && r.truncated != Some(true) => Ok(r.rows),
        Ok(_) => Ok(None),
        Err(e) if e.is_auth() || e.status().is_some() => {
            tracing::debug!("SQL endpoint unavailable: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether the server sends ±Infinity as the bare tokens `Infinity`/`-Infinity` when asked
/// with `_json_infinity=on` (every Datasette checked does; without it they arrive as `null`),
/// from one tiny SQL query; `None` when the SQL endpoint will not say.
pub async fn sends_infinity(
    client: &Client,
    base: &Url,
    database: &str,
) -> Result<Option<bool>, HttpError> {
    let rows = sql_rows(
        client,
        base,
        database,
        "select 9e999 as inf",
        &[("_json_infinity", "on")],
    )
    .await?;
    Ok(rows
        .as_ref()
        .and_then(|r| r.first())
        .and_then(|r| r.get("inf"))
        .map(|v| crate::schema::json::non_finite(v) == Some(f64::INFINITY)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::json::non_finite;

    #[test]
    fn tilde() {
        assert_eq!(tilde_encode("Order Details"), "Order~20Details");
        assert_eq!(
            tilde_encode("table/with/slashes.csv"),
            "table~2Fwith~2Fslashes~2Ecsv"
        );
        assert_eq!(tilde_encode("Ünï"), "~C3~9Cn~C3~AF");
        assert_eq!(tilde_encode("a_b-c9"), "a_b-c9");
    }

    #[test]
    fn page_url_shapes() {
        let t = TableRequest {
            base: Url::parse("http://127.0.0.1:8001/").unwrap(),
            database: "north wind".into(),
            table: "Order Details".into(),
            params: vec![("ShipCountry".into(), "USA & co".into())],
            page_size: 1000,
            sort: None,
        };
        let u = t.page_url(Flavor::V0, Some("10248,5"), false);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8001/north~20wind/Order~20Details.json?ShipCountry=USA+%26+co&_size=1000&_json_infinity=on&_nocount=1&_nofacet=1&_nosuggest=1&_next=10248%2C5"
        );
        let u = t.page_url(Flavor::V1, None, true);
        assert!(
            u.as_str()
                .ends_with("_size=1000&_json_infinity=on&_extra=columns%2Ccount"),
            "{u}"
        );
    }

    #[test]
    fn both_shapes_parse_to_the_same_rows() {
        let v0 = br#"{"database":"d","rows":[[1,"a",2.5],[9007199254740993,null,3]],"columns":["id","t","x"],"next":"2","filtered_table_rows_count":7}"#;
        let v1 = br#"{"ok":true,"next":"2","columns":["id","t","x"],"count":7,"count_truncated":false,"rows":[{"t":"a","x":2.5,"id":1},{"id":9007199254740993,"t":null,"x":3}]}"#;
        let a = parse_page(v0, None).ok().unwrap();
        let b = parse_page(v1, None).ok().unwrap();
        assert_eq!(a.rows, b.rows);
        assert_eq!(a.rows[1][0].as_i64(), Some(9007199254740993));
        assert_eq!((a.count, b.count), (Some(7), Some(7)));
        let flavors = (
            scan_page(v0).ok().unwrap().flavor,
            scan_page(v1).ok().unwrap().flavor,
        );
        assert_eq!(flavors, (Flavor::V0, Flavor::V1));
    }

    #[test]
    fn infinity_tokens_parse_outside_strings_only() {
        let v0 = br#"{"rows":[[1,Infinity,"Infinity"],[2, -Infinity ,"x,NaN"],[3,NaN,"a\"Infinity"]],"columns":["id","x","t"],"next":null}"#;
        let p = parse_page(v0, None).ok().unwrap();
        let xs: Vec<f64> = p.rows.iter().map(|r| non_finite(&r[1]).unwrap()).collect();
        assert_eq!(xs[..2], [f64::INFINITY, f64::NEG_INFINITY]);
        assert!(xs[2].is_nan());
        assert_eq!(p.rows[0][2], Value::String("Infinity".into()));
        assert_eq!(p.rows[1][2], Value::String("x,NaN".into()));
        assert_eq!(p.rows[2][2], Value::String("a\"Infinity".into()));
        let v1 = br#"{"ok":true,"next":null,"columns":["id","x"],"rows":[{"id":1,"x":-Infinity}]}"#;
        let p = parse_page(v1, None).ok().unwrap();
        assert_eq!(non_finite(&p.rows[0][1]), Some(f64::NEG_INFINITY));
        assert!(scan_page(v1).is_ok());
        // A body that is invalid for any other reason is still refused, and a cut-off one is
        // still retryable.
        for bad in [
            &br#"{"rows":[[1,Infinityx]],"columns":["a","b"]}"#[..],
            br#"{"rows":[[1,Inf]],"columns":["a","b"]}"#,
            br#"{"rows":[[1,Infinity,]],"columns":["a","b"]}"#,
            br#"{"rows":[[1 Infinity]],"columns":["a","b"]}"#,
            br#"{Infinity:[[1]]}"#,
        ] {
            assert!(
                matches!(parse_page(bad, None), Err(BodyProblem::Wrong(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_page(br#"{"rows":[[1,Infinity],[2,"#, None),
            Err(BodyProblem::Truncated(_))
        ));
        assert_eq!(non_finite(&serde_json::json!({"$base64": true})), None);
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(
            parse_page(b"{\"rows\":[[1,2]", None),
            Err(BodyProblem::Truncated(_))
        ));
        match parse_page(b"<html><body>502 Bad Gateway</body></html>", None) {
            Err(BodyProblem::Wrong(m)) => assert!(m.contains("HTML"), "{m}"),
            _ => panic!("HTML accepted"),
        }
        assert!(matches!(
            parse_page(b"{\"foo\":1}", None),
            Err(BodyProblem::Wrong(_))
        ));
        assert!(matches!(
            parse_page(b"[1,2,3]", None),
            Err(BodyProblem::Wrong(_))
        ));
        assert!(matches!(
            parse_page(br#"{"ok":false,"error":"no such table"}"#, None),
            Err(BodyProblem::Wrong(_))
        ));
    }
}
