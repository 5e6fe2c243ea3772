//! The wire form of the backup calls (`backup`, `snapshots`; docs/protocol.md): a run's record
//! or the snapshot list.

use super::protocol::ErrorCode;
use super::server::ServiceError;
use crate::backup::{BackupRun, Snapshot};
use std::future::Future;
use std::pin::Pin;

/// What a backup call answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupAnswer {
    Run(BackupRun),
    Snapshots(Vec<Snapshot>),
}

/// The future an agent's service returns for a backup call.
pub type BackupCall = Pin<Box<dyn Future<Output = Result<BackupAnswer, ServiceError>> + Send>>;

impl BackupAnswer {
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            BackupAnswer::Run(r) => serde_json::to_value(r),
            BackupAnswer::Snapshots(s) => serde_json::to_value(s),
        }
        .unwrap_or(serde_json::Value::Null)
    }
}

/// The answer of an agent without `[backup]`.
pub fn not_configured() -> BackupCall {
    Box::pin(async {
        Err(ServiceError {
            code: ErrorCode::NotPossible,
            message: "this agent makes no backups: agent.toml has no [backup]".into(),
        })
    })
}
