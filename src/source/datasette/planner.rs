//! Planning a Datasette table before its first row is written: column types and whether it
//! is a view.
//!
//! Guarantees: a column's type comes from, in order, the user's override, a storage-class
//! probe of the whole table, the declared type, and the first page (see
//! [`crate::schema::plan_column`]); overrides and `partition_by` that name a missing column are
//! usage errors that list the real columns. Nothing here writes.
//!
//! The probe runs before the table's first page is requested: [`describe_table`] (declared
//! types, key, view-ness), then [`scan_classes`], one scan of the table through the SQL
//! endpoint. Run alone the scan finishes inside Datasette's default 1 s time limit on tables
//! several times larger than it would while pages are being served (measured on 588k rows:
//! 0.3–0.5 s alone; concurrent with paging, the 1 s limit was hit). It is best effort: with SQL
//! disabled or the limit hit, typing falls back to declared types and the first page. A table
//! whose every column is declared numeric skips the scan ([`Probe::pages_can_type`]): the
//! classes then come from the values received ([`Probe::observe`]), and the scan runs only when
//! a value arrives that JSON cannot classify exactly, or before a first checkpoint.
//! [`plan_table`] then combines what is known with the first page, without touching the
//! network.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::{Map, Value};

use crate::error::UsageError;
use crate::http::Client;
use crate::schema::{Classes, ColType, plan_column};
use crate::source::Page;
use crate::source::datasette;
use crate::source::settings::TableSettings;
use crate::source::{Observed, TablePlan};

/// What the server's SQL endpoint said about a table (all empty when it would not say).
#[derive(Debug, Default)]
pub struct Probe {
    /// Declared column types (`pragma_table_info`).
    declared: BTreeMap<String, String>,
    /// From `sqlite_master`.
    is_view: Option<bool>,
    /// The storage classes each probed column holds, over the whole table.
    classes: BTreeMap<String, Classes>,
    /// `count(*)` of the whole table, from the same scan.
    rows: Option<u64>,
    /// Columns holding ±Infinity, with how many: counted only for a server that would send
    /// them as `null` (see [`datasette::sends_infinity`]), which makes them a reason to stop.
    infinities: BTreeMap<String, u64>,
    /// The primary key's columns, in key order (empty: a rowid table, or not described).
    primary_key: Vec<String>,
    /// `classes` were gathered from the values received so far, not by the scan
    /// ([`Probe::observe`]).
    classes_from_pages: bool,
}

