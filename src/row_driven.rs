//! Row-driven tables: one request per input row (`for_each`), its response kept like any
//! page, its rows joined back to the input by a request id.
//!
//! Guarantees:
//! - Inputs are streamed ([`crate::inputs`]); every placeholder of the path, parameters,
//!   headers and body is checked against the input's columns before any request is sent
//!   (exit 2 naming the placeholder and the columns).
//! - Each request has a deterministic id ([`crate::cursor::request_id`]: sha256 of method,
//!   URL and body). An input row whose first request id was already taken in this run (a
//!   duplicate input, or one recorded before a crash) is not sent again.
//! - At most `concurrency` requests are in flight. Responses are recorded in input order:
//!   every response that is ready is written, byte-exact, into one batch snapshot
//!   (`batch-NNNNNN.raw`, the bodies back to back), then one manifest `page` line lists each
//!   response (request id, input key, URL, status, offset, bytes, sha256, rows), then the rows
//!   go to Parquet. For a method other than GET, only then are more inputs sent, so at most
//!   `concurrency` of them are ever sent and not recorded; GET reads up to
//!   [`GET_READ_AHEAD`] responses ahead of the writer (repeating a GET only reads again).
//! - Exactly once in the output: a resumed run replays the batches after the last checkpoint
//!   from their snapshots and skips every input whose requests are all recorded; an input
//!   cut off between two pages of its own pagination continues from its recorded next URL.
//!   On the wire it is at least once: a request in flight at a crash may be sent again
//!   (`request_id_header` lets the server de-duplicate).
//! - SIGINT/SIGTERM: a GET table stops at once (clean checkpoint, exit 130); for other
//!   methods the requests already sent are answered and recorded first (a second signal
//!   stops at once), so an interrupted POST run repeats nothing on resume.
//! - Rows carry `_request_id`, `_status` and the input row as `_input__<column>`. A kept
//!   error status (`record_status`, 404 by default) gives one row with the input and
//!   status and no response fields; 401/403 stay fatal (exit 4), the retry budget exit 5.
//! - The set of taken input ids is kept as 16-byte prefixes of the ids in a hash set of
//!   17-byte slots (19–39 bytes per input, about 36 at a million); nothing else grows with
//!   the input.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use url::Url;

use crate::commands::harvest::{RunCtx, Totals, obj};
use crate::config::{ForEachConfig, TableConfig, TableSettings};
use crate::cursor::{self, Event, FetchedPage, Shape, Start, Walk, Walkers};
use crate::error::{Interrupted, UsageError};
use crate::fsutil::{atomic_write, create_dir_all_durable, sanitize_component};
use crate::inputs::{InputSpec, Inputs};
use crate::manifest::{Manifest, sha256_hex};
use crate::parquet_sink::{ClosedPart, TableSink};
use crate::planner::TablePlan;
use crate::rest::{Paginate, RestPager, RestTable};
use crate::resume::TableProgress;
use crate::schema::ColType;
use crate::source::Page;
use crate::template::{BodyTemplate, Row, Template};

/// The column holding each row's request id.
pub const REQUEST_ID: &str = "_request_id";
/// The column holding the HTTP status of the response a row came from.
pub const STATUS: &str = "_status";
/// Input columns are written as `_input__<column>`.
pub const INPUT_PREFIX: &str = "_input__";
/// Pages each request may fetch ahead of the writer (a paginating child).
const FETCH_AHEAD: usize = 1;
/// Rows of responses held before the table's columns are known (no response with records
/// yet); past this the plan is made from the input columns and `types` alone.
const MAX_UNPLANNED_ROWS: usize = 10_000;
/// GET responses that may wait for the writer beyond the requests in flight, so the next
/// requests go out while a batch is made durable (a GET repeated after a crash only reads
/// again). Other methods wait: at most `concurrency` inputs are ever sent and not recorded.
const GET_READ_AHEAD: usize = 256;
/// The most requests in flight a table may ask for.
pub const MAX_CONCURRENCY: u32 = 256;

/// A row-driven table's settings (beside its [`RestTable`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RowDriven {
    pub input: InputSpec,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub concurrency: u32,
    pub request_id_header: Option<String>,
    pub record_status: Vec<u16>,
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

