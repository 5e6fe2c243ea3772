//! The blocking pipeline (docs/agent.md): one module per step, in the order a cycle runs them, and
//! the [`driver`] that takes a generation through them.
//!
//! 1. [`fetch`]: the one-round-trip change check, the delta download into the verified content
//!    store ([`fetch::store`]), the tree staged and swapped in ([`fetch::staging`]), under the
//!    [`fetch::trust`] policy;
//! 2. [`build`]: the tree built by Nix into a system store path, with its GC root
//!    ([`build::gcroot`]); [`build::nix_version`] is logged at start;
//! 3. [`files`]: plain files and secrets installed under `files_root`, with an undo record;
//! 4. [`activate`]: the new system test-activated (also how a rollback re-activates the previous
//!    one);
//! 5. [`verify`]: the machine still reaches the server and passes its health checks;
//! 6. [`commit`]: the verified system made the boot default (profile + boot entry);
//! 7. [`outbox`]: reports, logs and `seen.json` queued on disk and uploaded at the next contact.
//!
//! [`system`] reads the running system's links. The driver's [`driver::recovery`] resolves a
//! cycle an earlier agent left unfinished, from the journal in `state.json`.
//!
//! Nothing here is async: the daemon runs a cycle on tokio's blocking pool.

pub mod fetch;

pub mod build;

pub mod prebuilt;

pub mod files;

pub mod activate;

pub mod verify;

pub mod commit;

pub mod outbox;

pub mod system;

pub mod driver;
/// Ordered sources: which one serves a cycle (docs/agent.md "Several sources").
pub mod sources;

pub use driver::once::{exit_code, run_once};
pub use driver::Pipeline;
