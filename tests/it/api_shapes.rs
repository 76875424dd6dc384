//! An in-repo server that answers in the documented paging shapes of well-known APIs that
//! json-server cannot serve: Stripe (cursor from the last record, `has_more`), Notion (POST
//! search with the cursor in the body), Salesforce (relative `nextRecordsUrl`, `done`),
//! Zendesk's incremental cursor export (`after_url` with `end_of_stream`), a GraphQL
//! connection (`pageInfo`), an Elasticsearch `search_after` search, a header cursor, a
//! GitHub-style time-windowed list, an NDJSON export, and bodies that say there is more in
//! ways `auto` cannot follow. Every collection is [`record`] 1..=N (or a window of it).

#![allow(dead_code)]

use serde_json::{Value, json};

use crate::fault_server::{Action, FaultServer, Request, Synthetic, json};

/// Records per collection.
pub const N: u64 = 47;

/// When record `i` was created: 2024-01-01T00:00:00Z plus `i` hours.
pub fn created(i: u64) -> i64 {
    1_704_067_200 + i as i64 * 3600
}

pub fn created_text(i: u64) -> String {
    chrono::DateTime::from_timestamp(created(i), 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Record `i` as every shape carries it.
pub fn record(i: u64) -> Value {
    json!({"id": i, "name": format!("name {i}"), "amount": i as f64 * 1.5, "created": created_text(i)})
}

fn page_of(from: u64, size: u64, n: u64) -> Vec<u64> {
    (from..=n).take(size as usize).collect()
}

fn body_json(req: &Request) -> Value {
    serde_json::from_slice(&req.body).unwrap_or(Value::Null)
}

fn with_headers(status: u16, body: Vec<u8>, headers: Vec<(String, String)>) -> Action {
    let mut h = vec![("Content-Type".into(), "application/json".into())];
    h.extend(headers);
    Action::Respond {
        status,
        headers: h,
        body,
    }
}

fn ok(v: Value) -> Option<Action> {
    Some(json(200, v.to_string()))
}

/// Start the server; `n` records per collection.
pub fn start(n: u64) -> FaultServer {
    FaultServer::start(Synthetic { rows: 0 }, move |req| answer(req, n))
}

/// Start the server with as many records as `n` holds when each request comes.
pub fn start_growing(n: std::sync::Arc<std::sync::atomic::AtomicU64>) -> FaultServer {
    FaultServer::start(Synthetic { rows: 0 }, move |req| {
        answer(req, n.load(std::sync::atomic::Ordering::SeqCst))
    })
}

fn answer(req: &Request, n: u64) -> Option<Action> {
    let host = req.header("host").unwrap_or("127.0.0.1").to_string();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v1/customers") => stripe(req, n),
        ("POST", "/v1/databases/db1/query") => notion(req, n),
        ("GET", p) if p.starts_with("/services/data/v58.0/query") => salesforce(req, n),
        ("GET", "/api/v2/incremental/tickets/cursor.json") => zendesk(req, n, &host),
        ("POST", "/graphql") => graphql(req, n),
        ("POST", "/idx/_search") => search_after(req, n),
        ("GET", "/events") => header_cursor(req, n),
        ("GET", "/commits") => windowed(req, n),
        ("GET", "/export.ndjson") => ndjson(req, n),
        ("GET", "/export.csv") => csv(req, n),
        ("GET", "/keyed") => keyed(req, n),
        ("GET", "/evolving") => evolving(req),
        ("GET", p) if p.starts_with("/more/") => more(req, n),
        _ => Some(json(404, r#"{"error": "no such shape"}"#)),
    }
}

/// Stripe: `?limit=&starting_after=<last id>`; ids are `cus_00001`….
fn stripe(req: &Request, n: u64) -> Option<Action> {
    let limit = req
        .param("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let from = match req.param("starting_after") {
        Some(id) => id.trim_start_matches("cus_").parse::<u64>().ok()? + 1,
        None => 1,
    };
    let ids = page_of(from, limit, n);
    let data: Vec<Value> = ids
        .iter()
        .map(|&i| {
            let mut r = record(i);
            r["id"] = json!(format!("cus_{i:05}"));
            r["object"] = json!("customer");
            r
        })
        .collect();
    let has_more = ids.last().is_some_and(|&l| l < n);
    ok(json!({"object": "list", "url": "/v1/customers", "has_more": has_more, "data": data}))
}

/// Notion: POST `{"page_size", "start_cursor"}` → `{"results", "next_cursor", "has_more"}`.
fn notion(req: &Request, n: u64) -> Option<Action> {
    let b = body_json(req);
    if !req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        return Some(json(
            400,
            r#"{"object": "error", "message": "body must be JSON"}"#,
        ));
    }
    let size = b["page_size"].as_u64().unwrap_or(100);
    let from = match b.get("start_cursor") {
        None | Some(Value::Null) => 1,
        Some(Value::String(c)) => c.strip_prefix("c-")?.parse().ok()?,
        Some(_) => {
            return Some(json(
                400,
                r#"{"object": "error", "message": "start_cursor"}"#,
            ));
        }
    };
    let ids = page_of(from, size, n);
    let next = ids
        .last()
        .filter(|&&l| l < n)
        .map(|l| format!("c-{}", l + 1));
    ok(json!({
        "object": "list",
        "results": ids.iter().map(|&i| record(i)).collect::<Vec<_>>(),
        "next_cursor": next,
        "has_more": next.is_some(),
        "type": "page_or_database",
    }))
}

/// Salesforce: `query?q=` then `query/01gXX-<offset>`, 10 a batch, `done`.
fn salesforce(req: &Request, n: u64) -> Option<Action> {
    let from = match req.path.strip_prefix("/services/data/v58.0/query/01gXX-") {
        Some(off) => off.parse::<u64>().ok()? + 1,
        None => {
            req.param("q")?;
            1
        }
    };
    let ids = page_of(from, 10, n);
    let last = ids.last().copied().unwrap_or(n);
    let records: Vec<Value> = ids
        .iter()
        .map(|&i| {
            json!({
                "attributes": {"type": "Account", "url": format!("/services/data/v58.0/sobjects/Account/001{i:05}")},
                "Id": format!("001{i:05}"),
                "Name": format!("name {i}"),
            })
        })
        .collect();
    let mut body = json!({"totalSize": n, "done": last >= n, "records": records});
    if last < n {
        body["nextRecordsUrl"] = json!(format!("/services/data/v58.0/query/01gXX-{last}"));
    }
    ok(body)
}

/// Zendesk incremental cursor export: `after_url` is set on every page, `end_of_stream` true
/// on the last.
fn zendesk(req: &Request, n: u64, host: &str) -> Option<Action> {
    let from = match req.param("cursor") {
        Some(c) => c.strip_prefix("z")?.parse::<u64>().ok()?,
        None => {
            req.param("start_time")?;
            1
        }
    };
    let ids = page_of(from, 10, n);
    let after = ids.last().map_or(from, |l| l + 1);
    ok(json!({
        "tickets": ids.iter().map(|&i| record(i)).collect::<Vec<_>>(),
        "after_url": format!("http://{host}/api/v2/incremental/tickets/cursor.json?cursor=z{after}"),
        "after_cursor": format!("z{after}"),
        "before_url": null,
        "end_of_stream": after > n,
    }))
}

/// A GraphQL connection: `variables.after` → `data.items.{nodes, pageInfo}`.
fn graphql(req: &Request, n: u64) -> Option<Action> {
    let b = body_json(req);
    b["query"].as_str()?;
    let first = b["variables"]["first"].as_u64().unwrap_or(10);
    let from = match &b["variables"]["after"] {
        Value::Null => 1,
        Value::String(c) => c.strip_prefix("cursor:")?.parse::<u64>().ok()? + 1,
        _ => return Some(json(400, r#"{"errors": [{"message": "after"}]}"#)),
    };
    let ids = page_of(from, first, n);
    let end = ids.last().map(|l| format!("cursor:{l}"));
    ok(json!({"data": {"items": {
        "nodes": ids.iter().map(|&i| record(i)).collect::<Vec<_>>(),
        "pageInfo": {"endCursor": end, "hasNextPage": ids.last().is_some_and(|&l| l < n)},
    }}}))
}

/// Elasticsearch: `search_after` is the last hit's `sort` array; the end is an empty page.
fn search_after(req: &Request, n: u64) -> Option<Action> {
    let b = body_json(req);
    let size = b["size"].as_u64().unwrap_or(10);
    let from = match &b["search_after"] {
        Value::Null => 1,
        Value::Array(a) => {
            // [created millis, id]: both must come back with their JSON types.
            let (ms, id) = (a.first()?.as_i64()?, a.get(1)?.as_str()?);
            let i: u64 = id.strip_prefix("doc-")?.parse().ok()?;
            assert_eq!(ms, created(i) * 1000, "search_after lost its types");
            i + 1
        }
        _ => return Some(json(400, r#"{"error": "search_after must be an array"}"#)),
    };
    // An optional `query.range.created.gte` filter (RFC 3339 text compares in time order).
    let gte = b
        .pointer("/query/range/created/gte")
        .and_then(Value::as_str);
    let ids: Vec<u64> = (from..=n)
        .filter(|&i| gte.is_none_or(|g| created_text(i).as_str() >= g))
        .take(size as usize)
        .collect();
    let hits: Vec<Value> = ids
        .iter()
        .map(|&i| {
            json!({"_index": "idx", "_id": format!("doc-{i}"), "_score": null,
                   "_source": record(i), "sort": [created(i) * 1000, format!("doc-{i}")]})
        })
        .collect();
    ok(json!({"took": 1, "timed_out": false,
              "hits": {"total": {"value": n, "relation": "eq"}, "hits": hits}}))
}

/// A cursor in headers: `X-Cursor` in, `X-Next-Cursor` out (absent at the end).
fn header_cursor(req: &Request, n: u64) -> Option<Action> {
    let from = match req.header("x-cursor") {
        Some(c) => c.strip_prefix("h")?.parse().ok()?,
        None => 1,
    };
    let ids = page_of(from, 9, n);
    let body = Value::Array(ids.iter().map(|&i| record(i)).collect());
    let mut headers = vec![];
    if let Some(&l) = ids.last().filter(|&&l| l < n) {
        headers.push(("X-Next-Cursor".to_string(), format!("h{}", l + 1)));
    }
    Some(with_headers(200, body.to_string().into_bytes(), headers))
}

/// GitHub-style: records created in `[since, until)`, 4 a page by `page`.
fn windowed(req: &Request, n: u64) -> Option<Action> {
    let t = |k: &str| {
        let v = req.param(k)?;
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp())
            .ok()
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .ok()
                    .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp())
            })
    };
    let (Some(since), Some(until)) = (t("since"), t("until")) else {
        return Some(json(422, r#"{"message": "since and until are required"}"#));
    };
    let page: usize = req.param("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let inside: Vec<u64> = (1..=n)
        .filter(|&i| created(i) >= since && created(i) < until)
        .collect();
    let ids: Vec<Value> = inside
        .iter()
        .skip((page - 1) * 4)
        .take(4)
        .map(|&i| record(i))
        .collect();
    ok(Value::Array(ids))
}

/// An NDJSON export, 20 lines a page by `page`, `Link` to the next.
fn ndjson(req: &Request, n: u64) -> Option<Action> {
    let page: u64 = req.param("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let ids = page_of((page - 1) * 20 + 1, 20, n);
    let mut body = String::new();
    for &i in &ids {
        body.push_str(&record(i).to_string());
        body.push('\n');
    }
    let mut headers = vec![(
        "Content-Type".to_string(),
        "application/x-ndjson".to_string(),
    )];
    if ids.last().is_some_and(|&l| l < n) {
        headers.push((
            "Link".into(),
            format!("</export.ndjson?page={}>; rel=\"next\"", page + 1),
        ));
    }
    Some(Action::Respond {
        status: 200,
        headers,
        body: body.into_bytes(),
    })
}

/// A CSV export, 15 rows a page by `page` (an empty page at the end); names with commas,
/// quotes and newlines.
fn csv(req: &Request, n: u64) -> Option<Action> {
    let page: u64 = req.param("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut body = String::from("id,name,amount,created\r\n");
    for i in page_of((page - 1) * 15 + 1, 15, n) {
        let name = match i % 3 {
            0 => format!("\"name, {i}\""),
            1 => format!("\"say \"\"{i}\"\"\""),
            _ => format!("\"two\nlines {i}\""),
        };
        body.push_str(&format!(
            "{i},{name},{},{}\r\n",
            i as f64 * 1.5,
            created_text(i)
        ));
    }
    Some(Action::Respond {
        status: 200,
        headers: vec![("Content-Type".into(), "text/csv".into())],
        body: body.into_bytes(),
    })
}

/// The CSV export's name of record `i`, as read back.
pub fn csv_name(i: u64) -> String {
    match i % 3 {
        0 => format!("name, {i}"),
        1 => format!("say \"{i}\""),
        _ => format!("two\nlines {i}"),
    }
}

/// Records as the values of an object keyed by id, 12 a page, `next` a cursor.
fn keyed(req: &Request, n: u64) -> Option<Action> {
    let from: u64 = req
        .param("after")
        .and_then(|v| v.parse().ok())
        .map_or(1, |a: u64| a + 1);
    let ids = page_of(from, 12, n);
    let items: serde_json::Map<String, Value> = ids
        .iter()
        .map(|&i| (format!("k{i:03}"), record(i)))
        .collect();
    let next = ids.last().filter(|&&l| l < n).map(|l| l.to_string());
    ok(json!({"items": items, "next": next}))
}

/// Records of the evolving collection: 10 a page, 7 pages.
pub const EVOLVING: u64 = 70;

/// Evolving record `i` as the server sends it: pages 1-2 hold `id`, `name`, `amount`; from
/// page 3 on, `tier` and a nested `meta.score` too; on page 5, odd records' `amount` is text.
pub fn evolving_record(i: u64) -> Value {
    let page = (i - 1) / 10 + 1;
    let mut r = json!({"id": i, "name": format!("name {i}"), "amount": i});
    if page >= 3 {
        r["tier"] = json!(if i.is_multiple_of(2) {
            "gold"
        } else {
            "silver"
        });
        r["meta"] = json!({"score": i as f64 * 0.5});
    }
    if page == 5 && i % 2 == 1 {
        r["amount"] = json!(format!("n/a-{i}"));
    }
    r
}

/// The evolving collection, by `page` (an empty page at the end).
fn evolving(req: &Request) -> Option<Action> {
    let page: u64 = req.param("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let ids = page_of((page - 1) * 10 + 1, 10, EVOLVING);
    ok(Value::Array(
        ids.iter().map(|&i| evolving_record(i)).collect(),
    ))
}

/// Bodies that say there is more in a way `auto` cannot follow; `/more/none` says nothing.
fn more(req: &Request, n: u64) -> Option<Action> {
    let three: Vec<Value> = (1..=3).map(record).collect();
    match req.path.as_str() {
        "/more/has_more" => ok(json!({"items": three, "has_more": true})),
        "/more/done" => ok(json!({"records": three, "done": false})),
        "/more/total" => ok(json!({"items": three, "total": n})),
        "/more/limit" => ok(Value::Array(three)),
        "/more/link_last" => Some(with_headers(
            200,
            Value::Array(three).to_string().into_bytes(),
            vec![(
                "Link".into(),
                "</more/link_last?page=16>; rel=\"last\"".into(),
            )],
        )),
        "/more/none" => ok(json!({"items": three})),
        _ => Some(json(404, "{}")),
    }
}
