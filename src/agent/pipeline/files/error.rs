//! What can go wrong installing files, each naming where.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{place}: {why}")]
    Refused { place: String, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn refused(place: impl Into<String>, why: impl Into<String>) -> FilesError {
    FilesError::Refused {
        place: place.into(),
        why: why.into(),
    }
}
