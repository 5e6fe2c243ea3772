//! Where the agent reads its publication from (docs/agent.md step 1): `sftp://user@host:port/` over
//! ssh2 with a pinned host key, `https://host/path/` (read-only, through any web server or CDN),
//! or `file:///path` with the same layout on a local disk.
//!
//! Knows the publication layout (`current`, `gens/<N>/manifest.json`, `gens/<N>/tree/…`, `logs/`)
//! but nothing of builds or systems. Every read is bounded by what the caller expects.

mod file;
mod http;
mod http_client;
mod sftp;
mod url;
mod watchdog;

pub use file::FileSource;
pub use http::{HttpSource, HttpTarget};
pub use sftp::{fingerprint, SftpSource, SftpTarget, CONNECT_TIMEOUT, IO_TIMEOUT};
pub use url::SourceUrl;
pub use watchdog::{TransferLimits, TRANSFER_LIMITS};

use crate::publication;
use std::io::Write;
use std::path::Path;

/// Why a source operation failed. Each variant says what and where.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {url:?}: {why}")]
    BadUrl { url: String, why: String },
    /// The server could not be reached or the connection broke.
    #[error("{place}: server unreachable: {why}")]
    Unreachable { place: String, why: String },
    /// The server's host key is not the pinned one.
    #[error(
        "{place}: server host key {found} is not the pinned key ({expected}); refusing to connect"
    )]
    HostKey {
        place: String,
        found: String,
        expected: String,
    },
    #[error("{place}: authentication failed: {why}")]
    Auth { place: String, why: String },
    #[error("{place}: permission denied")]
    Permission { place: String },
    #[error("{place}: not found")]
    NotFound { place: String },
    /// The publication does not have the expected shape (hostile or broken server).
    #[error("{place}: {why}")]
    Layout { place: String, why: String },
    #[error("{place}: more than the {limit} bytes expected")]
    TooLarge { place: String, limit: u64 },
    #[error("{place}: {source}")]
    Io {
        place: String,
        source: std::io::Error,
    },
}

impl SourceError {
    /// True when the server was not reachable (as opposed to a refusal or a broken publication).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SourceError::Unreachable { .. })
    }
}

/// A publication the agent can read its generations from and upload its logs to.
pub trait Source: Send {
    /// Where this source is, for messages (`sftp://laptop@server:22/`).
    fn describe(&self) -> String;

    /// The one small round trip of a no-change check: the generation `current` points to, or
    /// `None` when nothing is published yet.
    fn current_generation(&mut self) -> Result<Option<u64>, SourceError>;

    /// The bytes of `gens/<N>/manifest.json`, at most `limit` bytes.
    fn read_manifest(&mut self, generation: u64, limit: u64) -> Result<Vec<u8>, SourceError>;

    /// Streams `gens/<N>/tree/<path>` into `out`; more than `limit` bytes is an error.
    /// Returns the number of bytes written.
    fn read_file(
        &mut self,
        generation: u64,
        path: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError>;

    /// Checks that `gens/<N>/tree/<path>` is reached without a symlink on the server. Publishing
    /// resolves every symlink, so one there means the chroot was tampered with (it could lead to
    /// another generation, or to `logs/`, which the host writes itself). The fetch checks every
    /// file it will download before downloading any.
    fn check_tree_path(&mut self, generation: u64, path: &str) -> Result<(), SourceError>;

    /// Streams `gens/<N>/cache/<name>` (a file of the generation's binary cache, a name the
    /// signed manifest lists) into `out`, after checking that no symlink leads to it; more than
    /// `limit` bytes is an error. Returns the number of bytes written.
    fn read_cache_file(
        &mut self,
        generation: u64,
        name: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError>;

    /// Writes `logs/<name>` (a plain file name) so that a reader never sees half of it.
    fn upload_log(&mut self, name: &str, data: &[u8]) -> Result<(), SourceError>;
}

/// Parses the target of the `current` link: `gens/<N>` ([`publication::parse_current_target`]).
pub fn parse_current_target(target: &str, place: &str) -> Result<u64, SourceError> {
    publication::parse_current_target(target).ok_or_else(|| SourceError::Layout {
        place: place.to_string(),
        why: format!("`current` points to {target:?}, not gens/<number>"),
    })
}

/// Checks that a log name is a plain file name ([`publication::is_log_name`]).
pub fn check_log_name(name: &str) -> Result<(), SourceError> {
    if publication::is_log_name(name) {
        Ok(())
    } else {
        Err(SourceError::Layout {
            place: publication::layout::log_rel(name),
            why: "not a plain log file name".into(),
        })
    }
}

/// What opening a source needs: where it is, and for sftp:// the keys to log in with and to
/// check the server by. An agent configuration gives one (`source::open(&config)`).
#[derive(Clone, Copy, Debug)]
pub struct Login<'a> {
    pub url: &'a SourceUrl,
    /// The agent's private key.
    pub identity: &'a Path,
    /// The known_hosts file that pins the server's host key.
    pub known_hosts: &'a Path,
    /// For https://: the PEM file of the CA the server's certificate must come from (agent.toml
    /// `http_ca`); None: the system's roots.
    pub http_ca: Option<&'a Path>,
}

/// Opens a source. For `sftp://` this connects and authenticates.
pub fn open<'a>(login: impl Into<Login<'a>>) -> Result<Box<dyn Source>, SourceError> {
    let login = login.into();
    match login.url {
        SourceUrl::File(p) => Ok(Box::new(FileSource::new(p.clone()))),
        SourceUrl::Sftp { user, host, port } => Ok(Box::new(SftpSource::connect(SftpTarget {
            user: user.clone(),
            host: host.clone(),
            port: *port,
            path: "/".into(),
            identity: login.identity.to_path_buf(),
            known_hosts: login.known_hosts.to_path_buf(),
            connect_timeout: CONNECT_TIMEOUT,
            io_timeout: IO_TIMEOUT,
            limits: TRANSFER_LIMITS,
        })?)),
        SourceUrl::Http(base) => Ok(Box::new(HttpSource::open(http::target(
            base,
            login.http_ca,
        ))?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_target_must_be_a_generation() {
        assert_eq!(parse_current_target("gens/42", "x").unwrap(), 42);
        for t in ["gens/../etc", "/etc", "gens/", "gens/1x", "tree"] {
            assert!(parse_current_target(t, "x").is_err(), "{t}");
        }
    }

    #[test]
    fn log_names_are_plain() {
        assert!(check_log_name("2026-11-25T10:00:00Z-g3-updated.json").is_ok());
        for n in ["../x", "a/b", ".hidden", ""] {
            assert!(check_log_name(n).is_err(), "{n}");
        }
    }
}
