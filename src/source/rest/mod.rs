//! The REST source: any paginated JSON API (docs/rest.md, docs/rest-apis.md).
//!
//! Guarantees:
//! - A page's cursor names the next request completely, whatever the paginator (`link`,
//!   `next_url`, `cursor`, `offset`, `page_number`, `none`, or `auto`, which picks one on the
//!   first page and logs and records the choice, stop flags included): the absolute URL of the
//!   next page, or a [`Position`] with the token sent in the body or a header and the time
//!   window. So resume sends exactly the request an uninterrupted run would, and one guard
//!   stops a cursor that repeats. `max_pages` caps a table (the run says so).
//! - `auto` never ends a table early in silence: a first page it cannot follow that says there
//!   is more is refused (exit 2) before anything of the table is written.
//! - Records come from a JSON Pointer (RFC 6901; an object there is one record) or, when none
//!   is given, from the body itself if it is an array, else from its only array-valued
//!   top-level field; NDJSON, CSV and keyed-object pages are turned into such an array first
//!   ([`formats`]). Several candidates is a configuration error naming them; a body without
//!   the array is refused naming the URL and what came back; a body cut off is retried.
//! - Nested objects become columns joined with `__` (`owner__login`); arrays become JSON text;
//!   integers stay exact (`i64`). A page's fields may vary: the pipeline evolves the table's
//!   columns ([`crate::schema::evolve`]) unless the table freezes them.
//! - A query-parameter API key is added by the HTTP client to each request and stripped from
//!   any URL the server sends back, so it is never part of a recorded URL.
//!
//! The folder: [`paginate`] (where the next page is, and when to stop), `auto` (detection),
//! [`position`] (cursors and windows), [`link`] (RFC 8288 headers), [`records`] (decoding,
//! record selection, flattening), [`formats`] (NDJSON, CSV, keyed objects), [`rows`] (the fast
//! path from a body to rows) and, here, the pager and the source.
//!
//! Architecture invariant: the REST source knows only what a response says; it writes nothing,
//! and its paginators turn one response into the next request without I/O of their own.
//! Outside `source/`, the config builds its settings ([`RestTable`], [`Paginate`]) and the
//! row-driven driver reuses its pager and snapshot parser; the pipeline reaches it through
//! the seam.

mod auto;
pub mod formats;
mod link;
pub mod paginate;
pub mod position;
pub mod records;
mod rows;

pub use self::auto::{detect, explain as explain_auto, signs_of_more};
pub use self::formats::{BodyFormat, RecordsFrom};
pub use self::link::*;
pub use self::paginate::*;
pub use self::position::{Position, Window, bound, rfc3339};
pub use self::records::*;
pub use self::rows::NEST;

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Timelike, Utc};

use serde_json::{Value, json};
use url::Url;

use crate::error::UsageError;
use crate::http::Fetched;
use crate::schema::{ColType, ColumnPlan};
use crate::source::TablePlan;
use crate::source::settings::TableSettings;
use crate::source::{BodyProblem, Page, PageRequest, Pager, Scanned};

/// One REST table as a [`Pager`].
pub struct RestPager {
    first: Url,
    rest: RestTable,
    /// The paginator in use: `auto` until the first page decides.
    resolved: Mutex<Paging>,
    /// The query parameter that carries an API key: never part of a recorded URL.
    secret_param: Option<String>,
    /// The source sends credentials: a next URL on another origin is refused, not followed.
    credentials: bool,
    table: String,
    /// A row-driven request's pager (one per input row).
    per_row: bool,
    /// Time windows: where the first starts and where the last ends.
    window_span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Declared column types (CSV values are converted to them).
    types: BTreeMap<String, ColType>,
    /// The total (records or pages) the latest page stated, for fetching ahead no further.
    total_seen: Mutex<Option<u64>>,
}

