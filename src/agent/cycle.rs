//! The words the daemon and the pipeline share about one cycle.

use crate::status::Outcome;

/// Why a cycle runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycleRequest {
    /// The schedule's check: under policy `notify` a new generation is only announced.
    Scheduled,
    /// Look and fetch only; never apply.
    Check,
    /// Apply now, whatever the policy (a user asked: the socket's `update`, the HTTP trigger).
    /// A generation marked "do not retry" stays untried.
    Update,
    /// As `Update`, and a generation whose build or files failed is tried again: only an admin
    /// asks for this (the socket's `update` from the admin group or root).
    Retry,
}

/// How a cycle (or a rollback) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleReport {
    pub outcome: Outcome,
    pub generation: Option<u64>,
    /// The step that failed (`fetch`, `build`, `activate`, `verify`, `commit`, …).
    pub failed_step: Option<String>,
    pub message: Option<String>,
}

/// What the daemon drives: the real implementation is `agent::pipeline::Pipeline`.
pub trait CycleRunner: Send {
    /// Runs one cycle to its end (blocking).
    fn run_cycle(&mut self, req: CycleRequest) -> CycleReport;
    /// Re-activates the previous system (blocking).
    fn rollback(&mut self, reason: &str) -> CycleReport;
    /// The log of the last cycle, if any.
    fn last_log(&self) -> Option<String>;
}
