//! `for_each` tables: the config keys of a row-driven table checked and turned into its
//! [`RowDriven`] settings. Every problem is a [`UsageError`] naming the table and the key.

use serde_json::Value;

use super::{ForEachConfig, TableConfig};
use crate::error::UsageError;
use crate::source::rows::inputs::InputSpec;
use crate::source::rows::{MAX_CONCURRENCY, RowDriven};

pub(super) fn toml_to_json(v: &toml::Value) -> Value {
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

/// The checked settings of table `t` (`None` without `for_each`). `tables` are the
/// source's tables, for a parent.
pub fn row_driven(
    rest_source: bool,
    t: &TableConfig,
    tables: &[TableConfig],
) -> Result<Option<RowDriven>, UsageError> {
    let name = &t.name;
    let Some(fe) = &t.for_each else {
        for (key, set) in t.row_driven_keys() {
            if set && rest_source {
                return Err(UsageError::with_hint(
                    format!("table {name:?}: `{key}` is for row-driven tables (with `for_each`)"),
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
    let me = RowDriven {
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
            .map(|(k, v)| Ok((k.clone(), crate::source::sqlite::Param::from_toml(k, v)?)))
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
