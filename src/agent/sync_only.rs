//! `SyncOnlyRunner`: a stand-in [`CycleRunner`] that does the real fetch (check, delta download,
//! atomic swap) and the real status updates, but no build, activation or rollback.
//!
//! It lets the daemon run end to end until the full pipeline (`agent::pipeline::Pipeline`)
//! replaces it; "applying" a generation here only records it as applied.

use super::cycle::{CycleReport, CycleRequest, CycleRunner};
use super::fetch::{self, FetchError, SyncOutcome};
use super::status_cell::StatusCell;
use crate::config::AgentConfig;
use crate::source;
use crate::status::{unix_now, CheckResult, LastCheck, LastUpdate, Outcome, Phase, Policy};
use std::fmt::Write as _;

pub struct SyncOnlyRunner {
    config: AgentConfig,
    status: StatusCell,
    log: Option<String>,
}

impl SyncOnlyRunner {
    pub fn new(config: AgentConfig, status: StatusCell) -> Self {
        // What an earlier run fetched counts as applied: there is nothing else to apply.
        if let Ok(Some(local)) = fetch::FetchDirs::new(&config.state_dir).local_tree() {
            status.update(|s| s.applied_generation = Some(local.generation));
        }
        Self {
            config,
            status,
            log: None,
        }
    }

    fn sync(&self, log: &mut String) -> Result<SyncOutcome, FetchError> {
        let mut src = source::open(&self.config)?;
        let _ = writeln!(log, "checking {}", src.describe());
        let status = &self.status;
        fetch::sync(
            &mut *src,
            &self.config.state_dir,
            &self.config.host,
            &mut |p| {
                status.update(|s| {
                    s.phase = Phase::Downloading;
                    s.progress = Some(p);
                })
            },
        )
    }
}

impl CycleRunner for SyncOnlyRunner {
    fn run_cycle(&mut self, req: CycleRequest) -> CycleReport {
        let mut log = String::new();
        self.status.update(|s| {
            s.phase = Phase::Checking;
            s.progress = None;
        });
        let result = self.sync(&mut log);
        let now = unix_now();
        let apply = match req {
            CycleRequest::Update => true,
            CycleRequest::Scheduled => self.config.policy == Policy::Auto,
            CycleRequest::Check => false,
        };
        let report = match result {
            Ok(SyncOutcome::NothingPublished) => {
                let _ = writeln!(log, "nothing is published for this host yet");
                self.status.update(|s| {
                    s.server_reachable = Some(true);
                    s.last_check = Some(LastCheck {
                        at: now,
                        result: CheckResult::UpToDate,
                        message: Some("nothing published yet".into()),
                    });
                });
                report(Outcome::UpToDate, None, None, None)
            }
            Ok(SyncOutcome::Unchanged(local)) | Ok(SyncOutcome::Fetched { local, .. }) => {
                let g = local.generation;
                let applied = self.status.get().applied_generation;
                let new = applied != Some(g);
                let _ = writeln!(log, "published generation {g}; applied {applied:?}");
                self.status.update(|s| {
                    s.server_reachable = Some(true);
                    s.last_check = Some(LastCheck {
                        at: now,
                        result: if new {
                            CheckResult::UpdateAvailable
                        } else {
                            CheckResult::UpToDate
                        },
                        message: None,
                    });
                    if new && apply {
                        s.applied_generation = Some(g);
                        s.applied_at = Some(now);
                        s.available_generation = None;
                        s.last_update = Some(LastUpdate {
                            at: now,
                            generation: g,
                            outcome: Outcome::Updated,
                            failed_step: None,
                            message: None,
                        });
                    } else if new {
                        s.available_generation = Some(g);
                    }
                });
                let outcome = if new && apply {
                    Outcome::Updated
                } else {
                    Outcome::UpToDate
                };
                report(outcome, Some(g), None, None)
            }
            Err(e) => {
                let message = e.to_string();
                let _ = writeln!(log, "fetch failed: {message}");
                let unreachable = e.is_unreachable();
                self.status.update(|s| {
                    s.server_reachable = Some(!unreachable);
                    s.last_check = Some(LastCheck {
                        at: now,
                        result: if unreachable {
                            CheckResult::Unreachable
                        } else {
                            CheckResult::Failed
                        },
                        message: Some(message.clone()),
                    });
                });
                report(Outcome::Failed, None, Some("fetch"), Some(message))
            }
        };
        self.status.update(|s| {
            s.phase = Phase::Idle;
            s.progress = None;
        });
        self.log = Some(log);
        report
    }

    fn rollback(&mut self, _reason: &str) -> CycleReport {
        let message = "this agent runs the sync-only stand-in, which cannot roll back";
        self.log = Some(format!("rollback refused: {message}\n"));
        report(
            Outcome::Failed,
            None,
            Some("rollback"),
            Some(message.into()),
        )
    }

    fn last_log(&self) -> Option<String> {
        self.log.clone()
    }
}

fn report(
    outcome: Outcome,
    generation: Option<u64>,
    failed_step: Option<&str>,
    message: Option<String>,
) -> CycleReport {
    CycleReport {
        outcome,
        generation,
        failed_step: failed_step.map(str::to_owned),
        message,
    }
}