impl RestPager {
    /// `resolved`: the paginator a resumed run recorded (for `auto`).
    pub fn new(
        base: &Url,
        table: &TableSettings,
        params: &[(String, String)],
        rest: &RestTable,
        resolved: Option<Paging>,
        secret_param: Option<String>,
    ) -> Self {
        let mut me = Self::starting_at(
            first_url(base, rest, params),
            &table.output,
            rest,
            resolved,
            secret_param,
        );
        me.per_row = false;
        me.types = table.types.clone();
        me
    }

    /// A pager whose first page is `first` (a row-driven request's URL).
    pub fn starting_at(
        first: Url,
        output: &str,
        rest: &RestTable,
        resolved: Option<Paging>,
        secret_param: Option<String>,
    ) -> Self {
        Self {
            first,
            resolved: Mutex::new(resolved.unwrap_or_else(|| Paging {
                paginate: rest.paginate.clone(),
                stops: rest.stops.clone(),
            })),
            rest: rest.clone(),
            secret_param,
            credentials: false,
            table: output.to_string(),
            per_row: true,
            window_span: rest.window.as_ref().map(|w| window_span(w, None)),
            types: BTreeMap::new(),
            total_seen: Mutex::new(None),
        }
    }

    /// Refuse (exit 1) a server-sent next URL on another origin than the page it came from,
    /// when the source sends credentials: they would go with it.
    pub fn carrying_credentials(mut self, credentials: bool) -> Self {
        self.credentials = credentials;
        self
    }

    /// Windows start at `from` (an incremental run's bound) instead of the configured start.
    pub fn windows_from(mut self, from: Option<DateTime<Utc>>) -> Self {
        if let (Some(w), Some(f)) = (&self.rest.window, from) {
            self.window_span = Some(window_span(w, Some(f)));
        }
        self
    }

    fn paging(&self) -> Paging {
        self.resolved.lock().map(|p| p.clone()).unwrap_or(Paging {
            paginate: Paginate::None,
            stops: Stops::default(),
        })
    }

    /// The first request's position: the first URL, in the first window if there are any.
    fn first_position(&self) -> Position {
        match (&self.rest.window, self.window_span) {
            (Some(w), Some((from, to))) => {
                // A span already past its end still reads one window (from `from`).
                let [a, b] = w
                    .starting(from, to)
                    .unwrap_or([from, from + chrono::Duration::seconds(w.step_secs)]);
                self.window_position(w, a, b)
            }
            _ => Position::at(&self.first),
        }
    }

    fn window_position(&self, w: &Window, a: DateTime<Utc>, b: DateTime<Utc>) -> Position {
        let mut u = self.first.clone();
        set_param(&mut u, &w.start_param, &w.text(a));
        set_param(&mut u, &w.end_param, &w.text(b));
        Position {
            url: u.to_string(),
            token: None,
            window: Some([rfc3339(a), rfc3339(b)]),
        }
    }

    /// The position after the page fetched at `at`, `next` as its paginator found it: in the
    /// same window, else the next window's first page.
    fn advance(&self, at: &Position, next: Option<Next>) -> Result<Option<Position>, String> {
        if let Some(n) = next {
            return Ok(Some(Position {
                url: n.url.to_string(),
                token: n.token,
                window: at.window.clone(),
            }));
        }
        let (Some(w), Some([_, end]), Some((_, to))) =
            (&self.rest.window, &at.window, self.window_span)
        else {
            return Ok(None);
        };
        Ok(w.starting(bound(end)?, to)
            .map(|[a, b]| self.window_position(w, a, b)))
    }

    /// A next position as recorded: without the query-parameter API key, and refused when it
    /// leaves the origin of the page `url` while credentials are sent.
    fn strip_secret(&self, pos: &mut Position, url: &Url) -> Result<(), BodyProblem> {
        let mut u = Url::parse(&pos.url).map_err(|e| BodyProblem::Wrong(e.to_string()))?;
        if let Some(secret) = &self.secret_param {
            remove_param(&mut u, secret);
        }
        if self.credentials && !crate::http::same_origin(url, &u) {
            return Err(BodyProblem::Wrong(format!(
                "its next page is on another origin ({}): {}",
                crate::http::display_url(&u),
                crate::http::left_origin_advice(url, &u)
            )));
        }
        pos.url = u.to_string();
        Ok(())
    }

