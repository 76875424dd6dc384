//! Datasette's side of the source seam for one table ([`crate::source::TableSource`]):
//! everything the table pipeline needs that only a Datasette server offers.
//!
//! Guarantees:
//! - The type probe ([`crate::source::datasette::planner::scan_classes`]) runs before the first page is
//!   requested; a table holding ±Infinity that the server would send as null is refused then.
//!   A table whose every column is declared numeric skips the probe's scan: its values' JSON
//!   types it exactly, and the scan runs after all when a string or blob arrives in such a
//!   column, or before the first checkpoint would record a part.
//! - Text arriving with U+FFFD is checked against the stored bytes through the SQL endpoint: a
//!   column that holds no real U+FFFD stops the run before the page's rows are written, and at
//!   the end more rows with U+FFFD than the database holds is refused (a server that replaced
//!   bytes that are not valid UTF-8).
//! - Incremental runs filter with `<column>__gte=<bound>` and page in watermark order.
//! - `--parallel` key ranges come from [`crate::source::datasette::slices::plan`]; errors name Datasette's
//!   likely causes (an unknown table, a page size over `max_returned_rows`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::bail;
use serde_json::Value;
use url::Url;

use crate::error::UsageError;
use crate::http::{Client, HttpError};
use crate::source::datasette::planner::{
    Probe, count_rows, describe_table, plan_table, refuse_lost_infinities, scan_classes,
};
use crate::source::datasette::{self, DatasettePager, Flavor, TableRequest};
use crate::source::settings::TableSettings;
use crate::source::{Page, Pager, TablePlan};

/// What a run learned about a Datasette server before its first table.
#[derive(Debug, Clone, Copy)]
pub struct DatasetteFacts {
    /// The JSON API, when `/-/versions.json` said.
    pub flavor: Option<Flavor>,
    /// Whether ±Infinity arrives as tokens when asked; `None` when the server would not say.
    pub sends_infinity: Option<bool>,
}

/// One Datasette table being harvested.
pub struct DatasetteTable {
    client: Arc<Client>,
    base: Url,
    database: String,
    table: TableSettings,
    facts: DatasetteFacts,
    probe: Probe,
    /// Text columns that arrived holding U+FFFD: the rows received so far with one, and how
    /// many rows of the table really hold one (`None`: the server would not say).
    replacement_chars: BTreeMap<String, (u64, Option<u64>)>,
}

impl DatasetteTable {
    pub fn new(
        client: &Arc<Client>,
        base: &Url,
        database: &str,
        table: &TableSettings,
        facts: DatasetteFacts,
    ) -> Self {
        Self {
            client: Arc::clone(client),
            base: base.clone(),
            database: database.to_string(),
            table: table.clone(),
            facts,
            probe: Probe::default(),
            replacement_chars: BTreeMap::new(),
        }
    }

    fn flavor(&self) -> Flavor {
        self.facts.flavor.unwrap_or(Flavor::V1)
    }

    fn request(&self, params: &[(String, String)]) -> TableRequest {
        TableRequest {
            base: self.base.clone(),
            database: self.database.clone(),
            table: self.table.name.clone(),
            params: params.to_vec(),
            page_size: self.table.page_size,
            sort: self.table.sort.clone(),
        }
    }

    /// Before the first page: the table's declared types, then either the type scan (alone, it
    /// fits the server's SQL time limit far more often) or, when every column is declared
    /// numeric and the pages can type it exactly ([`Probe::pages_can_type`]), only a row count.
    /// A table with ±Infinity the server would null is refused here.
    pub async fn prepare(&mut self) -> anyhow::Result<()> {
        let infinity_as_null = self.facts.sends_infinity == Some(false);
        self.probe = describe_table(&self.client, &self.base, &self.database, &self.table).await?;
        self.probe.check_sort(&self.table)?;
        // Typing from the pages needs every value of the table to pass through one plan:
        // one cursor, no watermark filter, and a server that sends ±Infinity.
        let one_pass = self.table.watermark.is_none() && self.table.parallel <= 1;
        if one_pass && !infinity_as_null && self.probe.pages_can_type(&self.table) {
            count_rows(
                &mut self.probe,
                &self.client,
                &self.base,
                &self.database,
                &self.table,
            )
            .await?;
            self.probe.type_from_pages();
            tracing::info!(
                "{}: every column is declared numeric, so the values received type it: no type scan unless a string or blob arrives, or before a first checkpoint",
                self.table.output
            );
            return Ok(());
        }
        self.scan(infinity_as_null).await?;
        refuse_lost_infinities(&self.table, &self.probe)
    }

    /// The type scan ([`scan_classes`]); false when the server did not answer.
    async fn scan(&mut self, infinity_as_null: bool) -> anyhow::Result<bool> {
        let (client, base, database) = (&self.client, &self.base, &self.database);
        scan_classes(
            &mut self.probe,
            client,
            base,
            database,
            &self.table,
            infinity_as_null,
        )
        .await
    }

    /// True while the column types come from the values received so far.
    pub fn typing_from_pages(&self) -> bool {
        self.probe.typing_from_pages()
    }

    /// Fold a page's values into the classes seen (see [`Probe::observe`]).
    pub fn observe(&mut self, page: &Page) -> crate::source::Observed {
        self.probe.observe(&self.table, page)
    }

    /// Stop typing from the pages: scan the table's storage classes now. False when the
    /// server did not answer (the plan made so far stands, as declared types would).
    pub async fn scan_types(&mut self) -> anyhow::Result<bool> {
        self.probe.stop_typing_from_pages();
        self.scan(false).await
    }

