//! The strict benchmark floor for `harvest`: follow a Datasette table's `next` tokens with the
//! same query parameters harvest sends (0.6x), sequentially, parsing each body only as far as
//! serde must to find `next`, keeping nothing. Same HTTP stack as harvest (reqwest, keep-alive).
//! Usage: http_floor TABLE_URL PAGE_SIZE   (TABLE_URL like http://host:port/db/Order~20Details.json)

#[derive(serde::Deserialize)]
struct Next {
    next: Option<serde_json::Value>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut argv = std::env::args().skip(1);
    let (Some(url), Some(size)) = (argv.next(), argv.next()) else {
        eprintln!("usage: http_floor TABLE_URL PAGE_SIZE");
        std::process::exit(2);
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let base = url::Url::parse(&url)?;
    let mut next: Option<String> = None;
    let mut pages = 0u64;
    loop {
        let mut q = vec![
            ("_size", size.clone()),
            // harvest sends it (±Infinity as values); it also spares Datasette a pass that
            // turns ±Infinity into null in every row, so the floor must send it too.
            ("_json_infinity", "on".into()),
            ("_nocount", "1".into()),
            ("_nofacet", "1".into()),
            ("_nosuggest", "1".into()),
        ];
        if let Some(n) = &next {
            q.push(("_next", n.clone()));
        }
        let mut u = base.clone();
        u.query_pairs_mut().extend_pairs(&q);
        let body = client
            .get(u)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        pages += 1;
        next = match serde_json::from_slice::<Next>(&body)?.next {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        if next.is_none() {
            break;
        }
    }
    println!("{pages}");
    Ok(())
}
