//! The source seam: what the table pipeline needs from any kind of server, so that it never
//! names a Datasette or REST type (README §"Development: the source seam").
//!
//! A source kind provides, per table:
//! - a [`Pager`]: the URL of each page from the cursor the previous page left, a cheap check
//!   of each fetched body (complete, the right shape, the next cursor read) and the work that
//!   builds the page's rows, run off the fetch path;
//! - a parser for recorded snapshots (resume replays pages with it, byte-identical input gives
//!   identical rows);
//! - planning of the table's Arrow schema from what it learned before the first page and the
//!   first page itself (see [`crate::pipeline`]).
//!
//! Guarantees: a cursor is an opaque string that continues a table after a page (a Datasette
//! `_next` token, or a REST source's next URL); the pipeline records it with the page and
//! refuses one that repeats, so every kind gets the same resume and loop guards.

use serde_json::Value;
use url::Url;

use crate::http::{Fetched, Verdict};

/// One page as parsed from a response body.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Column names, when the body carries them (in the order of `rows`' values).
    pub columns: Option<Vec<String>>,
    /// Rows in column order.
    pub rows: Vec<Vec<Value>>,
    /// The cursor that continues after this page (`None`: this was the last page).
    pub next: Option<String>,
    /// Total rows matching the request, when the server counted them exactly.
    pub count: Option<u64>,
    pub primary_keys: Option<Vec<String>>,
    pub is_view: Option<bool>,
    /// True when `columns` are only the fields this page's records hold (a REST page): the
    /// pipeline aligns such rows to the table's planned columns by name, instead of
    /// requiring the same column list on every page.
    pub sparse: bool,
}

/// Why a body could not be used.
pub enum BodyProblem {
    /// Cut off (JSON ended early): retrying may help.
    Truncated(String),
    /// Wrong content: retrying will not help.
    Wrong(String),
}

impl BodyProblem {
    /// What is wrong, whether or not a retry could help.
    pub fn into_reason(self) -> String {
        match self {
            BodyProblem::Truncated(why) | BodyProblem::Wrong(why) => why,
        }
    }
}

/// How the HTTP client should treat a body that parsed to `r`: a cut-off body is retried.
pub fn verdict<T>(r: Result<T, BodyProblem>) -> Verdict<T> {
    match r {
        Ok(v) => Verdict::Accept(v),
        Err(BodyProblem::Truncated(why)) => Verdict::Retry(why),
        Err(BodyProblem::Wrong(why)) => Verdict::Reject(why),
    }
}

/// Builds a page's rows from a body already checked by [`Pager::scan`].
pub type RowWork = Box<dyn FnOnce() -> Result<Page, String> + Send>;

/// What [`Pager::scan`] learned from a body before its rows are built.
pub struct Scanned {
    /// The cursor that continues after this page.
    pub next: Option<String>,
    /// Column names the body listed (later bodies may omit them).
    pub columns: Option<Vec<String>>,
    /// How the source pages (a REST source's resolved paginator), recorded with the page.
    pub paging: Option<Value>,
    /// The rows, built on the blocking pool while the next request is out.
    pub work: RowWork,
}

/// One cursor's view of a source: how to ask for a page and how to read one.
pub trait Pager: Send + Sync {
    /// The URL of page `page_no` (1-based), continuing from `cursor` (`None`: the first).
    fn url(&self, page_no: u64, cursor: Option<&str>) -> anyhow::Result<Url>;
    /// Check a fetched body the cheap way and read its next cursor. `known` are the column
    /// names learned so far (for bodies that do not list them).
    fn scan(
        &self,
        page_no: u64,
        url: &Url,
        fetched: &Fetched,
        known: Option<&[String]>,
    ) -> Result<Scanned, BodyProblem>;
    /// What to tell the user when `cursor` comes back a second time on page `page_no`.
    fn repeated(&self, cursor: &str, page_no: u64) -> String;
}

/// "a string", "an object", …: what a JSON value is, for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
