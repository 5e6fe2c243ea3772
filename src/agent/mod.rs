//! The agent (DESIGN §3): the privileged helper on each machine, in two layers.
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

pub mod cycle;
pub mod daemon;
pub mod pipeline;
pub mod report;
pub mod state;

pub use cycle::{CycleReport, CycleRequest};
pub use pipeline::{run_once, Pipeline};

// The paths the rest of the crate, the tests and the benches used before the split into
// `pipeline/` and `daemon/`; each names the module where the code now lives.
pub use daemon::http::{self, listen as http_listen, tcp_owner};
pub use daemon::{scheduler, status_cell};
pub use pipeline::build::{self, gcroot, nix_version};
pub use pipeline::fetch::{self, store, trust};
pub use pipeline::{activate, commit, files, outbox, system, verify};
