//! Schema evolution for pages whose fields vary (REST): what a page adds to a table's columns,
//! and its rows placed in the widened column order.
//!
//! Guarantees:
//! - Columns are only ever appended, never retyped or removed, so a part written before a
//!   change and one written after agree on every column they share; readers unify them by
//!   name, with NULL where a part lacks a column.
//! - A field first seen on this page becomes a column typed from this page's values (a
//!   `types` entry wins): booleans, integers, numbers (integers and fractions together),
//!   text; only NULLs give text. Where one page mixes kinds, the first value's kind decides
//!   and the others are variants.
//! - A value that does not fit its column is never dropped: it goes to the variant column
//!   `<column>__v_<kind>` (dlt's convention: `bool`, `bigint`, `double`, `text`), and the
//!   column itself is NULL on that row. An integer beyond the signed 64-bit range goes to the
//!   text variant as its exact digits.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{ColType, ColumnPlan, fits};

/// A column a page adds, and why.
#[derive(Debug, Clone)]
pub struct Added {
    pub column: ColumnPlan,
    /// The field a variant is for (`None`: a new field).
    pub variant_of: Option<String>,
}

/// The variant a value that does not fit goes to: `(suffix, type)`.
fn variant_kind(v: &Value) -> (&'static str, ColType) {
    match v {
        Value::Bool(_) => ("bool", ColType::Boolean),
        Value::Number(n) if n.is_i64() => ("bigint", ColType::Integer),
        Value::Number(n) if n.is_u64() => ("text", ColType::Text),
        Value::Number(_) => ("double", ColType::Float),
        _ => ("text", ColType::Text),
    }
}

/// The variant column of `column` for value `v`.
pub fn variant_name(column: &str, v: &Value) -> String {
    format!("{column}__v_{}", variant_kind(v).0)
}

fn kind(v: &Value) -> Option<ColType> {
    match v {
        Value::Null => None,
        Value::Bool(_) => Some(ColType::Boolean),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(ColType::Integer),
        Value::Number(_) => Some(ColType::Float),
        _ => Some(ColType::Text),
    }
}

/// The type of a new field from its values on one page (see the module docs).
fn new_field(
    name: &str,
    values: &[&Value],
    page_no: u64,
    types: &BTreeMap<String, ColType>,
) -> ColumnPlan {
    if let Some(ty) = types.get(name) {
        return ColumnPlan {
            name: name.to_string(),
            ty: *ty,
            reason: "override".into(),
            numbers_as_text: *ty == ColType::Text,
        };
    }
    let kinds: Vec<ColType> = values.iter().filter_map(|v| kind(v)).collect();
    let numeric = |k: &ColType| matches!(k, ColType::Integer | ColType::Float);
    let ty = match kinds.first() {
        None => ColType::Text,
        Some(first) if numeric(first) && kinds.iter().all(numeric) => {
            if kinds.contains(&ColType::Float) {
                ColType::Float
            } else {
                ColType::Integer
            }
        }
        Some(first) => *first,
    };
    ColumnPlan {
        name: name.to_string(),
        ty,
        reason: if kinds.is_empty() {
            format!("only nulls where it first appeared, on page {page_no}")
        } else {
            format!("first appeared on page {page_no}")
        },
        numbers_as_text: false,
    }
}

/// The columns page `page_no` (fields `cols`, rows in that order) adds to `plan`: its new
/// fields, then a variant for each kind of value that does not fit its column.
pub fn additions(
    plan: &[ColumnPlan],
    cols: &[String],
    rows: &[Vec<Value>],
    page_no: u64,
    types: &BTreeMap<String, ColType>,
) -> Vec<Added> {
    let mut known: HashMap<&str, usize> = plan
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut added: Vec<Added> = Vec::new();
    for (j, c) in cols.iter().enumerate() {
        if known.contains_key(c.as_str()) {
            continue;
        }
        let values: Vec<&Value> = rows.iter().filter_map(|r| r.get(j)).collect();
        added.push(Added {
            column: new_field(c, &values, page_no, types),
            variant_of: None,
        });
    }
    for (i, a) in added.iter().enumerate() {
        known.insert(a.column.name.as_str(), plan.len() + i);
    }
    let column = |i: usize| -> &ColumnPlan {
        if i < plan.len() {
            &plan[i]
        } else {
            &added[i - plan.len()].column
        }
    };
    let mut variants: Vec<Added> = Vec::new();
    for row in rows {
        for (j, v) in row.iter().enumerate() {
            let Some(&i) = cols.get(j).and_then(|c| known.get(c.as_str())) else {
                continue;
            };
            let col = column(i);
            if fits(v, col) {
                continue;
            }
            let name = variant_name(&col.name, v);
            if known.contains_key(name.as_str()) || variants.iter().any(|a| a.column.name == name) {
                continue;
            }
            variants.push(Added {
                column: ColumnPlan {
                    name: name.clone(),
                    ty: variant_kind(v).1,
                    reason: format!("variant of {:?} from page {page_no}", col.name),
                    numbers_as_text: false,
                },
                variant_of: Some(col.name.clone()),
            });
        }
    }
    added.extend(variants);
    added
}

