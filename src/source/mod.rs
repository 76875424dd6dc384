//! The source seam: what the table pipeline needs from any kind of server, so that it never
//! names a Datasette or REST type (docs/development.md).
//!
//! Per table, a [`TableSource`] (Datasette: [`crate::source::datasette::table`]; REST: [`crate::source::rest`])
//! prepares before the first page, plans the columns from the first page, builds cursors
//! ([`Pager`]s), parses recorded snapshots, turns an incremental bound into request
//! parameters, splits key ranges where it can, checks pages, and names likely causes of
//! failures. A [`Pager`] gives the URL of each page from the cursor the previous page left,
//! checks each fetched body cheaply (complete, the right shape, the next cursor read) and
//! hands back the work that builds the page's rows, run off the fetch path.
//!
//! Guarantees: a cursor is an opaque string that continues a table after a page (a Datasette
//! `_next` token, or a REST source's next request: a URL, or a JSON position with a token
//! and a window); the pipeline records it with the page and refuses one that repeats, so
//! every kind gets the same resume and loop guards. A pager builds each page's whole request
//! ([`PageRequest`]: a GET by default, a POST with its body for a search). A sparse page is
//! aligned to the planned columns by name; where the columns are frozen, a field the plan
//! lacks is refused.
//!
//! The folder holds the seam (this file), one folder per kind of server (`datasette/`,
//! `rest/`), the row-driven request side (`rows/`), the SQLite reader (`sqlite`) and the
//! resolved per-table [`settings`].
//!
//! Architecture invariant: a source reads; it never writes a file, appends to the manifest or
//! names the run that drives it. Everything a kind knows stays behind [`TableSource`] and
//! [`Pager`], so the run never names a Datasette or REST type.

pub mod datasette;
pub mod files;
pub mod rest;
pub mod rows;
pub mod settings;
pub mod sqlite;

use std::sync::Arc;

use serde_json::Value;
use url::Url;

use crate::error::UsageError;
use crate::http::{Fetched, Verdict};
use crate::schema::ColumnPlan;
use crate::source::settings::TableSettings;

/// What a page's values added to the classes seen while typing from the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Nothing new: the plan stands.
    Same,
    /// A column gained a storage class: plan again.
    New,
    /// A string or an object arrived where only the type scan is exact.
    Inexact,
}

/// Everything the planner learned about a table before the first row is written.
pub struct TablePlan {
    pub columns: Vec<ColumnPlan>,
    pub is_view: bool,
    /// Rows to reconcile with at the end, when known.
    pub count: Option<u64>,
}

