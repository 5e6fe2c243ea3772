//! `<chroot>/.tiffin-mirrors.json`: per mirror, the generation each host's publication has
//! there and the last push's error (root 0600, replaced atomically, beside the chroots and in
//! no host's chroot). Written by `fleet publish`, read by `fleet status`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The file's name under the chroot root.
pub const STATE_FILE: &str = ".tiffin-mirrors.json";

/// Every mirror's record, by its URL as fleet.toml writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorState {
    #[serde(default)]
    pub mirrors: BTreeMap<String, MirrorRecord>,
}

/// What one mirror holds, as far as the last pushes know.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorRecord {
    /// Host → the generation its `current` names on the mirror.
    #[serde(default)]
    pub hosts: BTreeMap<String, u64>,
    /// Why the last push failed (cleared by the next one that succeeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339 UTC times of the last attempt and the last push that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
}

impl MirrorState {
    pub fn path(chroot: &Path) -> PathBuf {
        chroot.join(STATE_FILE)
    }

    /// The state under `chroot`; none yet is empty, an unreadable one is an error naming it.
    pub fn load(chroot: &Path) -> Result<Self, String> {
        let path = Self::path(chroot);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, chroot: &Path) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        crate::fsutil::atomic_write(&Self::path(chroot), &bytes, 0o600)
    }
}
