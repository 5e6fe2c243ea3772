//! The client's backup calls: `backup` (run one now, wait for its end) and `snapshots`.

use super::{Client, ClientError};
use crate::backup::{BackupRun, Snapshot};
use crate::ipc::protocol::Command;

impl Client {
    /// Runs a backup now (or joins the one running) and returns its record.
    pub fn backup_now(&mut self) -> Result<BackupRun, ClientError> {
        let data = self.call(Command::Backup, None)?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// The backup repository's snapshots of this machine, oldest first.
    pub fn snapshots(&mut self) -> Result<Vec<Snapshot>, ClientError> {
        let data = self.call(Command::Snapshots, None)?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}
