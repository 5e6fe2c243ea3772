//! The driver (docs/agent.md): [`Pipeline`] takes a generation through the steps — fetch → build →
//! install files → activate (test) → verify → commit, or roll back (the system and its files
//! together); then report. One [`Pipeline`] lives as long as the agent; each
//! [`Pipeline::run_cycle`] is one pass.
//!
//! Safety rests on two rules. The system profile (the boot default) is touched only in
//! `commit`, after verification passed, so a system that cut the machine off never becomes the
//! boot default. And every step is announced in the journal (`state.json`) before it starts, so an
//! agent killed anywhere finds, at its next start, what it was doing and finishes or rolls back
//! instead of leaving the machine between two systems or retrying for ever.
//!
//! Split by what it does, in the order a cycle needs it: [`policy`] (check the server, decide
//! whether to apply), [`apply`] (build, files, activate, verify), [`commit`], [`rollback`],
//! [`recovery`] (the journal of an interrupted cycle), [`reports`] (the end of every cycle:
//! history, report, `seen.json`, status) and [`once`] (`tiffin agent --once`).

use super::outbox::Outbox;
use crate::agent::cycle::CycleRunner;
use crate::agent::daemon::status_cell::StatusCell;
use crate::agent::state::{Journal, StateFile};
use crate::config::AgentConfig;
use crate::cycle::{CycleReport, CycleRequest};
use crate::runner::Runner;
use crate::source;
use crate::status::Step;
use crate::status::{unix_now, Outcome, Phase};
use anyhow::Context;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Instant;

/// How one cycle (or one resolution of an interrupted cycle) ended.
struct Ending {
    outcome: Outcome,
    failed_step: Option<Step>,
    message: Option<String>,
    /// Something was attempted on the machine: record it and upload a report.
    attempted: bool,
}

impl Ending {
    fn quiet(outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            failed_step: None,
            message: Some(message.into()),
            attempted: false,
        }
    }
    fn failed(step: Step, message: impl Into<String>, attempted: bool) -> Self {
        Self {
            outcome: Outcome::Failed,
            failed_step: Some(step),
            message: Some(message.into()),
            attempted,
        }
    }
}

/// The bookkeeping of one cycle: its log, timings and the systems before and after.
struct Cycle {
    runner: Runner,
    started: u64,
    durations: BTreeMap<String, f64>,
    generation: Option<u64>,
    system_before: Option<String>,
    system_after: Option<String>,
    server_reached: bool,
    /// The built system differs from the publication's `expected_system` (both paths): said in
    /// the report's message, whatever the outcome.
    mismatch: Option<String>,
    /// The connection of the check, reused to upload the report when it still works.
    source: Option<Box<dyn source::Source>>,
    /// The URL `source` is connected to (the source that served the check).
    served_by: Option<source::SourceUrl>,
    /// Where the system came from (built here or the host's binary cache), once it was made.
    built_by: Option<crate::status::BuiltBy>,
    /// Bytes downloaded from the host's binary cache.
    cache_bytes: Option<u64>,
    /// The change note of the generation this cycle is about (its manifest's `note`).
    note: Option<String>,
    /// Its manifest's closure-diff summary.
    changes: Option<crate::manifest::Changes>,
    /// Bytes this cycle downloaded (the agent's metrics).
    downloaded_bytes: u64,
    /// The system found running at the start, when it was neither the one tiffin left nor the
    /// one its last rollback went to (switched by hand): said in the report.
    drifted_from: Option<String>,
}

impl Cycle {
    fn new() -> Self {
        Self {
            runner: Runner::new(),
            started: unix_now(),
            durations: BTreeMap::new(),
            generation: None,
            system_before: None,
            system_after: None,
            server_reached: false,
            mismatch: None,
            source: None,
            served_by: None,
            built_by: None,
            cache_bytes: None,
            note: None,
            changes: None,
            downloaded_bytes: 0,
            drifted_from: None,
        }
    }
    fn took(&mut self, step: Step, since: Instant) {
        *self.durations.entry(step.name().to_string()).or_default() +=
            since.elapsed().as_secs_f64();
    }
}

/// Returns the `Ending` from the enclosing function when the journal cannot be written: a step
/// that is not journalled must not run.
macro_rules! journal_or_stop {
    ($e:expr, $step:expr) => {
        if let Err(why) = $e {
            return Ending::failed($step, why, true);
        }
    };
}

mod apply;
mod cache_step;
mod commit;
pub mod once;
mod policy;
mod recovery;
mod reports;
mod rollback;

/// The agent's pipeline and everything it keeps between cycles.
pub struct Pipeline {
    config: AgentConfig,
    status: StatusCell,
    state: StateFile,
    outbox: Outbox,
    last_log: Option<String>,
    /// Held for the pipeline's life: one agent per state directory.
    _lock: nix::fcntl::Flock<fs::File>,
}

impl Pipeline {
    /// Opens the state directory (taking its lock), loads the state, resolves a cycle that an
    /// earlier agent left unfinished, and fills the initial status.
    pub fn new(config: AgentConfig, status: StatusCell) -> anyhow::Result<Self> {
        let dir = &config.state_dir;
        let lock = lock_state_dir(dir)?;
        let state = StateFile::load(dir)?;
        let outbox = Outbox::open(dir)?;
        let mut p = Self {
            config,
            status,
            state,
            outbox,
            last_log: None,
            _lock: lock,
        };
        p.status.update(|s| {
            s.host = p.config.host.clone();
            s.policy = p.config.policy;
            s.admin_group = p.config.admin_group.clone();
        });
        p.publish_state();
        if let Some(j) = p.state.state.journal.clone() {
            let mut cy = Cycle::new();
            let end = p.resolve_journal(&mut cy, j);
            p.finish(cy, end);
        }
        Ok(p)
    }

    /// The status cell this pipeline writes.
    pub fn status(&self) -> &StatusCell {
        &self.status
    }

    /// Runs one cycle to its end (blocking).
    pub fn run_cycle(&mut self, req: CycleRequest) -> CycleReport {
        let mut cy = Cycle::new();
        let end = self.cycle(req, &mut cy);
        self.finish(cy, end)
    }

    /// The log of the last cycle.
    pub fn last_log(&self) -> Option<String> {
        self.last_log.clone()
    }

    /// Writes the journal entry for `step` before it runs.
    fn journal(&mut self, cy: &Cycle, step: Step, new: Option<&str>) -> Result<(), String> {
        let j = Journal {
            step,
            generation: if step == Step::Fetch {
                None
            } else {
                cy.generation
            },
            started: cy.started,
            previous_system: cy.system_before.clone(),
            new_system: new.map(str::to_string),
            manual_rollback: false,
        };
        self.state.state.journal = Some(j);
        self.state.save().map_err(|e| e.to_string())
    }

    fn set_phase(&self, phase: Phase) {
        self.status.update(|s| s.phase = phase);
    }
}

/// Creates the state directory (mode 0700) and takes its lock: one agent per state directory.
fn lock_state_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    let lock_path = dir.join("agent.lock");
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, e)| {
            anyhow::anyhow!(
                "{}: {e}: another tiffin agent uses this state directory",
                lock_path.display()
            )
        },
    )
}

impl CycleRunner for Pipeline {
    fn run_cycle(&mut self, req: CycleRequest) -> CycleReport {
        Pipeline::run_cycle(self, req)
    }
    fn rollback(&mut self, reason: &str) -> CycleReport {
        Pipeline::rollback(self, reason)
    }
    fn last_log(&self) -> Option<String> {
        Pipeline::last_log(self)
    }
}
