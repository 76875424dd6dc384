//! The chunked SQLite reader behind `sql-extract`.
//!
//! Guarantees:
//! - The database is opened read-only (`SQLITE_OPEN_READ_ONLY`); a missing file is an error,
//!   never a new empty database. A WAL-mode database being written by another process reads
//!   as one consistent snapshot (the query runs in one read transaction).
//! - Parameters are always bound, never spliced into SQL: named (`:x`, `@x`, `$x`) and
//!   positional (`?`), each with an optional type (`int:`, `real:`, `text:`, `null`). A missing
//!   or unused parameter is an error.
//! - Column types are chosen up front from the declared type's affinity or an override;
//!   columns without a declared type (expressions) are typed from the first chunk of rows,
//!   which is the only thing ever buffered. A later value that does not fit is an error naming
//!   the row and column (see [`crate::schema`]).
//! - Rows are appended straight from SQLite's values into Arrow builders and handed on as
//!   batches of `chunk_rows`: memory is bounded by a chunk per open partition.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::record_batch::RecordBatch;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::error::UsageError;
use crate::schema::{BatchBuilder, CellRef, Classes, ColType, ColumnPlan, plan_column};

/// A bound parameter value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Param {
    Int(i64),
    Real(f64),
    Text(String),
    Null,
}

impl Param {
    /// A TOML value as a parameter: integers and floats keep their type, booleans are 0/1,
    /// strings may carry a type prefix (see [`Param::parse`]).
    pub fn from_toml(key: &str, v: &toml::Value) -> Result<Param, UsageError> {
        Ok(match v {
            toml::Value::Integer(i) => Param::Int(*i),
            toml::Value::Float(f) => Param::Real(*f),
            toml::Value::Boolean(b) => Param::Int(i64::from(*b)),
            toml::Value::String(s) => Param::parse(s)?,
            _ => {
                return Err(UsageError::new(format!(
                    "parameter {key:?} must be a string, number or boolean"
                )));
            }
        })
    }

    /// `int:5`, `integer:5`, `real:1.5`, `float:1.5`, `text:…`, `null`; anything else is text.
    pub fn parse(raw: &str) -> Result<Param, UsageError> {
        let bad =
            |ty: &str| UsageError::new(format!("parameter value {raw:?} is not a valid {ty}"));
        if raw == "null" {
            return Ok(Param::Null);
        }
        if let Some((ty, v)) = raw.split_once(':') {
            match ty {
                "int" | "integer" => {
                    return v.trim().parse().map(Param::Int).map_err(|_| bad("integer"));
                }
                "real" | "float" => {
                    return v.trim().parse().map(Param::Real).map_err(|_| bad("real"));
                }
                "text" => return Ok(Param::Text(v.to_string())),
                _ => {}
            }
        }
        Ok(Param::Text(raw.to_string()))
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        Ok(match self {
            Param::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            Param::Real(f) => ToSqlOutput::Owned(Value::Real(*f)),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Null => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// Open `path` read-only, refusing to create it.
pub fn open_readonly(path: &Path) -> Result<Connection, UsageError> {
    if !path.is_file() {
        return Err(UsageError::with_hint(
            format!(
                "the database {} does not exist (or is not a file)",
                path.display()
            ),
            "check the --db path",
        ));
    }
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| UsageError::new(format!("cannot open {} as SQLite: {e}", path.display())))
}

/// True when the statement's first keyword (after white space and comments) starts a query:
/// `SELECT`, `WITH` or `VALUES`. Together with `Statement::readonly()` this refuses `ATTACH`,
/// `DETACH`, `PRAGMA`, `BEGIN` and the like, which SQLite counts as read-only.
pub fn is_query(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(word.as_str(), "select" | "with" | "values")
}

/// Bind `named` and `positional` to `stmt`, insisting that each parameter is used exactly once.
pub fn bind(
    stmt: &mut rusqlite::Statement<'_>,
    named: &BTreeMap<String, Param>,
    positional: &[Param],
) -> Result<(), UsageError> {
    let mut used = std::collections::BTreeSet::new();
    let mut next_pos = 0usize;
    for i in 1..=stmt.parameter_count() {
        let value = match stmt.parameter_name(i) {
            Some(name) => {
                let bare = name.trim_start_matches([':', '@', '$']).to_string();
                let v = named.get(&bare).ok_or_else(|| {
                    UsageError::with_hint(
                        format!("the query uses the parameter {name} but no value was given"),
                        format!("pass --param {bare}=VALUE"),
                    )
                })?;
                used.insert(bare);
                v.clone()
            }
            None => {
                let v = positional.get(next_pos).ok_or_else(|| {
                    UsageError::with_hint(
                        format!(
                            "the query has more `?` parameters than the {} --arg value(s) given",
                            positional.len()
                        ),
                        "pass one --arg per `?`, in order",
                    )
                })?;
                next_pos += 1;
                v.clone()
            }
        };
        stmt.raw_bind_parameter(i, &value)
            .map_err(|e| UsageError::new(format!("cannot bind parameter {i}: {e}")))?;
    }
    if let Some(extra) = named.keys().find(|k| !used.contains(*k)) {
        return Err(UsageError::new(format!(
            "--param {extra} is not used by the query"
        )));
    }
    if next_pos < positional.len() {
        return Err(UsageError::new(format!(
            "{} --arg value(s) given but the query has only {next_pos} `?` parameter(s)",
            positional.len()
        )));
    }
    Ok(())
}

fn cell(v: ValueRef<'_>) -> CellRef<'_> {
    match v {
        ValueRef::Null => CellRef::Null,
        ValueRef::Integer(i) => CellRef::Int(i),
        ValueRef::Real(f) => CellRef::Real(f),
        ValueRef::Text(t) => CellRef::Text(t),
        ValueRef::Blob(b) => CellRef::Blob(b),
    }
}

/// An owned value, only for the first chunk of a query with untyped columns.
#[derive(Debug, Clone)]
enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Owned {
    fn of(v: ValueRef<'_>) -> Owned {
        match v {
            ValueRef::Null => Owned::Null,
            ValueRef::Integer(i) => Owned::Int(i),
            ValueRef::Real(f) => Owned::Real(f),
            ValueRef::Text(t) => Owned::Text(t.to_vec()),
            ValueRef::Blob(b) => Owned::Blob(b.to_vec()),
        }
    }
    fn as_cell(&self) -> CellRef<'_> {
        match self {
            Owned::Null => CellRef::Null,
            Owned::Int(i) => CellRef::Int(*i),
            Owned::Real(f) => CellRef::Real(*f),
            Owned::Text(t) => CellRef::Text(t),
            Owned::Blob(b) => CellRef::Blob(b),
        }
    }
}

/// A batch with its partition key (`None` when not partitioned, `Some(None)` for NULL).
pub type KeyedBatch = (Option<Option<String>>, RecordBatch);

/// Where batches go: `(partition key, batch)`.
pub type BatchSink<'a> = dyn FnMut(Option<Option<String>>, RecordBatch) -> anyhow::Result<()> + 'a;

/// What [`stream`] needs to know about the query beyond the statement.
pub struct StreamOptions<'a> {
    /// How errors name the query (e.g. `extract "orders"`).
    pub what: &'a str,
    pub overrides: &'a BTreeMap<String, ColType>,
    pub partition_by: Option<&'a str>,
    pub chunk_rows: usize,
}

/// Decides whether a row (its 1-based number, its cells) goes into the batches: `false`
/// means the caller kept it elsewhere (row checks: quarantine).
pub type RowGate<'a> = dyn FnMut(&[ColumnPlan], u64, &[CellRef<'_>]) -> anyhow::Result<bool> + 'a;

