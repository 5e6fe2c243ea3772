//! The agent's side of the socket (docs/protocol.md): binding the socket with its owner and mode, the
//! accept loop, and one handler per connection.
//!
//! Shape (after mini-redis), one job per file:
//! - `socket`: the socket file (directory, owner, group, mode; a stale one replaced);
//! - `listener`: the accept loop ([`serve`]) and the slots: a semaphore bounds the number of
//!   clients, a per-uid share keeps one user from taking them all, a broadcast channel tells
//!   every handler to stop;
//! - `handler`: one connection, owning its stream halves, its peer's credentials, its
//!   subscription and its calls in flight;
//! - `access`: the peer's credentials and the permission each command needs;
//! - `lines`: the bounded request line reader.
//!
//! Limits that keep one client from hurting the others:
//! - a request line longer than [`MAX_LINE`](crate::ipc::protocol::MAX_LINE) gets a `too_long` answer as soon as the limit is
//!   crossed; the rest of that line is read and thrown away, and the connection stays usable;
//! - every write has a timeout: a client that stops reading is dropped, never waited for;
//! - subscribers read the status through a `watch` receiver, so a slow one skips intermediate
//!   states instead of queueing them (one status per client at most);
//! - a connection that is not subscribed and has no call in flight is closed when idle;
//! - at most [`Limits::max_calls`] long calls (`check`, `update`, `rollback`) per connection;
//! - at most [`Limits::max_clients_per_uid`] connections per uid (root excepted), so that one
//!   local user cannot take every slot.

mod access;
mod handler;
mod lines;
mod listener;
mod socket;

pub use access::{permission_of, AccessPolicy, Peer, Permission};
pub use listener::serve;
pub use socket::{bind, socket_identity};

use super::backup::BackupAnswer;
use super::protocol::{Command, ErrorCode};
use crate::cycle::CycleReport;
use crate::status::AgentStatus;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;

/// Bounds on what clients may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more get a `busy` answer and are closed.
    pub max_clients: usize,
    /// A connection that is neither subscribed nor waiting for a call is closed after this long
    /// without a request.
    pub idle_timeout: Duration,
    /// A write that takes longer than this drops the client.
    pub write_timeout: Duration,
    /// Long calls (`check`, `update`, `rollback`) in flight per connection.
    pub max_calls: usize,
    /// Connections one uid may hold at once (root is not counted); more get a `busy` answer.
    pub max_clients_per_uid: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: 256,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            max_calls: 8,
            max_clients_per_uid: 16,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("socket group {group:?} does not exist (set `socket_group` in agent.toml to an existing group, or create it)")]
    NoSocketGroup { group: String },
    #[error("{path}: another agent is already listening on this socket")]
    InUse { path: PathBuf },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What the server asks of the agent.
pub trait AgentService: Send + Sync + 'static {
    /// A receiver of the live status (its current value included).
    fn subscribe(&self) -> watch::Receiver<AgentStatus>;
    /// The log of the last cycle, if one ran.
    fn last_log(&self) -> Option<String>;
    /// Runs `check`, `update` or `rollback`; resolves when it has finished. `admin`: the caller
    /// is in the admin group (or root), so its `update` also retries a generation that failed.
    fn run(
        &self,
        cmd: Command,
        admin: bool,
    ) -> Pin<Box<dyn Future<Output = Result<CycleReport, ServiceError>> + Send>>;
    /// Runs `backup` or `snapshots` (docs/backup.md); an agent without `[backup]` says so.
    fn backup(&self, cmd: Command) -> BackupCall {
        let _ = cmd;
        no_backups()
    }
    /// `postpone`: no reminder of the waiting update before `until` (Unix seconds).
    fn postpone(&self, until: u64) -> Result<crate::status::Postponed, ServiceError> {
        let _ = until;
        Err(ServiceError {
            code: ErrorCode::NotPossible,
            message: "this agent does not postpone updates".into(),
        })
    }
}

/// The future an agent's service returns for a backup call.
pub type BackupCall = Pin<Box<dyn Future<Output = Result<BackupAnswer, ServiceError>> + Send>>;

/// The answer of an agent without `[backup]`.
pub fn no_backups() -> BackupCall {
    Box::pin(async {
        Err(ServiceError {
            code: ErrorCode::NotPossible,
            message: "this agent makes no backups: agent.toml has no [backup]".into(),
        })
    })
}

/// A call the agent could not serve.
#[derive(Clone, Debug)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests;
