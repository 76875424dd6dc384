//! A TCP proxy that delays every chunk a client sends by a fixed time (from its arrival) before passing it on,
//! so a local server looks like one across a network (each HTTP request arrives that much
//! later). Responses flow back at once, or paced to MBIT_PER_S per connection when given (a
//! link of that bandwidth). With several upstream ports (`8001,8002,8003`) each new connection
//! goes to the next one in turn (round robin), so several server processes look like one
//! server with their combined capacity. Used by `scripts/bench` for its "remote", compression
//! and shard cases.
//! Usage: delay_proxy UPSTREAM_PORT[,PORT...] DELAY_MS [MBIT_PER_S]   (prints its port, then serves)

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut argv = std::env::args().skip(1);
    let (Some(port), Some(ms)) = (argv.next(), argv.next()) else {
        eprintln!("usage: delay_proxy UPSTREAM_PORT DELAY_MS");
        std::process::exit(2);
    };
    let upstreams: Result<Vec<u16>, _> = port.split(',').map(str::parse::<u16>).collect();
    let (Ok(upstreams), Ok(ms)) = (upstreams, ms.parse::<u64>()) else {
        eprintln!(
            "UPSTREAM_PORT (or a comma-separated list of ports) and DELAY_MS must be numbers"
        );
        std::process::exit(2);
    };
    let mut turn = 0usize;
    let delay = Duration::from_millis(ms);
    // Bytes per second downstream; None: as fast as the loopback goes.
    let rate: Option<f64> = match argv.next().map(|m| m.parse::<f64>()) {
        None => None,
        Some(Ok(mbit)) if mbit > 0.0 => Some(mbit * 1e6 / 8.0),
        Some(_) => {
            eprintln!("MBIT_PER_S must be a positive number");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstreams[turn % upstreams.len()];
        turn = turn.wrapping_add(1);
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            // Each chunk goes on DELAY_MS after it arrived, whatever came before it: chunks in
            // flight together (HTTP/2 streams on one connection) are delayed together, as on
            // a link, not one after another.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
            let read_up = async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx
                                .send((Instant::now() + delay, buf[..n].to_vec()))
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            };
            let write_up = async move {
                while let Some((due, chunk)) = rx.recv().await {
                    tokio::time::sleep_until(due.into()).await;
                    if sw.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
            };
            let up = async move {
                tokio::join!(read_up, write_up);
            };
            let down = async move {
                let mut buf = vec![0u8; 16 * 1024];
                // When the link is next free; idle time earns no credit (no bursts).
                let mut free_at = Instant::now();
                loop {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Some(rate) = rate {
                                free_at = free_at.max(Instant::now())
                                    + Duration::from_secs_f64(n as f64 / rate);
                                tokio::time::sleep_until(free_at.into()).await;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = cw.shutdown().await;
            };
            tokio::join!(up, down);
        });
    }
}
