//! `fleet publish --to s3://bucket/prefix` (docs/publication.md#object-storage): each host's
//! publication, as the chroot root holds it after the local publish, uploaded to S3-compatible
//! object storage through the `object_store` crate, for agents that read it over HTTP(S) (the
//! bucket's website endpoint or a CDN in front of it).
//!
//! The chroot root stays the source of truth: the upload copies from it and never changes it.
//! Per host, under `<prefix>/<http_prefix or host name>/`: one listing, then every object of a
//! live generation the bucket lacks (generations are immutable; each generation's
//! `manifest.json` after its files), then `current.txt` (`gens/<N>\n`, the pointer the HTTP
//! source reads) LAST, then the generations pruned locally are deleted. A reader therefore
//! never finds `current.txt` naming a generation that is not complete. `logs/` and `backup/`
//! are never uploaded.
//!
//! `target` parses the URL and builds the client; `push` does one host. Blocking: each call
//! runs a small tokio runtime of its own, so the `[[mirrors]]` pusher can call it as well.

mod push;
mod reuse;
mod target;

pub use push::{push_host, PushOptions, PushSummary};
pub use target::{S3Target, S3TargetError};

/// The object that names a host's live generation (`gens/<N>\n`), as the HTTP source reads it.
pub const CURRENT_TXT: &str = "current.txt";

/// An upload that failed: what, where (endpoint, bucket, key or local path) and why.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{endpoint}: bucket {bucket:?}, key {key:?}: {what} failed: {source}")]
    Store {
        endpoint: String,
        bucket: String,
        key: String,
        what: &'static str,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("{path}: {source}")]
    Local {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the name cannot be an object storage key ({why}); rename the file")]
    BadName { path: String, why: String },
    #[error("{0}")]
    Publication(#[from] crate::publication::PublicationError),
    #[error("cannot start the upload's runtime: {0}")]
    Runtime(std::io::Error),
}

/// A host's path under the upload's prefix: its unguessable `http_prefix` (fleet.toml), else
/// its name.
pub fn host_path(config: &crate::config::FleetConfig, host: &str) -> String {
    config
        .hosts
        .get(host)
        .and_then(|h| h.http_prefix.clone())
        .unwrap_or_else(|| host.to_string())
}
