//! A fast local endpoint for the row-driven benchmark: HTTP/1.1 with keep-alive on one thread,
//! answering `GET /items/{id}` with a small JSON object (and any other request with 404), so
//! the client, not the server, is what the benchmark measures.
//! Usage: item_server [PORT]   (0 or none: a free port, printed on stdout)

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (sock, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(sock).await;
        });
    }
}

fn answer(target: &str) -> (u16, String) {
    let id = target
        .strip_prefix("/items/")
        .map(|rest| rest.split('?').next().unwrap_or(""))
        .and_then(|s| s.parse::<u64>().ok());
    match id {
        Some(id) => (
            200,
            format!(
                r#"{{"id":{id},"name":"item {id}","price":{}.25,"in_stock":{},"tags":["t{}","t{}"],"maker":{{"id":{},"country":"C{}"}}}}"#,
                id % 1000,
                id % 3 != 0,
                id % 7,
                id % 11,
                id % 97,
                id % 13
            ),
        ),
        None => (404, r#"{"error":"not found"}"#.to_string()),
    }
}

async fn serve(mut sock: TcpStream) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut tmp = [0u8; 8192];
    loop {
        // One request head, then its body (by Content-Length), then the answer.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        buf.drain(..head_end + length);
        let (status, body) = answer(&target);
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).await?;
    }
}
