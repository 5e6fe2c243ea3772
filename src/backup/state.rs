//! What the agent remembers of its backups across restarts: `<state_dir>/backup/last.json`,
//! the last run and when the last snapshot was made.

use super::record::BackupRun;
use crate::fsutil::atomic_write;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMemory {
    #[serde(default)]
    pub last: Option<BackupRun>,
    #[serde(default)]
    pub last_success: Option<u64>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("backup").join("last.json")
}

/// The remembered runs; nothing (and a warning) when the file is missing or unreadable.
pub fn load(state_dir: &Path) -> BackupMemory {
    let p = path(state_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %p.display(), error = %e, "unreadable backup state; starting afresh");
            BackupMemory::default()
        }),
        Err(_) => BackupMemory::default(),
    }
}

pub fn save(state_dir: &Path, m: &BackupMemory) -> std::io::Result<()> {
    let p = path(state_dir);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut v = serde_json::to_vec_pretty(m).unwrap_or_default();
    v.push(b'\n');
    atomic_write(&p, &v, 0o600)
}
