//! `paginate = "auto"`: the paginator (and stop flags) the first page shows, and the refusal
//! when it shows none but says there is more.
//!
//! Guarantees:
//! - Detection takes only unambiguous shapes, in order: a `Link` header with `rel="next"`; a
//!   Stripe list (`object = "list"`, `data`, `has_more`): the last record's `id` as
//!   `starting_after`; a Notion list (`object = "list"`, `next_cursor`, `has_more`): the cursor
//!   as `start_cursor` (in the body for a POST table); a next URL at one of the usual places;
//!   a cursor token at one of the usual places, sent back as the parameter those APIs use.
//!   Stop flags beside them (`has_more`, `hasMore`, `done`, `end_of_stream`) are kept.
//! - When nothing is detected, one page is the whole table only if the page gives no sign of
//!   more: a `has_more`/`hasMore` true, a `done`/`end_of_stream` false, a total above the
//!   records received, a full page of the size the request asked for, or a `Link` to a last
//!   page with no next. Any of them refuses the table (exit 2) before anything is written,
//!   naming what was seen and the `paginate` setting that would read it.

use reqwest::header::HeaderMap;
use serde_json::Value;
use url::Url;

use super::link::link_rels;
use super::paginate::{Lookup, Paginate, Paging, Stops, looks_like_url, param_value, token_value};

/// Where `auto` looks for a next URL, in order.
pub(super) const NEXT_URL_POINTERS: [&str; 14] = [
    "/next",
    "/next_url",
    "/links/next",
    "/links/next/href",
    "/_links/next/href",
    "/paging/next",
    "/paging/next/link",
    "/pagination/next",
    "/meta/next",
    "/nextRecordsUrl",
    "/next_page",
    "/next_page/uri",
    "/after_url",
    "/@odata.nextLink",
];

/// Where `auto` looks for a cursor token, and the query parameter those APIs take it in.
pub(super) const CURSOR_POINTERS: [(&str, &str); 8] = [
    ("/next_cursor", "cursor"),
    ("/nextCursor", "cursor"),
    ("/meta/next_cursor", "cursor"),
    ("/pagination/next_cursor", "cursor"),
    ("/response_metadata/next_cursor", "cursor"),
    ("/meta/next_token", "pagination_token"),
    ("/nextPageToken", "pageToken"),
    ("/next_page_token", "page_token"),
];

/// Flags that say whether there is more: `(pointer, more when)`.
const MORE_FLAGS: [(&str, bool); 4] = [
    ("/has_more", true),
    ("/hasMore", true),
    ("/done", false),
    ("/end_of_stream", false),
];

/// Totals that, above the records received, say there is more.
const TOTALS: [&str; 10] = [
    "/total",
    "/total_count",
    "/totalCount",
    "/totalSize",
    "/total_results",
    "/totalResults",
    "/count",
    "/meta/total",
    "/meta/total_count",
    "/pagination/total",
];

/// Request parameters (or body fields) that ask for a page size.
const LIMITS: [&str; 9] = [
    "limit",
    "_limit",
    "per_page",
    "page_size",
    "pageSize",
    "size",
    "max_results",
    "maxResults",
    "count",
];

