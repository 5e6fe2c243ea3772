//! The HTTP trigger (docs/protocol.md): the "UPDATE MY MACHINE" bookmark on `127.0.0.1:9999`.
//!
//! `GET /` starts an update, at most one new cycle a minute (further requests only show the
//! status), and answers a small HTML page with the current status. It serves the person at the
//! machine, not web pages or the network:
//! - only connections from a loopback peer are answered;
//! - only loopback `Host` headers are served, so that a web page cannot make the browser trigger
//!   updates through DNS rebinding;
//! - a request the browser marks as coming from a web page (`Sec-Fetch-Site` other than `none`
//!   or `same-origin`, or an `Origin` other than the trigger's own) gets 403 and starts nothing;
//! - each local uid gets at most [`MAX_CONNECTIONS_PER_UID`] of the [`MAX_CONNECTIONS`]
//!   (the uid from the kernel's TCP table, [`tcp_owner`]).
//!
//! The update it asks for is [`CycleRequest::Update`]: it never retries a generation marked "do
//! not retry" (only an admin's `update` on the socket does). HTTP itself is hyper's job.

pub mod listen;
pub mod tcp_owner;

use crate::agent::daemon::status_cell::StatusCell;
use crate::agent::daemon::worker::{Work, WorkerHandle};
use crate::cycle::CycleRequest;
use crate::ipc::per_uid::PerUid;
use crate::status::{unix_now, AgentStatus, Phase};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};

/// At most one cycle started through the trigger per this long.
pub const MIN_TRIGGER_INTERVAL: Duration = Duration::from_secs(60);
/// HTTP connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// HTTP connections one local uid may hold at once.
pub const MAX_CONNECTIONS_PER_UID: usize = 8;
/// The uid counted for a connection whose owner the kernel does not list.
const UNKNOWN_UID: u32 = u32::MAX;
/// A connection is closed after this long, whatever it does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

struct Trigger {
    worker: WorkerHandle,
    status: StatusCell,
    last_started: Mutex<Option<Instant>>,
}

