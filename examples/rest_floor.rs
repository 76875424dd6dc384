//! The benchmark floor for REST sources: follow `Link: <…>; rel="next"` from a start URL,
//! sequentially, reading each body to its end and keeping nothing; no JSON parsing at all.
//! Same HTTP stack as harvest (reqwest, keep-alive, no compression asked for).
//! Usage: rest_floor START_URL   (prints the number of pages)

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(start) = std::env::args().nth(1) else {
        eprintln!("usage: rest_floor START_URL");
        std::process::exit(2);
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut url = Some(url::Url::parse(&start)?);
    let mut pages = 0u64;
    while let Some(u) = url.take() {
        let resp = client.get(u.clone()).send().await?.error_for_status()?;
        let next = resp
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(harvest::source::rest::parse_link_header)
            .find(|(_, rels)| rels.iter().any(|r| r == "next"))
            .map(|(target, _)| u.join(&target))
            .transpose()?;
        let _body = resp.bytes().await?;
        pages += 1;
        url = next;
    }
    println!("{pages}");
    Ok(())
}
