//! The socket protocol between the agent and its clients (docs/protocol.md).
//!
//! Owns the wire format: newline-delimited JSON envelopes, their limits and their errors. Only
//! this module turns bytes into requests and statuses into bytes; the rest of the code speaks the
//! Rust types of [`protocol`] and [`crate::status`].

pub mod backup;
pub mod client;
pub mod codec;
pub mod per_uid;
pub mod protocol;
pub(crate) mod report;
pub mod server;

pub use client::{Client, ClientError, CycleCall};
pub use protocol::{Command, ErrorCode, Event, Request, Response, WireError, PROTOCOL_VERSION};
