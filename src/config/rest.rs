//! A REST table's keys checked and turned into its [`RestTable`] settings: REST keys only on
//! REST sources, Datasette-only keys refused there, a paginator with the options it needs.

use crate::config::PaginateConfig;
use crate::config::TableConfig;
use crate::error::UsageError;
use crate::source::settings::SourceKind;

/// A table's REST settings, checked: REST keys only on REST sources, Datasette-only keys
/// refused on them, and a paginator with the options it needs.
pub(super) fn rest_table(
    kind: SourceKind,
    t: &TableConfig,
) -> Result<Option<crate::source::rest::RestTable>, UsageError> {
    let name = &t.name;
    if kind == SourceKind::Datasette {
        for (key, set) in [
            ("path", t.path.is_some()),
            ("records", t.records.is_some()),
            ("paginate", t.paginate.is_some()),
            ("max_pages", t.max_pages.is_some()),
            ("primary_key", !t.primary_key.is_empty()),
            ("watermark_format", t.watermark_format.is_some()),
            ("for_each", t.for_each.is_some()),
        ]
        .into_iter()
        .chain(t.row_driven_keys())
        {
            if set {
                return Err(UsageError::with_hint(
                    format!("table {name:?}: `{key}` is for REST tables"),
                    "set kind = \"rest\" on the source, or remove the key",
                ));
            }
        }
        return Ok(None);
    }
    for (key, set) in [
        ("page_size", t.page_size.is_some()),
        ("sort", t.sort.is_some()),
        ("parallel", t.parallel.is_some_and(|p| p > 1)),
    ] {
        if set {
            return Err(UsageError::with_hint(
                format!("table {name:?}: `{key}` is not available for REST tables"),
                match key {
                    "page_size" => {
                        "set the API's own page-size parameter in `params` (e.g. params = { _limit = 100 }) or in `paginate`"
                    }
                    "parallel" => {
                        "a REST table's pages are reachable only by following its paginator, so it is read with one cursor"
                    }
                    _ => "pass the API's own sort parameter in `params`",
                },
            ));
        }
    }
    if let Some(p) = &t.records
        && !(p.is_empty() || p.starts_with('/'))
    {
        return Err(UsageError::with_hint(
            format!("table {name:?}: records = {p:?} is not a JSON Pointer"),
            "a JSON Pointer starts with / (e.g. \"/data\" or \"/result/items\"); \"\" is the body itself",
        ));
    }
    let path = t.path.clone().unwrap_or_else(|| format!("/{name}"));
    if path.contains('?') || path.contains("://") {
        return Err(UsageError::with_hint(
            format!("table {name:?}: path {path:?} must be a path under the source URL"),
            "put query parameters in `params`, and the host in the source's `url`",
        ));
    }
    let row_driven = t.for_each.is_some();
    Ok(Some(crate::source::rest::RestTable {
        path,
        // A row-driven response is usually one object or one array: the body itself.
        records: match (&t.records, row_driven) {
            (None, true) => Some(String::new()),
            (r, _) => r.clone(),
        },
        paginate: match (&t.paginate, row_driven) {
            (None, true) => crate::source::rest::Paginate::None,
            (p, _) => paginate(name, p.as_ref())?,
        },
        max_pages: match t.max_pages {
            Some(0) => {
                return Err(UsageError::new(format!(
                    "table {name:?}: max_pages must be at least 1"
                )));
            }
            other => other,
        },
        primary_key: t.primary_key.clone(),
    }))
}

