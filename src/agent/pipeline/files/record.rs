//! The record of what tiffin installed (`<state_dir>/installed-files.json`), with hashes: only
//! what it names is ever overwritten or removed.

use super::error::{io_at, refused, FilesError};
use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(super) const RECORD: &str = "installed-files.json";

/// One file tiffin installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFile {
    pub sha256: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What tiffin installed under `root`, by path relative to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRecord {
    #[serde(default)]
    pub root: PathBuf,
    #[serde(default)]
    pub files: BTreeMap<String, InstalledFile>,
    /// Directories tiffin created (removed again when they become empty).
    #[serde(default)]
    pub dirs: BTreeSet<String>,
}

impl InstalledRecord {
    pub fn load(state_dir: &Path) -> Result<Self, FilesError> {
        let p = state_dir.join(RECORD);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| refused(p.display().to_string(), format!("not a valid record: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_at(&p)(e)),
        }
    }

    pub(super) fn save(&self, state_dir: &Path) -> Result<(), FilesError> {
        let p = state_dir.join(RECORD);
        let mut b = serde_json::to_vec_pretty(self).map_err(|e| io_at(&p)(io::Error::other(e)))?;
        b.push(b'\n');
        fsutil::atomic_write(&p, &b, 0o600).map_err(io_at(&p))
    }
}
