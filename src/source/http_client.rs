//! The HTTP side of an `http(s)://` source: the base URL's rules, one process-wide `ureq` client
//! per base URL and CA (so keep-alive connections and the last ETag of `current.txt` survive from
//! one cycle to the next), and how a failed request becomes a [`SourceError`].
//!
//! Redirects are followed by [`super::http::HttpSource`] itself, never by `ureq`: only to the same
//! scheme, host and port (see [`same_origin`]).

use super::SourceError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// What the source remembers of `current.txt` between cycles: its ETag and the generation it
/// named, so that the no-change check is one conditional GET answered 304.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LastCurrent {
    pub etag: String,
    pub generation: u64,
}

/// One base URL's client: its connection pool and what it last read of `current.txt`.
pub(super) struct Client {
    pub agent: ureq::Agent,
    pub last: Mutex<Option<LastCurrent>>,
}

/// The key of a client: the base URL and the pinned CA's bytes (a replaced CA file gets a new
/// client, and so new connections, at the next cycle).
type Key = (String, Option<Vec<u8>>);

fn clients() -> &'static Mutex<HashMap<Key, Arc<Client>>> {
    static CLIENTS: OnceLock<Mutex<HashMap<Key, Arc<Client>>>> = OnceLock::new();
    CLIENTS.get_or_init(Default::default)
}

/// Checks a parsed `http(s)://` setting and makes its path a directory (ending in `/`): no user
/// or password (the publication is public to whoever knows its path; it is protected by its
/// signature, not by a login), a host, no query or fragment (checked by the caller).
pub(super) fn base_url(mut url: ::url::Url) -> Result<::url::Url, String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "no user or password in an http(s) source: the publication is read without a login and protected by its signature (`trusted_key`)"
                .into(),
        );
    }
    if url.host_str().map_or(true, str::is_empty) {
        return Err("no host: https://HOST/PATH/".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The process-wide client of `base` with `ca` (the pinned CA's PEM file, or the system's roots).
pub(super) fn client(
    base: &::url::Url,
    ca: Option<&Path>,
    io_timeout: std::time::Duration,
    connect_timeout: std::time::Duration,
) -> Result<Arc<Client>, SourceError> {
    let pem = ca.map(read_ca).transpose()?;
    let key = (base.as_str().to_string(), pem.clone());
    let mut all = clients().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = all.get(&key) {
        return Ok(c.clone());
    }
    let roots = match (&pem, ca) {
        (Some(pem), Some(path)) => RootCerts::Specific(Arc::new(certificates(pem, path)?)),
        _ => RootCerts::PlatformVerifier,
    };
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("tiffin/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .timeout_connect(Some(connect_timeout))
        .timeout_per_read(Some(io_timeout))
        .timeout_per_write(Some(io_timeout))
        .timeout_recv_response(Some(io_timeout))
        .max_idle_connections_per_host(2)
        .build()
        .new_agent();
    let c = Arc::new(Client {
        agent,
        last: Mutex::new(None),
    });
    all.insert(key, c.clone());
    Ok(c)
}

fn read_ca(path: &Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|e| SourceError::Io {
        place: format!("http_ca {}", path.display()),
        source: e,
    })
}

/// The certificates of a PEM file; none is an error naming the file.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<Certificate<'static>>, SourceError> {
    let place = format!("http_ca {}", path.display());
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(SourceError::Layout {
                    place,
                    why: format!("not a PEM file: {e}"),
                })
            }
        }
    }
    if certs.is_empty() {
        return Err(SourceError::Layout {
            place,
            why: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

/// Whether a redirect from `from` to `to` stays on the same server: same scheme, host and port.
/// A redirect elsewhere is refused: the operator chose which server the machine trusts to be up
/// (the signature still protects the content; this keeps a compromised web server from sending
/// the agent to any address, an internal one included).
pub(super) fn same_origin(from: &::url::Url, to: &::url::Url) -> bool {
    from.scheme() == to.scheme()
        && from.host_str() == to.host_str()
        && from.port_or_known_default() == to.port_or_known_default()
}

/// A failed request as a [`SourceError`]: every failure to talk to the server is `Unreachable`
/// (so a cycle can go on to another source), a bad certificate saying so and naming the CA.
pub(super) fn request_error(e: ureq::Error, place: &str, ca: Option<&PathBuf>) -> SourceError {
    let why = match &e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => tls_why(&e.to_string(), ca),
        ureq::Error::Io(io) if io.to_string().contains("certificate") => {
            tls_why(&io.to_string(), ca)
        }
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "cannot resolve the host name".into(),
        _ => e.to_string(),
    };
    SourceError::Unreachable {
        place: place.to_string(),
        why,
    }
}

fn tls_why(e: &str, ca: Option<&PathBuf>) -> String {
    let trusted = match ca {
        Some(p) => format!("the CA pinned by http_ca {}", p.display()),
        None => "the system's root certificates".into(),
    };
    format!("TLS refused ({e}); the server's certificate must be issued by {trusted}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ::url::Url {
        ::url::Url::parse(s).unwrap()
    }

    #[test]
    fn only_the_same_scheme_host_and_port_is_the_same_origin() {
        let from = url("https://cdn.example.org/a/current.txt");
        assert!(same_origin(&from, &url("https://cdn.example.org:443/b/x")));
        for other in [
            "http://cdn.example.org/a/current.txt",
            "https://evil.example.org/a/current.txt",
            "https://cdn.example.org:8443/a/current.txt",
            "https://10.0.0.1/a/current.txt",
        ] {
            assert!(!same_origin(&from, &url(other)), "{other}");
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_named() {
        let e = certificates(b"hello\n", Path::new("/etc/tiffin/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/tiffin/ca.pem") && e.contains("no PEM"),
            "{e}"
        );
    }
}
