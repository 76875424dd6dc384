//! A TCP proxy that delays every chunk a client sends by a fixed time before passing it on,
//! so a local server looks like one across a network (each HTTP request arrives that much
//! later; responses flow back at once). Used by `scripts/bench` for its "remote" case.
//! Usage: delay_proxy UPSTREAM_PORT DELAY_MS   (prints the port it listens on, then serves)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut argv = std::env::args().skip(1);
    let (Some(port), Some(ms)) = (argv.next(), argv.next()) else {
        eprintln!("usage: delay_proxy UPSTREAM_PORT DELAY_MS");
        std::process::exit(2);
    };
    let (Ok(upstream), Ok(ms)) = (port.parse::<u16>(), ms.parse::<u64>()) else {
        eprintln!("UPSTREAM_PORT and DELAY_MS must be numbers");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(ms);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            tokio::time::sleep(delay).await;
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = sw.shutdown().await;
            };
            let down = async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            };
            tokio::join!(up, down);
        });
    }
}
