//! A minimal HTTP/1.1 client for the serving benchmark: one conditional GET (`If-None-Match`)
//! on an open connection, the response read to its end. What an agent's no-change check sends,
//! without a client library's own costs in the way (the server's side is what is measured).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A connection to 127.0.0.1:`port`.
pub struct Conn {
    reader: BufReader<TcpStream>,
    port: u16,
}

/// Status and `ETag` of a response.
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    /// Whether the server said it closes the connection.
    pub closes: bool,
}

impl Conn {
    pub fn open(port: u16) -> io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            reader: BufReader::new(s),
            port,
        })
    }

    /// `GET path` with `If-None-Match: etag` when given; reads the whole response.
    pub fn get(&mut self, path: &str, etag: Option<&str>) -> io::Result<Answer> {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: tiffin-bench\r\n",
            self.port
        );
        if let Some(e) = etag {
            req.push_str(&format!("If-None-Match: {e}\r\n"));
        }
        req.push_str("\r\n");
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP status line: {line:?}")))?;
        let (mut length, mut etag, mut closes) = (0u64, None, false);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::other("the connection closed inside the headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "etag" => etag = Some(value.to_string()),
                "connection" => closes = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if status != 304 {
            io::copy(&mut (&mut self.reader).take(length), &mut io::sink())?;
        }
        Ok(Answer {
            status,
            etag,
            closes,
        })
    }
}
