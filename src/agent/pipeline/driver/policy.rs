//! The start of a cycle: check the server and fetch (under the trust policy), then decide
//! what the policy allows — nothing new, a blocked generation, "available" (a check, or
//! `notify` before its deadline), or apply.

use super::{Cycle, Ending, Pipeline};
use crate::agent::pipeline::fetch::{self, LocalTree, SyncOutcome};
use crate::agent::pipeline::sources;
use crate::agent::pipeline::system;
use crate::agent::state::Available;
use crate::cycle::CycleRequest;
use crate::publication::report;
use crate::source;
use crate::status::Step;
use crate::status::{unix_now, CheckResult, LastCheck, Outcome, Phase, Policy};
use std::time::Instant;

impl Pipeline {
    /// One cycle: the check (and fetch), then what the policy makes of the generation found.
    pub(super) fn cycle(&mut self, req: CycleRequest, cy: &mut Cycle) -> Ending {
        self.set_phase(Phase::Checking);
        cy.system_before = system::current_system(&self.config.system);
        cy.system_after = cy.system_before.clone();
        cy.drifted_from = self.drift(cy.system_before.as_ref());
        journal_or_stop!(self.journal(cy, Step::Fetch, None), Step::Fetch);
        let local = match self.check_and_fetch(cy) {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Ending::quiet(Outcome::UpToDate, "nothing is published for this host yet")
            }
            Err(end) => return end,
        };
        let g = local.generation;
        cy.generation = Some(g);
        cy.note = local.manifest.note.clone();
        cy.changes = local.manifest.changes.clone();
        self.state.state.forget_older_than(g);
        if let Some(end) = self.decide(req, cy, g) {
            return end;
        }
        self.announce_updating(cy, g);
        let end = self.apply(cy, g, &local.tree, &local.manifest);
        if end.outcome == Outcome::Updated && self.state.state.applied_generation == Some(g) {
            self.state.state.applied_note = cy.note.clone();
        }
        end
    }

    /// Checks the server and fetches what it publishes for this host (`None`: nothing yet).
    /// The connection stays in `cy` for the reports.
    fn check_and_fetch(&mut self, cy: &mut Cycle) -> Result<Option<LocalTree>, Ending> {
        // Before any server is contacted: a configuration that can verify nothing fails here.
        self.trust_policy().map_err(|e| {
            cy.runner.note(&format!("fetch: {e}"));
            self.checked(CheckResult::Failed, Some(e.clone()));
            Ending::failed(Step::Fetch, e, false)
        })?;
        let t = Instant::now();
        let (mut src, trust) = self.serving_source(cy, t)?;
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
            Ok(SyncOutcome::NothingPublished) => None,
            Ok(SyncOutcome::Unchanged(l)) => Some(l),
            Ok(SyncOutcome::Fetched {
                local,
                downloaded_files,
                downloaded_bytes,
            }) => {
                cy.downloaded_bytes += downloaded_bytes;
                cy.runner.note(&format!(
                    "fetch: generation {} ({downloaded_files} files, {downloaded_bytes} bytes downloaded)",
                    local.generation
                ));
                Some(local)
            }
            Err(e) => return Err(self.fetch_failed(cy, src.as_mut(), e)),
        };
        cy.server_reached = true;
        if let Some(l) = &local {
            let st = &mut self.state.state;
            st.highest_seen_generation = st.highest_seen_generation.max(Some(l.generation));
        }
        match local {
            Some(l) => {
                cy.source = Some(src);
                Ok(Some(l))
            }
            None => {
                self.checked(CheckResult::UpToDate, None);
                Ok(None)
            }
        }
    }

    /// The source that serves this cycle (agent.toml `sources`, in order, stale ones skipped)
    /// and the trust policy for it; recorded in `cy` and the status's `served_by`.
    fn serving_source(
        &mut self,
        cy: &mut Cycle,
        t: Instant,
    ) -> Result<(Box<dyn source::Source>, fetch::TrustPolicy), Ending> {
        let highest = self.highest_seen();
        let mut skipped = Vec::new();
        let chosen = sources::choose(&self.config, highest, &mut |m| skipped.push(m.to_string()));
        for m in &skipped {
            tracing::warn!("{m}");
            cy.runner.note(&format!("fetch: {m}"));
        }
        let sources::Chosen { url, source: src } = chosen.map_err(|e| {
            cy.took(Step::Fetch, t);
            cy.runner.note(&format!("fetch: {}", e.message));
            let result = if e.unreachable {
                CheckResult::Unreachable
            } else {
                // Reached, but refused: a changed host key, a rejected identity.
                CheckResult::Failed
            };
            self.checked(result, Some(e.message.clone()));
            Ending::failed(Step::Fetch, e.message, false)
        })?;
        self.status.update(|s| s.served_by = Some(url.to_string()));
        // Trust is per source: an http(s):// one always needs a signed publication.
        let applied = self.state.state.applied_generation;
        let trust = fetch::TrustPolicy::for_source(&self.config, &url, applied).map_err(|e| {
            cy.runner.note(&format!("fetch: {e}"));
            self.checked(CheckResult::Failed, Some(e.clone()));
            Ending::failed(Step::Fetch, e, false)
        })?;
        cy.served_by = Some(url);
        Ok((src, trust))
    }

    /// A fetch that failed: what the status shows, and whether it is reported (once per
    /// generation, when the server still answers).
    fn fetch_failed(
        &mut self,
        cy: &mut Cycle,
        src: &mut dyn source::Source,
        e: fetch::FetchError,
    ) -> Ending {
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
        Ending::failed(Step::Fetch, e.to_string(), attempted)
    }

    /// What the policy makes of generation `g`: an ending when it is not applied now (blocked,
    /// applied already, only checked for, or waiting for its `notify` deadline), else `None`.
    fn decide(&mut self, req: CycleRequest, cy: &mut Cycle, g: u64) -> Option<Ending> {
        if let Some(b) = self.state.state.is_blocked(g).cloned() {
            let overridable = b.outcome == Outcome::Failed && req == CycleRequest::Retry;
            if !overridable {
                self.checked(CheckResult::UpToDate, None);
                return Some(Ending::quiet(
                    b.outcome,
                    format!(
                        "generation {g} is not retried ({}); waiting for a newer one",
                        b.reason
                    ),
                ));
            }
        }
        let current = system::current_system(&self.config.system);
        if self.state.state.applied_generation == Some(g)
            && current.is_some()
            && current == self.state.state.running_system
        {
            self.checked(CheckResult::UpToDate, None);
            self.state.state.available = None;
            return Some(Ending::quiet(
                Outcome::UpToDate,
                format!("generation {g} is applied"),
            ));
        }
        self.checked(CheckResult::UpdateAvailable, None);
        let notify = self.config.policy == Policy::Notify;
        if req == CycleRequest::Check {
            self.mark_available(g, notify, cy);
            return Some(Ending::quiet(
                Outcome::UpToDate,
                format!("generation {g} is available"),
            ));
        }
        if notify && req == CycleRequest::Scheduled {
            let deadline = self.mark_available(g, true, cy);
            if deadline.is_some_and(|d| unix_now() < d) {
                return Some(Ending::quiet(
                    Outcome::UpToDate,
                    format!(
                        "generation {g} is available; it is applied on request or at {}",
                        report::rfc3339(deadline.unwrap_or(0))
                    ),
                ));
            }
            cy.runner.note(&format!(
                "generation {g}: the deadline has passed; applying"
            ));
        }
        None
    }

    /// What every manifest must satisfy (`trusted_key`, `allow_unsigned`, `max_age`) and not
    /// older than what is applied.
    pub(super) fn trust_policy(&self) -> Result<fetch::TrustPolicy, String> {
        fetch::TrustPolicy::from_config(&self.config, self.state.state.applied_generation)
    }

    /// The highest generation this machine has seen: accepted from a source, or applied.
    fn highest_seen(&self) -> Option<u64> {
        let st = &self.state.state;
        st.highest_seen_generation.max(st.applied_generation)
    }

    pub(super) fn checked(&self, result: CheckResult, message: Option<String>) {
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
    pub(super) fn mark_available(
        &mut self,
        g: u64,
        with_deadline: bool,
        cy: &Cycle,
    ) -> Option<u64> {
        let (note, changes) = (cy.note.clone(), cy.changes.clone());
        let now = unix_now();
        let a = match self.state.state.available.take() {
            Some(a) if a.generation == g => a,
            _ => Available {
                generation: g,
                found_at: now,
                deadline: None,
                note: None,
                changes: None,
            },
        };
        let deadline = match a.deadline {
            Some(d) => Some(d),
            None if with_deadline => Some(now + self.config.deadline.as_secs()),
            None => None,
        };
        self.state.state.available = Some(Available {
            deadline,
            note,
            changes,
            ..a
        });
        deadline
    }
}