    /// Decide `auto` on the first page: the paging it shows, logged and kept; when it shows
    /// none, a page that says there is more is refused.
    fn decide(
        &self,
        fetched: &Fetched,
        view: &View<'_>,
        pointer: Option<&str>,
        lookup: Lookup<'_>,
        url: &Url,
    ) -> Result<Paging, BodyProblem> {
        let p = detect(&fetched.headers, lookup, self.rest.method == "POST");
        if p.paginate == Paginate::None {
            let n = view.count_records(pointer)?;
            if let Some((seen, fix)) =
                signs_of_more(url, self.rest.body.as_ref(), &fetched.headers, lookup, n)
            {
                return Err(BodyProblem::Wrong(format!(
                    "{PAGING_PROBLEM}paginate = \"auto\" found no Link header, next URL or cursor on the first page, but the page says there is more: {seen}. Nothing was written; set the table's paginator, e.g. {fix}"
                )));
            }
        }
        let note = match &p.paginate {
            Paginate::None => format!(
                "{}: paginate = \"auto\" found no Link header, next URL or cursor on the first page, and no sign of more: taking one page",
                self.table
            ),
            _ => format!("{}: paginate = \"auto\" chose {}", self.table, p.to_json()),
        };
        if self.per_row {
            // One pager per input row: the choice is in every batch entry, not the log.
            tracing::debug!("{note}");
        } else {
            tracing::info!("{note}");
        }
        if let Ok(mut r) = self.resolved.lock() {
            *r = p.clone();
        }
        Ok(p)
    }
}

/// The span of a table's windows: from `from` (else the configured start) to the configured
/// end, else now (for date windows, the end of today).
fn window_span(w: &Window, from: Option<DateTime<Utc>>) -> (DateTime<Utc>, DateTime<Utc>) {
    let to = w.to.unwrap_or_else(|| {
        let now = Utc::now();
        if w.dates {
            now.date_naive()
                .succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(now, |t| t.and_utc())
        } else {
            now.with_nanosecond(0).unwrap_or(now)
        }
    });
    (from.unwrap_or(w.from), to)
}

