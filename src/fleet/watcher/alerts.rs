//! The alert command: run (`sh -c CMD`, the event as one JSON object on stdin) on every
//! transition of a host to failing, rolled back, stale or drifted, and of the rollout to halted.
//! A state already alerted is not alerted again until the host (or the rollout) left it. At
//! start every host in one of those states is alerted once.

use crate::fleet::rollout::RolloutState;
use crate::fleet::status::{FleetStatus, HostState, HostStatus};
use crate::publication::report::{outcome_word, rfc3339};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};

/// One alert, as the command reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertEvent {
    /// `failing`, `rolled_back`, `stale`, `drifted` or `halted`.
    pub event: String,
    pub host: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// The state before (`null` at the watcher's start).
    pub previous: Option<String>,
    pub generation: Option<u64>,
    pub release: Option<String>,
    pub step: Option<String>,
    pub message: Option<String>,
}

/// Remembers what was alerted; runs the command.
pub struct Alerts {
    command: Option<String>,
    hosts: BTreeMap<String, HostState>,
    halted: Option<String>,
    running: Vec<Child>,
    /// Every event sent (or that would be, without a command), oldest first; for tests.
    pub sent: Vec<AlertEvent>,
}

fn word(s: HostState) -> Option<&'static str> {
    match s {
        HostState::Failing => Some("failing"),
        HostState::RolledBack => Some("rolled_back"),
        HostState::NotSeen => Some("stale"),
        HostState::Drifted => Some("drifted"),
        _ => None,
    }
}

impl Alerts {
    pub fn new(command: Option<String>) -> Self {
        Self {
            command,
            hosts: BTreeMap::new(),
            halted: None,
            running: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Compares the fleet with the last look and alerts each transition.
    pub fn observe(&mut self, status: &FleetStatus, rollout: &RolloutState, now: u64) {
        self.running
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        for h in status.hosts.iter().filter(|h| h.in_fleet_toml) {
            let before = self.hosts.insert(h.host.clone(), h.state);
            let Some(event) = word(h.state) else { continue };
            if before == Some(h.state) {
                continue;
            }
            let r = h.last_report.as_ref();
            self.send(AlertEvent {
                event: event.into(),
                host: h.host.clone(),
                at: rfc3339(now),
                previous: before.map(|b| b.label().replace(' ', "_")),
                generation: r.map(|r| r.generation).or(h.running_generation),
                release: rollout.release.as_ref().map(|r| r.id.clone()),
                step: r.and_then(|r| r.failed_step).map(|s| s.to_string()),
                message: message(h),
            });
        }
        let halt = rollout
            .release
            .as_ref()
            .and_then(|r| r.halted.as_ref().map(|h| (r.id.clone(), h.clone())));
        match halt {
            Some((id, h)) if self.halted.as_deref() != Some(id.as_str()) => {
                self.halted = Some(id.clone());
                self.send(AlertEvent {
                    event: "halted".into(),
                    host: h.host.clone(),
                    at: rfc3339(now),
                    previous: None,
                    generation: Some(h.generation),
                    release: Some(id),
                    step: h.step.clone(),
                    message: Some(match &h.message {
                        Some(m) => format!("{}: {m}", h.outcome),
                        None => h.outcome.clone(),
                    }),
                });
            }
            Some(_) => {}
            None => self.halted = None,
        }
    }

    fn send(&mut self, e: AlertEvent) {
        tracing::warn!("alert: {} {}", e.event, e.host);
        if let Some(cmd) = &self.command {
            match spawn(cmd, &e) {
                Ok(c) => self.running.push(c),
                Err(err) => tracing::warn!("--alert-command {cmd:?}: {err}"),
            }
        }
        self.sent.push(e);
    }
}

/// What the event says besides its name: the report's message, how long the host has been
/// silent, or which system it was found running.
fn message(h: &HostStatus) -> Option<String> {
    let r = h.last_report.as_ref();
    match h.state {
        HostState::NotSeen => h
            .last_seen_age_secs
            .map(|a| format!("no contact for {a} s (interval {} s)", h.interval_secs)),
        HostState::Drifted => match r.and_then(|r| r.drifted_from.clone()) {
            Some(hand) => Some(format!(
                "was switched by hand to {hand}; tiffin applied its generation again"
            )),
            None => Some(format!(
                "runs {}; tiffin left {}",
                h.running_system.as_deref().unwrap_or("-"),
                h.tiffin_system.as_deref().unwrap_or("-")
            )),
        },
        _ => r.and_then(|r| r.message.clone().or_else(|| Some(outcome_word(r.outcome)))),
    }
}

/// Starts the command with the event on its stdin; it is reaped at a later look.
fn spawn(cmd: &str, e: &AlertEvent) -> std::io::Result<Child> {
    let mut child = Command::new("/bin/sh")
        .args(["-c", cmd])
        .stdin(Stdio::piped())
        .spawn()?;
    let mut json = serde_json::to_vec(e).map_err(std::io::Error::other)?;
    json.push(b'\n');
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin still runs.
        let _ = stdin.write_all(&json);
    }
    Ok(child)
}
