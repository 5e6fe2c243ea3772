//! What can go wrong in a fetch, each naming where.

use super::store::StoreError;
use crate::manifest::ManifestError;
use crate::source::SourceError;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{place}: {why}")]
    Refused { place: String, why: String },
    /// agent.toml `max_age`: the publication was signed too long ago (status: "publication too
    /// old").
    #[error("{place}: {why}")]
    TooOld { place: String, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl FetchError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FetchError::Source(e) if e.is_unreachable())
    }
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}
