//! `--parallel N`: splitting one table into disjoint key ranges that are paged concurrently.
//!
//! Guarantees:
//! - Only a table whose leading primary-key column (or `rowid`, for a table without one)
//!   holds integers is split; anything else (a view, a text key, filters on the key column)
//!   is harvested with one cursor, and the caller is told why.
//! - The slices cover every row exactly once: the first has no lower bound, the last no upper
//!   bound (so rows above the maximum seen at the start, and non-integer values, which SQLite
//!   sorts after every number, still land in it), neighbours share a cut point as
//!   `col__lt=c` / `col__gte=c`, and rows whose key is NULL get a slice of their own
//!   (`col__isnull=1`) when there are any.
//! - The plan is recorded in the manifest (`slices`) before any page of the table, so a resumed
//!   run reuses exactly the same ranges even if the table grew in between.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::Client;
use crate::source::datasette::{self, Flavor, Page, TableRequest};

/// One slice: the filters that select its rows (added to the table's own filters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    pub index: u32,
    pub filters: Vec<(String, String)>,
}

/// How a table is split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlicePlan {
    /// The key column the ranges are on.
    pub column: String,
    /// Smallest and largest integer key at planning time.
    pub min: i64,
    pub max: i64,
    pub slices: Vec<Slice>,
    /// The table's row count at planning time (with the table's filters), when the server
    /// counted it exactly; used to reconcile, since each slice only counts itself.
    pub server_count: Option<u64>,
}

/// The outcome of planning: a split, one cursor fetched ahead, or the reason the table is
/// paged with one cursor, one page at a time.
pub enum Planned {
    Split(SlicePlan),
    /// One cursor, its pages fetched up to N ahead (a REST table whose pages are addressable).
    Ahead,
    Sequential(String),
}

/// Cut `[min, max]` into at most `n` ranges of equal key width; returns the interior cut
/// points (ascending, all in `(min, max]`).
pub fn cut_points(min: i64, max: i64, n: u32) -> Vec<i64> {
    let width = i128::from(max) - i128::from(min) + 1;
    let n = i128::from(n).min(width).max(1);
    (1..n)
        .map(|i| (i128::from(min) + width * i / n) as i64)
        .collect()
}

/// The slices for `cuts`, plus a NULL slice when `nulls`.
pub fn slices_for(column: &str, cuts: &[i64], nulls: bool) -> Vec<Slice> {
    let mut bounds: Vec<(Option<i64>, Option<i64>)> = Vec::with_capacity(cuts.len() + 1);
    let mut lower = None;
    for c in cuts {
        bounds.push((lower, Some(*c)));
        lower = Some(*c);
    }
    bounds.push((lower, None));
    let mut out: Vec<Slice> = bounds
        .into_iter()
        .map(|(lo, hi)| {
            let mut filters = vec![];
            if let Some(lo) = lo {
                filters.push((format!("{column}__gte"), lo.to_string()));
            }
            if let Some(hi) = hi {
                filters.push((format!("{column}__lt"), hi.to_string()));
            }
            Slice { index: 0, filters }
        })
        .collect();
    if nulls {
        out.push(Slice {
            index: 0,
            filters: vec![(format!("{column}__isnull"), "1".into())],
        });
    }
    for (i, s) in out.iter_mut().enumerate() {
        s.index = i as u32;
    }
    out
}

/// True when `plan`'s slices are exactly those [`slices_for`] makes from their own cut points:
/// ascending cuts, neighbours sharing each cut, open at both ends, at most one NULL slice. Such
/// slices select every row exactly once.
pub fn is_partition(plan: &SlicePlan) -> bool {
    let lt = format!("{}__lt", plan.column);
    let isnull = (format!("{}__isnull", plan.column), "1".to_string());
    let nulls = plan.slices.iter().any(|s| s.filters == [isnull.clone()]);
    let mut cuts = Vec::new();
    for s in &plan.slices {
        if let Some((_, v)) = s.filters.iter().find(|(k, _)| *k == lt) {
            match v.parse::<i64>() {
                Ok(c) => cuts.push(c),
                Err(_) => return false,
            }
        }
    }
    cuts.windows(2).all(|w| w[0] < w[1]) && slices_for(&plan.column, &cuts, nulls) == plan.slices
}

