//! Parses Prometheus text format with the reference parser (Debian's python3-prometheus-client,
//! `text_string_to_metric_families`), so that a page tiffin serves is checked by a real reader.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Debian's Python, where python3-prometheus-client is installed (not a pyenv one on PATH).
const PYTHON: &str = "/usr/bin/python3";

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;

/// Why the parser cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    let ok = Command::new(PYTHON)
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "python3-prometheus-client is not installed (packaging/deps.sh)".to_string())
}

/// Every sample by its name: `[[labels, value], …]`. Panics with the page when it does not parse.
pub fn parse(page: &str) -> serde_json::Map<String, Value> {
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the page: {}\n{page}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Object(m) => m,
        v => panic!("{v}"),
    }
}

/// `GET /metrics` over plain HTTP: (status line, body).
pub fn get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// The value of the sample `name` whose labels include every `(key, value)` of `labels`.
pub fn value(
    m: &serde_json::Map<String, Value>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    m.get(name)?.as_array()?.iter().find_map(|s| {
        let l = &s[0];
        labels
            .iter()
            .all(|(k, v)| l[*k] == *v)
            .then(|| s[1].as_f64())
            .flatten()
    })
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
