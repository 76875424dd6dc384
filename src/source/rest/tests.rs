//! Unit tests of the REST source: Link headers, paginators, detection, the fast row reader
//! against the general path, the cheap view against the full parse, records and flattening.

use super::rows::RowsReader;
use super::*;
use reqwest::header::HeaderMap;
use reqwest::header::{HeaderValue, LINK};

fn nx(p: &Paginate, u: &Url, h: &HeaderMap, body: &Value, n: usize) -> Result<Option<Url>, String> {
    let paging = Paging {
        paginate: p.clone(),
        stops: Stops::default(),
    };
    let r = Response {
        url: u,
        headers: h,
        body: &|q: &str| body.pointer(q).cloned(),
        records: n,
        last: None,
    };
    next_page(&paging, &r).map(|n| n.map(|n| n.url))
}

fn dt(h: &HeaderMap, body: &Value) -> Paginate {
    detect(h, &|q: &str| body.pointer(q).cloned(), false).paginate
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn link_headers_parse_every_form() {
    let links = parse_link_header(
        r#"<http://h/p?_page=1>; rel="first", <http://h/p?_page=3>; rel="next", </p?x=1,2>; title="a, b"; rel=last"#,
    );
    assert_eq!(links.len(), 3);
    assert_eq!(links[1], ("http://h/p?_page=3".into(), vec!["next".into()]));
    assert_eq!(links[2], ("/p?x=1,2".into(), vec!["last".into()]));
    let several = parse_link_header(r#"<a>; rel="prev next""#);
    assert_eq!(several[0].1, vec!["prev", "next"]);
    // Relative targets resolve against the request URL; two Link headers are both read.
    let h = headers(&[
        ("link", r#"<?page=1>; rel="prev""#),
        ("link", "<?page=3>; rel=next"),
    ]);
    let next = link_next(&h, &url("http://h/api/items?page=2")).unwrap();
    assert_eq!(next.unwrap().as_str(), "http://h/api/items?page=3");
    assert_eq!(
        link_next(&HeaderMap::new(), &url("http://h/")).unwrap(),
        None
    );
    let _ = LINK;
}

#[test]
fn next_url_and_cursor_stop_on_null_absent_or_empty() {
    let u = url("http://h/v1/items?limit=2");
    let p = Paginate::NextUrl {
        pointer: "/links/next".into(),
    };
    let h = HeaderMap::new();
    let body = json!({"links": {"next": "/v1/items?limit=2&after=5"}});
    assert_eq!(
        nx(&p, &u, &h, &body, 2).unwrap().unwrap().as_str(),
        "http://h/v1/items?limit=2&after=5"
    );
    for end in [
        json!({"links": {"next": null}}),
        json!({}),
        json!({"links": {"next": ""}}),
    ] {
        assert_eq!(nx(&p, &u, &h, &end, 2).unwrap(), None);
    }
    assert!(nx(&p, &u, &h, &json!({"links": {"next": 5}}), 2).is_err());
    let c = Paginate::cursor("/meta/cursor", "after");
    let body = json!({"meta": {"cursor": "abc=="}});
    let n = nx(&c, &u, &h, &body, 2).unwrap().unwrap();
    assert_eq!(param_value(&n, "after").as_deref(), Some("abc=="));
    // The token replaces the previous one rather than adding a second parameter.
    let n2 = nx(&c, &n, &h, &json!({"meta": {"cursor": 7}}), 2)
        .unwrap()
        .unwrap();
    assert_eq!(n2.query_pairs().filter(|(k, _)| k == "after").count(), 1);
    assert_eq!(param_value(&n2, "after").as_deref(), Some("7"));
    assert_eq!(
        nx(&c, &u, &h, &json!({"meta": {"cursor": null}}), 2).unwrap(),
        None
    );
}

#[test]
fn offset_stops_on_short_empty_or_total() {
    let p = Paginate::Offset {
        offset_param: "_start".into(),
        limit_param: "_limit".into(),
        limit: 10,
        start: 0,
        total: Some(Total::Header("X-Total-Count".into())),
    };
    let u = url("http://h/posts?_start=20&_limit=10");
    let none = HeaderMap::new();
    let n = nx(&p, &u, &none, &json!([]), 10).unwrap().unwrap();
    assert_eq!(param_value(&n, "_start").as_deref(), Some("30"));
    assert_eq!(nx(&p, &u, &none, &json!([]), 9).unwrap(), None);
    assert_eq!(nx(&p, &u, &none, &json!([]), 0).unwrap(), None);
    let h = headers(&[("x-total-count", "30")]);
    assert_eq!(nx(&p, &u, &h, &json!([]), 10).unwrap(), None);
    let h = headers(&[("x-total-count", "31")]);
    assert!(nx(&p, &u, &h, &json!([]), 10).unwrap().is_some());
    let bad = headers(&[("x-total-count", "many")]);
    assert!(nx(&p, &u, &bad, &json!([]), 10).is_err());
}

#[test]
fn page_numbers_stop_on_empty_or_total_pages() {
    let p = Paginate::PageNumber {
        param: "page".into(),
        start: 1,
        total_pages: Some(Total::Pointer("/total_pages".into())),
    };
    let u = url("http://h/items?page=2");
    let n = nx(&p, &u, &HeaderMap::new(), &json!({"total_pages": 3}), 5)
        .unwrap()
        .unwrap();
    assert_eq!(param_value(&n, "page").as_deref(), Some("3"));
    let last = url("http://h/items?page=3");
    let body = json!({"total_pages": 3});
    assert_eq!(nx(&p, &last, &HeaderMap::new(), &body, 5).unwrap(), None);
    assert_eq!(nx(&p, &u, &HeaderMap::new(), &json!({}), 0).unwrap(), None);
}

#[test]
fn auto_prefers_link_then_next_url_then_cursor() {
    let body = json!({"next": "/x?page=2", "next_cursor": "c"});
    assert_eq!(
        dt(&headers(&[("link", "<x>; rel=next")]), &body),
        Paginate::Link
    );
    assert_eq!(
        dt(&HeaderMap::new(), &body),
        Paginate::NextUrl {
            pointer: "/next".into()
        }
    );
    // Datasette's `next` is a token, not a URL: not a next URL.
    let body = json!({"next": "3", "meta": {"next_cursor": "c"}});
    assert_eq!(
        dt(&HeaderMap::new(), &body),
        Paginate::cursor("/meta/next_cursor", "cursor")
    );
    assert_eq!(dt(&HeaderMap::new(), &json!([1])), Paginate::None);
}

/// Records read straight into rows match the general path field for field, and keep
/// the API's field order.
#[test]
fn records_read_straight_match_the_general_path() {
    let bodies = [
        r#"[{"z": 1, "a": {"y": [1, {"b": 2}], "x": null, "e": {}}, "big": 18446744073709551615, "f": 0.1, "s": "é\"", "t": true},
            {"a": {"x": 5}, "new": -9223372036854775808}]"#,
        r#"{"meta": {"n": 2}, "rows": [{"id": 1, "o": {"k": "v"}}, {"id": 2}]}"#,
        // Fields in another order, a column first seen in a later record, a nested field
        // under an empty name, an empty object (no column).
        r#"[{"b": 1, "a": "x"}, {"a": "y", "c": {"d": [1, 2]}, "b": 2}, {"": {"k": 1}, "e": {}}, {}]"#,
        // A name given twice in one record takes the general path.
        r#"[{"a": 1, "a": 2}, {"a": 3}]"#,
        // Escaped names are read as the text they stand for.
        r#"[{"caf\u00e9": 1, "x": {"\u00e9\"": 2}}, {"café": 3}]"#,
    ];
    for body in bodies {
        let fast = parse_snapshot(body.as_bytes(), None).unwrap();
        let slow = records_page(
            take_records(serde_json::from_str(body).unwrap(), None)
                .ok()
                .unwrap(),
        )
        .unwrap();
        let by_name = |p: &Page| -> Vec<BTreeMap<String, Value>> {
            p.rows
                .iter()
                .map(|r| {
                    p.columns
                        .clone()
                        .unwrap()
                        .into_iter()
                        .zip(r.iter().cloned())
                        .collect()
                })
                .collect()
        };
        assert_eq!(by_name(&fast), by_name(&slow), "{body}");
    }
    // The bare arrays are read straight, except the one naming a field twice.
    let straight = |b: &str| RowsReader::read(b.as_bytes()).is_some();
    assert!(straight(bodies[0]) && straight(bodies[2]) && !straight(bodies[3]));
    assert!(straight(bodies[4]));
    // A name that is not UTF-8 is left to the general path (which refuses the body).
    assert!(RowsReader::read(b"[{\"a\xff\": 1}]").is_none());
    assert!(parse_snapshot(b"[{\"a\xff\": 1}]", None).is_err());
    let first = parse_snapshot(bodies[0].as_bytes(), None).unwrap();
    assert_eq!(first.columns.unwrap()[..3], ["z", "a__y", "a__x"]);
    // A name collision is still refused (by the general path).
    assert!(parse_snapshot(br#"[{"a": {"b": 1}, "a__b": 2}]"#, None).is_err());
}

/// The cheap view counts what the full parse selects, and refuses what it refuses.
#[test]
fn the_view_agrees_with_the_full_parse() {
    let bodies = [
        (r#"[{"a": 1}, {"a": 2}]"#, None),
        (
            r#" {"data": [1, 2, 3], "meta": {"next": "/x?p=2", "n": 3}}"#,
            None,
        ),
        (
            r#"{"data": [1, 2, 3], "meta": {"next": "/x?p=2"}}"#,
            Some("/data"),
        ),
        (r#"{"result": {"items": [1]}}"#, Some("/result/items")),
        (r#"{"result": {"items": [1]}}"#, Some("/result")),
        (r#"{"a~b": [1, 2]}"#, Some("/a~0b")),
    ];
    for (body, pointer) in bodies {
        let full: Value = serde_json::from_str(body).unwrap();
        let view = View::new(body.as_bytes()).ok().unwrap();
        assert_eq!(
            view.count_records(pointer).ok(),
            select_records(&full, pointer).ok().map(<[Value]>::len),
            "{body}"
        );
        for p in ["/meta/next", "/meta", "/data/1", "/nothing"] {
            assert_eq!(view.pointer(p), full.pointer(p).cloned(), "{body} {p}");
        }
    }
    let two = View::new(br#"{"a": [1], "b": []}"#).ok().unwrap();
    let why = two.count_records(None).err().unwrap().into_reason();
    assert!(why.starts_with(CONFIG_PROBLEM), "{why}");
    assert!(matches!(
        View::new(br#"{"a": [1, 2"#),
        Err(BodyProblem::Truncated(_))
    ));
    assert!(matches!(
        View::new(b"<html>nope</html>"),
        Err(BodyProblem::Wrong(w)) if w.contains("HTML")
    ));
}

#[test]
fn records_are_found_or_refused_with_the_candidates() {
    let arr = json!([{"a": 1}]);
    assert_eq!(select_records(&arr, None).ok().unwrap().len(), 1);
    let one = json!({"data": [1, 2], "meta": {"n": 2}});
    assert_eq!(select_records(&one, None).ok().unwrap().len(), 2);
    let two = json!({"data": [1], "errors": []});
    let why = select_records(&two, None).err().unwrap().into_reason();
    assert!(
        why.starts_with(CONFIG_PROBLEM) && why.contains("\"/data\""),
        "{why}"
    );
    let none = json!({"message": "rate limited"});
    let why = select_records(&none, None).err().unwrap().into_reason();
    assert!(why.contains("\"message\""), "{why}");
    let nested = json!({"result": {"items": [1]}});
    assert_eq!(
        select_records(&nested, Some("/result/items"))
            .ok()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        select_records(&nested, Some("/result")).ok().unwrap().len(),
        1
    );
    assert!(select_records(&nested, Some("/result/items/0")).is_err());
}

#[test]
fn records_flatten_with_exact_integers_and_json_arrays() {
    let body: Value = serde_json::from_str(
        r#"[{"id": 9007199254740993, "owner": {"login": "a", "site": {"id": 1}}, "tags": ["x", 1]},
            {"id": 2, "extra": true}]"#,
    )
    .unwrap();
    let page = records_page(body.as_array().unwrap().clone()).unwrap();
    let cols = page.columns.clone().unwrap();
    assert_eq!(
        cols,
        ["id", "owner__login", "owner__site__id", "tags", "extra"]
    );
    assert_eq!(page.rows[0][0].as_i64(), Some(9007199254740993));
    assert_eq!(page.rows[0][3], json!("[\"x\",1]"));
    assert_eq!(page.rows[1][1], Value::Null);
    assert_eq!(page.rows[1][4], json!(true));
    let clash = json!({"a": {"b": 1}, "a__b": 2});
    assert!(flatten(clash).is_err());
}

#[test]
fn first_url_keeps_the_base_path_and_adds_the_start() {
    let rest = RestTable {
        path: "/posts".into(),
        records: None,
        paginate: Paginate::Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            limit: 50,
            start: 0,
            total: None,
        },
        stops: Stops::default(),
        method: "GET".into(),
        body: None,
        window: None,
        format: BodyFormat::Json,
        records_from: RecordsFrom::Array,
        max_pages: None,
        primary_key: vec![],
    };
    let u = first_url(
        &url("http://h:1/api/v2/"),
        &rest,
        &[("q".into(), "a b".into())],
    );
    assert_eq!(
        u.as_str(),
        "http://h:1/api/v2/posts?q=a+b&offset=0&limit=50"
    );
}

/// A response to `url` holding `n` records, with `X-Total-Count: total` when given.
fn answer(n: usize, total: Option<u64>) -> crate::http::Fetched {
    let body: Vec<Value> = (0..n).map(|i| serde_json::json!({ "id": i })).collect();
    crate::http::Fetched {
        status: 200,
        body: serde_json::to_vec(&body).unwrap(),
        content_encoding: None,
        wire_bytes: 0,
        etag: None,
        last_modified: None,
        content_type: None,
        headers: match total {
            Some(t) => headers(&[("x-total-count", &t.to_string())]),
            None => HeaderMap::new(),
        },
        attempts: 1,
        elapsed_ms: 0,
        fetched_at: chrono::Utc::now(),
        http_version: None,
    }
}

fn rest_table(paginate: Paginate, window: Option<Window>) -> RestTable {
    RestTable {
        path: "/items".into(),
        records: None,
        paginate,
        stops: Stops::default(),
        method: "GET".into(),
        body: None,
        window,
        format: BodyFormat::Json,
        records_from: RecordsFrom::Array,
        max_pages: None,
        primary_key: vec![],
    }
}

/// Walk `pages` full pages (of `per_page` records) the way the walker does, checking at each
/// that the cursor guessed ahead ([`Pager::predict`]) is the one the response gives; then a
/// short page ends the table while a guess would go on (so the guess is dropped).
fn guesses_match(rest: &RestTable, per_page: usize, pages: u64, total: Option<u64>) -> u64 {
    let pager = RestPager::starting_at(url("http://h/items"), "items", rest, None, None);
    let mut cursor: Option<String> = None;
    let mut matched = 0;
    for page_no in 1..=pages {
        let req = pager.request(page_no, cursor.as_deref()).unwrap();
        let guess = pager.predict(page_no, cursor.as_deref());
        let scanned = pager
            .scan(
                page_no,
                &req.url,
                cursor.as_deref(),
                &answer(per_page, total),
                None,
            )
            .unwrap_or_else(|_| panic!("page {page_no} refused"));
        if scanned.next.is_none() {
            assert_eq!(guess, None, "page {page_no}: a guess past a known end");
            break;
        }
        assert_eq!(guess, scanned.next, "page {page_no}: the guess differs");
        matched += 1;
        cursor = scanned.next;
    }
    matched
}

#[test]
fn guessed_cursors_are_the_ones_full_pages_return() {
    let offset = |total: Option<Total>| Paginate::Offset {
        offset_param: "_start".into(),
        limit_param: "_limit".into(),
        limit: 10,
        start: 0,
        total,
    };
    // 45 records by 10: four full pages; the total stops the guesses at the fifth.
    let with_total = rest_table(offset(Some(Total::Header("X-Total-Count".into()))), None);
    assert_eq!(guesses_match(&with_total, 10, 6, Some(45)), 4);
    // Without a total every full page guesses the next.
    assert_eq!(
        guesses_match(&rest_table(offset(None), None), 10, 6, None),
        6
    );
    let pages = rest_table(
        Paginate::PageNumber {
            param: "_page".into(),
            start: 1,
            total_pages: None,
        },
        None,
    );
    assert_eq!(guesses_match(&pages, 10, 5, None), 5);
    // One request per time window: the next window is known without the response.
    let from = position::parse_instant("2026-01-01").unwrap().0;
    let window = Window {
        start_param: "since".into(),
        end_param: "until".into(),
        from,
        to: Some(from + chrono::Duration::days(5)),
        step_secs: 86_400,
        format: None,
        dates: true,
    };
    let windows = rest_table(Paginate::None, Some(window));
    assert_eq!(guesses_match(&windows, 3, 10, None), 4);
    // A cursor paginator can guess nothing.
    let cursor = rest_table(Paginate::cursor("/next", "after"), None);
    let pager = RestPager::starting_at(url("http://h/items"), "items", &cursor, None, None);
    assert_eq!(pager.predict(1, None), None);
    assert!(cursor.paginate.not_addressable(false).is_some());
    assert!(Paginate::None.not_addressable(true).is_none());
}
