//! Rolling back: the previous system and its files again, after a failed step or on an admin's
//! request (then also the boot default); the generation is not retried.

use super::{Cycle, Ending, Pipeline};
use crate::agent::pipeline::{activate, commit, files, system};
use crate::agent::state::{DoNotRetry, Journal};
use crate::cycle::CycleReport;
use crate::publication::report;
use crate::status::Step;
use crate::status::{unix_now, Outcome, Phase, RollbackInfo};
use std::time::Instant;

impl Pipeline {
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

    /// Re-activates `prev` (and with `commit_previous`, makes it the boot default again — the
    /// manual rollback). The generation is not retried.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn roll_back(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        prev: &str,
        from: &str,
        failed: Option<Step>,
        why: &str,
        commit_previous: bool,
    ) -> Ending {
        self.set_phase(Phase::RollingBack);
        let reason = match failed {
            Some(s) => format!("{} failed: {why}", s.name()),
            None => why.to_string(),
        };
        cy.runner.note(&format!("rolling back to {prev}: {reason}"));
        self.state.state.journal = Some(Journal {
            step: Step::RollBack,
            generation: Some(g),
            started: cy.started,
            previous_system: Some(prev.to_string()),
            new_system: Some(from.to_string()),
            manual_rollback: commit_previous,
        });
        if let Err(e) = self.state.save() {
            cy.runner.note(&format!("state: {e}"));
        }
        let t = Instant::now();
        self.restore_files(cy, commit_previous);
        let commit = commit_previous || failed == Some(Step::Commit);
        let result = self.switch_back(cy, g, prev, from, commit, commit_previous);
        cy.took(Step::RollBack, t);
        cy.system_after = system::current_system(&self.config.system);
        match result {
            Ok(()) => {
                self.rolled_back(g, prev, from, &reason, commit_previous);
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

    /// The files of a rollback: those of the generation a manual rollback returns to, else
    /// what this cycle (or the interrupted one) changed, put back.
    fn restore_files(&self, cy: &mut Cycle, manual: bool) {
        if !manual {
            self.undo_files(cy);
            return;
        }
        match files::restore_previous(&self.config.state_dir, &cy.runner) {
            Ok(true) => {}
            Ok(false) => cy.runner.note(
                "files: no record of the previous generation's files; they are left as they are",
            ),
            Err(e) => cy.runner.note(&format!(
                "files: putting the previous generation's files back failed: {e}"
            )),
        }
    }

    /// Activates `prev` again (unless it still runs); with `profile`, the profile names it again
    /// too (with `boot_default`, by a full commit: the manual rollback).
    fn switch_back(
        &self,
        cy: &mut Cycle,
        g: u64,
        prev: &str,
        from: &str,
        profile: bool,
        boot_default: bool,
    ) -> Result<(), String> {
        let sys = &self.config.system;
        let limit = self.config.activate_timeout;
        if from != prev {
            let unit = format!("tiffin-rollback-{g}");
            activate::activate_test(&cy.runner, sys, prev, &unit, limit)?;
        }
        if !profile {
            return Ok(());
        }
        // The profile may already name the failed system: point it back.
        if boot_default {
            commit::commit(&cy.runner, sys, prev, limit)
        } else {
            commit::set_profile(&cy.runner, sys, prev, limit)
        }
    }

    /// Records a rollback from `from` to `prev`; `g` is not retried.
    fn rolled_back(&mut self, g: u64, prev: &str, from: &str, reason: &str, manual: bool) {
        let now = unix_now();
        let s = &mut self.state.state;
        s.last_rollback = Some(RollbackInfo {
            at: now,
            generation: g,
            from_system: from.to_string(),
            to_system: prev.to_string(),
            reason: reason.to_string(),
        });
        s.do_not_retry.insert(
            g,
            DoNotRetry {
                outcome: Outcome::RolledBack,
                reason: format!("rolled back: {reason}"),
                at: now,
            },
        );
        s.interrupted.remove(&g);
        s.running_system = Some(prev.to_string());
        if manual {
            s.applied_generation = s.previous_generation.take();
            s.previous_system = None;
            s.applied_at = Some(now);
        }
    }

    /// Puts back the files this cycle (or the interrupted one being resolved) installed or
    /// removed, from the undo record in the state directory.
    pub(super) fn undo_files(&self, cy: &mut Cycle) {
        if let Err(e) = files::restore_pending(&self.config.state_dir, &cy.runner) {
            cy.runner.note(&format!(
                "files: putting the previous files back failed: {e}"
            ));
        }
    }

    /// Marks `g` "do not retry" with the ending's reason; returns the ending.
    pub(super) fn block(&mut self, end: Ending, g: u64) -> Ending {
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
}
