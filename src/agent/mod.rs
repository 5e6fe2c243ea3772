//! The agent (DESIGN §3): the privileged helper on each machine. One submodule per pipeline step
//! (fetch, stage, build, activate, verify, report) plus the persistent state and the daemon loop.
//!
//! Must not accept a byte from the server that it has not checked against the manifest, and must
//! never make a system the boot default before it has been verified.

pub mod activate;
pub mod build;
pub mod cycle;
pub mod daemon;
pub mod fetch;
pub mod files;
pub mod gcroot;
pub mod nix_version;
pub mod outbox;
pub mod pipeline;
pub mod report;
pub mod state;
pub mod status_cell;
pub mod store;
pub mod system;
pub mod trust;
pub mod verify;
pub mod work;

pub mod http;
pub mod http_listen;
pub mod scheduler;
pub mod tcp_owner;

pub use crate::cycle::{CycleReport, CycleRequest};
pub use pipeline::{run_once, Pipeline};
