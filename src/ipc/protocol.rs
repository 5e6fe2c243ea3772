//! Request, answer and event envelopes, and their encoding as JSON lines.

use crate::status::AgentStatus;
use serde::{Deserialize, Serialize};

/// Bumped when an envelope changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest line either side accepts, newline included.
pub const MAX_LINE: usize = 64 * 1024;

/// What a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Status,
    Check,
    Update,
    Rollback,
    Subscribe,
    Log,
    /// Run a backup now (docs/backup.md).
    Backup,
    /// List the backup repository's snapshots.
    Snapshots,
    /// Policy `notify`: no reminder of the waiting update before `until` (never after the
    /// admin's deadline).
    Postpone,
}

/// `{"id":N,"cmd":"status"}`; `v` is optional and defaults to the current version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub id: u64,
    pub cmd: Command,
    #[serde(default = "current_version")]
    pub v: u32,
    /// `postpone`: until when (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

fn current_version() -> u32 {
    PROTOCOL_VERSION
}

/// Machine-readable error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    TooLong,
    UnsupportedVersion,
    Forbidden,
    Busy,
    NotPossible,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

/// `{"id":N,"ok":true,"data":…}` or `{"id":N,"ok":false,"error":{…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id; 0 when the request could not be read far enough to know it.
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// `{"event":"status","data":{…}}`, sent after `subscribe` on every change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Event {
    Status(AgentStatus),
}
