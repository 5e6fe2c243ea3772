//! `tiffin agent --once`: one cycle, printed, and its exit code.

use super::Pipeline;
use crate::agent::daemon::status_cell::StatusCell;
use crate::config::AgentConfig;
use crate::cycle::CycleRequest;
use crate::publication::report;
use crate::status::{AgentStatus, Outcome};

/// The exit code of `tiffin agent --once` for an outcome.
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::UpToDate | Outcome::Updated => 0,
        Outcome::Failed | Outcome::Interrupted => 1,
        Outcome::RolledBack => 3,
    }
}

/// `tiffin agent --once`: resolves an interrupted cycle if there is one, runs one scheduled
/// cycle (the policy applies: under `notify` a new generation is only announced until its
/// deadline), prints what happened and returns the exit code.
pub fn run_once(config: AgentConfig) -> u8 {
    let status = StatusCell::new(AgentStatus::default());
    let mut p = match Pipeline::new(config, status) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tiffin agent: {e:#}");
            return 1;
        }
    };
    let r = p.run_cycle(CycleRequest::Scheduled);
    let what = format!(
        "{}{}{}{}",
        r.generation
            .map(|g| format!("generation {g}: "))
            .unwrap_or_default(),
        report::outcome_word(r.outcome),
        r.failed_step
            .map(|s| format!(" at {s}"))
            .unwrap_or_default(),
        r.message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    println!("tiffin agent: {what}");
    exit_code(r.outcome)
}
