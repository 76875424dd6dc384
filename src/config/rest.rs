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
            ("method", t.method.is_some()),
            ("body", t.body.is_some()),
            ("window", t.window.is_some()),
            ("format", t.format.is_some()),
            ("records_from", t.records_from.is_some()),
            ("schema", t.schema.is_some()),
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
    ] {
        if set {
            return Err(UsageError::with_hint(
                format!("table {name:?}: `{key}` is not available for REST tables"),
                match key {
                    "page_size" => {
                        "set the API's own page-size parameter in `params` (e.g. params = { _limit = 100 }) or in `paginate`"
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
    let (paginate, stops) = match (&t.paginate, row_driven) {
        (None, true) => (
            crate::source::rest::Paginate::None,
            crate::source::rest::Stops::default(),
        ),
        (p, _) => paginate(name, p.as_ref())?,
    };
    let (method, body) = if row_driven {
        // A row-driven table's method and body are templates of its own (config/rows.rs).
        ("GET".to_string(), None)
    } else {
        paged_request(t)?
    };
    if row_driven
        && matches!(
            paginate.token_to(),
            Some(crate::source::rest::TokenTo::Body(_))
        )
    {
        return Err(UsageError::with_hint(
            format!("table {name:?}: `body_field` is for paged tables"),
            "a row-driven table's body is its template; send the cursor in a query parameter or header",
        ));
    }
    if matches!(
        paginate.token_to(),
        Some(crate::source::rest::TokenTo::Body(_))
    ) && method == "GET"
    {
        return Err(UsageError::with_hint(
            format!(
                "table {name:?}: the cursor goes in the request body (`body_field`), but the table sends GET"
            ),
            "set method = \"POST\" (and `body` to the search's first request)",
        ));
    }
    let window = match &t.window {
        Some(w) if row_driven => {
            let _ = w;
            return Err(UsageError::new(format!(
                "table {name:?}: `window` is for paged tables, not row-driven ones"
            )));
        }
        Some(w) => Some(super::window::window(name, w)?),
        None => None,
    };
    if let Some(n) = t.parallel.filter(|p| *p > 1) {
        if row_driven {
            return Err(UsageError::with_hint(
                format!("table {name:?}: `parallel` is for paged tables"),
                "a row-driven table sends its requests `concurrency` at a time; set that instead",
            ));
        }
        if let Some(why) = paginate.not_addressable(window.is_some()) {
            return Err(UsageError::with_hint(
                format!("table {name:?}: parallel = {n} cannot fetch its pages ahead: {why}"),
                "remove `parallel` (the table is read one page after another), or page it by offset or page number if the API offers that",
            ));
        }
    }
    let (format, records_from) = body_shape(t, &paginate, &stops)?;
    Ok(Some(crate::source::rest::RestTable {
        path,
        // A row-driven response is usually one object or one array: the body itself.
        records: match (&t.records, row_driven) {
            (None, true) => Some(String::new()),
            (r, _) => r.clone(),
        },
        paginate,
        stops,
        method,
        body,
        window,
        format,
        records_from,
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

/// What a table's bodies are: `format` and `records_from`, checked against the paginator
/// (an NDJSON or CSV body has no fields a pointer could read).
fn body_shape(
    t: &TableConfig,
    paginate: &crate::source::rest::Paginate,
    stops: &crate::source::rest::Stops,
) -> Result<
    (
        crate::source::rest::BodyFormat,
        crate::source::rest::RecordsFrom,
    ),
    UsageError,
> {
    use crate::source::rest::{BodyFormat, Paginate, RecordsFrom, TokenFrom};
    let name = &t.name;
    let format = match t.format.as_deref() {
        None | Some("json") => BodyFormat::Json,
        Some("ndjson") => BodyFormat::Ndjson,
        Some("csv") => BodyFormat::Csv,
        Some(other) => {
            return Err(UsageError::with_hint(
                format!("table {name:?}: format = {other:?} is not a page format"),
                "use \"json\" (the default), \"ndjson\" (a record per line) or \"csv\" (a header row, then a record per row)",
            ));
        }
    };
    let records_from = match t.records_from.as_deref() {
        None | Some("array") => RecordsFrom::Array,
        Some("values") => RecordsFrom::Values,
        Some(other) => {
            return Err(UsageError::with_hint(
                format!("table {name:?}: records_from = {other:?} is not known"),
                "use \"values\" for records kept as the values of an object keyed by id (the key becomes the column _key)",
            ));
        }
    };
    if format != BodyFormat::Json {
        let body_pointer = match paginate {
            Paginate::NextUrl { .. } => Some("a next URL read from the body"),
            Paginate::Cursor { .. }
                if matches!(paginate.token_from(), Some(TokenFrom::Body(_))) =>
            {
                Some("a cursor read from the body")
            }
            _ if stops.has_more.is_some() || stops.done.is_some() => {
                Some("a has_more or done flag read from the body")
            }
            _ => None,
        };
        let refuse = |what: String| {
            Err(UsageError::with_hint(
                format!("table {name:?}: {what}"),
                "an NDJSON or CSV page is records only: page it by `link`, `offset`, `page_number`, or a cursor from `last_record` or `from_header`",
            ))
        };
        if let Some(what) = body_pointer {
            return refuse(format!(
                "{what} cannot work with format = {:?}",
                t.format.as_deref().unwrap_or_default()
            ));
        }
        if t.records.is_some() || records_from != RecordsFrom::Array {
            return refuse("`records` and `records_from` are for JSON pages".into());
        }
    }
    Ok((format, records_from))
}

/// A paged table's method (GET, or POST for a search) and JSON body.
fn paged_request(t: &TableConfig) -> Result<(String, Option<serde_json::Value>), UsageError> {
    let name = &t.name;
    let method = t
        .method
        .clone()
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    if method != "GET" && method != "POST" {
        return Err(UsageError::with_hint(
            format!("table {name:?}: a paged table sends GET or POST, not {method}"),
            "use method = \"POST\" for a search that pages with a body; other methods are for row-driven tables (`for_each`)",
        ));
    }
    let body = t.body.as_ref().map(super::rows::toml_to_json);
    if body.is_some() && method == "GET" {
        return Err(UsageError::with_hint(
            format!("table {name:?}: a GET request has no body"),
            "set method = \"POST\" to send `body`",
        ));
    }
    if let Some(b) = &body
        && !b.is_object()
    {
        return Err(UsageError::with_hint(
            format!("table {name:?}: `body` must be a table (a JSON object)"),
            "e.g. body = { page_size = 100 }",
        ));
    }
    Ok((method, body))
}

pub(super) fn paginate(
    table: &str,
    c: Option<&PaginateConfig>,
) -> Result<(crate::source::rest::Paginate, crate::source::rest::Stops), UsageError> {
    use crate::source::rest::{Paginate, Stops, Total};
    let kinds = "auto, link, next_url, cursor, offset, page_number, none";
    let bare = |p| Ok((p, Stops::default()));
    let t = match c {
        None => return bare(Paginate::Auto),
        Some(PaginateConfig::Name(n)) => {
            return match n.as_str() {
                "auto" => bare(Paginate::Auto),
                "link" => bare(Paginate::Link),
                "none" => bare(Paginate::None),
                "next_url" | "cursor" | "offset" | "page_number" => Err(UsageError::with_hint(
                    format!("table {table:?}: paginate = {n:?} needs options"),
                    match n.as_str() {
                        "next_url" => {
                            "e.g. paginate = { kind = \"next_url\", pointer = \"/links/next\" }"
                        }
                        "cursor" => {
                            "e.g. paginate = { kind = \"cursor\", pointer = \"/meta/next_cursor\", param = \"cursor\" } (the token from `pointer`, `last_record` or `from_header`; sent as `param`, `body_field` or `to_header`)"
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
    const STOPS: [&str; 3] = ["has_more", "done", "stop_on_empty"];
    let allowed: &[&str] = match t.kind.as_str() {
        "auto" | "none" => &[],
        "link" => &STOPS,
        "next_url" => &["pointer", "has_more", "done", "stop_on_empty"],
        "cursor" => &[
            "pointer",
            "last_record",
            "from_header",
            "param",
            "body_field",
            "to_header",
            "has_more",
            "done",
            "stop_on_empty",
        ],
        "offset" => &[
            "offset_param",
            "limit_param",
            "limit",
            "start",
            "total_pointer",
            "total_header",
            "has_more",
            "done",
            "stop_on_empty",
        ],
        "page_number" => &[
            "param",
            "start",
            "total_pointer",
            "total_header",
            "has_more",
            "done",
            "stop_on_empty",
        ],
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
        ("last_record", t.last_record.is_some()),
        ("from_header", t.from_header.is_some()),
        ("body_field", t.body_field.is_some()),
        ("to_header", t.to_header.is_some()),
        ("has_more", t.has_more.is_some()),
        ("done", t.done.is_some()),
        ("stop_on_empty", t.stop_on_empty.is_some()),
    ] {
        if set && !allowed.contains(&key) {
            return Err(UsageError::new(format!(
                "table {table:?}: paginate kind {:?} has no option `{key}`",
                t.kind
            )));
        }
    }
    let stops = Stops {
        has_more: t.has_more.clone().map(pointer).transpose()?,
        done: t.done.clone().map(pointer).transpose()?,
        stop_on_empty: t.stop_on_empty,
    };
    let p = match t.kind.as_str() {
        "auto" => Paginate::Auto,
        "link" => Paginate::Link,
        "none" => Paginate::None,
        "next_url" => Paginate::NextUrl {
            pointer: pointer(need(&t.pointer, "pointer")?)?,
        },
        "cursor" => cursor(table, t, &pointer)?,
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
    };
    Ok((p, stops))
}

/// A cursor paginator: exactly one place the token is read, exactly one it is sent.
fn cursor(
    table: &str,
    t: &crate::config::PaginateTable,
    pointer: &dyn Fn(String) -> Result<String, UsageError>,
) -> Result<crate::source::rest::Paginate, UsageError> {
    let one_of = |what: &str, keys: [(&str, &Option<String>); 3], example: &str| {
        let set: Vec<&str> = keys
            .iter()
            .filter(|(_, v)| v.as_deref().is_some_and(|s| !s.is_empty()))
            .map(|(k, _)| *k)
            .collect();
        match set.as_slice() {
            [_] => Ok(()),
            [] => Err(UsageError::with_hint(
                format!(
                    "table {table:?}: the cursor paginator needs {what}: one of `{}`, `{}` or `{}`",
                    keys[0].0, keys[1].0, keys[2].0
                ),
                example.to_string(),
            )),
            several => Err(UsageError::new(format!(
                "table {table:?}: the cursor paginator takes one of {}, not several",
                several
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    };
    one_of(
        "the place its token is read",
        [
            ("pointer", &t.pointer),
            ("last_record", &t.last_record),
            ("from_header", &t.from_header),
        ],
        "e.g. pointer = \"/meta/next_cursor\" (in the body), last_record = \"/id\" (the last record's id) or from_header = \"X-Next-Cursor\"",
    )?;
    one_of(
        "the place its token is sent",
        [
            ("param", &t.param),
            ("body_field", &t.body_field),
            ("to_header", &t.to_header),
        ],
        "e.g. param = \"cursor\" (a query parameter), body_field = \"/start_cursor\" (in a POST body) or to_header = \"X-Cursor\"",
    )?;
    let ptr = |v: &Option<String>| v.clone().map(pointer).transpose();
    Ok(crate::source::rest::Paginate::Cursor {
        pointer: ptr(&t.pointer)?,
        last_record: ptr(&t.last_record)?,
        from_header: t.from_header.clone(),
        param: t.param.clone(),
        body_field: ptr(&t.body_field)?,
        to_header: t.to_header.clone(),
    })
}
