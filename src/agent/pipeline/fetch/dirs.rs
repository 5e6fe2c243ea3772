//! The fetch state under the agent's state directory: `trees/<N>/` (materialised trees),
//! `trees/<N>.manifest.json`, `tree -> trees/<N>` (the last complete fetch) and `verified.json`
//! (the newest generation whose signature was verified).

use super::error::{io_at, FetchError};
use crate::fsutil;
use crate::hash::Sha256Hex;
use crate::manifest::Manifest;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A tree present locally and checked against its manifest.
#[derive(Clone, Debug)]
pub struct LocalTree {
    pub generation: u64,
    pub manifest: Manifest,
    pub tree: PathBuf,
}

/// The newest generation whose signature this agent ever verified, kept in
/// `<state_dir>/verified.json`: a server that later serves an older (genuinely signed) generation
/// is replaying it, and one that serves the same number with other content is lying.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HighestVerified {
    pub generation: u64,
    pub tree_hash: Sha256Hex,
}

pub(super) const VERIFIED_FILE: &str = "verified.json";

/// Paths of the fetch state under the agent's state directory.
pub struct FetchDirs {
    pub state_dir: PathBuf,
}

impl FetchDirs {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
        }
    }
    pub(super) fn trees(&self) -> PathBuf {
        self.state_dir.join("trees")
    }
    pub(super) fn tree_link(&self) -> PathBuf {
        self.state_dir.join("tree")
    }
    pub(super) fn manifest_copy(&self, generation: u64) -> PathBuf {
        self.trees().join(format!("{generation}.manifest.json"))
    }

    /// The newest verified generation; an unreadable record is an error (never "none", which
    /// would re-open the door to a rollback).
    pub fn highest_verified(&self) -> Result<Option<HighestVerified>, FetchError> {
        let path = self.state_dir.join(VERIFIED_FILE);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| FetchError::Refused {
                    place: path.display().to_string(),
                    why: format!("not a valid record of the newest verified generation ({e}); with a trusted key nothing is fetched until it is repaired or removed"),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    pub(super) fn record_verified(&self, v: &HighestVerified) -> Result<(), FetchError> {
        let path = self.state_dir.join(VERIFIED_FILE);
        let mut bytes =
            serde_json::to_vec_pretty(v).map_err(|e| io_at(&path)(io::Error::other(e)))?;
        bytes.push(b'\n');
        fsutil::atomic_write(&path, &bytes, 0o600).map_err(io_at(&path))
    }

    /// The last completely fetched tree, if any.
    pub fn local_tree(&self) -> Result<Option<LocalTree>, FetchError> {
        let link = self.tree_link();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&link)(e)),
        };
        let generation = target
            .strip_prefix("trees")
            .ok()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| FetchError::Refused {
                place: link.display().to_string(),
                why: format!("points to {}, not trees/<N>", target.display()),
            })?;
        let mpath = self.manifest_copy(generation);
        let bytes = fs::read(&mpath).map_err(io_at(&mpath))?;
        let manifest = Manifest::parse(&bytes, &mpath.display().to_string())?;
        Ok(Some(LocalTree {
            generation,
            manifest,
            tree: self.trees().join(generation.to_string()),
        }))
    }
}