    pub fn plan(&self, first: &Page, count: Option<u64>) -> anyhow::Result<TablePlan> {
        plan_table(&self.table, &self.probe, first, count)
    }

    /// The probe's row count, where it counts what the requests return.
    pub fn table_count(&self) -> Option<u64> {
        self.probe.table_count(&self.table)
    }

    /// The incremental filter: rows at or past `lower` (sent as written), in watermark order.
    pub fn watermark_params(
        &self,
        params: &mut Vec<(String, String)>,
        column: &str,
        lower: Option<String>,
    ) {
        match lower {
            Some(l) => {
                tracing::info!("{}: rows with {column} >= {l:?}", self.table.output);
                params.push((format!("{column}__gte"), l));
            }
            None => tracing::info!(
                "{}: no stored watermark and no initial value: taking every row",
                self.table.output
            ),
        }
    }

    pub async fn plan_slices(
        &self,
        params: &[(String, String)],
    ) -> anyhow::Result<crate::source::datasette::slices::Planned> {
        crate::source::datasette::slices::plan(
            &self.client,
            &self.request(params),
            self.flavor(),
            self.table.parallel,
        )
        .await
    }

    pub fn pager(&self, params: &[(String, String)]) -> Arc<dyn Pager> {
        Arc::new(DatasettePager::new(
            self.request(params),
            self.flavor(),
            self.facts.flavor.is_some(),
        ))
    }

    pub fn parse_snapshot(body: &[u8], known: Option<&[String]>) -> Result<Page, String> {
        datasette::parse_page(body, known).map_err(crate::source::BodyProblem::into_reason)
    }

    /// Datasette decodes text that is not valid UTF-8 with replacement characters (U+FFFD), so
    /// such text would be written changed. Text holding U+FFFD is therefore checked against
    /// the database: a column where no stored value holds the bytes of U+FFFD stops the run
    /// before the page's rows are taken; otherwise the rows received with one are counted and
    /// compared with the stored ones at the table's end ([`Self::finish`]).
    pub async fn check_page(
        &mut self,
        page_no: u64,
        page: &Page,
        known: Option<Vec<String>>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let width = page.rows.first().map_or(0, Vec::len);
        let mut hits = vec![0u64; width];
        for row in &page.rows {
            for (i, v) in row.iter().enumerate() {
                if let Value::String(s) = v
                    && s.contains('\u{FFFD}')
                    && let Some(h) = hits.get_mut(i)
                {
                    *h += 1;
                }
            }
        }
        if hits.iter().all(|n| *n == 0) {
            return Ok(()); // the common case: no column names needed
        }
        let Some(columns) = page.columns.clone().or(known) else {
            return Ok(());
        };
        for (col, n) in columns.iter().zip(hits).filter(|(_, n)| *n > 0) {
            if !self.replacement_chars.contains_key(col) {
                let stored = crate::source::datasette::planner::count_replacement_chars(
                    &self.client,
                    &self.base,
                    &self.database,
                    &self.table.name,
                    col,
                )
                .await?;
                if stored.is_none() {
                    let w = format!(
                        "{}: column {col:?} holds text with U+FFFD, which Datasette also puts in place of bytes that are not valid UTF-8, and the server's SQL endpoint is not available to tell the two apart",
                        self.table.output
                    );
                    tracing::warn!("{w}");
                    warnings.push(w);
                }
                self.replacement_chars.insert(col.clone(), (0, stored));
            }
            let entry = self.replacement_chars.entry(col.clone()).or_default();
            entry.0 += n;
            if entry.1 == Some(0) {
                bail!(self.replaced_text_error(col, Some(page_no)));
            }
        }
        Ok(())
    }

    /// At the table's end: more rows arrived with U+FFFD than the database holds.
    pub fn finish(&self) -> anyhow::Result<()> {
        for (col, (received, stored)) in &self.replacement_chars {
            if let Some(stored) = stored
                && received > stored
            {
                bail!(self.replaced_text_error(col, None));
            }
        }
        Ok(())
    }

    fn replaced_text_error(&self, col: &str, page: Option<u64>) -> String {
        let at = page.map_or(String::new(), |p| format!(", page {p}"));
        format!(
            "table {:?}{at}, column {col:?}: text arrived with U+FFFD replacement characters that the database does not hold: the server replaced bytes that are not valid UTF-8, so the text it sends is not what is stored{}. Fix the text in the database, or read the file with `harvest sql-extract --type {col}=blob`, which keeps the exact bytes",
            self.table.name,
            if page.is_some() {
                "; this page's rows were not written"
            } else {
                ""
            }
        )
    }

    /// A fetch failure, with Datasette's likely causes named.
    pub fn fetch_error(&self, page_no: u64, error: anyhow::Error) -> anyhow::Error {
        match error.downcast_ref::<HttpError>().and_then(HttpError::status) {
            Some(404) if page_no == 1 => anyhow::Error::new(UsageError::with_hint(
                format!(
                    "table {:?} was not found in database {:?} at {} (HTTP 404)",
                    self.table.name,
                    self.database,
                    crate::http::display_url(&self.base)
                ),
                "check the table and database names (they are case-sensitive)",
            )),
            Some(400) => error.context(format!(
                "the server refused the request; if the page size {} is above its max_returned_rows, lower --page-size",
                self.table.page_size
            )),
            _ => error,
        }
    }
}