impl Pager for RestPager {
    fn request(&self, page_no: u64, cursor: Option<&str>) -> anyhow::Result<PageRequest> {
        let pos = match cursor {
            None if page_no == 1 => self.first_position(),
            None => anyhow::bail!("page {page_no} of {:?} has no URL to fetch", self.table),
            Some(c) => {
                Position::decode(c).map_err(|why| anyhow::anyhow!("{why}; rerun with --restart"))?
            }
        };
        let url = Url::parse(&pos.url).map_err(|e| {
            anyhow::anyhow!(
                "the recorded next URL {:?} is not a URL ({e}); rerun with --restart",
                pos.url
            )
        })?;
        let mut req = PageRequest::get(url);
        req.method = reqwest::Method::from_bytes(self.rest.method.as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut body = self.rest.body.clone();
        if let Some(tok) = pos.token {
            let paging = self.paging();
            match paging.paginate.token_to() {
                Some(TokenTo::Body(ptr)) => {
                    let b = body.get_or_insert_with(|| json!({}));
                    set_pointer(b, ptr, tok).map_err(|why| {
                        anyhow::anyhow!(
                            "table {:?}: cannot set the cursor in the body: {why}",
                            self.table
                        )
                    })?;
                }
                Some(TokenTo::Header(h)) => {
                    let text =
                        token_text(&tok).map_err(|why| anyhow::anyhow!("the cursor {why}"))?;
                    req.headers.push((h.to_string(), text));
                }
                _ => {}
            }
        }
        req.body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        Ok(req)
    }

    fn scan(
        &self,
        page_no: u64,
        url: &Url,
        cursor: Option<&str>,
        fetched: &Fetched,
        _known: Option<&[String]>,
    ) -> Result<Scanned, BodyProblem> {
        // The body as received (a JSON view of it, for the paginator's pointers), and the
        // records as a JSON array when the body holds them otherwise (NDJSON, CSV, keyed).
        let json_body = self.rest.format == BodyFormat::Json;
        let original = if json_body {
            Some(View::new(&fetched.body)?)
        } else {
            None
        };
        let converted = formats::records_array(
            self.rest.format,
            self.rest.records_from,
            &fetched.body,
            self.rest.records.as_deref(),
            &self.types,
        )?;
        let own_view;
        let (view, pointer) = match (&converted, &original) {
            (Some(array), _) => {
                own_view = View::new(array)?;
                (&own_view, None)
            }
            (None, Some(v)) => (v, self.rest.records.as_deref()),
            (None, None) => return Err(BodyProblem::Wrong("the body has no records".into())),
        };
        // Where the records are, for the common shapes (no pass over them).
        let range = view.records_range(pointer);
        let lookup = |ptr: &str| original.as_ref().and_then(|v| v.pointer(ptr));
        let mut paging = self.paging();
        if paging.paginate == Paginate::Auto {
            paging = self.decide(fetched, view, pointer, &lookup, url)?;
        }
        // Counting the records is a pass over them: only where the paginator needs the count,
        // or the shape is unusual (where it also refuses a body without its records).
        let n = if range.is_none() || paging.needs_records() {
            view.count_records(pointer)?
        } else {
            0
        };
        let last = match paging.paginate.token_from() {
            Some(TokenFrom::LastRecord(_)) if n > 0 => view.last_record(pointer),
            _ => None,
        };
        let at = match cursor {
            Some(c) => Position::decode(c).map_err(BodyProblem::Wrong)?,
            None => self.first_position(),
        };
        let found = next_page(
            &paging,
            &Response {
                url,
                headers: &fetched.headers,
                body: &lookup,
                records: n,
                last,
            },
        )
        .map_err(BodyProblem::Wrong)?;
        if let Some(t) = paging.paginate.total_at()
            && let Ok(seen) = total(t, &fetched.headers, &lookup)
            && let Ok(mut kept) = self.total_seen.lock()
        {
            *kept = seen;
        }
        let mut next = self.advance(&at, found).map_err(BodyProblem::Wrong)?;
        if let Some(pos) = next.as_mut() {
            self.strip_secret(pos, url)?;
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
        let pointer = pointer.map(str::to_string);
        let body = converted.unwrap_or_else(|| fetched.body.clone());
        let next = next.map(|p| p.encode());
        let cursor = next.clone();
        Ok(Scanned {
            next,
            columns: None,
            paging: Some(paging.to_json()),
            work: Box::new(move || {
                let mut page = parse_records(&body, pointer.as_deref(), range)?;
                page.count = count;
                page.next = cursor;
                Ok(page)
            }),
        })
    }

    fn predict(&self, page_no: u64, cursor: Option<&str>) -> Option<String> {
        if self.rest.max_pages.is_some_and(|max| page_no >= max) {
            return None;
        }
        let at = match cursor {
            Some(c) => Position::decode(c).ok()?,
            None if page_no == 1 => self.first_position(),
            None => return None,
        };
        let url = Url::parse(&at.url).ok()?;
        let paging = self.paging();
        let within = match &paging.paginate {
            Paginate::Offset { .. } | Paginate::PageNumber { .. } => {
                let total = self.total_seen.lock().ok().and_then(|t| *t);
                paging.paginate.predict_next(&url, total).map(Next::at)
            }
            // One request per window: the next window's.
            Paginate::None if self.rest.window.is_some() => None,
            _ => return None,
        };
        let mut next = self.advance(&at, within).ok()??;
        self.strip_secret(&mut next, &url).ok()?;
        Some(next.encode())
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
    /// Incremental: where the windows start (the stored watermark).
    window_from: Mutex<Option<DateTime<Utc>>>,
    /// Incremental: the POST body with its `{watermark}` filled in.
    body_filled: Mutex<Option<Value>>,
}

impl RestSource {
    pub fn new(
        source: &crate::source::settings::SourceSettings,
        table: &TableSettings,
    ) -> Option<Self> {
        Some(Self {
            base: source.base.clone(),
            rest: table.rest.clone()?,
            table: table.clone(),
            secret_param: source.secret_param(),
            credentials: source.sends_credentials(),
            window_from: Mutex::new(None),
            body_filled: Mutex::new(None),
        })
    }

    pub fn plan(&self, first: &Page) -> anyhow::Result<TablePlan> {
        plan_table(&self.table, &self.rest, first)
    }

    /// A cursor for the table; `paging`: the paginator a resumed run recorded.
    /// Why `parallel` cannot fetch this table's pages ahead (`None`: it can).
    pub fn not_addressable(&self) -> Option<String> {
        self.rest
            .paginate
            .not_addressable(self.rest.window.is_some())
    }

    pub fn pager(&self, params: &[(String, String)], paging: Option<&Value>) -> RestPager {
        let resolved = paging.and_then(Paging::from_json);
        let from = self.window_from.lock().ok().and_then(|f| *f);
        let mut rest = self.rest.clone();
        if let Some(b) = self.body_filled.lock().ok().and_then(|b| b.clone()) {
            rest.body = Some(b);
        }
        RestPager::new(
            &self.base,
            &self.table,
            params,
            &rest,
            resolved,
            self.secret_param.clone(),
        )
        .carrying_credentials(self.credentials)
        .windows_from(from)
    }

    pub fn parse_snapshot(&self, body: &[u8]) -> Result<Page, String> {
        snapshot_page(&self.rest, &self.table.types, body)
    }

    /// Incremental: `{watermark}` in a parameter value becomes the lower bound (see
    /// [`crate::store::watermark::Mark::param_text`]); without a bound (first run, no `initial`)
    /// such parameters are left out and every record is taken. Without such a parameter the
    /// API cannot filter: every page is read, and the tracker writes only rows at or past
    /// the bound.
    pub fn watermark_params(
        &self,
        params: &mut Vec<(String, String)>,
        lower: Option<&crate::store::watermark::Mark>,
        wm: &crate::source::settings::WatermarkSettings,
    ) {
        const SLOT: &str = "{watermark}";
        let out = &self.table.output;
        // A POST body's strings carry the slot too (a search's range filter).
        let mut body = self.rest.body.clone();
        let in_body = body
            .as_mut()
            .is_some_and(|b| fill_slot(b, SLOT, None, true));
        let slotted = in_body || params.iter().any(|(_, v)| v.contains(SLOT));
        if let (Some(w), Some(l)) = (&self.rest.window, lower) {
            let text = l.param_text(None);
            match position::parse_instant(&text) {
                Some((t, _)) => {
                    tracing::info!(
                        "{out}: windows of {} start at the watermark {text}",
                        wm.column
                    );
                    if let Ok(mut f) = self.window_from.lock() {
                        *f = Some(t.max(w.from));
                    }
                }
                None => tracing::warn!(
                    "{out}: the watermark {text:?} is not an instant, so the windows start at their configured `from`"
                ),
            }
        }
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
                if let Some(b) = body.as_mut() {
                    fill_slot(b, SLOT, Some(&text), false);
                }
            }
            None => {
                tracing::info!(
                    "{out}: no stored watermark and no initial value: taking every record"
                );
                params.retain(|(_, v)| !v.contains(SLOT));
                if let Some(b) = body.as_mut() {
                    fill_slot(b, SLOT, None, false);
                }
            }
        }
        if in_body && let Ok(mut f) = self.body_filled.lock() {
            *f = body;
        }
    }

    /// A fetch failure, naming the REST table's likely causes.
    pub fn fetch_error(&self, page_no: u64, error: anyhow::Error) -> anyhow::Error {
        use crate::http::HttpError;
        let out = &self.table.output;
        if let Some(HttpError::BadBody { url, reason }) = error.downcast_ref::<HttpError>()
            && let Some(why) = reason.strip_prefix(PAGING_PROBLEM)
        {
            return UsageError::with_hint(
                format!("table {out:?}: {url}: {why}"),
                "see docs/rest.md#paginators for every paginator and stop condition",
            )
            .into();
        }
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

/// `{watermark}` in the strings of a JSON body: filled with `text`, or, without a bound, the
/// object entries holding it left out (as query parameters are). `probe`: only report
/// whether the slot is there. Returns whether it was found.
fn fill_slot(v: &mut Value, slot: &str, text: Option<&str>, probe: bool) -> bool {
    match v {
        Value::String(s) if s.contains(slot) => {
            if !probe && let Some(t) = text {
                *s = s.replace(slot, t);
            }
            true
        }
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |found, x| fill_slot(x, slot, text, probe) | found),
        Value::Object(m) => {
            let mut found = false;
            if !probe && text.is_none() {
                let before = m.len();
                m.retain(|_, x| !matches!(x, Value::String(s) if s.contains(slot)));
                found = m.len() != before;
            }
            m.values_mut()
                .fold(found, |found, x| fill_slot(x, slot, text, probe) | found)
        }
        _ => false,
    }
}

/// The rows of a recorded snapshot of a `rest` table, whatever its format.
pub fn snapshot_page(
    rest: &RestTable,
    types: &BTreeMap<String, ColType>,
    body: &[u8],
) -> Result<Page, String> {
    let converted = formats::records_array(
        rest.format,
        rest.records_from,
        body,
        rest.records.as_deref(),
        types,
    )
    .map_err(BodyProblem::into_reason)?;
    match converted {
        Some(array) => parse_snapshot(&array, None),
        None => parse_snapshot(body, rest.records.as_deref()),
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
    plan_records(table, first, &rest.primary_key)
}

/// [`plan_table`] for records from anywhere (REST pages, NDJSON and CSV files):
/// `primary_key` names fields the first page must hold.
pub fn plan_records(
    table: &TableSettings,
    first: &Page,
    primary_key: &[String],
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
        .chain(primary_key.iter().map(|c| (c, "primary_key")))
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
        let mut first_kind = None;
        for r in &first.rows {
            let kind = match r.get(idx) {
                Some(Value::Bool(_)) => "boolean",
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "integer",
                Some(Value::Number(_)) => "float",
                Some(Value::String(_)) => "text",
                _ => continue,
            };
            first_kind.get_or_insert(kind);
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
            let mixed = has("text") && (numeric || has("boolean")) || has("boolean") && numeric;
            if mixed && !table.schema_frozen {
                // The columns evolve: the first value's kind decides, the others are variants.
                match first_kind {
                    Some("boolean") => plan(ColType::Boolean, "the first value on the first page"),
                    Some("text") => plan(ColType::Text, "the first value on the first page"),
                    _ if has("float") => plan(ColType::Float, "the first value on the first page"),
                    _ => plan(ColType::Integer, "the first value on the first page"),
                }
            } else if mixed {
                return Err(UsageError::with_hint(
                    format!(
                        "{}: field {name:?} holds values of several JSON types on the first page ({})",
                        table.output,
                        seen.keys().copied().collect::<Vec<_>>().join(", ")
                    ),
                    format!("choose how to keep it with `types = {{ {name} = \"text\" }}` (values are written as their JSON text)"),
                )
                .into());
            } else if has("boolean") {
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
mod tests;
