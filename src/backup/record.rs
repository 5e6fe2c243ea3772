//! What a backup run was, what the agent says about backups, and a snapshot as restic lists it:
//! plain data shared by the agent, the socket, the tray, `fleet status` and the reports.

use serde::{Deserialize, Serialize};

/// How a backup run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupOutcome {
    /// A snapshot was made of everything.
    Ok,
    /// A snapshot was made, but restic could not read some files (its exit code 3).
    Partial,
    /// No snapshot.
    Failed,
}

impl BackupOutcome {
    pub fn word(self) -> &'static str {
        match self {
            BackupOutcome::Ok => "ok",
            BackupOutcome::Partial => "partial",
            BackupOutcome::Failed => "failed",
        }
    }
    /// A snapshot was made.
    pub fn made_snapshot(self) -> bool {
        self != BackupOutcome::Failed
    }
}

/// One backup run, as kept in the agent's state, shown by clients and reported to `logs/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRun {
    /// Unix seconds.
    pub started: u64,
    pub finished: u64,
    pub outcome: BackupOutcome,
    /// From restic's summary: files new, changed and unmodified; bytes added to the repository.
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
    #[serde(default)]
    pub files_unmodified: u64,
    #[serde(default)]
    pub bytes_added: u64,
    /// Bytes of the files looked at.
    #[serde(default)]
    pub bytes_processed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// restic's own words on a failure (or a note on a partial run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl BackupRun {
    pub fn duration_secs(&self) -> u64 {
        self.finished.saturating_sub(self.started)
    }
}

/// The `backup` part of the agent's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    /// A backup is running now.
    #[serde(default)]
    pub running: bool,
    /// The schedule, in seconds (a backup older than twice this is stale).
    pub interval_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<BackupRun>,
    /// When the last snapshot was made (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
    /// When the next scheduled backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

impl BackupStatus {
    /// No snapshot for more than twice the schedule (or never, once the schedule has passed
    /// since `since`).
    pub fn is_stale(&self, now: u64, since: u64) -> bool {
        let limit = self.interval_secs.saturating_mul(2);
        now.saturating_sub(self.last_success.unwrap_or(since)) > limit
    }
}

/// A snapshot as `restic snapshots --json` lists it (the fields tiffin shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    /// RFC 3339 as restic writes it.
    pub time: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub hostname: String,
}