fn bool_at(body: Lookup<'_>, p: &str) -> Option<bool> {
    match body(p)? {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}

/// The stop flags the body carries, for a detected paginator.
fn flags(body: Lookup<'_>) -> Stops {
    let mut s = Stops::default();
    for (p, more_when) in MORE_FLAGS {
        if bool_at(body, p).is_some() {
            if more_when {
                s.has_more.get_or_insert_with(|| p.to_string());
            } else {
                s.done.get_or_insert_with(|| p.to_string());
            }
        }
    }
    s
}

/// The paging the first page shows (`Paginate::None` when it shows none). `post`: the table
/// sends a body, so a detected cursor goes back in it.
pub fn detect(headers: &HeaderMap, body: Lookup<'_>, post: bool) -> Paging {
    let paging = |paginate| Paging {
        paginate,
        stops: flags(body),
    };
    if link_rels(headers)
        .iter()
        .any(|(_, rels)| rels.iter().any(|r| r == "next"))
    {
        return paging(Paginate::Link);
    }
    let list = body("/object").as_ref().and_then(Value::as_str) == Some("list");
    if list && body("/data").is_some_and(|d| d.is_array()) && bool_at(body, "/has_more").is_some() {
        // Stripe: the next page starts after the last record's id.
        return paging(Paginate::after_last_record("/id", "starting_after"));
    }
    let cursor_to = |pointer: &str, param: &str| {
        let mut c = Paginate::cursor(pointer, param);
        if post
            && let Paginate::Cursor {
                param: p,
                body_field,
                ..
            } = &mut c
        {
            *body_field = p.take().map(|p| format!("/{p}"));
        }
        c
    };
    if list && body("/next_cursor").is_some() && bool_at(body, "/has_more").is_some() {
        // Notion: `next_cursor` goes back as `start_cursor`.
        return paging(cursor_to("/next_cursor", "start_cursor"));
    }
    for p in NEXT_URL_POINTERS {
        if body(p)
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(looks_like_url)
        {
            return paging(Paginate::NextUrl {
                pointer: p.to_string(),
            });
        }
    }
    for (p, param) in CURSOR_POINTERS {
        if token_value(body(p)).is_some_and(|t| t.is_string() || t.is_number()) {
            return paging(cursor_to(p, param));
        }
    }
    Paging {
        paginate: Paginate::None,
        stops: Stops::default(),
    }
}

/// The rule of [`detect`] that chose `paging`, in words (for `harvest plan`).
pub fn explain(paging: &Paging) -> String {
    let stops = match (&paging.stops.has_more, &paging.stops.done) {
        (Some(p), _) => format!("; it stops when {p} is false"),
        (_, Some(p)) => format!("; it stops when {p} is true"),
        _ => String::new(),
    };
    let rule = match &paging.paginate {
        Paginate::Link => "the first page has a Link header with rel=\"next\"".to_string(),
        Paginate::Cursor {
            last_record: Some(field),
            param: Some(param),
            ..
        } => format!(
            "a Stripe-style list (object = \"list\", data, has_more): the last record's {field} is sent as {param}"
        ),
        Paginate::Cursor {
            pointer: Some(p),
            param,
            body_field,
            ..
        } if p == "/next_cursor"
            && (param.as_deref() == Some("start_cursor")
                || body_field.as_deref() == Some("/start_cursor")) =>
        {
            "a Notion-style list (object = \"list\", next_cursor, has_more): the cursor is sent as start_cursor".to_string()
        }
        Paginate::NextUrl { pointer } => format!("the first page has a next-page URL at {pointer}"),
        Paginate::Cursor {
            pointer: Some(p),
            param,
            body_field,
            ..
        } => match (param, body_field) {
            (Some(q), _) => format!("the first page has a cursor at {p}, sent back as the parameter {q}"),
            (_, Some(b)) => format!("the first page has a cursor at {p}, sent back in the body at {b}"),
            _ => format!("the first page has a cursor at {p}"),
        },
        Paginate::None => {
            "no Link header, next URL or cursor on the first page, and no sign of more: one page"
                .to_string()
        }
        other => format!("{} (configured)", other.name()),
    };
    format!("{rule}{stops}")
}

/// What the first page (with `records` records, fetched from `url`, with `sent` as the
/// request body) says about more pages, when `auto` found no paginator: `None` when
/// nothing, else what was seen and the setting that would read it.
pub fn signs_of_more(
    url: &Url,
    sent: Option<&Value>,
    headers: &HeaderMap,
    body: Lookup<'_>,
    records: usize,
) -> Option<(String, &'static str)> {
    for (p, more_when) in MORE_FLAGS {
        if bool_at(body, p) == Some(more_when) {
            return Some((
                format!("{} is {more_when}", &p[1..]),
                if more_when {
                    "paginate = { kind = \"cursor\", last_record = \"/id\", param = \"starting_after\", has_more = \"/has_more\" } (the API's own cursor field and parameter)"
                } else {
                    "paginate = { kind = \"next_url\", pointer = \"/nextRecordsUrl\", done = \"/done\" } (the API's own next-URL field)"
                },
            ));
        }
    }
    for p in TOTALS {
        let total = body(p).and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
        if let Some(t) = total
            && t > records as u64
        {
            return Some((
                format!("{} is {t} but the page holds {records} records", &p[1..]),
                "paginate = { kind = \"offset\", offset_param = \"offset\", limit_param = \"limit\", limit = 100 } (or kind = \"page_number\")",
            ));
        }
    }
    if let Some(t) = headers
        .get("x-total-count")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        && t > records as u64
    {
        return Some((
            format!("the X-Total-Count header is {t} but the page holds {records} records"),
            "paginate = { kind = \"offset\", offset_param = \"offset\", limit_param = \"limit\", limit = 100, total_header = \"X-Total-Count\" }",
        ));
    }
    for name in LIMITS {
        let asked = param_value(url, name)
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| sent.and_then(|b| b.get(name)?.as_u64()));
        if let Some(n) = asked
            && n > 0
            && n == records as u64
        {
            return Some((
                format!(
                    "the request asked for {name} = {n} and the page is full ({records} records)"
                ),
                "paginate = { kind = \"offset\", offset_param = \"offset\", limit_param = \"limit\", limit = 100 } (or the API's cursor)",
            ));
        }
    }
    let links = link_rels(headers);
    if let Some((last, _)) = links
        .iter()
        .find(|(_, rels)| rels.iter().any(|r| r == "last"))
        && url.join(last).ok().as_ref() != Some(url)
    {
        return Some((
            format!("a Link header names a last page ({last}) but no next"),
            "paginate = { kind = \"page_number\", param = \"page\", start = 1 }",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detect_in(body: &Value, post: bool) -> Paging {
        detect(&HeaderMap::new(), &|q: &str| body.pointer(q).cloned(), post)
    }

    fn more(url: &str, body: &Value, headers: &HeaderMap, n: usize) -> Option<String> {
        let u = Url::parse(url).unwrap();
        signs_of_more(&u, None, headers, &|q: &str| body.pointer(q).cloned(), n).map(|(s, _)| s)
    }

    #[test]
    fn the_well_known_shapes_are_detected() {
        let stripe = detect_in(
            &json!({"object": "list", "data": [{"id": "a"}], "has_more": true}),
            false,
        );
        assert_eq!(
            stripe.paginate.token_from(),
            Some(super::super::TokenFrom::LastRecord("/id"))
        );
        assert_eq!(stripe.stops.has_more.as_deref(), Some("/has_more"));
        let notion = json!({"object": "list", "results": [], "next_cursor": "x", "has_more": true});
        assert_eq!(
            detect_in(&notion, true).paginate.token_to(),
            Some(super::super::TokenTo::Body("/start_cursor"))
        );
        assert_eq!(
            detect_in(&notion, false).paginate.token_to(),
            Some(super::super::TokenTo::Query("start_cursor"))
        );
        let sf = detect_in(
            &json!({"done": false, "nextRecordsUrl": "/services/q/01-2", "records": []}),
            false,
        );
        assert_eq!(
            sf.paginate,
            Paginate::NextUrl {
                pointer: "/nextRecordsUrl".into()
            }
        );
        assert_eq!(sf.stops.done.as_deref(), Some("/done"));
        let hub = detect_in(
            &json!({"results": [], "paging": {"next": {"after": "9", "link": "https://x/y?after=9"}}}),
            false,
        );
        assert_eq!(
            hub.paginate,
            Paginate::NextUrl {
                pointer: "/paging/next/link".into()
            }
        );
        let x = detect_in(&json!({"data": [], "meta": {"next_token": "t"}}), false);
        assert_eq!(
            x.paginate,
            Paginate::cursor("/meta/next_token", "pagination_token")
        );
        assert_eq!(
            detect_in(&json!({"items": [1]}), false).paginate,
            Paginate::None
        );
    }

    #[test]
    fn each_rule_is_named_in_words() {
        let words = |body: Value, post: bool| explain(&detect_in(&body, post));
        let stripe = words(
            json!({"object": "list", "data": [{"id": "a"}], "has_more": true}),
            false,
        );
        assert!(
            stripe.contains("Stripe-style") && stripe.contains("starting_after"),
            "{stripe}"
        );
        assert!(
            stripe.ends_with("it stops when /has_more is false"),
            "{stripe}"
        );
        let notion = words(
            json!({"object": "list", "results": [], "next_cursor": "x", "has_more": true}),
            true,
        );
        assert!(notion.contains("Notion-style"), "{notion}");
        let sf = words(
            json!({"done": false, "nextRecordsUrl": "/services/q/01-2", "records": []}),
            false,
        );
        assert!(sf.contains("next-page URL at /nextRecordsUrl"), "{sf}");
        assert!(sf.ends_with("it stops when /done is true"), "{sf}");
        let x = words(json!({"data": [], "meta": {"next_token": "t"}}), false);
        assert!(
            x.contains("cursor at /meta/next_token, sent back as the parameter pagination_token"),
            "{x}"
        );
        assert!(words(json!({"items": [1]}), false).contains("one page"));
    }

    #[test]
    fn signs_of_more_are_seen_and_a_whole_page_is_not_one() {
        let h = HeaderMap::new();
        assert!(more("http://h/x", &json!({"hasMore": true}), &h, 3).is_some());
        assert!(more("http://h/x", &json!({"has_more": false}), &h, 3).is_none());
        assert!(more("http://h/x", &json!({"totalSize": 10}), &h, 3).is_some());
        assert!(more("http://h/x", &json!({"total": 3}), &h, 3).is_none());
        assert!(more("http://h/x?per_page=3", &json!([]), &h, 3).is_some());
        assert!(more("http://h/x?per_page=3", &json!([]), &h, 2).is_none());
        let mut lh = HeaderMap::new();
        lh.insert("link", "</x?page=9>; rel=\"last\"".parse().unwrap());
        assert!(more("http://h/x", &json!([]), &lh, 3).is_some());
        // A last link that is this page is no sign.
        assert!(more("http://h/x?page=9", &json!([]), &lh, 3).is_none());
        let mut th = HeaderMap::new();
        th.insert("x-total-count", "30".parse().unwrap());
        assert!(more("http://h/x", &json!([]), &th, 10).is_some());
    }
}
