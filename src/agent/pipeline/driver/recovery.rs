//! Recovery: what to do about the step an earlier agent died in, from the journal it left in
//! `state.json` — finish it, verify again, or roll back; never leave the machine between two
//! systems, and never retry for ever.

use super::{Cycle, Ending, Pipeline};
use crate::agent::pipeline::{activate, commit, system};
use crate::agent::state::{Journal, MAX_INTERRUPTED_ATTEMPTS};
use crate::status::Outcome;
use crate::status::Step;

/// The interrupted step of generation `g`, and how often it was interrupted.
struct Interrupted {
    g: u64,
    step: Step,
    count: u32,
    /// Interrupted [`MAX_INTERRUPTED_ATTEMPTS`] times: the generation is not retried.
    exhausted: bool,
}

impl Interrupted {
    /// The ending "interrupted"; after the last attempt, the generation is also blocked.
    fn ending(&self, p: &mut Pipeline) -> Ending {
        let msg = format!(
            "interrupted during {} (attempt {} of {MAX_INTERRUPTED_ATTEMPTS})",
            self.step.name(),
            self.count
        );
        let end = Ending {
            outcome: Outcome::Interrupted,
            failed_step: Some(self.step),
            message: Some(msg),
            attempted: true,
        };
        if self.exhausted {
            p.block(end, self.g)
        } else {
            end
        }
    }
}

impl Pipeline {
    /// Decides what to do about the step an earlier agent died in.
    pub(super) fn resolve_journal(&mut self, cy: &mut Cycle, j: Journal) -> Ending {
        cy.generation = j.generation;
        cy.system_before = j.previous_system.clone();
        cy.system_after = system::current_system(&self.config.system);
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
        let it = Interrupted {
            g,
            step: j.step,
            count,
            exhausted: count >= MAX_INTERRUPTED_ATTEMPTS,
        };
        match (j.step, j.previous_system, j.new_system) {
            (Step::Fetch | Step::Build, _, _) => it.ending(self),
            (Step::RollBack, Some(p), Some(n)) => self.roll_back(
                cy,
                g,
                &p,
                &n,
                None,
                "resuming a rollback that was interrupted",
                j.manual_rollback,
            ),
            (_, Some(p), Some(n)) => self.resolve_with_systems(cy, &it, &p, &n),
            (step, _, _) => interrupted_without_systems(self, step, g),
        }
    }

    /// An interrupted step after the build, from what runs now: the new system (verify it, or
    /// finish its commit), the previous one, or neither (roll back).
    fn resolve_with_systems(
        &mut self,
        cy: &mut Cycle,
        it: &Interrupted,
        p: &str,
        n: &str,
    ) -> Ending {
        let (g, step) = (it.g, it.step);
        let cur = system::current_system(&self.config.system);
        let cur = cur.as_deref();
        if cur == Some(n) && p != n {
            if it.exhausted {
                let why = format!("interrupted {} times during {}", it.count, step.name());
                self.roll_back(cy, g, p, n, Some(step), &why, false)
            } else if step == Step::Commit {
                // Verified already: finish the commit.
                self.commit_step(cy, g, p, n, true)
            } else {
                // The new system runs: it gets the verification it was due.
                self.verify_and_commit(cy, g, p, n)
            }
        } else if cur == Some(p) {
            self.resolve_previous_running(cy, it, p, n)
        } else {
            let why = format!(
                "interrupted during {}; the running system is {}",
                step.name(),
                cur.unwrap_or("unknown")
            );
            self.roll_back(cy, g, p, n, Some(step), &why, false)
        }
    }

    /// An interrupted step while the previous system `p` runs: the new one `n` never ran, or
    /// the machine went back to `p` (a reboot?) before its verification ended.
    fn resolve_previous_running(
        &mut self,
        cy: &mut Cycle,
        it: &Interrupted,
        p: &str,
        n: &str,
    ) -> Ending {
        let sys = self.config.system.clone();
        let limit = self.config.activate_timeout;
        let (g, same) = (it.g, p == n);
        match it.step {
            Step::Activate => {
                // The switch had not happened; what it may have started is undone
                // by activating the previous system again.
                let unit = format!("tiffin-rollback-{g}");
                let _ = activate::activate_test(&cy.runner, &sys, p, &unit, limit);
                cy.system_after = system::current_system(&sys);
                self.undo_files(cy);
                it.ending(self)
            }
            // Only files changed: verify them again.
            Step::Verify if same && !it.exhausted => self.verify_and_commit(cy, g, p, n),
            Step::Verify if !same => self.roll_back(
                cy,
                g,
                p,
                n,
                Some(it.step),
                "the previous system was running again (a reboot?) before verification ended",
                false,
            ),
            _ => {
                // Operation `boot`, or files only: nothing runs the new system;
                // the previous one stays the boot default.
                if !same && system::resolve_system(&sys.profile).as_deref() == Some(n) {
                    if let Err(e) = commit::set_profile(&cy.runner, &sys, p, limit) {
                        cy.runner.note(&format!("putting the profile back: {e}"));
                    }
                }
                // The previous system stays, and so do its files.
                self.undo_files(cy);
                it.ending(self)
            }
        }
    }
}

/// A journal from an older agent without the systems it needs: report it, change nothing.
pub(super) fn interrupted_without_systems(p: &mut Pipeline, step: Step, g: u64) -> Ending {
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
