//! The notifications: what a change between two statuses tells the user (once), the
//! confirmation before a rollback, a failed action, and the agent gone for too long.

use super::icon::waiting_generation;
use crate::status::{AgentStatus, LastUpdate, Outcome, Policy};

/// After this long without the agent, the user is told once (docs/tray.md).
pub const UNREACHABLE_NOTIFY_AFTER: u64 = 5 * 60;

/// The kinds of notification the tray sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    UpdateAvailable,
    Updated,
    UpdatedRestartNeeded,
    UpdateFailed,
    RolledBack,
    AgentUnreachable,
    /// Asks before rolling back (the menu's "Roll back to previous system…").
    ConfirmRollback,
    /// An action the user asked for could not start.
    ActionFailed,
    /// A backup run failed (docs/backup.md).
    BackupFailed,
    /// No backup for more than twice the schedule.
    BackupStale,
}

/// What a notification's button does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationAction {
    UpdateNow,
    Restart,
    RollBack,
    Cancel,
}

impl NotificationAction {
    /// The action key on org.freedesktop.Notifications.
    pub fn key(self) -> &'static str {
        match self {
            NotificationAction::UpdateNow => "update-now",
            NotificationAction::Restart => "restart",
            NotificationAction::RollBack => "roll-back",
            NotificationAction::Cancel => "cancel",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            NotificationAction::UpdateNow => "Update now",
            NotificationAction::Restart => "Restart",
            NotificationAction::RollBack => "Roll back",
            NotificationAction::Cancel => "Cancel",
        }
    }
    pub fn from_key(key: &str) -> Option<Self> {
        [
            NotificationAction::UpdateNow,
            NotificationAction::Restart,
            NotificationAction::RollBack,
            NotificationAction::Cancel,
        ]
        .into_iter()
        .find(|a| a.key() == key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub kind: NotificationKind,
    pub summary: String,
    pub body: String,
    pub actions: Vec<NotificationAction>,
}

/// The notifications for one status change between two statuses the agent sent.
///
/// `prev` is `None` at the first contact since the tray started: past outcomes are then shown in
/// the menu only, and just a pending update (something the user can act on) is announced.
/// `may_restart`: the "Restart" action is offered (the machine can be restarted from the session).
pub fn transition_notifications(
    prev: Option<&AgentStatus>,
    next: &AgentStatus,
    may_restart: bool,
) -> Vec<Notification> {
    let mut out = match prev {
        Some(p) => ended_notifications(p, next, may_restart),
        None => Vec::new(),
    };

    // A pending update is announced when it is new and waits for the user (policy `notify`);
    // under `auto` the agent applies it at once and "Updated" follows.
    // A generation whose update just ended (failed, rolled back) has been spoken of already.
    let just_reported = out
        .iter()
        .any(|n| n.kind != NotificationKind::Updated)
        .then(|| next.last_update.as_ref().map(|u| u.generation))
        .flatten();
    if let Some(g) = waiting_generation(next) {
        if next.policy == Policy::Notify
            && prev.and_then(waiting_generation) != Some(g)
            && just_reported != Some(g)
        {
            let body = match next.deadline {
                Some(_) => "It is applied by itself at the deadline if you do not.".into(),
                None => "Apply it when it suits you.".into(),
            };
            out.push(Notification {
                kind: NotificationKind::UpdateAvailable,
                summary: format!("Update available: generation {g}"),
                body,
                actions: vec![NotificationAction::UpdateNow],
            });
        }
    }
    out
}

/// What changed between two statuses: a new rollback record, a new update outcome.
fn ended_notifications(
    p: &AgentStatus,
    next: &AgentStatus,
    may_restart: bool,
) -> Vec<Notification> {
    let mut out = Vec::new();
    let rollback_new = next.rollback.last.is_some()
        && next.rollback.last.as_ref().map(|r| r.at) != p.rollback.last.as_ref().map(|r| r.at);
    let update_new = next.last_update.is_some()
        && next
            .last_update
            .as_ref()
            .map(|u| (u.at, u.generation, u.outcome))
            != p.last_update
                .as_ref()
                .map(|u| (u.at, u.generation, u.outcome));
    if rollback_new {
        if let Some(r) = &next.rollback.last {
            out.push(Notification {
                kind: NotificationKind::RolledBack,
                summary: format!("Generation {} was rolled back", r.generation),
                body: r.reason.clone(),
                actions: vec![],
            });
        }
    }
    if let (true, Some(u)) = (update_new, &next.last_update) {
        out.extend(outcome_notification(
            u,
            next.reboot_needed,
            rollback_new,
            may_restart,
        ));
    }
    out
}

/// What the user is told of an update's outcome (`None`: nothing, or said already from the
/// rollback record).
fn outcome_notification(
    u: &LastUpdate,
    reboot_needed: bool,
    rollback_new: bool,
    may_restart: bool,
) -> Option<Notification> {
    let (kind, summary, body) = match u.outcome {
        Outcome::Updated if reboot_needed => (
            NotificationKind::UpdatedRestartNeeded,
            format!("Updated to generation {}", u.generation),
            "Restart to finish the update.".to_string(),
        ),
        Outcome::Updated => (
            NotificationKind::Updated,
            format!("Updated to generation {}", u.generation),
            "The system is up to date.".to_string(),
        ),
        Outcome::Failed | Outcome::Interrupted => {
            let step = u
                .failed_step
                .as_ref()
                .map(|s| format!("Failed at {s}"))
                .unwrap_or_else(|| "Failed".into());
            let body = match &u.message {
                Some(m) => format!("{step}: {m}"),
                None => format!("{step}."),
            };
            (
                NotificationKind::UpdateFailed,
                format!("Update to generation {} failed", u.generation),
                body,
            )
        }
        // Said from the rollback record when there is a new one; this covers an agent that
        // reports the outcome without one.
        Outcome::RolledBack if !rollback_new => (
            NotificationKind::RolledBack,
            format!("Generation {} was rolled back", u.generation),
            u.message.clone().unwrap_or_default(),
        ),
        Outcome::RolledBack | Outcome::UpToDate => return None,
    };
    let actions = if kind == NotificationKind::UpdatedRestartNeeded && may_restart {
        vec![NotificationAction::Restart]
    } else {
        vec![]
    };
    Some(Notification {
        kind,
        summary,
        body,
        actions,
    })
}

/// The question asked before a rollback.
pub fn rollback_confirmation(status: Option<&AgentStatus>) -> Notification {
    let current = status
        .and_then(|s| s.applied_generation)
        .map(|g| format!("generation {g}"))
        .unwrap_or_else(|| "the current system".into());
    Notification {
        kind: NotificationKind::ConfirmRollback,
        summary: "Roll back to the previous system?".into(),
        body: format!("This leaves {current} and activates the system before it."),
        actions: vec![NotificationAction::RollBack, NotificationAction::Cancel],
    }
}

/// Says that an action the user clicked could not start.
pub fn action_failed(what: &str, error: &str) -> Notification {
    Notification {
        kind: NotificationKind::ActionFailed,
        summary: format!("{what} did not start"),
        body: error.to_string(),
        actions: vec![],
    }
}

/// Remembers what has been said, so that one event gives one notification. Pure: the caller
/// feeds it every status (or `None` while the agent is unreachable) and the time.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    /// The last status the agent sent; kept over an outage so a reconnect repeats nothing.
    last: Option<AgentStatus>,
    unreachable_since: Option<u64>,
    unreachable_told: bool,
    /// The last generation announced as available: a failed or cancelled update of it does not
    /// announce it again.
    announced: Option<u64>,
    pub may_restart: bool,
    /// What was said about backups.
    backup: super::backup::BackupNotes,
}