impl RowDriven {
    /// The checked settings of table `t` (`None` without `for_each`). `tables` are the
    /// source's tables, for a parent.
    pub fn from_config(
        rest_source: bool,
        t: &TableConfig,
        tables: &[TableConfig],
    ) -> Result<Option<Self>, UsageError> {
        let name = &t.name;
        let Some(fe) = &t.for_each else {
            for (key, set) in t.row_driven_keys() {
                if set && rest_source {
                    return Err(UsageError::with_hint(
                        format!(
                            "table {name:?}: `{key}` is for row-driven tables (with `for_each`)"
                        ),
                        "add `for_each` to send one request per input row, or put shared headers on the source",
                    ));
                }
            }
            return Ok(None);
        };
        let bad = |what: String, hint: &str| {
            Err(UsageError::with_hint(
                format!("table {name:?}: {what}"),
                hint,
            ))
        };
        if t.watermark.is_some() {
            return bad(
                "a row-driven table (`for_each`) cannot have a `watermark`".into(),
                "row-driven tables are harvested whole by `harvest`; filter the input query instead",
            );
        }
        let input = input_spec(name, fe, tables)?;
        let method = t
            .method
            .clone()
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            return bad(
                format!("method {method:?} is not supported"),
                "use GET, POST, PUT, PATCH or DELETE",
            );
        }
        let body = t.body.as_ref().map(toml_to_json);
        if body.is_some() && (method == "GET" || method == "DELETE") {
            return bad(
                format!("a {method} request has no body"),
                "set method = \"POST\" (or PUT/PATCH) to send `body`",
            );
        }
        if let Some((k, _)) = t.headers.iter().find(|(_, v)| v.contains("${")) {
            return bad(
                format!("headers.{k} refers to an environment variable"),
                "a table's headers are templates filled from input rows and are recorded in the manifest; put a secret header on the source (`headers` or `auth`), where `${VAR}` is read and redacted",
            );
        }
        let concurrency = t.concurrency.unwrap_or(1);
        if concurrency == 0 || concurrency > MAX_CONCURRENCY {
            return bad(
                format!("concurrency = {concurrency} is outside 1..={MAX_CONCURRENCY}"),
                "8 to 32 is plenty for most APIs; use [http] rate_limit to stay under a quota",
            );
        }
        let record_status = t.record_status.clone().unwrap_or_else(|| vec![404]);
        for s in &record_status {
            if !(400..=599).contains(s) || [401, 403, 408, 429, 500, 502, 503, 504].contains(s) {
                return bad(
                    format!("record_status has {s}"),
                    "list client errors to record as responses (e.g. 404, 410, 422); 401/403 always stop the run and 408/429/5xx are retried",
                );
            }
        }
        let me = Self {
            input,
            method,
            headers: t
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body,
            concurrency,
            request_id_header: t.request_id_header.clone(),
            record_status,
        };
        // Templates parse now; their placeholders are checked against the input's columns
        // when it opens, before any request.
        let path = t.path.clone().unwrap_or_else(|| format!("/{name}"));
        me.templates(&path, &[]).map_err(|why| {
            UsageError::with_hint(
                format!("table {name:?}: {why}"),
                "placeholders are `{Column}`; write `{{` and `}}` for literal braces",
            )
        })?;
        Ok(Some(me))
    }

    /// The parsed templates (path, parameters, headers, body).
    fn templates(&self, path: &str, params: &[(String, String)]) -> Result<Templates, String> {
        let t = |what: &str, s: &str| Template::parse(s).map_err(|e| format!("{what}: {e}"));
        Ok(Templates {
            path: t("path", path)?,
            params: params
                .iter()
                .map(|(k, v)| Ok((k.clone(), t(&format!("params.{k}"), v)?)))
                .collect::<Result<_, String>>()?,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), t(&format!("headers.{k}"), v)?)))
                .collect::<Result<_, String>>()?,
            body: self
                .body
                .as_ref()
                .map(|b| BodyTemplate::parse(b).map_err(|e| format!("body: {e}")))
                .transpose()?,
        })
    }
}