impl Probe {
    /// Refuse a sort order Datasette would answer with `500 Cannot sort table by …` on every
    /// attempt: `rowid` on a table with a primary key (Datasette sorts such a table only by
    /// its columns), or a column the table does not have. Known only when the SQL endpoint
    /// described the table.
    pub fn check_sort(&self, table: &TableSettings) -> Result<(), crate::error::UsageError> {
        let Some(sort) = table.sort.as_deref() else {
            return Ok(());
        };
        if self.declared.is_empty() || self.declared.contains_key(sort) {
            return Ok(());
        }
        let what = if table.watermark.is_some() {
            "--watermark-column"
        } else {
            "--sort"
        };
        if sort == "rowid" && !self.primary_key.is_empty() {
            return Err(crate::error::UsageError::with_hint(
                format!(
                    "Datasette cannot sort {:?} by rowid: the table has a primary key ({}), and Datasette sorts such a table only by its columns",
                    table.name,
                    self.primary_key.join(", ")
                ),
                format!(
                    "use {what} {} (an INTEGER PRIMARY KEY is the rowid under another name)",
                    self.primary_key[0]
                ),
            ));
        }
        if sort != "rowid" {
            return Err(crate::error::UsageError::with_hint(
                format!("table {:?} has no column {sort:?} to sort by", table.name),
                format!(
                    "use {what} with one of its columns: {}",
                    self.declared.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Whether the pages can stand in for the scan: every column the scan would type has a
    /// declared numeric affinity (INTEGER, REAL, NUMERIC, …). In such a column a value's JSON
    /// tells its storage class exactly as long as it is a number (an integer, or a real with a
    /// fraction, an exponent or as a ±Infinity token); a string or an object (text, or a blob,
    /// which Datasette 0.6x sends as a string when it is valid UTF-8) is where JSON is not
    /// exact, and [`Probe::observe`] reports it so that the scan decides after all.
    pub fn pages_can_type(&self, table: &TableSettings) -> bool {
        !self.declared.is_empty()
            && self.declared.iter().all(|(c, d)| {
                table.types.contains_key(c)
                    || matches!(
                        crate::schema::affinity_type(d),
                        Some(ColType::Integer | ColType::Float)
                    )
            })
    }

    /// Start typing from the values received instead of the scan (see
    /// [`Probe::pages_can_type`]).
    pub fn type_from_pages(&mut self) {
        self.classes_from_pages = true;
        self.classes.clear();
    }

    /// Stop typing from the pages (the scan takes over, or the plan made so far stands).
    pub fn stop_typing_from_pages(&mut self) {
        self.classes_from_pages = false;
        self.classes.clear();
    }

    /// True while the classes come from the pages received so far.
    pub fn typing_from_pages(&self) -> bool {
        self.classes_from_pages
    }

    /// While typing from the pages: add a page's values to the classes seen. Returns
    /// [`Observed::Inexact`] when a column the scan would type received a string or an object,
    /// where only the scan is exact, and [`Observed::New`] when a column gained a class.
    pub fn observe(&mut self, table: &TableSettings, page: &Page) -> Observed {
        let Some(columns) = page.columns.as_ref() else {
            return Observed::Inexact;
        };
        let mut exact = true;
        let mut new = false;
        for (idx, name) in columns.iter().enumerate() {
            if table.types.contains_key(name) || !self.declared.contains_key(name) {
                continue;
            }
            let classes = self.classes.entry(name.clone()).or_default();
            let before = *classes;
            for r in &page.rows {
                if let Some(v) = r.get(idx) {
                    classes.observe(v);
                }
            }
            exact &= !(classes.text || classes.blob);
            new |= *classes != before;
        }
        match (exact, new) {
            (false, _) => Observed::Inexact,
            (true, true) => Observed::New,
            (true, false) => Observed::Same,
        }
    }

    /// The probe's `count(*)`, when it counts what the table's requests return: with no
    /// filters, the watermark's included (the probe counts the whole table). The row count to reconcile with when the
    /// first page has no exact count (Datasette 1.0 stops counting at 10,000).
    pub fn table_count(&self, table: &TableSettings) -> Option<u64> {
        let filtered =
            table.watermark.is_some() || table.params.iter().any(|(k, _)| !k.starts_with('_'));
        if filtered { None } else { self.rows }
    }
}

/// Declared column types, primary key and view-ness (two small queries, no scan). A probe
/// with no declared columns means the SQL endpoint did not describe the table.
pub async fn describe_table(
    client: &Client,
    base: &url::Url,
    database: &str,
    table: &TableSettings,
) -> anyhow::Result<Probe> {
    let mut probe = Probe::default();
    let name = [("t", table.name.as_str())];
    let described = datasette::sql_rows(
        client,
        base,
        database,
        // table_xinfo also lists generated columns (hidden 2 and 3); 1 is a virtual table's
        // hidden column, which a table page does not show.
        "select name, type, pk from pragma_table_xinfo(:t) where hidden <> 1",
        &name,
    )
    .await?
    .unwrap_or_default();
    let mut key: Vec<(u64, String)> = described
        .iter()
        .filter_map(|r| {
            let pk = r.get("pk")?.as_u64().filter(|k| *k > 0)?;
            Some((pk, r.get("name")?.as_str()?.to_string()))
        })
        .collect();
    key.sort();
    probe.primary_key = key.into_iter().map(|(_, c)| c).collect();
    probe.declared = described
        .iter()
        .filter_map(|r| {
            Some((
                r.get("name")?.as_str()?.to_string(),
                r.get("type")?.as_str()?.to_string(),
            ))
        })
        .collect();
    probe.is_view = datasette::sql_rows(
        client,
        base,
        database,
        "select type from sqlite_master where name = :t",
        &name,
    )
    .await?
    .and_then(|rows| {
        rows.first()
            .and_then(|r| r.get("type").and_then(Value::as_str).map(|t| t == "view"))
    });
    if probe.declared.is_empty() {
        tracing::info!(
            "{}: the server's SQL endpoint did not describe the table; typing from the first page",
            table.name
        );
    }
    Ok(probe)
}

/// The scan: `count(*)` and, per column without an override, `typeof(min(c))`,
/// `typeof(max(c))` and `max(typeof(c))` (see [`Classes::from_aggregates`]), which decide the
/// type as a flag per class would, at a fraction of SQLite's work. Returns false when the
/// server did not answer (SQL disabled or over its time limit); the probe then has no classes.
/// `infinity_as_null`: the server sends ±Infinity as `null` even when asked; then the columns
/// that hold reals are also checked for ±Infinity (a second scan, on such servers only).
pub async fn scan_classes(
    probe: &mut Probe,
    client: &Client,
    base: &url::Url,
    database: &str,
    table: &TableSettings,
    infinity_as_null: bool,
) -> anyhow::Result<bool> {
    let sql =
        |sql: String| async move { datasette::sql_rows(client, base, database, &sql, &[]).await };
    if probe.declared.is_empty() {
        return Ok(false);
    }
    let probed: Vec<String> = probe
        .declared
        .keys()
        .filter(|c| !table.types.contains_key(*c))
        .cloned()
        .collect();
    let probed: Vec<&str> = probed.iter().map(String::as_str).collect();
    let q = per_column_scan(&table.name, &probed, |i, c| {
        format!("typeof(min({c})) as lo{i}, typeof(max({c})) as hi{i}, max(typeof({c})) as ty{i}")
    });
    let answer = sql(q).await?;
    let Some(row) = answer.as_ref().and_then(|r| r.first()) else {
        tracing::info!(
            "{}: the server did not answer the type probe (SQL disabled or over its time limit); typing from declared types and the first page",
            table.name
        );
        return Ok(false);
    };
    probe.rows = row.get("n").and_then(Value::as_u64);
    let text = |row: &Map<String, Value>, key: String| {
        row.get(&key).and_then(Value::as_str).map(str::to_string)
    };
    for (i, c) in probed.iter().enumerate() {
        let [lo, hi, ty] = ["lo", "hi", "ty"].map(|tag| text(row, format!("{tag}{i}")));
        let classes = Classes::from_aggregates(lo.as_deref(), hi.as_deref(), ty.as_deref());
        probe.classes.insert(c.to_string(), classes);
    }
    if infinity_as_null {
        let reals: Vec<&str> = probed
            .iter()
            .copied()
            .filter(|c| probe.classes.get(*c).is_some_and(|cl| cl.real))
            .collect();
        if !reals.is_empty() {
            let q = per_column_scan(&table.name, &reals, |i, c| {
                format!("sum({c} in (9e999, -9e999)) as i{i}")
            });
            if let Some(row) = sql(q).await?.as_ref().and_then(|r| r.first()) {
                for (i, c) in reals.iter().enumerate() {
                    let n = row.get(&format!("i{i}")).and_then(Value::as_u64);
                    if let Some(n) = n.filter(|n| *n > 0) {
                        probe.infinities.insert(c.to_string(), n);
                    }
                }
            }
        }
    }
    Ok(true)
}

/// Only `count(*)` (SQLite counts from its smallest b-tree, without reading the rows): the
/// row count to reconcile with, for a table typed without the scan.
pub async fn count_rows(
    probe: &mut Probe,
    client: &Client,
    base: &url::Url,
    database: &str,
    table: &TableSettings,
) -> anyhow::Result<()> {
    let q = per_column_scan(&table.name, &[], |_, _| String::new());
    let rows = datasette::sql_rows(client, base, database, &q, &[]).await?;
    probe.rows = rows
        .as_ref()
        .and_then(|r| r.first())
        .and_then(|r| r.get("n"))
        .and_then(Value::as_u64);
    Ok(())
}

/// How many rows of `table` hold the bytes of U+FFFD in column `col` (so really hold the
/// character, rather than bytes a server replaced with it); `None` when the server won't say.
pub async fn count_replacement_chars(
    client: &Client,
    base: &url::Url,
    database: &str,
    table: &str,
    col: &str,
) -> anyhow::Result<Option<u64>> {
    let q = format!(
        "select count(*) as n from {} where instr(cast({} as blob), x'efbfbd') > 0",
        quote_ident(table),
        quote_ident(col)
    );
    let rows = datasette::sql_rows(client, base, database, &q, &[]).await?;
    Ok(rows
        .as_ref()
        .and_then(|r| r.first())
        .and_then(|r| r.get("n"))
        .and_then(Value::as_u64))
}

/// An SQL identifier, quoted.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// One scan of `table`: `count(*) as n`, then `each(i, quoted column)` for every column.
fn per_column_scan(table: &str, columns: &[&str], each: impl Fn(usize, &str) -> String) -> String {
    let mut q = String::from("select count(*) as n");
    for (i, c) in columns.iter().enumerate() {
        q.push_str(", ");
        q.push_str(&each(i, &quote_ident(c)));
    }
    q.push_str(&format!(" from {}", quote_ident(table)));
    q
}

/// Stop before the first page when the server would turn ±Infinity into NULL.
pub fn refuse_lost_infinities(table: &TableSettings, probe: &Probe) -> anyhow::Result<()> {
    if probe.infinities.is_empty() {
        return Ok(());
    }
    let cols: Vec<String> = probe
        .infinities
        .iter()
        .map(|(c, n)| format!("{c:?} ({n})"))
        .collect();
    bail!(
        "table {:?}: column(s) {} hold ±Infinity, but this server sends ±Infinity as null even when asked with _json_infinity=on, so they would become NULL; nothing was harvested. Use a Datasette that honours _json_infinity (0.65 and 1.0 do), or `harvest sql-extract` on the database file",
        table.name,
        cols.join(", ")
    )
}

/// Decide the table's column types from the probe and the first page: overrides, then the
/// probed storage classes, then declared types, then the first page's values (see
/// [`crate::schema::plan_column`]). `count` is the server's exact row count for the whole
/// request, when it gave one.
pub fn plan_table(
    table: &TableSettings,
    probe: &Probe,
    first: &Page,
    count: Option<u64>,
) -> anyhow::Result<TablePlan> {
    let Some(columns) = first.columns.clone() else {
        bail!(
            "the first page did not list the table's columns; is this a Datasette table endpoint?"
        );
    };
    for (col, what) in table
        .types
        .keys()
        .map(|c| (c, "--type/types"))
        .chain(table.partition_by.iter().map(|c| (c, "partition_by")))
    {
        if !columns.contains(col) {
            return Err(UsageError::with_hint(
                format!(
                    "{what} names column {col:?}, which table {:?} does not have",
                    table.name
                ),
                format!("its columns are: {}", columns.join(", ")),
            )
            .into());
        }
    }
    let mut plans = Vec::with_capacity(columns.len());
    for (idx, name) in columns.iter().enumerate() {
        let mut sample = Classes::default();
        for r in &first.rows {
            if let Some(v) = r.get(idx) {
                sample.observe(v);
            }
        }
        let override_ty = table
            .types
            .get(name)
            .copied()
            .or((name == "rowid").then_some(ColType::Integer));
        let p = plan_column(
            name,
            override_ty,
            probe.declared.get(name).map(String::as_str),
            probe.classes.get(name).copied(),
            sample,
        )
        .map_err(|m| UsageError::new(format!("table {:?}: {m}", table.name)))?;
        let mut p = p;
        if probe.classes_from_pages && p.reason == crate::schema::FROM_CLASSES {
            p.reason = "storage classes of every value received (declared numeric)".into();
        }
        tracing::debug!("{}.{name}: {:?} ({})", table.name, p.ty, p.reason);
        plans.push(p);
    }
    let count = count.or_else(|| probe.table_count(table));
    Ok(TablePlan {
        columns: plans,
        is_view: first.is_view.or(probe.is_view).unwrap_or(false),
        count,
    })
}