pub(super) fn paginate(
    table: &str,
    c: Option<&PaginateConfig>,
) -> Result<crate::source::rest::Paginate, UsageError> {
    use crate::source::rest::{Paginate, Total};
    let kinds = "auto, link, next_url, cursor, offset, page_number, none";
    let t = match c {
        None => return Ok(Paginate::Auto),
        Some(PaginateConfig::Name(n)) => {
            return match n.as_str() {
                "auto" => Ok(Paginate::Auto),
                "link" => Ok(Paginate::Link),
                "none" => Ok(Paginate::None),
                "next_url" | "cursor" | "offset" | "page_number" => Err(UsageError::with_hint(
                    format!("table {table:?}: paginate = {n:?} needs options"),
                    match n.as_str() {
                        "next_url" => {
                            "e.g. paginate = { kind = \"next_url\", pointer = \"/links/next\" }"
                        }
                        "cursor" => {
                            "e.g. paginate = { kind = \"cursor\", pointer = \"/meta/next_cursor\", param = \"cursor\" }"
                        }
                        "offset" => {
                            "e.g. paginate = { kind = \"offset\", offset_param = \"offset\", limit_param = \"limit\", limit = 100 }"
                        }
                        _ => {
                            "e.g. paginate = { kind = \"page_number\", param = \"page\", start = 1 }"
                        }
                    },
                )),
                other => Err(UsageError::with_hint(
                    format!("table {table:?}: unknown paginator {other:?}"),
                    format!("use one of: {kinds}"),
                )),
            };
        }
        Some(PaginateConfig::Table(t)) => t,
    };
    let need = |v: &Option<String>, key: &str| {
        v.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            UsageError::new(format!(
                "table {table:?}: paginate kind {:?} needs `{key}`",
                t.kind
            ))
        })
    };
    let pointer = |v: String| {
        if v.starts_with('/') {
            Ok(v)
        } else {
            Err(UsageError::with_hint(
                format!("table {table:?}: {v:?} in `paginate` is not a JSON Pointer"),
                "a JSON Pointer starts with /, e.g. \"/meta/next\"",
            ))
        }
    };
    let total = |p: &Option<String>, h: &Option<String>| -> Result<Option<Total>, UsageError> {
        match (p, h) {
            (Some(p), None) => Ok(Some(Total::Pointer(pointer(p.clone())?))),
            (None, Some(h)) => Ok(Some(Total::Header(h.clone()))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(UsageError::new(format!(
                "table {table:?}: give total_pointer or total_header, not both"
            ))),
        }
    };
    let allowed: &[&str] = match t.kind.as_str() {
        "auto" | "link" | "none" => &[],
        "next_url" => &["pointer"],
        "cursor" => &["pointer", "param"],
        "offset" => &[
            "offset_param",
            "limit_param",
            "limit",
            "start",
            "total_pointer",
            "total_header",
        ],
        "page_number" => &["param", "start", "total_pointer", "total_header"],
        other => {
            return Err(UsageError::with_hint(
                format!("table {table:?}: unknown paginator {other:?}"),
                format!("use one of: {kinds}"),
            ));
        }
    };
    for (key, set) in [
        ("pointer", t.pointer.is_some()),
        ("param", t.param.is_some()),
        ("offset_param", t.offset_param.is_some()),
        ("limit_param", t.limit_param.is_some()),
        ("limit", t.limit.is_some()),
        ("start", t.start.is_some()),
        ("total_pointer", t.total_pointer.is_some()),
        ("total_header", t.total_header.is_some()),
    ] {
        if set && !allowed.contains(&key) {
            return Err(UsageError::new(format!(
                "table {table:?}: paginate kind {:?} has no option `{key}`",
                t.kind
            )));
        }
    }
    Ok(match t.kind.as_str() {
        "auto" => Paginate::Auto,
        "link" => Paginate::Link,
        "none" => Paginate::None,
        "next_url" => Paginate::NextUrl {
            pointer: pointer(need(&t.pointer, "pointer")?)?,
        },
        "cursor" => Paginate::Cursor {
            pointer: pointer(need(&t.pointer, "pointer")?)?,
            param: need(&t.param, "param")?,
        },
        "offset" => Paginate::Offset {
            offset_param: t.offset_param.clone().unwrap_or_else(|| "offset".into()),
            limit_param: t.limit_param.clone().unwrap_or_else(|| "limit".into()),
            limit: match t.limit {
                Some(0) | None => {
                    return Err(UsageError::with_hint(
                        format!("table {table:?}: the offset paginator needs `limit` (at least 1)"),
                        "set it to the page size the API allows, e.g. limit = 100",
                    ));
                }
                Some(n) => n,
            },
            start: t.start.unwrap_or(0),
            total: total(&t.total_pointer, &t.total_header)?,
        },
        _ => Paginate::PageNumber {
            param: t.param.clone().unwrap_or_else(|| "page".into()),
            start: t.start.unwrap_or(1),
            total_pages: total(&t.total_pointer, &t.total_header)?,
        },
    })
}