impl Trigger {
    /// Starts an update unless one was started within the last minute. Returns whether it did.
    fn fire(&self) -> bool {
        let Ok(mut last) = self.last_started.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < MIN_TRIGGER_INTERVAL) {
            return false;
        }
        if self
            .worker
            .trigger(Work::Cycle(CycleRequest::Update))
            .is_err()
        {
            return false;
        }
        *last = Some(Instant::now());
        tracing::info!("http trigger: update requested");
        true
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        match host.as_deref() {
            Some(h) if is_loopback_host(h) => {}
            Some(h) => {
                tracing::info!(host = h, "http trigger: refused a non-loopback Host");
                return plain(
                    StatusCode::MISDIRECTED_REQUEST,
                    "only http://127.0.0.1, http://localhost and http://[::1] are served\n",
                );
            }
            None => return plain(StatusCode::BAD_REQUEST, "a Host header is required\n"),
        }
        if let Some(why) = from_a_web_page(req.headers(), host.as_deref().unwrap_or_default()) {
            tracing::info!(why = %why, "http trigger: refused a request from a web page");
            return plain(
                StatusCode::FORBIDDEN,
                "this page starts an update only when opened from a bookmark or a typed address, not from another web page\n",
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if req.uri().path() != "/" {
            return plain(StatusCode::NOT_FOUND, "not found; try /\n");
        }
        let started = req.method() == Method::GET && self.fire();
        let page = status_page(&self.status.get(), started, unix_now());
        let mut r = Response::new(Full::new(Bytes::from(page)));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        r
    }
}

fn plain(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Why the browser's own headers say that a web page made this request, if they do:
/// `Sec-Fetch-Site` other than `none` (a bookmark, a typed address) or `same-origin` (the page's
/// own Reload link), or an `Origin` other than `http://<Host>`. Clients that send neither (curl)
/// pass.
pub fn from_a_web_page(headers: &header::HeaderMap, host: &str) -> Option<String> {
    for v in headers.get_all("sec-fetch-site") {
        let v = v.to_str().unwrap_or("?").trim().to_ascii_lowercase();
        if v != "none" && v != "same-origin" {
            return Some(format!("Sec-Fetch-Site: {v}"));
        }
    }
    let own = format!("http://{host}");
    for v in headers.get_all(header::ORIGIN) {
        let v = v.to_str().unwrap_or("?").trim();
        if !v.eq_ignore_ascii_case(&own) {
            return Some(format!("Origin: {v}"));
        }
    }
    None
}

/// Whether `ip` is this machine's loopback, an IPv4-mapped one included.
fn is_loopback_peer(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `localhost`, `127.0.0.1` or `[::1]`, with an optional port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || valid_port(after) => {
                return inside == "::1"
            }
            _ => return false,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) if valid_port(&format!(":{port}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
}

fn valid_port(s: &str) -> bool {
    s.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(now: u64, at: u64) -> String {
    crate::timefmt::relative(at, now)
}

/// The page: what was done and the status, every value escaped.
pub fn status_page(s: &AgentStatus, started: bool, now: u64) -> String {
    let headline = if started {
        "Update started."
    } else if s.phase != Phase::Idle {
        "An update is under way."
    } else {
        "An update was started less than a minute ago; showing the status."
    };
    let mut table = String::new();
    for (k, v) in status_rows(s, now) {
        table.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            escape(k),
            escape(&v)
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tiffin: {host}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}</style>\
         </head><body>\n<h1>{host}</h1>\n<p>{headline}</p>\n<table>\n{table}</table>\n\
         <p><a href=\"/\">Reload</a> (starts another update if the last one began over a minute ago)</p>\n\
         </body></html>\n",
        host = escape(&s.host),
        headline = escape(headline),
    )
}

/// The rows of the page's table, unescaped: the state, generations, last check, update and
/// rollback, and what the agent knows about the server.
fn status_rows(s: &AgentStatus, now: u64) -> Vec<(&'static str, String)> {
    let mut rows: Vec<(&str, String)> = Vec::new();
    let phase = match (s.phase, s.progress) {
        (Phase::Downloading, Some(p)) => format!(
            "downloading ({}/{} files, {}/{} bytes)",
            p.done_files, p.total_files, p.done_bytes, p.total_bytes
        ),
        (p, _) => format!("{p:?}").to_lowercase(),
    };
    rows.push(("state", phase));
    if let Some(g) = s.applied_generation {
        rows.push(("applied generation", g.to_string()));
    }
    if let Some(g) = s.available_generation {
        rows.push(("available generation", g.to_string()));
    }
    if let Some(c) = &s.last_check {
        let mut v = format!("{:?} ({})", c.result, ago(now, c.at)).to_lowercase();
        if let Some(m) = &c.message {
            v.push_str(": ");
            v.push_str(m);
        }
        rows.push(("last check", v));
    }
    if let Some(u) = &s.last_update {
        let mut v = format!(
            "{:?}, generation {} ({})",
            u.outcome,
            u.generation,
            ago(now, u.at)
        )
        .to_lowercase();
        if let Some(m) = &u.message {
            v.push_str(": ");
            v.push_str(m);
        }
        rows.push(("last update", v));
    }
    if let Some(r) = &s.rollback.last {
        rows.push((
            "last rollback",
            format!(
                "generation {} ({}): {}",
                r.generation,
                ago(now, r.at),
                r.reason
            ),
        ));
    }
    if s.reboot_needed {
        rows.push(("reboot needed", "yes".into()));
    }
    if let Some(n) = s.next_check {
        rows.push(("next check", ago(now, n)));
    }
    if let Some(r) = s.server_reachable {
        rows.push(("server", if r { "reachable" } else { "unreachable" }.into()));
    }
    rows
}

/// Serves the trigger until shutdown.
pub async fn serve(
    listener: TcpListener,
    worker: WorkerHandle,
    status: StatusCell,
    mut shutdown: broadcast::Receiver<()>,
) {
    let trigger = Arc::new(Trigger {
        worker,
        status,
        last_started: Mutex::new(None),
    });
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_uid = PerUid::new(MAX_CONNECTIONS_PER_UID);
    let local = listener.local_addr().ok();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "http trigger: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        if !is_loopback_peer(peer.ip()) {
            tracing::warn!(%peer, "http trigger: refused a connection from another machine");
            continue;
        }
        // The uid's share first: one user holding its share leaves the others theirs. Over a
        // limit the connection is dropped; a browser retries.
        let uid = local
            .and_then(|l| tcp_owner::owner_uid(peer, l))
            .unwrap_or(UNKNOWN_UID);
        let Some(uid_slot) = per_uid.try_acquire(uid) else {
            tracing::debug!(
                uid,
                "http trigger: dropped a connection: its uid holds its share"
            );
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let trigger = trigger.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = trigger.answer(&req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                tracing::debug!(error = %e, "http trigger: connection error");
            }
            drop(permit);
            drop(uid_slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for h in [
            "localhost",
            "LOCALHOST:9999",
            "127.0.0.1",
            "127.0.0.1:9999",
            "[::1]",
            "[::1]:9999",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:9999",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::2]:9999",
            "127.0.0.1:",
            "127.0.0.1:99x",
            "[::1]x",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn browser_marks_of_a_web_page_are_refused_and_a_bookmark_passes() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = header::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, header::HeaderValue::from_static(v));
            }
            from_a_web_page(&h, "127.0.0.1:9999")
        };
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[("sec-fetch-site", "none")]), None);
        assert_eq!(with(&[("sec-fetch-site", "same-origin")]), None);
        assert_eq!(with(&[("origin", "http://127.0.0.1:9999")]), None);
        for bad in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "none"), ("sec-fetch-site", "cross-site")],
            &[("origin", "https://evil.example")],
            &[("origin", "null")],
            &[("origin", "http://localhost:8080")],
            &[
                ("sec-fetch-site", "none"),
                ("origin", "http://evil.example"),
            ],
        ] {
            assert!(with(bad).is_some(), "{bad:?}");
        }
        assert!(is_loopback_peer("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback_peer("192.168.1.2".parse().unwrap()));
    }

    #[test]
    fn page_escapes_what_came_from_elsewhere() {
        let s = AgentStatus {
            host: "<script>alert(1)</script>".into(),
            last_check: Some(crate::status::LastCheck {
                at: 100,
                result: crate::status::CheckResult::Failed,
                message: Some("a \"quoted\" & <b>bold</b> reason".into()),
            }),
            ..Default::default()
        };
        let page = status_page(&s, true, 200);
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>bold"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("&quot;quoted&quot; &amp; &lt;b&gt;"));
        assert!(page.contains("Update started."));
    }
}
