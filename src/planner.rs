//! Planning a Datasette table before its first row is written: column types and whether it
//! is a view.
//!
//! Guarantees: a column's type comes from, in order, the user's override, a storage-class
//! probe of the whole table (one SQL query, best effort), the declared type, and the first
//! page (see [`crate::schema::plan_column`]); overrides and `partition_by` that name a missing
//! column are usage errors that list the real columns. Nothing here writes.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::{Map, Value};

use crate::config::TableSettings;
use crate::datasette::{self, Page};
use crate::error::UsageError;
use crate::http::Client;
use crate::schema::{Classes, ColType, ColumnPlan, plan_column};

/// Everything the planner learned about a table before the first row is written.
pub struct TablePlan {
    pub columns: Vec<ColumnPlan>,
    pub is_view: bool,
    /// Rows to reconcile with at the end, when known.
    pub count: Option<u64>,
}

/// Decide the table's column types: overrides, then a storage-class probe, then declared types,
/// then the first page (see [`crate::schema::plan_column`]). `count` is the server's exact row
/// count for the whole request, when it gave one.
pub async fn plan_table(
    client: &Client,
    base: &url::Url,
    database: &str,
    table: &TableSettings,
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
    // Declared types and whether it is a view (best effort: the SQL endpoint may be off).
    let declared: BTreeMap<String, String> = datasette::sql_rows(
        client,
        base,
        database,
        "select name, type from pragma_table_info(:t)",
        &[("t", &table.name)],
    )
    .await?
    .unwrap_or_default()
    .into_iter()
    .filter_map(|r| {
        Some((
            r.get("name")?.as_str()?.to_string(),
            r.get("type")?.as_str()?.to_string(),
        ))
    })
    .collect();
    let is_view = match first.is_view {
        Some(v) => v,
        None => datasette::sql_rows(
            client,
            base,
            database,
            "select type from sqlite_master where name = :t",
            &[("t", &table.name)],
        )
        .await?
        .and_then(|rows| {
            rows.first()
                .and_then(|r| r.get("type").and_then(Value::as_str).map(|t| t == "view"))
        })
        .unwrap_or(false),
    };
    // Which storage classes each column really holds, in one scan (may time out on big tables).
    let probed: Vec<&String> = columns
        .iter()
        .filter(|c| !table.types.contains_key(*c) && c.as_str() != "rowid")
        .collect();
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut sql = String::from("select count(*) as n");
    for (i, c) in probed.iter().enumerate() {
        let q = quote(c);
        for (cls, tag) in [
            ("integer", 'i'),
            ("real", 'r'),
            ("text", 't'),
            ("blob", 'b'),
        ] {
            sql.push_str(&format!(", max(typeof({q}) = '{cls}') as {tag}{i}"));
        }
    }
    sql.push_str(&format!(" from {}", quote(&table.name)));
    let probe = datasette::sql_rows(client, base, database, &sql, &[]).await?;
    let probe_row = probe.as_ref().and_then(|r| r.first());
    if probe_row.is_none() {
        tracing::info!(
            "{}: the server did not answer the type probe (SQL disabled or over its time limit); typing from declared types and the first page",
            table.name
        );
    }
    let flag =
        |row: &Map<String, Value>, key: String| row.get(&key).and_then(Value::as_i64) == Some(1);
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
        let probe_classes = probed.iter().position(|c| *c == name).and_then(|i| {
            probe_row.map(|row| Classes {
                integer: flag(row, format!("i{i}")),
                real: flag(row, format!("r{i}")),
                text: flag(row, format!("t{i}")),
                blob: flag(row, format!("b{i}")),
            })
        });
        let p = plan_column(
            name,
            override_ty,
            declared.get(name).map(String::as_str),
            probe_classes,
            sample,
        )
        .map_err(|m| UsageError::new(format!("table {:?}: {m}", table.name)))?;
        tracing::debug!("{}.{name}: {:?} ({})", table.name, p.ty, p.reason);
        plans.push(p);
    }
    // A row count to reconcile with: the first page's exact count, else the probe's when the
    // request has no filters (the probe counts the whole table).
    let count = count.or_else(|| {
        let filtered = table.params.iter().any(|(k, _)| !k.starts_with('_'));
        if filtered {
            None
        } else {
            probe_row.and_then(|r| r.get("n").and_then(Value::as_u64))
        }
    });
    Ok(TablePlan {
        columns: plans,
        is_view,
        count,
    })
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
