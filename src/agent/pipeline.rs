//! The rebuild pipeline (DESIGN §3): fetch → build → install files → activate (test) → verify →
//! commit, or roll back (the system and its files together); then report. One [`Pipeline`]
//! lives as long as the agent; each [`Pipeline::run_cycle`] is one pass.
//!
//! Safety rests on two rules. The system profile (the boot default) is touched only in
//! `commit`, after verification passed, so a system that cut the machine off never becomes the
//! boot default. And every step is announced in the journal (`state.json`) before it starts, so an
//! agent killed anywhere finds, at its next start, what it was doing and finishes or rolls back
//! instead of leaving the machine between two systems or retrying for ever.

use super::activate;
use super::build;
use super::cycle::{CycleReport, CycleRequest, CycleRunner};
use super::fetch::{self, SyncOutcome};
use super::files;
use super::gcroot;
use super::outbox::Outbox;
use super::report::{self, Report, Seen};
use super::state::{Attempt, Available, DoNotRetry, Journal, StateFile, MAX_INTERRUPTED_ATTEMPTS};
use super::status_cell::StatusCell;
use super::system;
use super::verify;
use crate::config::{AgentConfig, Operation};
use crate::runner::Runner;
use crate::source;
use crate::status::{
    unix_now, AgentStatus, CheckResult, LastCheck, LastUpdate, Outcome, Phase, Policy,
    RollbackInfo, Step,
};
use anyhow::Context;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
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
    /// The connection of the check, reused to upload the report when it still works.
    source: Option<Box<dyn source::Source>>,
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
            source: None,
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
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                anyhow::anyhow!(
                    "{}: {e}: another tiffin agent uses this state directory",
                    lock_path.display()
                )
            })?;
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

    /// Re-activates the previous system and makes it the boot default again; the generation
    /// rolled back from is not retried until a newer one is published.
    pub fn rollback(&mut self, reason: &str) -> CycleReport {
        let mut cy = Cycle::new();
        let end = match (
            self.state.state.previous_system.clone(),
            system::current_system(&self.config.system),
        ) {
            (Some(prev), Some(cur)) if prev != cur => {
                let g = self.state.state.applied_generation.unwrap_or(0);
                cy.generation = Some(g);
                cy.system_before = Some(cur.clone());
                self.roll_back(&mut cy, g, &prev, &cur, None, reason, true)
            }
            (Some(_), Some(_)) => {
                Ending::failed(Step::RollBack, "the previous system is already running", false)
            }
            (None, _) => Ending::failed(
                Step::RollBack,
                "no previous system to roll back to (tiffin has not applied a generation since the last rollback)",
                false,
            ),
            (_, None) => Ending::failed(
                Step::RollBack,
                format!(
                    "{} does not exist: the running system is unknown",
                    self.config.system.current_system.display()
                ),
                false,
            ),
        };
        self.finish(cy, end)
    }

    /// The log of the last cycle.
    pub fn last_log(&self) -> Option<String> {
        self.last_log.clone()
    }

    // ---- one cycle -------------------------------------------------------------------------

    fn cycle(&mut self, req: CycleRequest, cy: &mut Cycle) -> Ending {
        self.set_phase(Phase::Checking);
        cy.system_before = system::current_system(&self.config.system);
        cy.system_after = cy.system_before.clone();
        journal_or_stop!(self.journal(cy, Step::Fetch, None), Step::Fetch);
        let trust = match self.trust_policy() {
            Ok(t) => t,
            Err(e) => {
                cy.runner.note(&format!("fetch: {e}"));
                self.checked(CheckResult::Failed, Some(e.clone()));
                return Ending::failed(Step::Fetch, e, false);
            }
        };
        let t = Instant::now();
        let mut src = match source::open(&self.config) {
            Ok(s) => s,
            Err(e) => {
                cy.took(Step::Fetch, t);
                cy.runner.note(&format!("fetch: {e}"));
                let result = if e.is_unreachable() {
                    CheckResult::Unreachable
                } else {
                    // Reached, but refused: a changed host key, a rejected identity.
                    CheckResult::Failed
                };
                self.checked(result, Some(e.to_string()));
                return Ending::failed(Step::Fetch, e.to_string(), false);
            }
        };
        let status = self.status.clone();
        let mut progress = |p| {
            status.update(|s| {
                s.phase = Phase::Downloading;
                s.progress = Some(p);
            })
        };
        let synced = fetch::sync_trusted(
            src.as_mut(),
            &self.config.state_dir,
            &self.config.host,
            &trust,
            &mut progress,
        );
        cy.took(Step::Fetch, t);
        let note = trust.note(&synced);
        self.status.update(|s| {
            s.progress = None;
            s.publication = note;
        });
        let local = match synced {
            Ok(SyncOutcome::NothingPublished) => {
                cy.server_reached = true;
                self.checked(CheckResult::UpToDate, None);
                return Ending::quiet(Outcome::UpToDate, "nothing is published for this host yet");
            }
            Ok(SyncOutcome::Unchanged(l)) => l,
            Ok(SyncOutcome::Fetched {
                local,
                downloaded_files,
                downloaded_bytes,
            }) => {
                cy.runner.note(&format!(
                    "fetch: generation {} ({downloaded_files} files, {downloaded_bytes} bytes downloaded)",
                    local.generation
                ));
                local
            }
            Err(e) => {
                cy.runner.note(&format!("fetch: {e}"));
                let unreachable = e.is_unreachable();
                self.checked(
                    if unreachable {
                        CheckResult::Unreachable
                    } else {
                        CheckResult::Failed
                    },
                    Some(e.to_string()),
                );
                // The generation for the report's name, when the server still answers.
                cy.generation = if unreachable {
                    None
                } else {
                    src.current_generation().ok().flatten()
                };
                cy.server_reached = !unreachable;
                // Reported once per generation: a broken publication stays broken until the
                // admin publishes again, and a report every interval would only bury the first.
                let reported = self.state.state.history.last().is_some_and(|a| {
                    a.generation == cy.generation
                        && a.outcome == Outcome::Failed
                        && a.failed_step == Some(Step::Fetch)
                });
                let attempted = cy.generation.is_some() && !reported;
                return Ending::failed(Step::Fetch, e.to_string(), attempted);
            }
        };
        cy.server_reached = true;
        cy.source = Some(src);
        let g = local.generation;
        cy.generation = Some(g);
        self.state.state.forget_older_than(g);

        if let Some(b) = self.state.state.is_blocked(g).cloned() {
            let overridable = b.outcome == Outcome::Failed && req == CycleRequest::Retry;
            if !overridable {
                self.checked(CheckResult::UpToDate, None);
                return Ending::quiet(
                    b.outcome,
                    format!(
                        "generation {g} is not retried ({}); waiting for a newer one",
                        b.reason
                    ),
                );
            }
        }
        let current = system::current_system(&self.config.system);
        if self.state.state.applied_generation == Some(g)
            && current.is_some()
            && current == self.state.state.running_system
        {
            self.checked(CheckResult::UpToDate, None);
            self.state.state.available = None;
            return Ending::quiet(Outcome::UpToDate, format!("generation {g} is applied"));
        }
        self.checked(CheckResult::UpdateAvailable, None);
        let notify = self.config.policy == Policy::Notify;
        if req == CycleRequest::Check {
            self.mark_available(g, notify);
            return Ending::quiet(Outcome::UpToDate, format!("generation {g} is available"));
        }
        if notify && req == CycleRequest::Scheduled {
            let deadline = self.mark_available(g, true);
            if deadline.is_some_and(|d| unix_now() < d) {
                return Ending::quiet(
                    Outcome::UpToDate,
                    format!(
                        "generation {g} is available; it is applied on request or at {}",
                        report::rfc3339(deadline.unwrap_or(0))
                    ),
                );
            }
            cy.runner.note(&format!(
                "generation {g}: the deadline has passed; applying"
            ));
        }
        self.announce_updating(cy, g);
        self.apply(cy, g, &local.tree, &local.manifest)
    }

    /// Build, install files, activate, verify, commit (or roll back) generation `g`.
    fn apply(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        tree: &std::path::Path,
        manifest: &crate::manifest::Manifest,
    ) -> Ending {
        let sys = self.config.system.clone();
        let Some(prev) = system::current_system(&sys) else {
            return Ending::failed(
                Step::Build,
                format!(
                    "{} does not exist: the running system is unknown, so there is nothing to roll back to",
                    sys.current_system.display()
                ),
                true,
            );
        };
        cy.system_before = Some(prev.clone());
        cy.system_after = Some(prev.clone());

        self.set_phase(Phase::Building);
        journal_or_stop!(self.journal(cy, Step::Build, None), Step::Build);
        let t = Instant::now();
        let built = build::build_view(tree, &self.config.state_dir)
            .map_err(|e| format!("preparing the tree for Nix: {e}"))
            .and_then(|view| {
                let root = gcroot::link(&self.config.state_dir);
                let limit = self.config.build_timeout;
                build::build_system(&cy.runner, &sys, &view, &self.config.host, &root, limit)
            });
        cy.took(Step::Build, t);
        let new = match built {
            Ok(p) => p,
            Err(why) => return self.block(Ending::failed(Step::Build, why, true), g),
        };
        cy.runner.note(&format!("build: {new}"));
        if let Some(expected) = manifest.expected_system.as_deref() {
            if expected != new {
                // Not fatal: a local build may differ (another nixpkgs channel, impure inputs),
                // but the admin built something else before publishing.
                cy.runner.note(&format!(
                    "build: the publication expected {expected}; this machine built {new}"
                ));
            }
        }

        let t = Instant::now();
        let plan = files::plan(tree, manifest, &sys.files_root, &self.config.state_dir);
        cy.took(Step::Files, t);
        let plan = match plan {
            Ok(p) => p,
            Err(e) => return self.block(Ending::failed(Step::Files, e.to_string(), true), g),
        };

        // Files go in place before the new system starts the services that read them.
        journal_or_stop!(self.journal(cy, Step::Files, Some(&new)), Step::Files);
        let t = Instant::now();
        let installed = files::apply(plan, &self.config.state_dir, &cy.runner);
        cy.took(Step::Files, t);
        if let Err(e) = installed {
            self.undo_files(cy);
            return self.block(Ending::failed(Step::Files, e.to_string(), true), g);
        }

        if new == prev {
            return match installed {
                Ok(0) => {
                    self.keep_files(cy, false);
                    self.applied(g, &new, None);
                    Ending {
                        outcome: Outcome::UpToDate,
                        failed_step: None,
                        message: Some(format!("generation {g} builds the running system")),
                        attempted: true,
                    }
                }
                // Changed files can cut a machine off as surely as a new system: verify.
                _ => self.verify_and_commit(cy, g, &prev, &new),
            };
        }

        if self.config.operation == Operation::Boot {
            return self.commit_step(cy, g, &prev, &new, false);
        }

        self.set_phase(Phase::Activating);
        if let Err(why) = self.journal(cy, Step::Activate, Some(&new)) {
            self.undo_files(cy);
            return Ending::failed(Step::Activate, why, true);
        }
        let t = Instant::now();
        let unit = format!("tiffin-activate-{g}");
        let limit = self.config.activate_timeout;
        let activated = activate::activate_test(&cy.runner, &sys, &new, &unit, limit);
        cy.took(Step::Activate, t);
        if let Err(why) = activated {
            return self.roll_back(cy, g, &prev, &new, Some(Step::Activate), &why, false);
        }
        cy.system_after = system::current_system(&sys);
        self.verify_and_commit(cy, g, &prev, &new)
    }

    fn verify_and_commit(&mut self, cy: &mut Cycle, g: u64, prev: &str, new: &str) -> Ending {
        self.set_phase(Phase::Verifying);
        journal_or_stop!(self.journal(cy, Step::Verify, Some(new)), Step::Verify);
        let t = Instant::now();
        let verified = verify::verify(&self.config, &cy.runner);
        cy.took(Step::Verify, t);
        if let Err(why) = verified {
            return self.roll_back(cy, g, prev, new, Some(Step::Verify), &why, false);
        }
        self.commit_step(cy, g, prev, new, true)
    }

    /// Makes `new` the boot default. `activated`: it is also the running system.
    fn commit_step(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        prev: &str,
        new: &str,
        activated: bool,
    ) -> Ending {
        if prev == new {
            // Only files changed, and they passed verification: the system is committed already.
            self.keep_files(cy, false);
            self.applied(g, new, None);
            return Ending {
                outcome: Outcome::Updated,
                failed_step: None,
                message: Some(format!(
                    "generation {g} builds the running system; its files are installed"
                )),
                attempted: true,
            };
        }
        self.set_phase(Phase::Committing);
        journal_or_stop!(self.journal(cy, Step::Commit, Some(new)), Step::Commit);
        let t = Instant::now();
        let limit = self.config.activate_timeout;
        let committed = activate::commit(&cy.runner, &self.config.system, new, limit);
        cy.took(Step::Commit, t);
        if let Err(why) = committed {
            if activated {
                return self.roll_back(cy, g, prev, new, Some(Step::Commit), &why, false);
            }
            // Operation `boot`: nothing runs the new system; put the profile and files back.
            let _ = activate::set_profile(&cy.runner, &self.config.system, prev, limit);
            self.undo_files(cy);
            return self.block(Ending::failed(Step::Commit, why, true), g);
        }
        cy.system_after = system::current_system(&self.config.system);
        // A rollback now returns to `prev` (and its files) only when `new` runs.
        self.keep_files(cy, activated);
        if activated {
            self.applied(g, new, Some(prev));
        } else {
            // Operation `boot`: `prev` keeps running until the reboot; the next cycle after it
            // finds the new system running and calls it up to date.
            self.applied(g, prev, None);
        }
        Ending {
            outcome: Outcome::Updated,
            failed_step: None,
            message: Some(if activated {
                format!("generation {g} is running and is the boot default")
            } else {
                format!("generation {g} is the boot default; it runs after a reboot")
            }),
            attempted: true,
        }
    }

    /// Re-activates `prev` (and with `commit_previous`, makes it the boot default again — the
    /// manual rollback). The generation is not retried.
    #[allow(clippy::too_many_arguments)]
    fn roll_back(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        prev: &str,
        from: &str,
        failed: Option<Step>,
        why: &str,
        commit_previous: bool,
    ) -> Ending {
        let sys = self.config.system.clone();
        let limit = self.config.activate_timeout;
        self.set_phase(Phase::RollingBack);
        let reason = match failed {
            Some(s) => format!("{} failed: {why}", s.name()),
            None => why.to_string(),
        };
        cy.runner.note(&format!("rolling back to {prev}: {reason}"));
        let j = Journal {
            step: Step::RollBack,
            generation: Some(g),
            started: cy.started,
            previous_system: Some(prev.to_string()),
            new_system: Some(from.to_string()),
            manual_rollback: commit_previous,
        };
        self.state.state.journal = Some(j);
        if let Err(e) = self.state.save() {
            cy.runner.note(&format!("state: {e}"));
        }
        let t = Instant::now();
        if commit_previous {
            // A manual rollback: the files of the generation it returns to.
            match files::restore_previous(&self.config.state_dir, &cy.runner) {
                Ok(true) => {}
                Ok(false) => cy.runner.note(
                    "files: no record of the previous generation's files; they are left as they are",
                ),
                Err(e) => cy.runner.note(&format!(
                    "files: putting the previous generation's files back failed: {e}"
                )),
            }
        } else {
            self.undo_files(cy);
        }
        let mut result = if from == prev {
            Ok(())
        } else {
            let unit = format!("tiffin-rollback-{g}");
            activate::activate_test(&cy.runner, &sys, prev, &unit, limit)
        };
        if result.is_ok() && (commit_previous || failed == Some(Step::Commit)) {
            // The profile may already name the failed system: point it back.
            result = if commit_previous {
                activate::commit(&cy.runner, &sys, prev, limit)
            } else {
                activate::set_profile(&cy.runner, &sys, prev, limit)
            };
        }
        cy.took(Step::RollBack, t);
        cy.system_after = system::current_system(&sys);
        let now = unix_now();
        let info = RollbackInfo {
            at: now,
            generation: g,
            from_system: from.to_string(),
            to_system: prev.to_string(),
            reason: reason.clone(),
        };
        match result {
            Ok(()) => {
                self.state.state.last_rollback = Some(info);
                self.state.state.do_not_retry.insert(
                    g,
                    DoNotRetry {
                        outcome: Outcome::RolledBack,
                        reason: format!("rolled back: {reason}"),
                        at: now,
                    },
                );
                self.state.state.interrupted.remove(&g);
                self.state.state.running_system = Some(prev.to_string());
                if commit_previous {
                    let s = &mut self.state.state;
                    s.applied_generation = s.previous_generation.take();
                    s.previous_system = None;
                    s.applied_at = Some(now);
                }
                Ending {
                    outcome: Outcome::RolledBack,
                    failed_step: failed,
                    message: Some(reason),
                    attempted: true,
                }
            }
            Err(e) => self.block(
                Ending::failed(
                    Step::RollBack,
                    format!("{reason}; and the rollback to {prev} failed too: {e}"),
                    true,
                ),
                g,
            ),
        }
    }

    /// Puts back the files this cycle (or the interrupted one being resolved) installed or
    /// removed, from the undo record in the state directory.
    fn undo_files(&self, cy: &mut Cycle) {
        if let Err(e) = files::restore_pending(&self.config.state_dir, &cy.runner) {
            cy.runner.note(&format!(
                "files: putting the previous files back failed: {e}"
            ));
        }
    }

    /// The cycle's files are committed with its system: their undo record becomes the way back
    /// of a manual rollback (`new_previous`: the rollback now returns to another system).
    fn keep_files(&self, cy: &mut Cycle, new_previous: bool) {
        if let Err(e) = files::keep_pending(&self.config.state_dir, new_previous) {
            cy.runner.note(&format!(
                "files: keeping the record of the previous files failed: {e}"
            ));
        }
    }

    /// Marks `g` "do not retry" with the ending's reason; returns the ending.
    fn block(&mut self, end: Ending, g: u64) -> Ending {
        self.state.state.do_not_retry.insert(
            g,
            DoNotRetry {
                outcome: end.outcome,
                reason: format!(
                    "{} at {}: {}",
                    report::outcome_word(end.outcome),
                    end.failed_step.map_or("?", |s| s.name()),
                    end.message.as_deref().unwrap_or("")
                ),
                at: unix_now(),
            },
        );
        end
    }

    /// Records that `g` with `system` is applied and running (`prev`: what ran before).
    fn applied(&mut self, g: u64, system: &str, prev: Option<&str>) {
        let s = &mut self.state.state;
        if let Some(p) = prev {
            if s.applied_generation != Some(g) {
                s.previous_generation = s.applied_generation;
            }
            s.previous_system = Some(p.to_string());
        }
        s.applied_generation = Some(g);
        s.applied_at = Some(unix_now());
        s.running_system = Some(system.to_string());
        s.available = None;
        s.interrupted.remove(&g);
        s.do_not_retry.remove(&g);
    }

    // ---- an interrupted cycle ---------------------------------------------------------------

    /// Decides what to do about the step an earlier agent died in.
    fn resolve_journal(&mut self, cy: &mut Cycle, j: Journal) -> Ending {
        let sys = self.config.system.clone();
        let limit = self.config.activate_timeout;
        cy.generation = j.generation;
        cy.system_before = j.previous_system.clone();
        cy.system_after = system::current_system(&sys);
        cy.runner.note(&format!(
            "the agent was stopped during `{}`{}; resolving",
            j.step.name(),
            j.generation
                .map(|g| format!(" of generation {g}"))
                .unwrap_or_default()
        ));
        let Some(g) = j.generation else {
            // Stopped while checking or downloading: the machine was not touched, and the next
            // download resumes from the verified objects already stored.
            return Ending {
                outcome: Outcome::Interrupted,
                failed_step: Some(j.step),
                message: Some(format!("interrupted during {}", j.step.name())),
                attempted: true,
            };
        };
        let count = {
            let c = self.state.state.interrupted.entry(g).or_insert(0);
            *c += 1;
            *c
        };
        let exhausted = count >= MAX_INTERRUPTED_ATTEMPTS;
        let cur = system::current_system(&sys);
        let (prev, new) = (j.previous_system.clone(), j.new_system.clone());
        let interrupted = |this: &mut Self| {
            let msg = format!(
                "interrupted during {} (attempt {count} of {MAX_INTERRUPTED_ATTEMPTS})",
                j.step.name()
            );
            let end = Ending {
                outcome: Outcome::Interrupted,
                failed_step: Some(j.step),
                message: Some(msg),
                attempted: true,
            };
            if exhausted {
                this.block(end, g)
            } else {
                end
            }
        };
        match (j.step, prev, new) {
            (Step::Fetch | Step::Build, _, _) => interrupted(self),
            (Step::RollBack, Some(p), Some(n)) => self.roll_back(
                cy,
                g,
                &p,
                &n,
                None,
                "resuming a rollback that was interrupted",
                j.manual_rollback,
            ),
            (step, Some(p), Some(n)) => {
                let cur = cur.as_deref();
                let same = p == n;
                if cur == Some(n.as_str()) && !same {
                    if exhausted {
                        let why = format!("interrupted {count} times during {}", step.name());
                        self.roll_back(cy, g, &p, &n, Some(step), &why, false)
                    } else if step == Step::Commit {
                        // Verified already: finish the commit.
                        self.commit_step(cy, g, &p, &n, true)
                    } else {
                        // The new system runs: it gets the verification it was due.
                        self.verify_and_commit(cy, g, &p, &n)
                    }
                } else if cur == Some(p.as_str()) {
                    match step {
                        Step::Activate => {
                            // The switch had not happened; what it may have started is undone
                            // by activating the previous system again.
                            let _ = activate::activate_test(
                                &cy.runner,
                                &sys,
                                &p,
                                &format!("tiffin-rollback-{g}"),
                                limit,
                            );
                            cy.system_after = system::current_system(&sys);
                            self.undo_files(cy);
                            interrupted(self)
                        }
                        // Only files changed: verify them again.
                        Step::Verify if same && !exhausted => {
                            self.verify_and_commit(cy, g, &p, &n)
                        }
                        Step::Verify if !same => self.roll_back(
                            cy,
                            g,
                            &p,
                            &n,
                            Some(step),
                            "the previous system was running again (a reboot?) before verification ended",
                            false,
                        ),
                        _ => {
                            // Operation `boot`, or files only: nothing runs the new system;
                            // the previous one stays the boot default.
                            if !same
                                && system::resolve_system(&sys.profile).as_deref()
                                    == Some(n.as_str())
                            {
                                if let Err(e) = activate::set_profile(&cy.runner, &sys, &p, limit) {
                                    cy.runner.note(&format!("putting the profile back: {e}"));
                                }
                            }
                            // The previous system stays, and so do its files.
                            self.undo_files(cy);
                            interrupted(self)
                        }
                    }
                } else {
                    let why = format!(
                        "interrupted during {}; the running system is {}",
                        step.name(),
                        cur.unwrap_or("unknown")
                    );
                    self.roll_back(cy, g, &p, &n, Some(step), &why, false)
                }
            }
            (step, _, _) => interrupted_without_systems(self, step, g),
        }
    }

    // ---- state, status, reports ------------------------------------------------------------

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

    /// What every manifest must satisfy (`trusted_key`, `allow_unsigned`, `max_age`) and not
    /// older than what is applied.
    fn trust_policy(&self) -> Result<fetch::TrustPolicy, String> {
        fetch::TrustPolicy::from_config(&self.config, self.state.state.applied_generation)
    }

    fn set_phase(&self, phase: Phase) {
        self.status.update(|s| s.phase = phase);
    }

    fn checked(&self, result: CheckResult, message: Option<String>) {
        self.status.update(|s| {
            s.last_check = Some(LastCheck {
                at: unix_now(),
                result,
                message,
            });
            s.server_reachable = Some(result != CheckResult::Unreachable);
        });
    }

    /// Records `g` as available; returns its deadline (policy `notify`).
    fn mark_available(&mut self, g: u64, with_deadline: bool) -> Option<u64> {
        let now = unix_now();
        let a = match self.state.state.available.take() {
            Some(a) if a.generation == g => a,
            _ => Available {
                generation: g,
                found_at: now,
                deadline: None,
            },
        };
        let deadline = match a.deadline {
            Some(d) => Some(d),
            None if with_deadline => Some(now + self.config.deadline.as_secs()),
            None => None,
        };
        self.state.state.available = Some(Available { deadline, ..a });
        deadline
    }

    /// Ends a cycle: history, state, report, `seen.json`, status.
    fn finish(&mut self, mut cy: Cycle, end: Ending) -> CycleReport {
        // Committed (the profile holds it), rolled back or failed: the build's root goes.
        if let Err(e) = gcroot::release(&self.config.state_dir) {
            cy.runner
                .note(&format!("build: cannot drop its GC root: {e}"));
        }
        let now = unix_now();
        let sys = &self.config.system;
        let reboot_needed = system::reboot_needed(sys);
        cy.runner.note(&format!(
            "outcome: {}{}{}",
            report::outcome_word(end.outcome),
            end.failed_step
                .map(|s| format!(" at {}", s.name()))
                .unwrap_or_default(),
            end.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
        let st = &mut self.state.state;
        st.journal = None;
        let reported_at = report_time(now, st.history.last());
        if end.attempted {
            st.record_attempt(Attempt {
                generation: cy.generation,
                started: cy.started,
                finished: reported_at,
                outcome: end.outcome,
                failed_step: end.failed_step,
                message: end.message.clone(),
            });
            if let Some(g) = cy.generation {
                st.last_update = Some(LastUpdate {
                    at: reported_at,
                    generation: g,
                    outcome: end.outcome,
                    failed_step: end.failed_step,
                    message: end.message.clone(),
                });
            }
        }
        if let Err(e) = self.state.save() {
            tracing::error!("{e}");
            cy.runner.note(&format!("state: {e}"));
        }
        let log = cy.runner.log();
        if end.attempted {
            if let Some(g) = cy.generation {
                let base = report::report_base(reported_at, g, end.outcome);
                let r = Report {
                    host: self.config.host.clone(),
                    generation: g,
                    outcome: end.outcome,
                    failed_step: end.failed_step,
                    message: end.message.clone(),
                    started: report::rfc3339(cy.started),
                    finished: report::rfc3339(reported_at),
                    system_before: cy.system_before.clone(),
                    system_after: cy.system_after.clone(),
                    reboot_needed,
                    durations: cy.durations.clone(),
                    agent_version: crate::VERSION.to_string(),
                    log: report::log_name(&base),
                    publication: self.status.get().publication,
                };
                if let Err(e) = report::enqueue_report(&self.outbox, &r, &log) {
                    tracing::error!("queueing the report: {e}");
                }
            }
        }
        if cy.server_reached {
            // The cycle is over: whatever it applied is in the report.
            let seen = self.seen(now, None, reboot_needed);
            if let Err(e) = report::enqueue_seen(&self.outbox, &seen) {
                tracing::error!("queueing seen.json: {e}");
            }
        }
        if !self.outbox.pending().is_empty() {
            // The check's connection first; after an activation it may be gone, so a fresh one.
            let reused = cy
                .source
                .take()
                .is_some_and(|mut s| self.outbox.flush(s.as_mut()).is_ok());
            if !reused {
                let sent =
                    source::open(&self.config).and_then(|mut s| self.outbox.flush(s.as_mut()));
                if let Err(e) = sent {
                    tracing::warn!("reports stay queued for the next contact: {e}");
                }
            }
        }
        self.last_log = Some(log);
        self.publish_state();
        self.status.update(|s| {
            s.phase = Phase::Idle;
            s.progress = None;
            s.reboot_needed = reboot_needed;
        });
        CycleReport {
            outcome: end.outcome,
            generation: cy.generation,
            failed_step: end.failed_step,
            message: end.message,
        }
    }

    /// What `logs/seen.json` says about this machine now.
    fn seen(&self, now: u64, updating_to: Option<u64>, reboot_needed: bool) -> Seen {
        let sys = &self.config.system;
        Seen {
            host: self.config.host.clone(),
            last_seen: report::rfc3339(now),
            applied_generation: self.state.state.applied_generation,
            running_system: system::current_system(sys),
            booted_system: system::booted_system(sys),
            agent_version: crate::VERSION.to_string(),
            interval_secs: Some(self.config.interval.as_secs()),
            updating_to,
            reboot_needed: Some(reboot_needed),
        }
    }

    /// Tells the server, before a long build, that this machine is updating to `g`, so that
    /// `fleet status` shows "updating" instead of a stale state. Best effort: the connection of
    /// the check is used, and a failure only leaves the announcement queued.
    fn announce_updating(&mut self, cy: &mut Cycle, g: u64) {
        let seen = self.seen(
            unix_now(),
            Some(g),
            system::reboot_needed(&self.config.system),
        );
        if let Err(e) = report::enqueue_seen(&self.outbox, &seen) {
            tracing::warn!("queueing seen.json: {e}");
            return;
        }
        if let Some(src) = cy.source.as_mut() {
            if let Err(e) = self.outbox.flush(src.as_mut()) {
                tracing::warn!("announcing the update to the server: {e}");
            }
        }
    }

    /// Copies what the status shows from the persistent state.
    fn publish_state(&self) {
        let st = &self.state.state;
        let sys = &self.config.system;
        let current = system::current_system(sys);
        let reboot = system::reboot_needed(sys);
        self.status.update(|s| {
            s.applied_generation = st.applied_generation;
            s.applied_at = st.applied_at;
            s.available_generation = st.available.as_ref().map(|a| a.generation);
            s.deadline = st.available.as_ref().and_then(|a| a.deadline);
            s.last_update = st.last_update.clone();
            s.rollback.previous_available = st.previous_system.is_some();
            s.rollback.last = st.last_rollback.clone();
            s.current_system = current;
            s.reboot_needed = reboot;
        });
    }
}

/// The time a cycle's report is named after: now, or one second after the previous report when
/// the clock went back (or stood still), so that reports sort in the order they happened and
/// never take an earlier one's name.
fn report_time(now: u64, previous: Option<&Attempt>) -> u64 {
    match previous {
        Some(a) if a.finished >= now => a.finished + 1,
        _ => now,
    }
}

/// A journal from an older agent without the systems it needs: report it, change nothing.
fn interrupted_without_systems(p: &mut Pipeline, step: Step, g: u64) -> Ending {
    let end = Ending {
        outcome: Outcome::Interrupted,
        failed_step: Some(step),
        message: Some(format!(
            "interrupted during {}; the journal does not name the systems, nothing was changed",
            step.name()
        )),
        attempted: true,
    };
    p.block(end, g)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(finished: u64) -> Attempt {
        Attempt {
            generation: Some(1),
            started: finished,
            finished,
            outcome: Outcome::Updated,
            failed_step: None,
            message: None,
        }
    }

    #[test]
    fn report_times_follow_the_clock_and_only_grow_when_it_goes_back() {
        assert_eq!(report_time(1_000, None), 1_000);
        assert_eq!(report_time(1_000, Some(&attempt(900))), 1_000);
        // Set back two hours: after the previous report, not before it.
        assert_eq!(report_time(1_000, Some(&attempt(8_200))), 8_201);
        // Two cycles in one second do not share a name.
        assert_eq!(report_time(1_000, Some(&attempt(1_000))), 1_001);
    }
}
