//! The end of every cycle: history and state, the report and log, `seen.json` (queued in the
//! outbox and uploaded), and the status the clients see.

use super::{Cycle, Ending, Pipeline};
use crate::agent::pipeline::build::gcroot;
use crate::agent::pipeline::sources;
use crate::agent::pipeline::system;
use crate::agent::report::{enqueue_report, enqueue_seen};
use crate::agent::state::Attempt;
use crate::cycle::CycleReport;
use crate::publication::report::{self, Report, Seen};
use crate::source;
use crate::status::{unix_now, LastUpdate, Phase};

impl Pipeline {
    /// Ends a cycle: history, state, report, `seen.json`, status.
    pub(super) fn finish(&mut self, mut cy: Cycle, mut end: Ending) -> CycleReport {
        if let Some(said) = cy.mismatch.take() {
            end.message = Some(match end.message.take() {
                Some(m) => format!("{m} ({said})"),
                None => said,
            });
        }
        // Committed (the profile holds it), rolled back or failed: the build's root goes.
        if let Err(e) = gcroot::release(&self.config.state_dir) {
            cy.runner
                .note(&format!("build: cannot drop its GC root: {e}"));
        }
        let now = unix_now();
        let reboot_needed = system::reboot_needed(&self.config.system);
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
        let reported_at = self.record(&mut cy, &end, now);
        if let Err(e) = crate::agent::metrics::Counters::record_cycle(
            &self.config.state_dir,
            end.outcome,
            &cy.durations,
            cy.downloaded_bytes,
        ) {
            tracing::warn!("metrics: {e}");
        }
        let log = cy.runner.log();
        if end.attempted {
            if let Some(g) = cy.generation {
                self.enqueue_report(&cy, &end, g, reported_at, reboot_needed, &log);
            }
        }
        if cy.server_reached {
            // The cycle is over: whatever it applied is in the report.
            let seen = self.seen(now, None, reboot_needed);
            if let Err(e) = enqueue_seen(&self.outbox, &seen) {
                tracing::error!("queueing seen.json: {e}");
            }
        }
        self.upload(&mut cy);
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

    /// Clears the journal and records an attempted cycle in the history; saves the state.
    /// Returns the time the cycle's report is named after.
    fn record(&mut self, cy: &mut Cycle, end: &Ending, now: u64) -> u64 {
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
        reported_at
    }

    /// Queues the report of generation `g` and its log in the outbox.
    fn enqueue_report(
        &self,
        cy: &Cycle,
        end: &Ending,
        g: u64,
        reported_at: u64,
        reboot_needed: bool,
        log: &str,
    ) {
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
            built_by: cy.built_by,
            cache_bytes: cy.cache_bytes,
            note: cy.note.clone(),
            drifted_from: cy.drifted_from.clone(),
        };
        if let Err(e) = enqueue_report(&self.outbox, &r, log) {
            tracing::error!("queueing the report: {e}");
        }
    }

    /// Sends what the outbox holds to `report_to`: through the check's connection when that is
    /// the server that served it; after an activation it may be gone, so through a fresh one.
    /// What is not sent waits for the next contact.
    fn upload(&mut self, cy: &mut Cycle) {
        if self.outbox.pending().is_empty() {
            return;
        }
        let reused = self
            .report_connection(cy)
            .is_some_and(|s| self.outbox.flush(s.as_mut()).is_ok());
        cy.source = None;
        if !reused {
            let sent = sources::open_report_to(&self.config)
                .and_then(|mut s| self.outbox.flush(s.as_mut()).map_err(|e| e.to_string()));
            if let Err(e) = sent {
                tracing::warn!("reports stay queued for the next contact: {e}");
            }
        }
    }

    /// The check's connection, when it is to `report_to`.
    fn report_connection<'c>(&self, cy: &'c mut Cycle) -> Option<&'c mut Box<dyn source::Source>> {
        if cy.served_by.is_some() && cy.served_by == self.config.report_to {
            cy.source.as_mut()
        } else {
            None
        }
    }

    /// What `logs/seen.json` says about this machine now.
    pub(super) fn seen(&self, now: u64, updating_to: Option<u64>, reboot_needed: bool) -> Seen {
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
            tiffin_system: self.state.state.running_system.clone(),
            rolled_back_to: self
                .state
                .state
                .last_rollback
                .as_ref()
                .map(|r| r.to_system.clone()),
        }
    }

    /// `running` when tiffin left another system running and its last rollback did not go to
    /// it: someone switched the machine by hand.
    pub(super) fn drift(&self, running: Option<&String>) -> Option<String> {
        let st = &self.state.state;
        let left = st.running_system.as_ref()?;
        let back = st.last_rollback.as_ref().map(|r| &r.to_system);
        running.filter(|r| *r != left && Some(*r) != back).cloned()
    }

    /// Tells the server, before a long build, that this machine is updating to `g`, so that
    /// `fleet status` shows "updating" instead of a stale state. Best effort: the connection of
    /// the check is used, and a failure only leaves the announcement queued.
    pub(super) fn announce_updating(&mut self, cy: &mut Cycle, g: u64) {
        let seen = self.seen(
            unix_now(),
            Some(g),
            system::reboot_needed(&self.config.system),
        );
        if let Err(e) = enqueue_seen(&self.outbox, &seen) {
            tracing::warn!("queueing seen.json: {e}");
            return;
        }
        if let Some(src) = self.report_connection(cy) {
            if let Err(e) = self.outbox.flush(src.as_mut()) {
                tracing::warn!("announcing the update to the server: {e}");
            }
        }
    }

    /// Copies what the status shows from the persistent state.
    pub(super) fn publish_state(&self) {
        let st = &self.state.state;
        let sys = &self.config.system;
        let current = system::current_system(sys);
        let reboot = system::reboot_needed(sys);
        self.status.update(|s| {
            s.applied_generation = st.applied_generation;
            s.applied_at = st.applied_at;
            s.available_generation = st.available.as_ref().map(|a| a.generation);
            s.deadline = st.available.as_ref().and_then(|a| a.deadline);
            s.available_note = st.available.as_ref().and_then(|a| a.note.clone());
            s.available_changes = st.available.as_ref().and_then(|a| a.changes.clone());
            s.applied_note = st.applied_note.clone();
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
pub(super) fn report_time(now: u64, previous: Option<&Attempt>) -> u64 {
    match previous {
        Some(a) if a.finished >= now => a.finished + 1,
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Outcome;

    pub(super) fn attempt(finished: u64) -> Attempt {
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
    pub(super) fn report_times_follow_the_clock_and_only_grow_when_it_goes_back() {
        assert_eq!(report_time(1_000, None), 1_000);
        assert_eq!(report_time(1_000, Some(&attempt(900))), 1_000);
        // Set back two hours: after the previous report, not before it.
        assert_eq!(report_time(1_000, Some(&attempt(8_200))), 8_201);
        // Two cycles in one second do not share a name.
        assert_eq!(report_time(1_000, Some(&attempt(1_000))), 1_001);
    }
}
