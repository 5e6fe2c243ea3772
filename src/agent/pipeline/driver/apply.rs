//! Applying a fetched generation: build, install files, test-activate, verify, then hand over
//! to commit (or to rollback when a step fails).

use super::{Cycle, Ending, Pipeline};
use crate::agent::pipeline::build::{self, gcroot};
use crate::agent::pipeline::prebuilt::{self, Route};
use crate::agent::pipeline::{activate, files, system, verify};
use crate::config::Operation;
use crate::manifest::Manifest;
use crate::status::{BuiltBy, Step};
use crate::status::{Outcome, Phase};
use std::path::Path;
use std::time::Instant;

impl Pipeline {
    /// Build, install files, activate, verify, commit (or roll back) generation `g`.
    pub(super) fn apply(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        tree: &Path,
        manifest: &Manifest,
    ) -> Ending {
        let sys = &self.config.system;
        let Some(prev) = system::current_system(sys) else {
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
        let new = match self.build_step(cy, g, tree, manifest) {
            Ok(new) => new,
            Err(end) => return end,
        };
        let installed = match self.files_step(cy, g, tree, manifest, &new) {
            Ok(n) => n,
            Err(end) => return end,
        };
        if new == prev {
            if installed == 0 {
                self.keep_files(cy, false);
                self.applied(g, &new, None);
                return Ending {
                    outcome: Outcome::UpToDate,
                    failed_step: None,
                    message: Some(format!("generation {g} builds the running system")),
                    attempted: true,
                };
            }
            // Changed files can cut a machine off as surely as a new system: verify.
            return self.verify_and_commit(cy, g, &prev, &new);
        }
        if self.config.operation == Operation::Boot {
            return self.commit_step(cy, g, &prev, &new, false);
        }
        self.activate_step(cy, g, &prev, &new)
    }

    /// Builds the tree; returns the new system's store path.
    fn build_step(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        tree: &Path,
        manifest: &Manifest,
    ) -> Result<String, Ending> {
        self.set_phase(Phase::Building);
        if let Err(why) = self.journal(cy, Step::Build, None) {
            return Err(Ending::failed(Step::Build, why, true));
        }
        let t = Instant::now();
        match prebuilt::route(self.config.build, manifest) {
            Err(why) => {
                cy.took(Step::Build, t);
                return Err(self.block(Ending::failed(Step::Build, why, true), g));
            }
            Ok(Route::Cache) => {
                let from_cache = self.import_from_cache(cy, g, manifest);
                cy.took(Step::Build, t);
                return from_cache;
            }
            Ok(Route::Local) => cy.built_by = Some(BuiltBy::Local),
        }
        let sys = &self.config.system;
        let built = build::build_view(tree, &self.config.state_dir)
            .map_err(|e| format!("preparing the tree for Nix: {e}"))
            .and_then(|view| {
                let root = gcroot::link(&self.config.state_dir);
                let limit = self.config.build_timeout;
                build::build_system(&cy.runner, sys, &view, &self.config.host, &root, limit)
            });
        cy.took(Step::Build, t);
        let new = match built {
            Ok(p) => p,
            Err(why) => return Err(self.block(Ending::failed(Step::Build, why, true), g)),
        };
        cy.runner.note(&format!("build: {new}"));
        if let Some(expected) = manifest.expected_system.as_deref() {
            if expected != new {
                // Not fatal: a local build may differ (another nixpkgs channel, impure inputs),
                // but the admin built something else before publishing.
                let said = format!("the publication expected {expected}; this machine built {new}");
                cy.runner.note(&format!("build: {said}"));
                cy.mismatch = Some(said);
            }
        }
        Ok(new)
    }

    /// Plans and installs the tree's files (before activation: the new system's services read
    /// them); returns how many changed. A failure puts the previous files back.
    fn files_step(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        tree: &Path,
        manifest: &Manifest,
        new: &str,
    ) -> Result<usize, Ending> {
        let t = Instant::now();
        let files_root = &self.config.system.files_root;
        let state_dir = &self.config.state_dir;
        let plan =
            files::plan_opening(tree, manifest, files_root, state_dir, &self.config.identity);
        cy.took(Step::Files, t);
        let plan = match plan {
            Ok(p) => p,
            Err(e) => return Err(self.block(Ending::failed(Step::Files, e.to_string(), true), g)),
        };
        if let Err(why) = self.journal(cy, Step::Files, Some(new)) {
            return Err(Ending::failed(Step::Files, why, true));
        }
        let t = Instant::now();
        let installed = files::apply(plan, &self.config.state_dir, &cy.runner);
        cy.took(Step::Files, t);
        installed.map_err(|e| {
            self.undo_files(cy);
            self.block(Ending::failed(Step::Files, e.to_string(), true), g)
        })
    }

    /// Test-activates `new`, then verifies it; a failed activation rolls back to `prev`.
    fn activate_step(&mut self, cy: &mut Cycle, g: u64, prev: &str, new: &str) -> Ending {
        self.set_phase(Phase::Activating);
        if let Err(why) = self.journal(cy, Step::Activate, Some(new)) {
            self.undo_files(cy);
            return Ending::failed(Step::Activate, why, true);
        }
        let t = Instant::now();
        let unit = format!("tiffin-activate-{g}");
        let limit = self.config.activate_timeout;
        let sys = &self.config.system;
        let activated = activate::activate_test(&cy.runner, sys, new, &unit, limit);
        cy.took(Step::Activate, t);
        if let Err(why) = activated {
            return self.roll_back(cy, g, prev, new, Some(Step::Activate), &why, false);
        }
        cy.system_after = system::current_system(&self.config.system);
        self.verify_and_commit(cy, g, prev, new)
    }

    /// Verifies the running system; commits it when it passes, rolls back to `prev` otherwise.
    pub(super) fn verify_and_commit(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        prev: &str,
        new: &str,
    ) -> Ending {
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
}
