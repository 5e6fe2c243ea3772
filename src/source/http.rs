//! `https://host/path/` (or `http://`): the host's publication on a web server or CDN, read with
//! plain GETs, never written. The layout is the SFTP one (`gens/<N>/manifest.json`,
//! `gens/<N>/tree/<path>`, `gens/<N>/cache/<name>`), except that HTTP has no symlinks: publish
//! writes `current.txt` (`gens/<N>\n`) beside `current`, and that file is what the change check
//! reads, with `If-None-Match` and the last ETag, so an unchanged publication costs one request
//! answered 304 on a kept-alive connection.
//!
//! A web server is an untrusted transport: an agent reading one needs `trusted_key` (see
//! `TrustPolicy::for_source`), and the manifest's sha256 of every file, checked as it arrives, is
//! what protects the files. Reports go to `report_to`; `upload_log` here is an error.
//!
//! Limits: each body is bounded by what the caller expects (a `Content-Length` over it is
//! refused before reading), each read by [`super::IO_TIMEOUT`], the session's total time waiting
//! for the server by [`TransferLimits::deadline`], and while a body arrives at least
//! [`TransferLimits::min_bytes`] must come in every window, as over SFTP.

use super::file::copy_bounded;
use super::http_client::{client, request_error, same_origin, Client, LastCurrent};
use super::{parse_current_target, Source, SourceError, TransferLimits};
use crate::publication::layout::{self, CURRENT_TXT};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::http::{Response, StatusCode};
use ureq::Body;

/// At most this many bytes of `current.txt` (`gens/<N>\n`).
const MAX_CURRENT_BYTES: u64 = 64;
/// Redirects followed per request (all on the same server).
const MAX_REDIRECTS: usize = 5;

/// Where an http(s):// source is and how long it may take.
#[derive(Clone, Debug)]
pub struct HttpTarget {
    /// The host's directory on the server; ends in `/`.
    pub base: ::url::Url,
    /// agent.toml `http_ca`: the PEM file of the CA the server's certificate must come from.
    /// None: the system's roots.
    pub ca: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub limits: TransferLimits,
}

/// One cycle's use of a web server (the connection pool and the last ETag outlive it).
pub struct HttpSource {
    target: HttpTarget,
    client: Arc<Client>,
    /// Time spent waiting for the server so far (against `limits.deadline`).
    spent: Duration,
}

impl HttpSource {
    /// Prepares the client; nothing is sent until the first request.
    pub fn open(target: HttpTarget) -> Result<Self, SourceError> {
        let client = client(
            &target.base,
            target.ca.as_deref(),
            target.io_timeout,
            target.connect_timeout,
        )?;
        Ok(Self {
            target,
            client,
            spent: Duration::ZERO,
        })
    }