/// Run the statement and stream its rows as batches into `emit`. `plan_hook` receives the
/// column plans once they are known (before the first batch); `gate`, when given, sees every
/// row first. Returns the row count (every row read, kept or not).
pub fn stream(
    stmt: &mut rusqlite::Statement<'_>,
    opts: &StreamOptions<'_>,
    plan_hook: &mut dyn FnMut(&[ColumnPlan]) -> anyhow::Result<()>,
    emit: &mut BatchSink<'_>,
    progress: &mut dyn FnMut(u64),
    mut gate: Option<&mut RowGate<'_>>,
) -> anyhow::Result<u64> {
    let StreamOptions {
        what,
        overrides,
        partition_by,
        chunk_rows,
    } = *opts;
    let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let decls: Vec<Option<String>> = stmt
        .columns()
        .map(|c| c.decl_type().map(str::to_string))
        .collect();
    for col in overrides.keys().map(String::as_str).chain(partition_by) {
        if !names.iter().any(|n| n == col) {
            return Err(UsageError::with_hint(
                format!("{col:?} is not a column of the query result"),
                format!("the result columns are: {}", names.join(", ")),
            )
            .into());
        }
    }
    let part_idx = partition_by.and_then(|p| names.iter().position(|n| n == p));
    let needs_sample = names
        .iter()
        .zip(&decls)
        .any(|(n, d)| !overrides.contains_key(n) && d.as_deref().is_none_or(str::is_empty));
    let n = names.len();
    let mut rows = stmt.raw_query();
    // The first chunk, buffered only if some column has no declared type.
    let mut sample: Vec<Vec<Owned>> = Vec::new();
    if needs_sample {
        while sample.len() < chunk_rows {
            let Some(r) = rows.next().map_err(sql_error)? else {
                break;
            };
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(Owned::of(r.get_ref(i).map_err(sql_error)?));
            }
            sample.push(row);
        }
    }
    let mut plans = Vec::with_capacity(n);
    for (i, name) in names.iter().enumerate() {
        let mut classes = Classes::default();
        for r in &sample {
            match &r[i] {
                Owned::Null => {}
                Owned::Int(_) => classes.integer = true,
                Owned::Real(_) => classes.real = true,
                Owned::Text(_) => classes.text = true,
                Owned::Blob(_) => classes.blob = true,
            }
        }
        let p = plan_column(
            name,
            overrides.get(name).copied(),
            decls[i].as_deref(),
            None,
            classes,
        )
        .map_err(|m| UsageError::new(format!("{what}: {m}")))?;
        plans.push(p);
    }
    plan_hook(&plans)?;
    let keep: Vec<usize> = (0..n).filter(|i| Some(*i) != part_idx).collect();
    let file_plans: Vec<ColumnPlan> = keep.iter().map(|i| plans[*i].clone()).collect();
    let mut builders: BTreeMap<Option<String>, BatchBuilder> = BTreeMap::new();
    // One row's cells, reused: emptied at the end of each row and its allocation carried to
    // the next row (an empty Vec can change its borrow's lifetime in place).
    let mut spare: Vec<CellRef<'static>> = Vec::with_capacity(n);
    let mut count: u64 = 0;
    let partitioned = part_idx.is_some();

    let mut take_row = |row: &[CellRef<'_>],
                        count: &mut u64,
                        builders: &mut BTreeMap<Option<String>, BatchBuilder>,
                        emit: &mut BatchSink<'_>|
     -> anyhow::Result<()> {
        *count += 1;
        if let Some(g) = gate.as_mut()
            && !g(&plans, *count, row)?
        {
            return Ok(());
        }
        let key = match part_idx {
            None => None,
            Some(p) => match row[p] {
                CellRef::Null => None,
                CellRef::Int(i) => Some(i.to_string()),
                CellRef::Real(f) => Some(format!("{f:?}")),
                CellRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                CellRef::Blob(_) => {
                    anyhow::bail!("{what}, row {count}: a blob cannot name a partition")
                }
            },
        };
        let b = builders
            .entry(key.clone())
            .or_insert_with(|| BatchBuilder::new(&file_plans));
        let picked: Vec<CellRef<'_>>;
        let values: &[CellRef<'_>] = if partitioned {
            picked = keep.iter().map(|k| row[*k]).collect();
            &picked
        } else {
            row
        };
        b.push_cells(values, what, *count)
            .map_err(anyhow::Error::msg)?;
        if b.len() >= chunk_rows {
            let batch = b.finish()?;
            emit(partitioned.then_some(key), batch)?;
        }
        Ok(())
    };

    for r in &sample {
        let row: Vec<CellRef<'_>> = r.iter().map(Owned::as_cell).collect();
        take_row(&row, &mut count, &mut builders, emit)?;
    }
    drop(sample);
    while let Some(r) = rows.next().map_err(sql_error)? {
        let mut cells: Vec<CellRef<'_>> = spare;
        for i in 0..n {
            cells.push(cell(r.get_ref(i).map_err(sql_error)?));
        }
        take_row(&cells, &mut count, &mut builders, emit)?;
        cells.clear();
        spare = cells.into_iter().map(|_| CellRef::Null).collect();
        if count.is_multiple_of(65536) {
            progress(count);
        }
    }
    for (key, mut b) in builders {
        if !b.is_empty() {
            let batch = b.finish()?;
            emit(partitioned.then_some(key), batch)?;
        }
    }
    progress(count);
    Ok(count)
}