fn input_spec(
    name: &str,
    fe: &ForEachConfig,
    tables: &[TableConfig],
) -> Result<InputSpec, UsageError> {
    let kinds = [
        fe.sqlite.is_some(),
        fe.parquet.is_some(),
        fe.table.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(UsageError::with_hint(
            format!("table {name:?}: for_each needs exactly one of `sqlite`, `parquet` or `table`"),
            "e.g. for_each = { sqlite = \"in.db\", query = \"select id from t\" }",
        ));
    }
    let misplaced = |key: &str, belongs: &str| {
        Err(UsageError::new(format!(
            "table {name:?}: for_each.{key} goes with `{belongs}`"
        )))
    };
    if fe.sqlite.is_none() && (fe.query.is_some() || !fe.params.is_empty()) {
        return misplaced(
            if fe.query.is_some() {
                "query"
            } else {
                "params"
            },
            "sqlite",
        );
    }
    if fe.parquet.is_none() && !fe.columns.is_empty() {
        return misplaced("columns", "parquet");
    }
    if fe.table.is_none() && !fe.fields.is_empty() {
        return misplaced("fields", "table");
    }
    if let Some(db) = &fe.sqlite {
        let query = fe.query.clone().ok_or_else(|| {
            UsageError::with_hint(
                format!("table {name:?}: for_each.sqlite needs a `query`"),
                "e.g. query = \"select id from customers\"",
            )
        })?;
        let params = fe
            .params
            .iter()
            .map(|(k, v)| Ok((k.clone(), crate::sqlite_source::Param::from_toml(k, v)?)))
            .collect::<Result<_, UsageError>>()?;
        return Ok(InputSpec::Sqlite {
            db: db.clone(),
            query,
            params,
        });
    }
    if let Some(path) = &fe.parquet {
        return Ok(InputSpec::Parquet {
            path: path.clone(),
            columns: fe.columns.clone(),
        });
    }
    let parent = fe.table.clone().unwrap_or_default();
    let pos = tables.iter().position(|t| t.name == parent);
    let me = tables.iter().position(|t| t.name == name);
    let Some(p) = pos.filter(|p| me.is_some_and(|m| *p < m)) else {
        return Err(UsageError::with_hint(
            format!(
                "table {name:?}: for_each.table = {parent:?} is not a table listed before it in this source"
            ),
            "list the parent table first in the same [[source]]; it is harvested first and its records feed this table",
        ));
    };
    let pt = &tables[p];
    if pt.for_each.is_some() || pt.watermark.is_some() {
        return Err(UsageError::with_hint(
            format!("table {name:?}: the parent {parent:?} is itself row-driven or incremental"),
            "a parent must be a paged REST table harvested whole",
        ));
    }
    if fe.fields.is_empty() {
        return Err(UsageError::with_hint(
            format!("table {name:?}: for_each.table needs `fields`"),
            "name each input column with a JSON Pointer into the parent's records, e.g. fields = { owner = \"/owner/login\", repo = \"/name\" }",
        ));
    }
    for (k, ptr) in &fe.fields {
        if !(ptr.is_empty() || ptr.starts_with('/')) {
            return Err(UsageError::with_hint(
                format!("table {name:?}: for_each.fields.{k} = {ptr:?} is not a JSON Pointer"),
                "a JSON Pointer starts with / (e.g. \"/id\" or \"/owner/login\")",
            ));
        }
    }
    Ok(InputSpec::Parent {
        table: pt.output.clone().unwrap_or_else(|| pt.name.clone()),
        records: pt.records.clone(),
        fields: fe
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// A row-driven table's parsed templates.
struct Templates {
    path: Template,
    params: Vec<(String, Template)>,
    headers: Vec<(String, Template)>,
    body: Option<BodyTemplate>,
}

impl Templates {
    fn slots(&self) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> =
            self.path.slots().map(|s| ("path".to_string(), s)).collect();
        for (k, t) in &self.params {
            out.extend(t.slots().map(|s| (format!("params.{k}"), s)));
        }
        for (k, t) in &self.headers {
            out.extend(t.slots().map(|s| (format!("headers.{k}"), s)));
        }
        if let Some(b) = &self.body {
            out.extend(b.slots().into_iter().map(|s| ("body".to_string(), s)));
        }
        out
    }
}

/// The first request of one input row.
struct Built {
    url: Url,
    shape: Arc<Shape>,
    id: String,
}

/// What the table needs to build requests.
struct Requests {
    base: Url,
    rest: RestTable,
    output: String,
    method: reqwest::Method,
    templates: Templates,
    keep: Vec<u16>,
    id_header: Option<String>,
    secret_param: Option<String>,
    /// The source sends credentials: a next URL on another origin is refused.
    credentials: bool,
    /// Requests in flight, across inputs.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Requests {
    fn build(&self, columns: &[String], values: &[Value]) -> Result<Built, String> {
        let row = Row { columns, values };
        let t = &self.templates;
        let path = t.path.fill(&row, true)?;
        let params = t
            .params
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.fill(&row, false)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let headers = t
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.fill(&row, false)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let body = match &t.body {
            Some(b) => Some(serde_json::to_vec(&b.fill(&row)?).map_err(|e| e.to_string())?),
            None => None,
        };
        let url = crate::rest::first_url_at(&self.base, &path, &self.rest, &params);
        let id = cursor::request_id(&self.method, &url, body.as_deref());
        Ok(Built {
            url,
            id,
            shape: Arc::new(Shape {
                method: self.method.clone(),
                headers,
                body,
                keep: self.keep.clone(),
                id_header: self.id_header.clone(),
                permits: Some(Arc::clone(&self.permits)),
            }),
        })
    }

    /// Start the requests of one input row: from its first page, or (resume) after page
    /// `after` whose recorded next URL is `next`.
    fn start(
        &self,
        client: &Arc<Client>,
        b: &Built,
        after: u64,
        next: Option<String>,
        paging: Option<Paginate>,
    ) -> (Walkers, tokio::sync::mpsc::Receiver<Event>) {
        let pager = RestPager::starting_at(
            b.url.clone(),
            &self.output,
            &self.rest,
            paging,
            self.secret_param.clone(),
        )
        .carrying_credentials(self.credentials);
        let walk = Walk {
            stream: 0,
            pager: Arc::new(pager),
            start: Start {
                page: after,
                cursor: next,
                seen: HashSet::new(),
                columns: None,
            },
            shape: Some(Arc::clone(&b.shape)),
        };
        cursor::spawn_one(client, walk, FETCH_AHEAD)
    }
}

use crate::http::Client;

/// The first 16 bytes of a hex request id, for the compact set of taken inputs.
fn short_id(hex: &str) -> u128 {
    u128::from_str_radix(hex.get(..32).unwrap_or(hex), 16).unwrap_or(0)
}

/// One input row's requests in flight.
struct Job {
    /// The id of the input's first request.
    input_id: String,
    /// Pages of this input taken so far (its own pagination).
    n: u64,
    key: Map<String, Value>,
    /// Held so that dropping the job aborts its requests.
    _walkers: Walkers,
    rx: tokio::sync::mpsc::Receiver<Event>,
}

/// One response on its way into a batch.
struct Response {
    /// This request's id (its own URL; the input's method and body).
    id: String,
    input_id: String,
    key: Map<String, Value>,
    /// The page within the input's own pagination (1 = its first request).
    n: u64,
    f: FetchedPage,
}

/// Counters for `table_end`.
#[derive(Default)]
struct Counts {
    inputs: u64,
    duplicate_inputs: u64,
    already_recorded: u64,
    responses: u64,
    statuses: BTreeMap<u16, u64>,
}

/// An input whose last recorded page has a next page.
struct Partial {
    /// The id of the input's first request.
    input_id: String,
    key: Map<String, Value>,
    /// The input's last recorded page (its own numbering).
    n: u64,
    next: String,
    paging: Option<Value>,
}

/// What an earlier process of this run recorded for the table, read from the manifest.
#[derive(Default)]
struct Recorded {
    /// Inputs whose last page is recorded.
    done: HashSet<u128>,
    /// An input cut off between two of its pages.
    partial: Option<Partial>,
    /// Entries of the batches after the checkpoint (batch number → entries).
    batches: BTreeMap<u64, Vec<Value>>,
    /// Entries recorded, and per status.
    responses: u64,
    statuses: BTreeMap<u16, u64>,
}

fn recorded(ctx: &RunCtx<'_>, output: &str, checkpoint: u64) -> anyhow::Result<Recorded> {
    let mut r = Recorded::default();
    let mut open: BTreeMap<String, Partial> = BTreeMap::new();
    crate::manifest::for_each_record(&ctx.settings.out, |v| {
        if v["kind"] != "page" || v["run_id"] != ctx.run_id || v["output"] != output {
            return;
        }
        let batch = v["page"].as_u64().unwrap_or(0);
        let entries = v["requests"].as_array().cloned().unwrap_or_default();
        for e in &entries {
            let id = e["id"].as_str().unwrap_or_default().to_string();
            let input = e["input"].as_str().map_or(id.clone(), str::to_string);
            r.responses += 1;
            *r.statuses
                .entry(e["status"].as_u64().unwrap_or(0) as u16)
                .or_default() += 1;
            match e["next"].as_str() {
                Some(next) => {
                    open.insert(
                        input.clone(),
                        Partial {
                            input_id: input,
                            key: e["key"].as_object().cloned().unwrap_or_default(),
                            n: e["n"].as_u64().unwrap_or(1),
                            next: next.to_string(),
                            paging: e.get("paging").cloned(),
                        },
                    );
                }
                None => {
                    open.remove(&input);
                    r.done.insert(short_id(&input));
                }
            }
        }
        if batch > checkpoint {
            r.batches.insert(batch, entries);
        }
    })?;
    r.partial = open.into_values().next();
    if let Some(p) = &r.partial {
        r.done.insert(short_id(&p.input_id));
    }
    Ok(r)
}

/// The table's run: plan, sink, batches.
struct RowRun<'a> {
    ctx: &'a RunCtx<'a>,
    table: &'a TableSettings,
    /// `--table-format delta`: the table's Delta log and how this run writes it.
    delta: Option<crate::delta::Target>,
    raw_rel: String,
    raw_dir: PathBuf,
    input_columns: Vec<String>,
    plan: Option<TablePlan>,
    sink: Option<TableSink>,
    /// Rows waiting for the plan (no response with records yet), with their batch.
    unplanned: Vec<(u64, Page)>,
    unplanned_rows: usize,
    batch_no: u64,
    /// The last batch whose rows are in the sink, and the first since the last checkpoint.
    taken: u64,
    first_since_checkpoint: u64,
    last_part: u64,
    rows: u64,
    rows_before: u64,
    parts: u64,
    fetched_batches: u64,
    replayed_batches: u64,
    counts: Counts,
}

impl RowRun<'_> {
    fn meta_columns(&self) -> Vec<String> {
        let mut cols = vec![REQUEST_ID.to_string(), STATUS.to_string()];
        cols.extend(
            self.input_columns
                .iter()
                .map(|c| format!("{INPUT_PREFIX}{c}")),
        );
        cols
    }

    /// One response as a sparse page: the meta columns, then its records' fields.
    fn response_page(
        &self,
        id: &str,
        status: u16,
        key: &Map<String, Value>,
        page: Page,
    ) -> anyhow::Result<Page> {
        let mut meta = vec![Value::String(id.to_string()), Value::from(status)];
        meta.extend(
            self.input_columns
                .iter()
                .map(|c| key.get(c).cloned().unwrap_or(Value::Null)),
        );
        let mut columns = self.meta_columns();
        if !(200..300).contains(&status) {
            return Ok(Page {
                columns: Some(columns),
                rows: vec![meta],
                sparse: true,
                ..Page::default()
            });
        }
        let fields = page.columns.unwrap_or_default();
        if let Some(clash) = fields.iter().find(|f| columns.contains(f)) {
            bail!(
                "table {:?}: the response field {clash:?} has the name of a column harvest adds ({REQUEST_ID}, {STATUS}, {INPUT_PREFIX}<input column>); no row of this response was written. Rename the input column in the query, or report the API field",
                self.table.output
            );
        }
        columns.extend(fields);
        let rows = page
            .rows
            .into_iter()
            .map(|r| {
                let mut row = meta.clone();
                row.extend(r);
                row
            })
            .collect();
        Ok(Page {
            columns: Some(columns),
            rows,
            sparse: true,
            ..Page::default()
        })
    }

    /// Take one response's page: plan with the first one holding records, then to the sink.
    fn take(&mut self, batch: u64, page: Page) -> anyhow::Result<()> {
        if self.plan.is_none() {
            let has_fields = page
                .columns
                .as_ref()
                .is_some_and(|c| c.len() > 2 + self.input_columns.len())
                && !page.rows.is_empty();
            if !has_fields && self.unplanned_rows < MAX_UNPLANNED_ROWS {
                self.unplanned_rows += page.rows.len();
                self.unplanned.push((batch, page));
                return Ok(());
            }
            self.plan_pending(has_fields.then_some(&page))?;
        }
        self.push(batch, &page)
    }

    /// Plan the table from `current` (a response with records), else from the first response
    /// held back, else from the meta columns alone; then write the held-back rows.
    fn plan_pending(&mut self, current: Option<&Page>) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.unplanned);
        self.unplanned_rows = 0;
        let meta_only;
        let first = match (current, pending.first()) {
            (Some(p), _) | (None, Some((_, p))) => p,
            (None, None) => {
                meta_only = Page {
                    columns: Some(self.meta_columns()),
                    sparse: true,
                    ..Page::default()
                };
                &meta_only
            }
        };
        self.install_plan(first)?;
        for (b, p) in &pending {
            self.push(*b, p)?;
        }
        Ok(())
    }

    fn install_plan(&mut self, first: &Page) -> anyhow::Result<()> {
        let Some(rest) = self.table.rest.as_ref() else {
            bail!("table {:?} has no REST settings", self.table.output)
        };
        let mut p = crate::rest::plan_table(self.table, rest, first)?;
        for c in &mut p.columns {
            if c.name == REQUEST_ID {
                c.ty = ColType::Text;
                c.reason = "request id".into();
            } else if c.name == STATUS {
                c.ty = ColType::Integer;
                c.reason = "HTTP status".into();
            }
        }
        self.set_plan(p)
    }

    fn set_plan(&mut self, p: TablePlan) -> anyhow::Result<()> {
        let mut sink = TableSink::new(
            &self.ctx.settings.out,
            &self.table.output,
            self.ctx.run_id,
            &p.columns,
            self.table.partition_by.as_deref(),
            self.ctx.settings.sink.clone(),
        )?;
        sink.continue_after_part(self.last_part);
        self.sink = Some(sink);
        self.plan = Some(p);
        Ok(())
    }

    fn push(&mut self, batch: u64, page: &Page) -> anyhow::Result<()> {
        let (Some(plan), Some(sink)) = (self.plan.as_ref(), self.sink.as_mut()) else {
            unreachable!("pushed only once planned")
        };
        let rows = page.aligned(&plan.columns, &self.table.output, batch)?;
        sink.push_rows(&rows, batch)?;
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// All rows of batches up to `batch` are taken: checkpoint when the sink says so.
    fn batch_taken(&mut self, batch: u64, manifest: &mut Manifest) -> anyhow::Result<()> {
        self.taken = batch;
        if self.sink.as_ref().is_some_and(TableSink::checkpoint_due) && self.unplanned.is_empty() {
            self.checkpoint(manifest)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, manifest: &mut Manifest) -> anyhow::Result<()> {
        // Rows still waiting for the plan are not in any part: no checkpoint may cover them.
        if !self.unplanned.is_empty() {
            return Ok(());
        }
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        let closed = sink.checkpoint()?;
        self.record_parts(manifest, &closed)?;
        self.first_since_checkpoint = self.taken + 1;
        Ok(())
    }

    fn record_parts(
        &mut self,
        manifest: &mut Manifest,
        closed: &[ClosedPart],
    ) -> anyhow::Result<()> {
        let Some(plan) = self.plan.as_ref() else {
            return Ok(());
        };
        let pages = json!({
            "raw_run": self.ctx.run_id,
            "first": self.first_since_checkpoint,
            "last": self.taken,
        });
        crate::pipeline::record_part_lines(
            manifest,
            self.ctx,
            self.table,
            &plan.columns,
            &pages,
            closed,
            self.delta.as_ref(),
        )?;
        self.parts += closed.len() as u64;
        Ok(())
    }

    /// Record a batch of responses: the snapshot, then the manifest line; then their rows.
    async fn record_batch(
        &mut self,
        batch: Vec<Response>,
        manifest: &mut Manifest,
    ) -> anyhow::Result<()> {
        let batch_no = self.batch_no + 1;
        let mut bytes = Vec::new();
        let mut entries = Vec::with_capacity(batch.len());
        let mut pages = Vec::with_capacity(batch.len());
        for r in batch {
            let f = r.f;
            let page = f
                .parsed
                .await
                .context("the response parser stopped")?
                .map_err(|why| {
                    anyhow::anyhow!(
                        "unexpected response from {}: {why}",
                        crate::http::display_url(&f.url)
                    )
                })?;
            let status = f.fetched.status;
            let id = r.id;
            let next = page.next.clone();
            let rows_page = self.response_page(&id, status, &r.key, page)?;
            let mut e = obj(json!({
                "id": id,
                "url": crate::http::display_url(&f.url),
                "status": status,
                "offset": bytes.len(),
                "bytes": f.fetched.body.len(),
                "sha256": sha256_hex(&f.fetched.body),
                "rows": rows_page.rows.len(),
                "attempts": f.fetched.attempts,
                "elapsed_ms": f.fetched.elapsed_ms,
                "fetched_at": f.fetched.fetched_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "key": r.key,
            }));
            if r.n > 1 {
                e.insert("input".into(), json!(r.input_id));
                e.insert("n".into(), json!(r.n));
            }
            if let Some(next) = &next {
                e.insert("next".into(), json!(next));
            }
            if let Some(p) = f.paging.filter(|p| p != &json!("none")) {
                e.insert("paging".into(), p);
            }
            if let Some(ct) = &f.fetched.content_type {
                e.insert("content_type".into(), json!(ct));
            }
            if let Some(enc) = &f.fetched.content_encoding {
                e.insert("content_encoding".into(), json!(enc));
                e.insert("wire_bytes".into(), json!(f.fetched.wire_bytes));
            }
            bytes.extend_from_slice(&f.fetched.body);
            *self.counts.statuses.entry(status).or_default() += 1;
            self.counts.responses += 1;
            entries.push(Value::Object(e));
            pages.push(rows_page);
        }
        let name = format!("batch-{batch_no:06}.raw");
        let rel = format!("{}/{name}", self.raw_rel);
        atomic_write(&self.raw_dir.join(&name), &bytes)
            .with_context(|| format!("cannot write the snapshot {rel}"))?;
        crate::failpoint("rows:after-snapshot");
        let rows: usize = pages.iter().map(|p| p.rows.len()).sum();
        manifest.append(
            "page",
            self.ctx.run_id,
            obj(json!({
                "source": crate::http::display_url(&self.ctx.source.base),
                "table": self.table.name,
                "output": self.table.output,
                "page": batch_no,
                "path": rel,
                "sha256": sha256_hex(&bytes),
                "bytes": bytes.len(),
                "rows": rows,
                "cursor_in": null,
                "cursor_out": null,
                "row_driven": true,
                "requests": entries,
            })),
        )?;
        crate::failpoint("rows:after-batch");
        self.batch_no = batch_no;
        self.fetched_batches += 1;
        for p in pages {
            self.take(batch_no, p)?;
        }
        self.batch_taken(batch_no, manifest)
    }
}

/// Harvest one row-driven table of the run's current (REST) source.
pub(crate) async fn harvest_rows(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    mut progress: TableProgress,
    manifest: &mut Manifest,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let out_name = &table.output;
    let (Some(rd), Some(rest)) = (table.rows.as_ref(), table.rest.as_ref()) else {
        bail!("table {out_name:?} is not a row-driven REST table");
    };
    let templates = rd
        .templates(&rest.path, &table.params)
        .map_err(|why| UsageError::new(format!("table {out_name:?}: {why}")))?;
    let mut inputs: Inputs = crate::inputs::open(&rd.input, &ctx.settings.out, ctx.run_id)
        .await
        .with_context(|| format!("table {out_name:?}: opening {}", rd.input.describe()))?;
    for (place, slot) in templates.slots() {
        if !inputs.columns.iter().any(|c| c == slot) {
            return Err(UsageError::with_hint(
                format!(
                    "table {out_name:?}: {place} uses the placeholder {{{slot}}}, but {} has no column {slot:?}",
                    rd.input.describe()
                ),
                format!("its columns are: {}", inputs.columns.join(", ")),
            )
            .into());
        }
    }
    let concurrency = rd.concurrency.max(1) as usize;
    let method: reqwest::Method = rd.method.parse().unwrap_or(reqwest::Method::GET);
    // Inputs sent and not yet recorded: in flight, plus (GET only) answered and waiting.
    let window = if method == reqwest::Method::GET {
        concurrency + GET_READ_AHEAD
    } else {
        concurrency
    };
    let requests = Requests {
        permits: Arc::new(tokio::sync::Semaphore::new(concurrency)),
        base: ctx.source.base.clone(),
        rest: rest.clone(),
        output: out_name.clone(),
        method,
        templates,
        keep: rd.record_status.clone(),
        id_header: rd.request_id_header.clone(),
        secret_param: ctx.source.secret_param(),
        credentials: ctx.source.sends_credentials(),
    };

    let sp = progress.streams.remove(&None).unwrap_or_default();
    let resumed = !sp.all_pages.is_empty() || sp.last_part > 0;
    let rec = if resumed {
        recorded(ctx, out_name, sp.checkpoint_page)?
    } else {
        Recorded::default()
    };
    let raw_rel = format!(
        "raw/{}/{}/{}",
        sanitize_component(&ctx.source.name),
        sanitize_component(out_name),
        ctx.run_id
    );
    let raw_dir = ctx.settings.out.join(&raw_rel);
    create_dir_all_durable(&raw_dir)
        .with_context(|| format!("cannot create {}", raw_dir.display()))?;
    let delta = crate::delta::target(
        &ctx.settings.out,
        &format!("parquet/{}", sanitize_component(&table.output)),
        &table.output,
        ctx.settings.table_format,
        ctx.run_id,
        false,
        crate::pipeline::shared_table(ctx, table, manifest),
    )?;
    let mut run = RowRun {
        ctx,
        table,
        delta,
        raw_rel,
        raw_dir,
        input_columns: inputs.columns.clone(),
        plan: None,
        sink: None,
        unplanned: vec![],
        unplanned_rows: 0,
        batch_no: sp.checkpoint_page,
        taken: sp.checkpoint_page,
        first_since_checkpoint: sp.checkpoint_page + 1,
        last_part: sp.last_part,
        rows: 0,
        rows_before: sp.rows_in_parts,
        parts: 0,
        fetched_batches: 0,
        replayed_batches: 0,
        counts: Counts {
            responses: rec.responses,
            statuses: rec.statuses.clone(),
            ..Counts::default()
        },
    };
    if let Some(columns) = progress.plan.take() {
        run.set_plan(TablePlan {
            columns,
            is_view: false,
            count: None,
        })?;
    }

    // 1. Batches recorded after the last checkpoint: their rows again, from the snapshots.
    for rp in &sp.replay {
        let body = rp.read_snapshot(&ctx.settings.out)?;
        for e in rec.batches.get(&rp.page).into_iter().flatten() {
            let (off, len) = (
                e["offset"].as_u64().unwrap_or(0) as usize,
                e["bytes"].as_u64().unwrap_or(0) as usize,
            );
            let Some(slice) = body.get(off..off + len) else {
                bail!(
                    "the snapshot {} is shorter than its manifest line says; rerun with --restart",
                    rp.path
                );
            };
            let status = e["status"].as_u64().unwrap_or(0) as u16;
            let page = if (200..300).contains(&status) {
                crate::rest::parse_snapshot(slice, rest.records.as_deref()).map_err(|why| {
                    anyhow::anyhow!("the recorded response in {} is unusable: {why}", rp.path)
                })?
            } else {
                Page::default()
            };
            let key = e["key"].as_object().cloned().unwrap_or_default();
            let id = e["id"].as_str().unwrap_or_default();
            let p = run.response_page(id, status, &key, page)?;
            run.take(rp.page, p)?;
        }
        run.batch_no = rp.page;
        run.replayed_batches += 1;
        run.batch_taken(rp.page, manifest)?;
    }
    if run.replayed_batches > 0 {
        tracing::info!(
            "{out_name}: replayed {} recorded batch(es) from snapshots; {} input(s) already answered are skipped",
            run.replayed_batches,
            rec.done.len()
        );
    }

    // 2. The rest of the inputs, `concurrency` in flight, recorded in input order.
    let mut jobs: VecDeque<Job> = VecDeque::new();
    let mut earlier: HashSet<u128> = rec.done;
    let mut seen: HashSet<u128> = HashSet::new();
    if let Some(Partial {
        input_id: id,
        key,
        n,
        next,
        paging,
    }) = rec.partial
    {
        // An input cut off between two of its pages: continue it from its next URL.
        let values: Vec<Value> = run
            .input_columns
            .iter()
            .map(|c| key.get(c).cloned().unwrap_or(Value::Null))
            .collect();
        let built = requests
            .build(&run.input_columns, &values)
            .map_err(|why| anyhow::anyhow!("table {out_name:?}: resuming input {key:?}: {why}"))?;
        if built.id != id {
            bail!(
                "table {out_name:?}: the input {} no longer builds the request it was recorded with; rerun with --restart",
                Value::Object(key)
            );
        }
        let paging = paging.and_then(|p| serde_json::from_value(p).ok());
        let (walkers, rx) = requests.start(ctx.client, &built, n, Some(next), paging);
        jobs.push_back(Job {
            input_id: id,
            n,
            key,
            _walkers: walkers,
            rx,
        });
    }
    let mut signals = ctx.signals.clone();
    let bar = crate::progress::Progress::rows(out_name, ctx.quiet);
    let mut inputs_done = false;
    let method_is_get = requests.method == reqwest::Method::GET;
    let (mut draining, mut abandon) = (false, false);
    loop {
        // Marked seen, so that only a further signal wakes `changed()` below.
        let signal = *signals.borrow_and_update();
        if let Some(sig) = signal {
            // GET: stop at once (a repeated GET only reads again). Other methods: the requests
            // already sent are answered and recorded first, so a rerun does not send them
            // twice; a second signal abandons them.
            if method_is_get || jobs.is_empty() || abandon {
                drop(jobs);
                run.checkpoint(manifest)?;
                return Err(Interrupted { signal: sig }.into());
            }
            if !draining {
                tracing::warn!(
                    "{out_name}: {sig}: recording the {} request(s) already sent before stopping (send it again to stop at once)",
                    jobs.len()
                );
                draining = true;
            }
        }
        while !draining && !inputs_done && jobs.len() < window {
            let Some(values) = inputs
                .next()
                .await
                .with_context(|| format!("table {out_name:?}: reading {}", rd.input.describe()))?
            else {
                inputs_done = true;
                break;
            };
            run.counts.inputs += 1;
            let built = requests.build(&run.input_columns, &values).map_err(|why| {
                anyhow::anyhow!("table {out_name:?}, input row {}: {why}", inputs.read)
            })?;
            let sid = short_id(&built.id);
            if earlier.remove(&sid) {
                run.counts.already_recorded += 1;
                seen.insert(sid);
                continue;
            }
            if !seen.insert(sid) {
                run.counts.duplicate_inputs += 1;
                continue;
            }
            let key: Map<String, Value> = run.input_columns.iter().cloned().zip(values).collect();
            let (walkers, rx) = requests.start(ctx.client, &built, 0, None, None);
            jobs.push_back(Job {
                input_id: built.id,
                n: 0,
                key,
                _walkers: walkers,
                rx,
            });
        }
        let Some(head) = jobs.front_mut() else { break };
        let event = tokio::select! {
            biased;
            Ok(()) = signals.changed() => {
                abandon = draining;
                continue;
            }
            e = head.rx.recv() => e,
        };
        let mut batch = Vec::new();
        let mut failed = take_event(event, &mut jobs, &mut batch).err();
        // Everything else already answered, in input order, joins the batch.
        while failed.is_none()
            && let Some(head) = jobs.front_mut()
        {
            let step = match head.rx.try_recv() {
                Ok(ev) => take_event(Some(ev), &mut jobs, &mut batch),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    take_event(None, &mut jobs, &mut batch)
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
            };
            failed = step.err();
        }
        // What was answered before a failure is recorded first, so a rerun skips it.
        if let Some(e) = failed {
            drop(jobs);
            if !batch.is_empty() {
                run.record_batch(batch, manifest).await?;
            }
            run.checkpoint(manifest)?;
            return Err(e);
        }
        if !batch.is_empty() {
            run.record_batch(batch, manifest).await?;
            bar.set(run.rows_before + run.rows);
            if run.fetched_batches.is_multiple_of(500) {
                tracing::info!(
                    table = %out_name,
                    rows = run.rows_before + run.rows,
                    responses = run.counts.responses,
                    "{out_name}: {} inputs read, {} responses, {} rows",
                    run.counts.inputs,
                    run.counts.responses,
                    run.rows_before + run.rows
                );
            }
        }
    }
    drop(inputs);
    finish(run, manifest, totals, started)
}

/// Take what the head job reported: a page joins the batch; the end of its pages retires it;
/// a failure stops the table.
fn take_event(
    event: Option<Event>,
    jobs: &mut VecDeque<Job>,
    batch: &mut Vec<Response>,
) -> anyhow::Result<()> {
    let Some(job) = jobs.front_mut() else {
        return Ok(());
    };
    match event {
        None => {
            jobs.pop_front();
        }
        Some(Event::Page(f)) => {
            job.n += 1;
            batch.push(Response {
                id: f
                    .request_id
                    .clone()
                    .context("a row-driven page came without its request id")?,
                input_id: job.input_id.clone(),
                key: job.key.clone(),
                n: job.n,
                f: *f,
            });
        }
        Some(Event::Failed { page_no, error, .. }) => {
            let key = Value::Object(job.key.clone());
            return Err(error.context(format!(
                "the request for input {key} (its page {page_no}) failed; every response recorded so far is kept, and a rerun resumes"
            )));
        }
    }
    Ok(())
}

/// Close the table: the plan if no response had records, final parts, `table_end`, then
/// supersede earlier runs' parts.
fn finish(
    mut run: RowRun<'_>,
    manifest: &mut Manifest,
    totals: &mut Totals,
    started: Instant,
) -> anyhow::Result<()> {
    let (ctx, table) = (run.ctx, run.table);
    if run.plan.is_none() {
        run.plan_pending(None)?;
    }
    let Some(mut sink) = run.sink.take() else {
        unreachable!("planned above")
    };
    let wrote_any = run.last_part > 0 || run.parts > 0 || !sink.is_empty();
    if wrote_any {
        sink.skip_empty_part();
    }
    let closed = sink.finish()?;
    run.record_parts(manifest, &closed)?;
    let rows = run.rows_before + run.rows;
    let pages = run.batch_no;
    let c = &run.counts;
    let statuses: Map<String, Value> = c
        .statuses
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let recorded_errors: u64 = c
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let mut end = obj(json!({
            "source": crate::http::display_url(&ctx.source.base),
            "table": table.name,
            "output": table.output,
            "pages": pages,
            "rows": rows,
            "server_count": null,
            "fetched_pages": run.fetched_batches,
            "replayed_pages": run.replayed_batches,
            "earlier_pages": pages - run.fetched_batches - run.replayed_batches,
            "row_driven": {
                "inputs_read": c.inputs,
                "responses": c.responses,
                "statuses": statuses,
                "duplicate_inputs": c.duplicate_inputs,
                "already_recorded": c.already_recorded,
            },
    }));
    if let Some(t) = &run.delta {
        end.insert("delta".into(), json!(t.mode.as_str()));
    }
    manifest.append("table_end", ctx.run_id, end)?;
    totals.add_table(pages, rows, run.replayed_batches);
    totals.fetched_pages += run.fetched_batches;
    totals.parts += run.parts;
    if recorded_errors > 0 {
        let w = format!(
            "{}: {recorded_errors} request(s) answered with a recorded error status ({}); their rows have only {REQUEST_ID}, {STATUS} and the input",
            table.output,
            c.statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(s, n)| format!("{n}× {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::warn!("{w}");
        totals.warnings.push(w);
    }
    if c.duplicate_inputs > 0 {
        let w = format!(
            "{}: {} input row(s) repeated an earlier row's request and were not sent again",
            table.output, c.duplicate_inputs
        );
        tracing::warn!("{w}");
        totals.warnings.push(w);
    }
    let table_rel = format!("parquet/{}", sanitize_component(&table.output));
    match &run.delta {
        Some(t) => crate::pipeline::finish_delta(manifest, ctx, table, t, true)?,
        None => crate::pipeline::supersede_parts(
            &ctx.settings.out,
            &table_rel,
            ctx.run_id,
            &table.output,
            manifest,
        )?,
    }
    tracing::info!(
        source = %crate::http::display_url(&ctx.source.base),
        table = %table.output,
        rows,
        pages,
        responses = c.responses,
        inputs = c.inputs,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "{}: {} responses to {} input rows, {rows} rows in {pages} batches ({} fetched now, {} replayed), {:.1}s",
        table.output,
        c.responses,
        c.inputs,
        run.fetched_batches,
        run.replayed_batches,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
