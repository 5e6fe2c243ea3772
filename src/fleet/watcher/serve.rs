//! The metrics listener of `fleet watch`: plain HTTP/1.0 on a std thread, `GET /metrics` only,
//! one request per connection, each read bounded in size and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Answers every connection in turn with the page as it is now.
pub fn serve(listener: TcpListener, page: Arc<Mutex<String>>) {
    for conn in listener.incoming().flatten() {
        let text = page.lock().map(|p| p.clone()).unwrap_or_default();
        if let Err(e) = answer(conn, &text) {
            tracing::debug!("metrics client: {e}");
        }
    }
}

fn answer(mut conn: TcpStream, page: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let first = line.lines().next().unwrap_or("");
    let (status, body, kind) = match first.split_whitespace().collect::<Vec<_>>()[..] {
        ["GET", "/metrics", ..] => ("200 OK", page, "text/plain; version=0.0.4; charset=utf-8"),
        ["GET", ..] => ("404 Not Found", "only /metrics is here\n", "text/plain"),
        _ => ("405 Method Not Allowed", "GET /metrics\n", "text/plain"),
    };
    write!(
        conn,
        "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