fn sql_error(e: rusqlite::Error) -> anyhow::Error {
    anyhow::anyhow!("SQLite error while reading the result: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queries_count_as_queries() {
        for q in [
            "select 1",
            "  SELECT 1",
            "with x as (select 1) select * from x",
            "values (1), (2)",
            "-- note\n/* block */ select 1",
            "/* a */\n  Values(1)",
        ] {
            assert!(is_query(q), "{q}");
        }
        for q in [
            "ATTACH DATABASE 'x.db' AS x",
            "detach x",
            "pragma table_info(t)",
            "begin",
            "explain select 1",
            "-- select 1",
            "/* select 1",
            "",
        ] {
            assert!(!is_query(q), "{q}");
        }
    }

    #[test]
    fn typed_params() {
        assert_eq!(Param::parse("int:5").unwrap(), Param::Int(5));
        assert_eq!(Param::parse("real:1.5").unwrap(), Param::Real(1.5));
        assert_eq!(Param::parse("null").unwrap(), Param::Null);
        assert_eq!(Param::parse("USA").unwrap(), Param::Text("USA".into()));
        assert_eq!(
            Param::parse("text:int:5").unwrap(),
            Param::Text("int:5".into())
        );
        assert_eq!(
            Param::parse("2016-07-04 10:00:00").unwrap(),
            Param::Text("2016-07-04 10:00:00".into())
        );
        assert!(Param::parse("int:five").is_err());
    }
}
