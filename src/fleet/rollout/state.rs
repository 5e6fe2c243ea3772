//! The rollout's state, `<chroot>/.tiffin-rollout.json`: beside the hosts' chroots, inside none
//! of them (no host can read or write it), root-only (0600), replaced atomically at every change.

use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The file's name under the chroot root.
pub const STATE_FILE: &str = ".tiffin-rollout.json";
const MODE: u32 = 0o600;

/// What the rollouts of one fleet are at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The release being rolled out (or the last one, finished or halted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    /// Releases `publish --staged` refuses until `fleet rollout --clear`.
    #[serde(default)]
    pub quarantined: Vec<Quarantine>,
}

/// One staged release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: String,
    /// Unix seconds.
    pub staged_at: u64,
    /// The highest wave that has it.
    pub wave: u32,
    /// When that wave got it (Unix seconds): the soak is counted from here.
    pub wave_since: u64,
    /// Every wave of the fleet when it was staged, ascending.
    pub waves: Vec<u32>,
    /// The generation each host that has the release runs it as.
    pub generations: BTreeMap<String, u64>,
    /// Every wave has it.
    #[serde(default)]
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halt>,
}

/// Why a rollout stopped spreading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    pub host: String,
    pub generation: u64,
    /// `failed`, `rolled_back` or `interrupted`.
    pub outcome: String,
    /// The step that failed, as the host reported it.
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// A release that broke a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub release: String,
    #[serde(flatten)]
    pub halt: Halt,
}

impl RolloutState {
    pub fn path(chroot: &Path) -> PathBuf {
        chroot.join(STATE_FILE)
    }

    /// The state, or an empty one when there is no file yet.
    pub fn load(chroot: &Path) -> io::Result<Self> {
        let path = Self::path(chroot);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                io::Error::other(format!(
                    "{}: not a rollout state ({e}); fix it or move it aside",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(fsutil::with_path(e, &path)),
        }
    }

    pub fn save(&self, chroot: &Path) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        json.push(b'\n');
        fsutil::atomic_write(&Self::path(chroot), &json, MODE)
    }

    /// The quarantine entry of release `id`, if any.
    pub fn quarantine_of(&self, id: &str) -> Option<&Quarantine> {
        self.quarantined.iter().find(|q| q.release == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_state_round_trips_root_only_and_a_missing_file_is_empty() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            RolloutState::load(d.path()).unwrap(),
            RolloutState::default()
        );
        let s = RolloutState {
            release: None,
            quarantined: vec![Quarantine {
                release: "r-1".into(),
                halt: Halt {
                    host: "a".into(),
                    generation: 2,
                    outcome: "rolled_back".into(),
                    step: Some("verify".into()),
                    message: Some("cut off".into()),
                    at: 5,
                },
            }],
        };
        s.save(d.path()).unwrap();
        assert_eq!(RolloutState::load(d.path()).unwrap(), s);
        let mode = std::fs::metadata(RolloutState::path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(RolloutState::path(d.path()), "{").unwrap();
        let e = RolloutState::load(d.path()).unwrap_err().to_string();
        assert!(e.contains(STATE_FILE), "{e}");
    }
}