/// The index of the incremental watermark column in the planned columns.
pub fn watermark_index(table: &TableSettings, plan: &TablePlan) -> anyhow::Result<usize> {
    let col = table
        .watermark
        .as_ref()
        .map(|w| w.column.as_str())
        .unwrap_or_default();
    plan.columns
        .iter()
        .position(|c| c.name == col)
        .ok_or_else(|| {
            if plan.columns.is_empty() {
                // An empty REST collection: its first page names no fields.
                return UsageError::with_hint(
                    format!(
                        "table {:?} has no watermark column {col:?}: its first page has no records, so no columns are known",
                        table.name
                    ),
                    format!(
                        "declare the column's type, e.g. `types = {{ {col} = \"integer\" }}` (or \"timestamp\"); an empty collection is then an empty table and the run succeeds"
                    ),
                )
                .into();
            }
            UsageError::with_hint(
                format!("table {:?} has no watermark column {col:?}", table.name),
                format!(
                    "its columns are: {}",
                    plan.columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into()
        })
}

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

impl Page {
    /// Rows of a sparse page in the planned column order. A field the plan lacks is an error
    /// naming it and the declaration that would keep it.
    pub fn aligned(
        &self,
        plan: &[crate::schema::ColumnPlan],
        table: &str,
        page_no: u64,
    ) -> anyhow::Result<Vec<Vec<Value>>> {
        let page = self;
        let cols = page.columns.as_deref().unwrap_or_default();
        let mut map = Vec::with_capacity(cols.len());
        for c in cols {
            match plan.iter().position(|p| p.name == *c) {
                Some(i) => map.push(i),
                None => {
                    let example = page
                        .rows
                        .iter()
                        .find_map(|r| r.get(map.len()).filter(|v| !v.is_null()))
                        .map(|v| {
                            let s = v.to_string();
                            if s.chars().count() > 60 {
                                format!("{}…", s.chars().take(57).collect::<String>())
                            } else {
                                s
                            }
                        })
                        .unwrap_or_else(|| "null".into());
                    anyhow::bail!(
                        "table {table:?}, page {page_no}: field {c:?} (e.g. {example}) is not in the table's schema, which is fixed from the first page (`schema = \"freeze\"`, or a row-driven table); no row of this page was written. \
    Declare it so it is a column from the start, e.g. `types = {{ {c} = \"text\" }}` (or its type), and rerun (or, on a paged table, let the columns evolve: remove `schema = \"freeze\"`)"
                    );
                }
            }
        }
        Ok(page
            .rows
            .iter()
            .map(|r| {
                let mut out = vec![Value::Null; plan.len()];
                for (v, &i) in r.iter().zip(&map) {
                    out[i] = v.clone();
                }
                out
            })
            .collect())
    }
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

/// One page's request, as a pager builds it from the cursor.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub url: Url,
    pub method: reqwest::Method,
    /// Sent after the source's own headers (a cursor sent in a header).
    pub headers: Vec<(String, String)>,
    /// A JSON body (a paged search, with its cursor in it).
    pub body: Option<Vec<u8>>,
}

impl PageRequest {
    pub fn get(url: Url) -> Self {
        PageRequest {
            url,
            method: reqwest::Method::GET,
            headers: Vec::new(),
            body: None,
        }
    }
}

/// One cursor's view of a source: how to ask for a page and how to read one.
pub trait Pager: Send + Sync {
    /// The request for page `page_no` (1-based), continuing from `cursor` (`None`: the
    /// first).
    fn request(&self, page_no: u64, cursor: Option<&str>) -> anyhow::Result<PageRequest>;
    /// Check a fetched body the cheap way and read its next cursor. `cursor` is the one the
    /// page was requested with; `known` are the column names learned so far (for bodies that
    /// do not list them).
    fn scan(
        &self,
        page_no: u64,
        url: &Url,
        cursor: Option<&str>,
        fetched: &Fetched,
        known: Option<&[String]>,
    ) -> Result<Scanned, BodyProblem>;
    /// What to tell the user when `cursor` comes back a second time on page `page_no`.
    fn repeated(&self, cursor: &str, page_no: u64) -> String;
    /// The cursor of the page after page `page_no` (requested with `cursor`), when it can be
    /// told without that page's response, the page assumed full: offset and page-number
    /// paging, one request per time window. `None`: only the response tells (or the end is
    /// known to be reached). A prediction is only ever a guess to fetch ahead with: the
    /// walker takes a page fetched ahead only once the previous page's real cursor names it.
    fn predict(&self, _page_no: u64, _cursor: Option<&str>) -> Option<String> {
        None
    }
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

/// One table of a source, as the pipeline drives it: each kind's implementation behind one
/// set of calls, so the pipeline never names a kind.
pub enum TableSource {
    Datasette(Box<crate::source::datasette::table::DatasetteTable>),
    Rest(Box<crate::source::rest::RestSource>),
}

impl TableSource {
    /// Work before the first page is requested (Datasette: the type probe).
    pub async fn prepare(&mut self) -> anyhow::Result<()> {
        match self {
            TableSource::Datasette(d) => d.prepare().await,
            TableSource::Rest(_) => Ok(()),
        }
    }

    /// True while the column types come from the values received so far (a Datasette table
    /// declared numeric throughout, see [`crate::source::datasette::planner::Probe::pages_can_type`]).
    pub fn typing_from_pages(&self) -> bool {
        match self {
            TableSource::Datasette(d) => d.typing_from_pages(),
            TableSource::Rest(_) => false,
        }
    }

    /// While typing from the pages: fold a page's values in (see
    /// [`crate::source::datasette::planner::Probe::observe`]).
    pub fn observe(&mut self, page: &Page) -> Observed {
        match self {
            TableSource::Datasette(d) => d.observe(page),
            TableSource::Rest(_) => Observed::Same,
        }
    }

    /// Stop typing from the pages and scan the table's storage classes; false when the server
    /// did not answer.
    pub async fn scan_types(&mut self) -> anyhow::Result<bool> {
        match self {
            TableSource::Datasette(d) => d.scan_types().await,
            TableSource::Rest(_) => Ok(false),
        }
    }

    /// The table's column plan from what was learned before and its first page.
    pub fn plan(&self, first: &Page, count: Option<u64>) -> anyhow::Result<TablePlan> {
        match self {
            TableSource::Datasette(d) => d.plan(first, count),
            TableSource::Rest(r) => r.plan(first),
        }
    }

    /// The table's row count learned before the first page, if it counts the request.
    pub fn table_count(&self) -> Option<u64> {
        match self {
            TableSource::Datasette(d) => d.table_count(),
            TableSource::Rest(_) => None,
        }
    }

    /// Incremental: the request parameters that ask for rows at or past the bound (`lower`
    /// typed, and `lower_text` as configured). Returns the bound rows must also be checked
    /// against here, for a source whose server may not filter by it.
    pub fn watermark_params(
        &self,
        params: &mut Vec<(String, String)>,
        lower: Option<crate::store::watermark::Mark>,
        lower_text: Option<String>,
        wm: &crate::source::settings::WatermarkSettings,
    ) -> Option<crate::store::watermark::Mark> {
        match self {
            TableSource::Datasette(d) => {
                d.watermark_params(params, &wm.column, lower_text);
                None
            }
            TableSource::Rest(r) => {
                r.watermark_params(params, lower.as_ref(), wm);
                lower
            }
        }
    }

    /// `--parallel`: disjoint key ranges (Datasette), or one cursor whose pages are fetched
    /// ahead concurrently (REST, where each page's request is known without the one before).
    pub async fn plan_slices(
        &self,
        params: &[(String, String)],
    ) -> anyhow::Result<crate::source::datasette::slices::Planned> {
        use crate::source::datasette::slices::Planned;
        match self {
            TableSource::Datasette(d) => d.plan_slices(params).await,
            TableSource::Rest(r) => Ok(match r.not_addressable() {
                None => Planned::Ahead,
                Some(why) => Planned::Sequential(why),
            }),
        }
    }

    /// True when the table's pages can be fetched ahead of the responses before them (a REST
    /// table with offset or page-number paging, or one request per time window).
    pub fn fetches_ahead(&self) -> bool {
        match self {
            TableSource::Datasette(_) => false,
            TableSource::Rest(r) => r.not_addressable().is_none(),
        }
    }

    /// A cursor over the table with `params`; `paging` as a resumed stream recorded it.
    pub fn pager(&self, params: &[(String, String)], paging: Option<&Value>) -> Arc<dyn Pager> {
        match self {
            TableSource::Datasette(d) => d.pager(params),
            TableSource::Rest(r) => Arc::new(r.pager(params, paging)),
        }
    }

    /// The rows of a recorded snapshot.
    pub fn parse_snapshot(&self, body: &[u8], known: Option<&[String]>) -> Result<Page, String> {
        match self {
            TableSource::Datasette(_) => {
                crate::source::datasette::table::DatasetteTable::parse_snapshot(body, known)
            }
            TableSource::Rest(r) => r.parse_snapshot(body),
        }
    }

    /// A check of a fetched page before its rows are taken (Datasette: U+FFFD).
    pub async fn check_page(
        &mut self,
        page_no: u64,
        page: &Page,
        known: Option<Vec<String>>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        match self {
            TableSource::Datasette(d) => d.check_page(page_no, page, known, warnings).await,
            TableSource::Rest(_) => Ok(()),
        }
    }

    /// Checks at the table's end, before its last parts are recorded.
    pub fn finish(&self) -> anyhow::Result<()> {
        match self {
            TableSource::Datasette(d) => d.finish(),
            TableSource::Rest(_) => Ok(()),
        }
    }

    /// A fetch failure, with the kind's likely causes named.
    pub fn fetch_error(&self, page_no: u64, error: anyhow::Error) -> anyhow::Error {
        match self {
            TableSource::Datasette(d) => d.fetch_error(page_no, error),
            TableSource::Rest(r) => r.fetch_error(page_no, error),
        }
    }
}