    /// The URL of `rel` (a path of the layout) under the base, each segment percent-encoded.
    fn url(&self, rel: &str) -> ::url::Url {
        let mut u = self.target.base.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty();
            segs.extend(rel.split('/'));
        }
        u
    }

    /// What is left of the session's time with the server.
    fn remaining(&self, place: &str) -> Result<Duration, SourceError> {
        let left = self.target.limits.deadline.saturating_sub(self.spent);
        if left.is_zero() {
            return Err(SourceError::Unreachable {
                place: place.into(),
                why: format!(
                    "cut after waiting {} for the server this cycle, more than the {} allowed",
                    humantime::format_duration(self.spent),
                    humantime::format_duration(self.target.limits.deadline)
                ),
            });
        }
        Ok(left)
    }

    /// GETs `rel`, following redirects on the same server; a 200 (or, with `etag`, a 304)
    /// response, any other status as an error naming the URL.
    fn get(&mut self, rel: &str, etag: Option<&str>) -> Result<Response<Body>, SourceError> {
        let mut url = self.url(rel);
        for _ in 0..=MAX_REDIRECTS {
            let place = url.to_string();
            let left = self.remaining(&place)?;
            let mut req = self
                .client
                .agent
                .get(url.as_str())
                .config()
                .timeout_global(Some(left))
                .build();
            if let Some(tag) = etag {
                req = req.header("If-None-Match", tag);
            }
            let started = Instant::now();
            let sent = req.call();
            self.spent += started.elapsed();
            let resp = sent.map_err(|e| request_error(e, &place, self.target.ca.as_ref()))?;
            match resp.status() {
                StatusCode::OK => return Ok(resp),
                StatusCode::NOT_MODIFIED if etag.is_some() => return Ok(resp),
                s if s.is_redirection() => url = self.redirect(&url, &resp)?,
                s => return Err(status_error(s, place)),
            }
        }
        Err(SourceError::Layout {
            place: self.url(rel).to_string(),
            why: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Where a redirect leads, if it stays on this server.
    fn redirect(
        &self,
        from: &::url::Url,
        resp: &Response<Body>,
    ) -> Result<::url::Url, SourceError> {
        let bad = |why: String| SourceError::Layout {
            place: from.to_string(),
            why,
        };
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| bad(format!("HTTP {} without a Location", resp.status())))?;
        let to = from
            .join(location)
            .map_err(|e| bad(format!("redirect to {location:?}: {e}")))?;
        if !same_origin(from, &to) {
            return Err(bad(format!(
                "redirected to {to}, another server; an http(s) source follows redirects only on its own scheme, host and port"
            )));
        }
        Ok(to)
    }

    /// Streams a 200 response's body into `out`: more than `limit` bytes (announced or sent) is
    /// an error, and so is a body arriving slower than the minimum rate.
    fn body(
        &mut self,
        resp: Response<Body>,
        out: &mut dyn Write,
        limit: u64,
        place: &str,
    ) -> Result<u64, SourceError> {
        if resp.body().content_length().is_some_and(|n| n > limit) {
            return Err(SourceError::TooLarge {
                place: place.into(),
                limit,
            });
        }
        let started = Instant::now();
        let mut r = Metered {
            inner: resp.into_body().into_reader(),
            limits: self.target.limits,
            window_start: Instant::now(),
            window_bytes: 0,
        };
        let copied = copy_bounded(&mut r, out, limit, place);
        self.spent += started.elapsed();
        copied.map_err(|e| match e {
            SourceError::Io { place, source } => SourceError::Unreachable {
                place,
                why: source.to_string(),
            },
            e => e,
        })
    }

    /// GETs `rel` into `out`, at most `limit` bytes.
    fn fetch(&mut self, rel: &str, out: &mut dyn Write, limit: u64) -> Result<u64, SourceError> {
        let resp = self.get(rel, None)?;
        let place = self.url(rel).to_string();
        self.body(resp, out, limit, &place)
    }
}

/// An HTTP status other than 200 as an error naming the URL.
fn status_error(s: StatusCode, place: String) -> SourceError {
    match s.as_u16() {
        404 | 410 => SourceError::NotFound { place },
        401 | 403 => SourceError::Permission { place },
        500..=599 => SourceError::Unreachable {
            place,
            why: format!("the server answered HTTP {s}"),
        },
        _ => SourceError::Layout {
            place,
            why: format!("the server answered HTTP {s}"),
        },
    }
}

/// A body reader that enforces the minimum rate of [`TransferLimits`].
struct Metered<R> {
    inner: R,
    limits: TransferLimits,
    window_start: Instant,
    window_bytes: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.window_bytes += n as u64;
        let l = &self.limits;
        if self.window_start.elapsed() >= l.window {
            if self.window_bytes < l.min_bytes && n > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "cut: the server sent {} bytes in {}, less than the minimum of {} bytes per {} (too slow, or trickling on purpose)",
                        self.window_bytes,
                        humantime::format_duration(l.window),
                        l.min_bytes,
                        humantime::format_duration(l.window)
                    ),
                ));
            }
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        Ok(n)
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        self.target.base.to_string()
    }

    fn current_generation(&mut self) -> Result<Option<u64>, SourceError> {
        let last = self
            .client
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let resp = self.get(CURRENT_TXT, last.as_ref().map(|l| l.etag.as_str()))?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            // Sent only with an ETag, so `last` is there.
            return Ok(last.map(|l| l.generation));
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let place = self.url(CURRENT_TXT).to_string();
        let mut text = Vec::new();
        self.body(resp, &mut text, MAX_CURRENT_BYTES, &place)?;
        let text = String::from_utf8_lossy(&text);
        let generation = parse_current_target(text.strip_suffix('\n').unwrap_or(&text), &place)?;
        *self.client.last.lock().unwrap_or_else(|p| p.into_inner()) =
            etag.map(|etag| LastCurrent { etag, generation });
        Ok(Some(generation))
    }

    fn read_manifest(&mut self, generation: u64, limit: u64) -> Result<Vec<u8>, SourceError> {
        let mut v = Vec::new();
        self.fetch(&layout::manifest_rel(generation), &mut v, limit)?;
        Ok(v)
    }

    fn read_file(
        &mut self,
        generation: u64,
        path: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        self.fetch(&layout::tree_rel(generation, path), out, limit)
    }

    /// Nothing to check: HTTP shows no symlinks, and the server decides what a URL serves. What
    /// protects the files is the signed manifest's sha256 of each, checked as it arrives.
    fn check_tree_path(&mut self, _generation: u64, _path: &str) -> Result<(), SourceError> {
        Ok(())
    }

    fn read_cache_file(
        &mut self,
        generation: u64,
        name: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        self.fetch(&layout::cache_rel(generation, name), out, limit)
    }

    fn upload_log(&mut self, name: &str, _data: &[u8]) -> Result<(), SourceError> {
        Err(SourceError::Io {
            place: self.url(&layout::log_rel(name)).to_string(),
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "read-only source: an http(s) source takes no logs; reports go to `report_to`",
            ),
        })
    }
}