impl Notifier {
    pub fn new(may_restart: bool) -> Self {
        Self {
            may_restart,
            ..Self::default()
        }
    }

    /// The notifications due now.
    pub fn observe(&mut self, next: Option<&AgentStatus>, now: u64) -> Vec<Notification> {
        match next {
            Some(s) => {
                self.unreachable_since = None;
                self.unreachable_told = false;
                let mut out = transition_notifications(self.last.as_ref(), s, self.may_restart);
                let waiting = waiting_generation(s);
                out.retain(|n| {
                    n.kind != NotificationKind::UpdateAvailable || waiting != self.announced
                });
                if out
                    .iter()
                    .any(|n| n.kind == NotificationKind::UpdateAvailable)
                {
                    self.announced = waiting;
                }
                out.extend(
                    self.backup
                        .observe(s, now)
                        .into_iter()
                        .map(|n| Notification {
                            kind: if n.stale {
                                NotificationKind::BackupStale
                            } else {
                                NotificationKind::BackupFailed
                            },
                            summary: n.summary,
                            body: n.body,
                            actions: vec![],
                        }),
                );
                self.last = Some(s.clone());
                out
            }
            None => {
                let since = *self.unreachable_since.get_or_insert(now);
                if self.unreachable_told || now.saturating_sub(since) < UNREACHABLE_NOTIFY_AFTER {
                    return vec![];
                }
                self.unreachable_told = true;
                vec![Notification {
                    kind: NotificationKind::AgentUnreachable,
                    summary: "tiffin agent not reachable".into(),
                    body: format!(
                        "No contact for {}; updates are not being applied.",
                        crate::timefmt::span(now.saturating_sub(since))
                    ),
                    actions: vec![],
                }]
            }
        }
    }

    /// When the unreachable notification falls due, if it has not been sent.
    pub fn unreachable_deadline(&self) -> Option<u64> {
        match (self.unreachable_since, self.unreachable_told) {
            (Some(since), false) => Some(since + UNREACHABLE_NOTIFY_AFTER),
            _ => None,
        }
    }
}
