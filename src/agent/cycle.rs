//! What the daemon drives. The words of a cycle themselves ([`CycleRequest`], [`CycleReport`])
//! are shared with the clients and live in [`crate::cycle`].

use crate::cycle::{CycleReport, CycleRequest};

/// What the daemon drives: the real implementation is `agent::pipeline::Pipeline`.
pub trait CycleRunner: Send {
    /// Runs one cycle to its end (blocking).
    fn run_cycle(&mut self, req: CycleRequest) -> CycleReport;
    /// Re-activates the previous system (blocking).
    fn rollback(&mut self, reason: &str) -> CycleReport;
    /// The log of the last cycle, if any.
    fn last_log(&self) -> Option<String>;
}
