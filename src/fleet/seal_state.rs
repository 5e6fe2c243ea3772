//! The publisher's record of what it sealed (`.tiffin-sealed.json` next to fleet.toml, never
//! published): per host, whom its files were sealed to and, per file, the hash of the plain file
//! and of its sealed copy. Sealing is randomised, so `publish` keeps the sealed copy of the live
//! generation while the plain file and the recipients are unchanged: republishing unchanged
//! secrets makes no new generation. The plain files' hashes stay in the admin's repository.

use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The record's file name, at the root of the fleet repository (beside fleet.toml).
pub const SEAL_STATE_FILE: &str = ".tiffin-sealed.json";

/// Everything sealed, per host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealState {
    #[serde(default)]
    pub hosts: BTreeMap<String, HostSeal>,
}

/// One host's sealed files, as in its live generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSeal {
    /// Whom they were sealed to (`seal::Recipients::id`).
    pub to: String,
    /// By path in the host's tree (`files.toml`, `files/…`).
    pub files: BTreeMap<String, SealedFile>,
}

/// One sealed file: sha256 of the plain file and of the sealed copy published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedFile {
    pub plain: String,
    pub sealed: String,
}

impl SealState {
    pub fn path(fleet_dir: &Path) -> PathBuf {
        fleet_dir.join(SEAL_STATE_FILE)
    }

    /// Reads the record; a missing one is empty. An unreadable or broken one is empty too, with
    /// a warning: everything is sealed afresh (one new generation per host), nothing is lost.
    pub fn load(fleet_dir: &Path, warnings: &mut Vec<String>) -> Self {
        let path = Self::path(fleet_dir);
        let parsed = match std::fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Self::default(),
            Err(e) => Err(e.to_string()),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        };
        parsed.unwrap_or_else(|e| {
            warnings.push(format!(
                "{}: {e}; sealing every host's files afresh (each host with files gets a new generation)",
                path.display()
            ));
            Self::default()
        })
    }

    /// Writes the record atomically, readable by the admin only.
    pub fn save(&self, fleet_dir: &Path) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        fsutil::atomic_write(&Self::path(fleet_dir), &bytes, 0o600)
    }
}
