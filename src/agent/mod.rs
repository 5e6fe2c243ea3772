//! The agent (docs/agent.md): the privileged helper on each machine, in two layers.
//!
//! - [`pipeline`]: the blocking steps of one cycle (fetch, build, files, activate, verify,
//!   commit, report through the outbox), and the [`Pipeline`] that drives them, writes the
//!   journal before each step and resolves an interrupted cycle at start;
//! - [`daemon`]: the async agent around it (the worker that alone runs cycles, the scheduler,
//!   the HTTP trigger, the status cell the clients watch).
//!
//! [`state`] (`state.json`) is kept by the pipeline; [`cycle`] holds the words the daemon and the
//! pipeline share, [`report`] what the agent uploads.
//!
//! Must not accept a byte from the server that it has not checked against the manifest, and must
//! never make a system the boot default before it has been verified.

pub mod conditions;
pub mod cycle;
pub mod daemon;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod state;

pub use pipeline::{run_once, Pipeline};