/// The base URL of a source, for [`super::open`].
pub(super) fn target(base: &::url::Url, ca: Option<&Path>) -> HttpTarget {
    HttpTarget {
        base: base.clone(),
        ca: ca.map(Path::to_path_buf),
        connect_timeout: super::CONNECT_TIMEOUT,
        io_timeout: super::IO_TIMEOUT,
        limits: super::TRANSFER_LIMITS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_are_percent_encoded_segments_under_the_base() {
        let s = HttpSource::open(target(
            &::url::Url::parse("https://cdn.example.org/fleet/abc/").unwrap(),
            None,
        ))
        .unwrap();
        assert_eq!(
            s.url(&layout::tree_rel(3, "files/etc/a b?#%.conf"))
                .as_str(),
            "https://cdn.example.org/fleet/abc/gens/3/tree/files/etc/a%20b%3F%23%25.conf"
        );
        assert_eq!(
            s.url(CURRENT_TXT).as_str(),
            "https://cdn.example.org/fleet/abc/current.txt"
        );
    }

    #[test]
    fn statuses_become_errors_that_name_the_url() {
        let e = status_error(StatusCode::NOT_FOUND, "https://x/a".into());
        assert!(matches!(e, SourceError::NotFound { .. }) && e.to_string().contains("https://x/a"));
        assert!(status_error(StatusCode::BAD_GATEWAY, "u".into()).is_unreachable());
        assert!(matches!(
            status_error(StatusCode::FORBIDDEN, "u".into()),
            SourceError::Permission { .. }
        ));
    }

    #[test]
    fn a_trickling_body_is_cut() {
        let mut r = Metered {
            inner: &b"abc"[..],
            limits: TransferLimits {
                deadline: Duration::from_secs(60),
                min_bytes: 100,
                window: Duration::ZERO,
            },
            window_start: Instant::now(),
            window_bytes: 0,
        };
        let e = r.read(&mut [0u8; 8]).unwrap_err();
        assert!(e.to_string().contains("3 bytes in"), "{e}");
    }
}
