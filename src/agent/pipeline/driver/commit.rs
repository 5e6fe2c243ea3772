//! Committing a verified generation: the boot default, the record of its files, and the state
//! that says it is applied.

use super::{Cycle, Ending, Pipeline};
use crate::agent::pipeline::{commit, files, system};
use crate::status::Step;
use crate::status::{unix_now, Outcome, Phase};
use std::time::Instant;

impl Pipeline {
    /// Makes `new` the boot default. `activated`: it is also the running system.
    pub(super) fn commit_step(
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
        let committed = commit::commit(&cy.runner, &self.config.system, new, limit);
        cy.took(Step::Commit, t);
        if let Err(why) = committed {
            if activated {
                return self.roll_back(cy, g, prev, new, Some(Step::Commit), &why, false);
            }
            // Operation `boot`: nothing runs the new system; put the profile and files back.
            let _ = commit::set_profile(&cy.runner, &self.config.system, prev, limit);
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

    /// The cycle's files are committed with its system: their undo record becomes the way back
    /// of a manual rollback (`new_previous`: the rollback now returns to another system).
    pub(super) fn keep_files(&self, cy: &mut Cycle, new_previous: bool) {
        if let Err(e) = files::keep_pending(&self.config.state_dir, new_previous) {
            cy.runner.note(&format!(
                "files: keeping the record of the previous files failed: {e}"
            ));
        }
    }

    /// Records that `g` with `system` is applied and running (`prev`: what ran before).
    pub(super) fn applied(&mut self, g: u64, system: &str, prev: Option<&str>) {
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
}
