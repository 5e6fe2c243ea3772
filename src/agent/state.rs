//! The agent's persistent state, `<state_dir>/state.json`, replaced atomically at every change.
//!
//! Besides what was applied, it holds the *journal*: the step in progress, written before the
//! step starts. A journal found at start-up means the agent died inside that step; the pipeline
//! resolves it (finish or roll back) instead of starting over blindly.

use crate::fsutil;
use crate::status::{LastUpdate, Outcome, RollbackInfo, Step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// How many attempts the history keeps.
pub const HISTORY_LEN: usize = 20;
/// After this many interrupted attempts a generation is not tried again.
pub const MAX_INTERRUPTED_ATTEMPTS: u32 = 2;

/// The step in progress, written before it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub step: Step,
    /// Unknown while the change check and download run.
    pub generation: Option<u64>,
    pub started: u64,
    /// The system that was running when the cycle began (what a rollback returns to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_system: Option<String>,
    /// The system being applied, once built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_system: Option<String>,
    /// The cycle was a manual rollback (its commit goes to `previous_system`).
    #[serde(default)]
    pub manual_rollback: bool,
}

/// One attempt to apply a generation, kept in a bounded history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub generation: Option<u64>,
    pub started: u64,
    pub finished: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a generation is not tried again until a newer one is published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoNotRetry {
    pub outcome: Outcome,
    pub reason: String,
    pub at: u64,
}

/// A generation found on the server and not applied yet (policy `notify`, or a `check`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Available {
    pub generation: u64,
    pub found_at: u64,
    /// Policy `notify`: when it is applied anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// The admin's change note in its manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Its manifest's closure-diff summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<crate::manifest::Changes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<u64>,
    /// The system tiffin last left running (verified or rolled back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_system: Option<String>,
    /// The system before it: where a manual rollback goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_system: Option<String>,
    /// The generation `previous_system` was built from, when tiffin applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_generation: Option<u64>,
    #[serde(default)]
    pub history: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<LastUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<RollbackInfo>,
    #[serde(default)]
    pub do_not_retry: BTreeMap<u64, DoNotRetry>,
    /// Interrupted attempts per generation (cleared when the generation ends one way or another).
    #[serde(default)]
    pub interrupted: BTreeMap<u64, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<Available>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<Journal>,
    /// The change note of the applied generation's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_note: Option<String>,
    /// The highest generation a source served and the fetch accepted: a source serving less is
    /// skipped as stale (docs/agent.md "Several sources").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_seen_generation: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The atomic write's error already names the file (or the directory it could not write in).
    #[error("saving the agent's state: {source}")]
    Save { source: io::Error },
    #[error("{path}: not a valid agent state ({source}); move it aside to start afresh")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The state file and its current content.
pub struct StateFile {
    path: PathBuf,
    pub state: AgentState,
}

impl StateFile {
    /// Loads `<state_dir>/state.json`; a missing file is a fresh state.
    pub fn load(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join("state.json");
        let state = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StateError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => AgentState::default(),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        Ok(Self { path, state })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the state atomically.
    pub fn save(&self) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| StateError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        fsutil::atomic_write(&self.path, &bytes, 0o600)
            .map_err(|source| StateError::Save { source })
    }
}

impl AgentState {
    /// Appends an attempt, keeping the last [`HISTORY_LEN`].
    pub fn record_attempt(&mut self, a: Attempt) {
        self.history.push(a);
        let excess = self.history.len().saturating_sub(HISTORY_LEN);
        self.history.drain(..excess);
    }

    /// Forgets "do not retry" marks and interruption counts of generations older than `g`:
    /// a newer generation supersedes them.
    pub fn forget_older_than(&mut self, g: u64) {
        self.do_not_retry.retain(|k, _| *k >= g);
        self.interrupted.retain(|k, _| *k >= g);
    }

    pub fn is_blocked(&self, g: u64) -> Option<&DoNotRetry> {
        self.do_not_retry.get(&g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_history_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let mut f = StateFile::load(d.path()).unwrap();
        assert_eq!(f.state, AgentState::default());
        for g in 0..30 {
            f.state.record_attempt(Attempt {
                generation: Some(g),
                started: g,
                finished: g,
                outcome: Outcome::Failed,
                failed_step: Some(Step::Build),
                message: None,
            });
        }
        f.state.journal = Some(Journal {
            step: Step::Verify,
            generation: Some(29),
            started: 1,
            previous_system: Some("/a".into()),
            new_system: Some("/b".into()),
            manual_rollback: false,
        });
        f.save().unwrap();
        let again = StateFile::load(d.path()).unwrap();
        assert_eq!(again.state.history.len(), HISTORY_LEN);
        assert_eq!(again.state.history[0].generation, Some(10));
        assert_eq!(again.state, f.state);
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("state.json"), "{ not json").unwrap();
        let e = StateFile::load(d.path()).err().unwrap().to_string();
        assert!(
            e.contains("state.json") && e.contains("move it aside"),
            "{e}"
        );
    }
}