/// A new run's plan for a dataset that has columns already: the dataset's columns, in their
/// order and with their types (values that no longer fit go to variants), then the new
/// plan's other columns. A declared type (`override`) wins over the dataset's.
pub fn continue_schema(prior: Vec<ColumnPlan>, planned: Vec<ColumnPlan>) -> Vec<ColumnPlan> {
    if prior.is_empty() {
        return planned;
    }
    let mut out = prior;
    for c in planned {
        match out.iter_mut().find(|k| k.name == c.name) {
            Some(k) if c.reason == "override" => *k = c,
            Some(_) => {}
            None => out.push(c),
        }
    }
    out
}

/// Whether a page's rows can be written as they are: the planned columns in order, every
/// value fitting its column (the common page; one pass, no allocation).
pub fn fits_as_is(plan: &[ColumnPlan], cols: &[String], rows: &[Vec<Value>]) -> bool {
    cols.len() == plan.len()
        && cols.iter().zip(plan).all(|(a, b)| *a == b.name)
        && rows
            .iter()
            .all(|r| r.iter().zip(plan).all(|(v, p)| fits(v, p)))
}

/// The page's rows in `plan`'s column order, a value that does not fit its column in its
/// variant. Fields the plan lacks are left out (the caller widened the plan with
/// [`additions`] first).
pub fn place(plan: &[ColumnPlan], cols: &[String], rows: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let index: HashMap<&str, usize> = plan
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let map: Vec<Option<usize>> = cols
        .iter()
        .map(|c| index.get(c.as_str()).copied())
        .collect();
    rows.iter()
        .map(|r| {
            let mut out = vec![Value::Null; plan.len()];
            for (v, at) in r.iter().zip(&map) {
                let Some(i) = *at else { continue };
                if fits(v, &plan[i]) {
                    out[i] = v.clone();
                } else if let Some(&k) = index.get(variant_name(&plan[i].name, v).as_str()) {
                    out[k] = match v {
                        // Beyond i64: its exact digits, as text.
                        Value::Number(n) if plan[k].ty == ColType::Text => {
                            Value::String(n.to_string())
                        }
                        other => other.clone(),
                    };
                }
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn col(name: &str, ty: ColType) -> ColumnPlan {
        ColumnPlan {
            name: name.into(),
            ty,
            reason: "test".into(),
            numbers_as_text: false,
        }
    }

    #[test]
    fn new_fields_and_variants_are_added_and_values_placed() {
        let plan = vec![col("id", ColType::Integer), col("name", ColType::Text)];
        let cols: Vec<String> = ["id", "name", "score"].map(String::from).to_vec();
        let rows = vec![
            vec![json!(1), json!("a"), json!(1.5)],
            vec![json!("x-2"), json!(7), json!(2)],
            vec![json!(18446744073709551615u64), json!(null), json!(null)],
        ];
        let added = additions(&plan, &cols, &rows, 5, &BTreeMap::new());
        let names: Vec<&str> = added.iter().map(|a| a.column.name.as_str()).collect();
        assert_eq!(names, ["score", "id__v_text", "name__v_bigint"]);
        assert_eq!(added[0].column.ty, ColType::Float);
        assert_eq!(added[1].variant_of.as_deref(), Some("id"));
        let mut wide = plan.clone();
        wide.extend(added.into_iter().map(|a| a.column));
        assert!(!fits_as_is(&wide, &cols, &rows));
        let placed = place(&wide, &cols, &rows);
        assert_eq!(
            placed[1],
            vec![json!(null), json!(null), json!(2), json!("x-2"), json!(7)]
        );
        assert_eq!(placed[2][3], json!("18446744073709551615"));
        // The same columns, every value fitting: written as they are.
        let ok = vec![vec![json!(1), json!("a")]];
        assert!(fits_as_is(&plan, &cols[..2], &ok));
        // A declared type wins for a new field.
        let mut types = BTreeMap::new();
        types.insert("score".to_string(), ColType::Text);
        let added = additions(&plan, &cols, &rows, 5, &types);
        assert_eq!(added[0].column.ty, ColType::Text);
        assert!(added[0].column.numbers_as_text);
    }
}
