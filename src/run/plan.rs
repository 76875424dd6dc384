//! `harvest plan`: what a run of a config would do, table by table, learned the way the run
//! learns it (the same settings, client, table sources, pagers and column planner) but with
//! nothing written.
//!
//! Guarantees:
//! - Nothing is created or changed: no output directory, lock, manifest, snapshot or part.
//!   The only file read under DIR is a table's stored watermark, when DIR exists.
//! - Each table costs at most its first page: what the run asks before page 1 (Datasette: the
//!   version, settings and type probe), then page 1 (a row-driven table: the first input
//!   row's request). A row-driven table whose input is a parent table reads the parent's
//!   first page as this plan fetched it. Requests are retried at most 3 times.
//! - Everything shown passes through redaction: credentials appear as `[REDACTED]`.
//! - A problem the run would stop on for the config's sake (a placeholder naming no input
//!   column, a records pointer that selects nothing, `auto` seeing more pages it cannot
//!   reach, a partition or watermark column the first page lacks) is listed on its table;
//!   other failures (the server unreachable, credentials refused) are kept with their error,
//!   so the command can exit with its documented code.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Exit, UsageError, exit_code_for};
use crate::http::{Client, Fetched};
use crate::run::job::{Kit, datasette_kit, fit_page_size, source_http};
use crate::run::row_driven::requests::Requests;
use crate::run::settings::HarvestSettings;
use crate::schema::ColumnPlan;
use crate::source::datasette::table::DatasetteTable;
use crate::source::rest::{Paginate, Paging, RestSource, RestTable, Total};
use crate::source::rows::{INPUT_PREFIX, REQUEST_ID, RowDriven, STATUS};
use crate::source::settings::{SourceKind, SourceSettings, TableSettings};
use crate::source::{Page, PageRequest, TableSource};

/// Attempts per request while planning: enough to ride out a blip, not a run's patience.
const PLAN_ATTEMPTS: u32 = 3;

/// The plan of every table asked for.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The output the run would write (nothing is written by the plan).
    pub out: String,
    pub tables: Vec<TableReport>,
    /// Problems over all tables (the command exits 2 when there is one).
    pub problems: usize,
}

/// One table: its first request, paging, records, columns and what was found wrong.
#[derive(Debug, Serialize, Default)]
pub struct TableReport {
    pub source: String,
    pub kind: &'static str,
    pub table: String,
    pub output: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestShown>,
    /// The paginator, as the run records it in `paging` (for `auto`: what page 1 chose).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paginator: Option<Value>,
    /// For `paginate = "auto"`: the rule that chose the paginator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paginator_rule: Option<String>,
    /// JSON Pointer to the records (configured, or where the first page holds them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_page: Option<FirstPage>,
    /// The server's count of the table's rows (records), where it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_total: Option<u64>,
    pub columns: Vec<ColumnShown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<String>,
    pub parallel: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalShown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<InputShown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesShown>,
    pub notes: Vec<String>,
    pub problems: Vec<Problem>,
    /// A failure that is not the config's (kept for the exit code; its text is a problem).
    #[serde(skip)]
    pub failure: Option<anyhow::Error>,
}

