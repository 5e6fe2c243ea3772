//! The wire form of the backup calls (`backup`, `snapshots`; docs/protocol.md): a run's record
//! or the snapshot list.

use crate::backup::{BackupRun, Snapshot};

/// What a backup call answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupAnswer {
    Run(BackupRun),
    Snapshots(Vec<Snapshot>),
}

impl BackupAnswer {
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            BackupAnswer::Run(r) => serde_json::to_value(r),
            BackupAnswer::Snapshots(s) => serde_json::to_value(s),
        }
        .unwrap_or(serde_json::Value::Null)
    }
}