/// Ask the server for the key column and its range, then split the table `n` ways.
pub async fn plan(
    client: &Client,
    base: &TableRequest,
    flavor: Flavor,
    n: u32,
) -> anyhow::Result<Planned> {
    // 1. Which column is the key, and how many rows are there?
    let mut probe = base.clone();
    probe.page_size = 1;
    probe.sort = None;
    if flavor == Flavor::V1 {
        probe
            .params
            .push(("_extra".into(), "primary_keys,is_view".into()));
    }
    let first = fetch_one(client, &probe, flavor, true).await?;
    if first.is_view == Some(true) {
        return Ok(Planned::Sequential(
            "it is a view, which has no key to split on".into(),
        ));
    }
    let columns = first.columns.clone().unwrap_or_default();
    let column = match first.primary_keys.as_deref() {
        Some([k, ..]) => k.clone(),
        Some([]) if columns.first().is_some_and(|c| c == "rowid") => "rowid".to_string(),
        _ => {
            return Ok(Planned::Sequential(
                "the server did not name a primary key for it".into(),
            ));
        }
    };
    if base
        .params
        .iter()
        .any(|(k, _)| k == &column || k.starts_with(&format!("{column}__")))
    {
        return Ok(Planned::Sequential(format!(
            "its filters already constrain the key column {column:?}"
        )));
    }
    let Some(idx) = columns.iter().position(|c| *c == column) else {
        return Ok(Planned::Sequential(format!(
            "the key column {column:?} is not among its columns"
        )));
    };
    if first.rows.is_empty() {
        return Ok(Planned::Sequential("it has no rows".into()));
    }
    if let Some(count) = first.count
        && count < u64::from(n) * u64::from(base.page_size)
    {
        return Ok(Planned::Sequential(format!(
            "it has only {count} rows, fewer than one page per cursor"
        )));
    }

    // 2. The smallest and largest non-NULL key, and whether any key is NULL.
    let notnull = (format!("{column}__notnull"), "1".to_string());
    let mut lo = probe.clone();
    lo.params.push(notnull.clone());
    lo.sort = Some(column.clone());
    let mut hi = probe.clone();
    hi.params.push(notnull);
    hi.params.push(("_sort_desc".into(), column.clone()));
    let mut nul = probe.clone();
    nul.params.push((format!("{column}__isnull"), "1".into()));
    let key = |p: &Page| {
        p.rows
            .first()
            .and_then(|r| r.get(idx))
            .and_then(Value::as_i64)
    };
    let (Some(min), Some(max)) = (
        key(&fetch_one(client, &lo, flavor, false).await?),
        key(&fetch_one(client, &hi, flavor, false).await?),
    ) else {
        return Ok(Planned::Sequential(format!(
            "its key column {column:?} does not hold integers at both ends"
        )));
    };
    let nulls = !fetch_one(client, &nul, flavor, false)
        .await?
        .rows
        .is_empty();
    let cuts = cut_points(min, max, n);
    if cuts.is_empty() {
        return Ok(Planned::Sequential(format!(
            "its key column {column:?} spans a single value"
        )));
    }
    Ok(Planned::Split(SlicePlan {
        slices: slices_for(&column, &cuts, nulls),
        column,
        min,
        max,
        server_count: first.count,
    }))
}

async fn fetch_one(
    client: &Client,
    req: &TableRequest,
    flavor: Flavor,
    count: bool,
) -> anyhow::Result<Page> {
    let url = req.page_url(flavor, None, count);
    let (_, page) = client
        .get(&url, |f| {
            datasette::verdict(datasette::parse_page(&f.body, None))
        })
        .await?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_cover_the_range_evenly() {
        assert_eq!(cut_points(1, 9, 3), vec![4, 7]);
        assert_eq!(cut_points(10248, 26247, 3), vec![15581, 20914]);
        assert_eq!(cut_points(5, 6, 3), vec![6]);
        assert!(cut_points(7, 7, 3).is_empty());
        assert_eq!(cut_points(i64::MIN, i64::MAX, 2), vec![0]);
    }

    #[test]
    fn a_recorded_plan_is_checked_as_a_partition() {
        let mut plan = SlicePlan {
            column: "id".into(),
            min: 1,
            max: 9,
            slices: slices_for("id", &[4, 7], false),
            server_count: None,
        };
        assert!(is_partition(&plan));
        // Overlap: the second slice starts below the first's end.
        plan.slices[1].filters[0].1 = "3".into();
        assert!(!is_partition(&plan));
        plan.slices = slices_for("id", &[4, 7], false);
        plan.slices.pop(); // no slice reaches above 7
        assert!(!is_partition(&plan));
    }

    #[test]
    fn slices_are_disjoint_and_open_at_both_ends() {
        let s = slices_for("id", &[4, 7], true);
        let f: Vec<Vec<(String, String)>> = s.iter().map(|s| s.filters.clone()).collect();
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            f,
            vec![
                vec![p("id__lt", "4")],
                vec![p("id__gte", "4"), p("id__lt", "7")],
                vec![p("id__gte", "7")],
                vec![p("id__isnull", "1")],
            ]
        );
        assert_eq!(
            s.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        // Every integer lands in exactly one range slice.
        for v in -5i64..15 {
            let hits = s[..3]
                .iter()
                .filter(|s| {
                    s.filters.iter().all(|(k, b)| {
                        let b: i64 = b.parse().unwrap_or(0);
                        if k.ends_with("__gte") { v >= b } else { v < b }
                    })
                })
                .count();
            assert_eq!(hits, 1, "value {v}");
        }
    }
}