/// A request as it will be sent, credentials masked.
#[derive(Debug, Serialize)]
pub struct RequestShown {
    pub method: String,
    pub url: String,
    pub headers: Vec<[String; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct FirstPage {
    pub status: u16,
    pub bytes: usize,
    pub rows: usize,
    /// Whether page 1 leads to a page 2.
    pub more: bool,
}

#[derive(Debug, Serialize)]
pub struct ColumnShown {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// `declared`, `types override`, `server probe`, `inferred from page 1` or `added by harvest`.
    pub from: &'static str,
    /// The planner's own words.
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct IncrementalShown {
    pub column: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    pub lookback: String,
    /// The stored watermark in DIR (`None`: no earlier incremental run there).
    pub stored: Option<Value>,
    /// The lower bound the next `incremental` run asks for (`None`: it takes every row).
    pub bound: Option<String>,
    /// The request parameters that bound adds or changes.
    pub params: Vec<[String; 2]>,
}

#[derive(Debug, Serialize)]
pub struct InputShown {
    pub from: String,
    pub columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_row: Option<Vec<Value>>,
}

#[derive(Debug, Serialize)]
pub struct FilesShown {
    pub glob: String,
    pub matched: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl TableReport {
    fn problem(&mut self, message: impl Into<String>, hint: Option<String>) {
        self.problems.push(Problem {
            message: message.into(),
            hint,
        });
    }

    /// An error met while planning: the config's (exit 2) becomes a problem; any other is
    /// also kept as the table's failure.
    fn failed(&mut self, e: anyhow::Error) {
        let (message, hint) = match e.chain().find_map(|c| c.downcast_ref::<UsageError>()) {
            Some(u) => (u.message.clone(), u.hint.clone()),
            None => (format!("{e:#}"), None),
        };
        self.problem(message, hint);
        if exit_code_for(&e) != Exit::Usage && self.failure.is_none() {
            self.failure = Some(e);
        }
    }
}

/// Plan the tables of `settings` (only those named in `only`, by table or dataset name).
pub async fn plan(settings: &HarvestSettings, only: &[String]) -> anyhow::Result<Plan> {
    let known: Vec<&TableSettings> = settings.sources.iter().flat_map(|s| &s.tables).collect();
    if let Some(missing) = only
        .iter()
        .find(|w| !known.iter().any(|t| t.name == **w || t.output == **w))
    {
        return Err(UsageError::with_hint(
            format!("--table {missing:?} is not a table of the config"),
            format!(
                "its tables are: {}",
                known
                    .iter()
                    .map(|t| t.output.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .into());
    }
    let wanted =
        |t: &TableSettings| only.is_empty() || only.iter().any(|w| *w == t.name || *w == t.output);
    let mut tables = Vec::new();
    for source in &settings.sources {
        let mut http = source_http(&settings.http, source);
        http.max_attempts = http.max_attempts.min(PLAN_ATTEMPTS);
        let client = Arc::new(Client::new(http)?);
        // A Datasette source is asked once (version, settings); a failure is the first table's
        // (with its exit code) and named on the others.
        let (kit, mut kit_error) = match source.kind {
            SourceKind::Datasette => match datasette_kit(&client, source).await {
                Ok(k) => (Some(k), None),
                Err(e) => (None, Some(e.context("asking the Datasette server"))),
            },
            _ => (None, None),
        };
        let kit_said = kit_error.as_ref().map(|e| format!("{e:#}"));
        // Page-1 bodies of this source's tables, for row-driven children reading them.
        let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
        for table in source.tables.iter().filter(|t| wanted(t)) {
            let mut r = TableReport {
                source: source.name.clone(),
                kind: match (source.kind, table.rows.is_some()) {
                    (SourceKind::Datasette, _) => "datasette",
                    (SourceKind::Rest, false) => "rest",
                    (SourceKind::Rest, true) => "rest, row-driven",
                    (SourceKind::Files, _) => "files",
                },
                table: table.name.clone(),
                output: table.output.clone(),
                partition_by: table.partition_by.clone(),
                parallel: table.parallel,
                ..TableReport::default()
            };
            match (source.kind, &kit) {
                (SourceKind::Datasette, None) => match kit_error.take() {
                    Some(e) => r.failed(e),
                    None => r.problem(kit_said.clone().unwrap_or_default(), None),
                },
                (SourceKind::Datasette, Some(Kit::Datasette { facts, max_rows })) => {
                    match fit_page_size(table, *max_rows) {
                        Ok(fitted) => {
                            let make = |t: &TableSettings| {
                                TableSource::Datasette(Box::new(DatasetteTable::new(
                                    &client,
                                    &source.base,
                                    &source.database,
                                    t,
                                    *facts,
                                )))
                            };
                            paged(&mut r, settings, source, &client, &fitted, make).await;
                        }
                        Err(e) => r.failed(e),
                    }
                }
                (SourceKind::Rest, _) if table.rest.is_none() => r.failed(anyhow::anyhow!(
                    "table {:?} of a REST source has no REST settings",
                    table.output
                )),
                (SourceKind::Rest, _) if table.rows.is_some() => {
                    row_driven(&mut r, source, &client, table, &bodies).await;
                }
                (SourceKind::Rest, _) => {
                    let make = |t: &TableSettings| match RestSource::new(source, t) {
                        Some(s) => TableSource::Rest(Box::new(s)),
                        None => unreachable!("checked above: the table has REST settings"),
                    };
                    if let Some(body) = paged(&mut r, settings, source, &client, table, make).await
                    {
                        bodies.insert(table.output.clone(), body);
                    }
                }
                (SourceKind::Files, _) => files(&mut r, table),
                (SourceKind::Datasette, _) => {}
            }
            tables.push(r);
        }
    }
    let problems = tables.iter().map(|t| t.problems.len()).sum();
    Ok(Plan {
        out: match &settings.remote {
            Some(r) => r.url().to_string(),
            None => settings.out.display().to_string(),
        },
        tables,
        problems,
    })
}

/// A paged table (Datasette or REST): its first request, page 1 and the plan from it.
/// Returns page 1's body (a row-driven child may read it).
async fn paged(
    r: &mut TableReport,
    settings: &HarvestSettings,
    source: &SourceSettings,
    client: &Client,
    table: &TableSettings,
    make: impl Fn(&TableSettings) -> TableSource,
) -> Option<Vec<u8>> {
    // `harvest` takes every row: the watermark is for `incremental` (shown on its own).
    let mut full = table.clone();
    full.watermark = None;
    let mut src = make(&full);
    let params = table.params.clone();
    if table.watermark.is_some() {
        incremental(r, settings, source, table, &params, &make);
    }
    if let Err(e) = src.prepare().await {
        r.failed(e);
        return None;
    }
    let pager = src.pager(&params, None);
    let req = match pager.request(1, None) {
        Ok(q) => q,
        Err(e) => {
            r.failed(e);
            return None;
        }
    };
    r.request = Some(shown(source, &req));
    let fetch =
        match crate::run::cursor::fetch_page(client, pager.as_ref(), None, 1, None, None).await {
            Ok(f) => f,
            Err(e) => {
                let e = src.fetch_error(1, e);
                // A body the table's settings cannot read is the config's problem here.
                let config = e
                    .downcast_ref::<crate::http::HttpError>()
                    .is_some_and(|h| matches!(h, crate::http::HttpError::BadBody { .. }));
                if config {
                    r.problem(format!("{e:#}"), Some(records_hint(table)));
                } else {
                    r.failed(e);
                }
                return None;
            }
        };
    let page = first_page(r, fetch.parsed).await?;
    let (fetched, paging, more) = (fetch.fetched, fetch.paging, fetch.next.is_some());
    r.first_page = Some(FirstPage {
        status: fetched.status,
        bytes: fetched.body.len(),
        rows: page.rows.len(),
        more,
    });
    match &table.rest {
        Some(rest) => {
            rest_paging(r, rest, paging.as_ref(), &fetched, &page);
        }
        None => {
            r.paginator = Some(
                serde_json::json!({"kind": "datasette", "next": "the page's `next` token as `_next`"}),
            );
        }
    }
    r.server_total = page.count.or_else(|| src.table_count()).or_else(|| {
        let rest = table.rest.as_ref()?;
        let p = paging.as_ref().and_then(Paging::from_json)?;
        rest_total(
            p.paginate.total_at().or(rest.paginate.total_at())?,
            &fetched,
        )
    });
    match src.plan(&page, r.server_total) {
        Ok(p) => {
            r.columns = p.columns.iter().map(column).collect();
            check_columns(r, table, &p.columns);
        }
        Err(e) => r.failed(e),
    }
    if page.rows.is_empty() {
        r.notes
            .push("page 1 holds no rows: the columns are only those declared in `types`".into());
    }
    Some(fetched.body)
}

/// The rows of page 1, built off the fetch path as the run builds them; a body whose rows
/// cannot be built is a problem.
async fn first_page(
    r: &mut TableReport,
    parsed: tokio::task::JoinHandle<Result<Page, String>>,
) -> Option<Page> {
    match parsed.await {
        Ok(Ok(page)) => Some(page),
        Ok(Err(why)) => {
            r.problem(format!("page 1 cannot be read: {why}"), None);
            None
        }
        Err(e) => {
            r.failed(anyhow::anyhow!("reading page 1 stopped: {e}"));
            None
        }
    }
}

/// The paginator (and, for `auto`, the rule that chose it) and the records pointer.
fn rest_paging(
    r: &mut TableReport,
    rest: &RestTable,
    paging: Option<&Value>,
    fetched: &Fetched,
    page: &Page,
) {
    r.paginator = paging.cloned();
    if rest.paginate == Paginate::Auto
        && let Some(p) = paging.and_then(Paging::from_json)
    {
        r.paginator_rule = Some(crate::source::rest::explain_auto(&p));
    }
    if rest.format != crate::source::rest::BodyFormat::Json {
        r.records = Some(format!("every record of the {:?} body", rest.format));
        return;
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&fetched.body) else {
        return;
    };
    r.records = Some(match &rest.records {
        Some(p) => p.clone(),
        None => match &doc {
            Value::Array(_) => String::new(),
            Value::Object(m) => m
                .iter()
                .find(|(_, v)| v.is_array())
                .map(|(k, _)| format!("/{}", escape_key(k)))
                .unwrap_or_default(),
            _ => String::new(),
        },
    });
    // A configured pointer that selects no records while another array on the page holds
    // some: almost surely the wrong pointer.
    if let Some(p) = &rest.records
        && page.rows.is_empty()
        && let Value::Object(m) = &doc
        && let Some((k, v)) = m
            .iter()
            .find(|(k, v)| v.as_array().is_some_and(|a| !a.is_empty()) && format!("/{k}") != *p)
    {
        let n = v.as_array().map_or(0, Vec::len);
        r.problem(
            format!("`records = {p:?}` selects no records on page 1, while /{k} holds {n} item(s)"),
            Some(format!(
                "set records = \"/{}\" if those are the records",
                escape_key(k)
            )),
        );
    }
}

/// A REST total read from page 1 (a header or a JSON Pointer).
fn rest_total(t: &Total, fetched: &Fetched) -> Option<u64> {
    match t {
        Total::Header(h) => fetched
            .headers
            .get(h.as_str())?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok(),
        Total::Pointer(p) => {
            let doc: Value = serde_json::from_slice(&fetched.body).ok()?;
            let v = doc.pointer(p)?;
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        }
    }
}

fn records_hint(table: &TableSettings) -> String {
    match table.rest.as_ref().and_then(|r| r.records.as_ref()) {
        Some(p) => format!(
            "check `records = {p:?}` against the body, or let harvest find the array (remove `records`)"
        ),
        None => "set `records` to the JSON Pointer of the array of records, and the table's `paginate` (docs/rest.md#paginators)".into(),
    }
}

/// Columns the run needs that page 1 lacks: the partition and watermark columns.
fn check_columns(r: &mut TableReport, table: &TableSettings, cols: &[ColumnPlan]) {
    let has = |c: &str| cols.iter().any(|p| p.name == c);
    let names = || {
        cols.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(p) = table.partition_by.as_deref().filter(|p| !has(p)) {
        r.problem(
            format!("partition_by names column {p:?}, which page 1 does not hold"),
            Some(format!("its columns are: {}", names())),
        );
    }
    if let Some(w) = table.watermark.as_ref().filter(|w| !has(&w.column)) {
        r.problem(
            format!(
                "the watermark column {:?} is not a column of page 1",
                w.column
            ),
            Some(format!(
                "its columns are: {} (or declare it in `types`)",
                names()
            )),
        );
    }
}

/// The incremental bound the next `incremental` run would use, and what it adds to the
/// request. Reads the stored watermark when DIR holds one; writes nothing.
fn incremental(
    r: &mut TableReport,
    settings: &HarvestSettings,
    source: &SourceSettings,
    table: &TableSettings,
    params: &[(String, String)],
    make: &impl Fn(&TableSettings) -> TableSource,
) {
    let Some(wm) = &table.watermark else { return };
    let stored = if settings.remote.is_some() {
        r.notes
            .push("the stored watermark lives on object storage and was not read".into());
        None
    } else {
        match crate::store::watermark::Store::new(&settings.home).load(&source.name, &table.output)
        {
            Ok(s) => s,
            Err(e) => {
                r.failed(e);
                None
            }
        }
    };
    let lookback = wm
        .lookback_parsed
        .clone()
        .unwrap_or(crate::store::watermark::Lookback::None);
    let (lower, lower_text) = match stored
        .as_ref()
        .and_then(|s| crate::store::watermark::Mark::from_json(&s.value))
    {
        Some(m) => match m.minus(&lookback) {
            Ok(l) => {
                let text = l.filter_text();
                (Some(l), Some(text))
            }
            Err(e) => {
                r.failed(e);
                (None, None)
            }
        },
        None => (
            wm.initial
                .as_deref()
                .map(crate::store::watermark::Mark::from_text),
            wm.initial.clone(),
        ),
    };
    // A table source of its own: a REST source keeps what the bound filled in.
    let probe = make(table);
    let mut bounded = params.to_vec();
    probe.watermark_params(&mut bounded, lower, lower_text.clone(), wm);
    r.incremental = Some(IncrementalShown {
        column: wm.column.clone(),
        initial: wm.initial.clone(),
        lookback: wm.lookback.clone(),
        stored: stored.map(|s| s.value),
        bound: lower_text,
        params: bounded
            .into_iter()
            .filter(|p| !params.contains(p))
            .map(|(k, v)| [k, redacted(&v)])
            .collect(),
    });
}

/// A row-driven table: its input's columns and first row, the placeholders checked against
/// them, and the first row's request sent.
async fn row_driven(
    r: &mut TableReport,
    source: &SourceSettings,
    client: &Client,
    table: &TableSettings,
    bodies: &HashMap<String, Vec<u8>>,
) {
    let (Some(rd), Some(rest)) = (table.rows.as_ref(), table.rest.as_ref()) else {
        return;
    };
    let templates = match rd.templates(&rest.path, &table.params) {
        Ok(t) => t,
        Err(why) => {
            r.problem(format!("table {:?}: {why}", table.output), None);
            return;
        }
    };
    let (columns, first) = match first_input(rd, bodies).await {
        Ok(x) => x,
        Err(e) => {
            r.failed(e.context(format!("opening {}", rd.input.describe())));
            return;
        }
    };
    r.input = Some(InputShown {
        from: rd.input.describe(),
        columns: columns.clone(),
        first_row: first.clone(),
    });
    let mut missing = false;
    for (place, slot) in templates.slots() {
        if !columns.iter().any(|c| c == slot) {
            missing = true;
            r.problem(
                format!(
                    "{place} uses the placeholder {{{slot}}}, but {} has no column {slot:?}",
                    rd.input.describe()
                ),
                Some(format!("its columns are: {}", columns.join(", "))),
            );
        }
    }
    let Some(values) = first.filter(|_| !missing) else {
        if !missing {
            r.notes.push(format!(
                "{} holds no rows: the table would send no request",
                rd.input.describe()
            ));
        }
        return;
    };
    // The request as the run's driver builds it (path, parameters, headers, body, the
    // request-id header), sent through the run's fetch.
    let requests = Requests::new(source, &table.output, rd, rest, templates);
    let built = match requests.build(&columns, &values) {
        Ok(b) => b,
        Err(why) => {
            r.problem(
                format!("the first input row does not fill the request: {why}"),
                None,
            );
            return;
        }
    };
    let shape = &built.shape;
    let mut headers = shape.headers.clone();
    if let Some(name) = &shape.id_header {
        headers.push((name.clone(), built.id.clone()));
    }
    r.request = Some(shown(
        source,
        &PageRequest {
            url: built.url.clone(),
            method: shape.method.clone(),
            headers,
            body: shape.body.clone(),
        },
    ));
    let pager = requests.pager(&built, None);
    let fetch =
        match crate::run::cursor::fetch_page(client, &pager, Some(shape), 1, None, None).await {
            Ok(f) => f,
            Err(e) => {
                r.failed(e.context("the first input row's request"));
                return;
            }
        };
    let Some(page) = first_page(r, fetch.parsed).await else {
        return;
    };
    let (fetched, paging, more) = (fetch.fetched, fetch.paging, fetch.next.is_some());
    r.first_page = Some(FirstPage {
        status: fetched.status,
        bytes: fetched.body.len(),
        rows: page.rows.len(),
        more,
    });
    if !(200..300).contains(&fetched.status) {
        r.notes.push(format!(
            "the first input row was answered {} (kept by record_status): its row has only {REQUEST_ID}, {STATUS} and the input",
            fetched.status
        ));
        return;
    }
    rest_paging(r, rest, paging.as_ref(), &fetched, &page);
    // The row the run writes: harvest's columns, the input's, then the response's fields.
    let mut cols = vec![REQUEST_ID.to_string(), STATUS.to_string()];
    cols.extend(columns.iter().map(|c| format!("{INPUT_PREFIX}{c}")));
    let mut meta = vec![Value::String(String::new()), Value::from(fetched.status)];
    meta.extend(values.iter().cloned());
    cols.extend(page.columns.clone().unwrap_or_default());
    let rows = page
        .rows
        .iter()
        .map(|row| meta.iter().cloned().chain(row.iter().cloned()).collect())
        .collect();
    let whole = Page {
        columns: Some(cols),
        rows,
        sparse: true,
        ..Page::default()
    };
    match crate::source::rest::plan_table(table, rest, &whole) {
        Ok(p) => {
            r.columns = p
                .columns
                .iter()
                .map(|c| {
                    let mut shown = column(c);
                    if c.name == REQUEST_ID {
                        (shown.ty, shown.from, shown.reason) =
                            ("text".into(), "added by harvest", "request id".into());
                    } else if c.name == STATUS {
                        (shown.ty, shown.from, shown.reason) =
                            ("integer".into(), "added by harvest", "HTTP status".into());
                    }
                    shown
                })
                .collect();
            check_columns(r, table, &p.columns);
        }
        Err(e) => r.failed(e),
    }
}

/// The input's columns and its first row (none when it is empty). A parent table's records
/// come from the first page this plan fetched of it.
async fn first_input(
    rd: &RowDriven,
    bodies: &HashMap<String, Vec<u8>>,
) -> anyhow::Result<(Vec<String>, Option<Vec<Value>>)> {
    use crate::source::rows::inputs::InputSpec;
    if let InputSpec::Parent {
        table,
        records,
        fields,
    } = &rd.input
    {
        let columns = fields.iter().map(|(n, _)| n.clone()).collect();
        let Some(body) = bodies.get(table) else {
            return Err(UsageError::with_hint(
                format!(
                    "its input is the first page of table {table:?}, which this plan did not read"
                ),
                format!(
                    "plan the parent too (add --table {table:?}), or fix the parent's problem above"
                ),
            )
            .into());
        };
        let doc = crate::source::rest::records::decode(body)
            .map_err(|p| anyhow::anyhow!("the parent's page 1: {}", p.into_reason()))?;
        let recs = crate::source::rest::records::take_records(doc, records.as_deref())
            .map_err(|p| anyhow::anyhow!("the parent's page 1: {}", p.into_reason()))?;
        let first = recs.first().map(|rec| {
            fields
                .iter()
                .map(|(_, ptr)| rec.pointer(ptr).cloned().unwrap_or(Value::Null))
                .collect()
        });
        return Ok((columns, first));
    }
    let mut inputs = crate::source::rows::inputs::open(&rd.input, Path::new("."), "plan").await?;
    let first = inputs.next().await?;
    Ok((inputs.columns.clone(), first))
}

/// A files table: its glob and the files it names now (no file is opened).
fn files(r: &mut TableReport, table: &TableSettings) {
    let Some(f) = &table.files else { return };
    if f.glob.starts_with("s3://") {
        r.files = Some(FilesShown {
            glob: f.glob.clone(),
            matched: Vec::new(),
        });
        r.notes
            .push("files on object storage are listed by the run, not by the plan".into());
        return;
    }
    match crate::source::files::list(&f.glob) {
        Ok(found) => {
            if found.is_empty() {
                r.notes.push(format!("no file matches {:?} now", f.glob));
            }
            r.files = Some(FilesShown {
                glob: f.glob.clone(),
                matched: found.iter().map(|p| p.display().to_string()).collect(),
            });
        }
        Err(why) => r.problem(why, None),
    }
}

/// Where a column's type came from, in the plan's words.
fn column(c: &ColumnPlan) -> ColumnShown {
    let from = if c.reason == "override" {
        "types override"
    } else if c.reason.starts_with("declared") {
        "declared"
    } else if c.reason.starts_with("storage classes") {
        "server probe"
    } else {
        "inferred from page 1"
    };
    ColumnShown {
        name: c.name.clone(),
        ty: c.ty.name().to_string(),
        from,
        reason: if from == "types override" {
            "set in the table's `types`".into()
        } else {
            c.reason.clone()
        },
    }
}

/// The request as the client will send it: the source's headers and credentials, then the
/// request's own; every secret masked.
fn shown(source: &SourceSettings, req: &PageRequest) -> RequestShown {
    use crate::http::Auth;
    let mask = crate::redact::MASK.to_string();
    let mut url = req.url.clone();
    if let Some(Auth::Query { name, .. }) = &source.auth {
        url.query_pairs_mut().append_pair(name, &mask);
    }
    let mut headers: Vec<[String; 2]> = source
        .headers
        .iter()
        .map(|(k, v)| [k.clone(), redacted(v)])
        .collect();
    match &source.auth {
        Some(Auth::Bearer(_)) => headers.push(["Authorization".into(), format!("Bearer {mask}")]),
        Some(Auth::Basic { user, .. }) => {
            headers.push(["Authorization".into(), format!("Basic ({user}:{mask})")])
        }
        Some(Auth::Header { name, .. }) => headers.push([name.clone(), mask.clone()]),
        Some(Auth::OAuth2(_)) => headers.push([
            "Authorization".into(),
            format!("Bearer {mask} (from the OAuth2 token endpoint)"),
        ]),
        Some(Auth::Query { .. }) | None => {}
    }
    headers.extend(req.headers.iter().map(|(k, v)| [k.clone(), redacted(v)]));
    RequestShown {
        method: req.method.to_string(),
        url: redacted(&crate::http::display_url(&url)),
        headers,
        body: req
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok()),
    }
}

fn redacted(s: &str) -> String {
    crate::redact::redact(s).into_owned()
}

/// A key as one JSON Pointer step.
fn escape_key(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}
