//! The words the agent and its clients share about one cycle: why it runs ([`CycleRequest`]) and
//! how it ended ([`CycleReport`], with the [`Outcome`] and the failed [`Step`] of `status`).
//!
//! Below both `agent` (which runs cycles) and `ipc` (which carries their reports), so neither
//! imports the other for them.

use crate::status::{Outcome, Step};

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
    pub failed_step: Option<Step>,
    pub message: Option<String>,
}
