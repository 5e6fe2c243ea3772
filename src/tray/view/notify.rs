//! The notifications: what a change between two statuses tells the user (once), the
//! confirmation before a rollback, a failed action, and the agent gone for too long.

use super::icon::waiting_generation;
use super::later::{later_key, Later};
use super::pending::later_choices;
use crate::tray::i18n::{day_clock, span, tr, tr_args};
use jiff::tz::TimeZone;

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
    /// `auto_reboot` restarts the machine soon.
    RestartPlanned,
}

/// What a notification's button does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationAction {
    UpdateNow,
    Restart,
    RollBack,
    Cancel,
    /// Postpone the waiting update (policy `notify`).
    Later(Later),
}

impl NotificationAction {
    /// The action key on org.freedesktop.Notifications.
    pub fn key(self) -> &'static str {
        match self {
            NotificationAction::UpdateNow => "update-now",
            NotificationAction::Restart => "restart",
            NotificationAction::RollBack => "roll-back",
            NotificationAction::Cancel => "cancel",
            NotificationAction::Later(l) => later_key(l),
        }
    }
    /// The button's words, in this thread's language.
    pub fn label(self) -> String {
        tr(match self {
            NotificationAction::UpdateNow => "action-update-now",
            NotificationAction::Restart => "action-restart-now",
            NotificationAction::RollBack => "action-roll-back",
            NotificationAction::Cancel => "action-cancel",
            NotificationAction::Later(Later::Hour) => "action-later-hour",
            NotificationAction::Later(Later::Tonight) => "action-later-tonight",
            NotificationAction::Later(Later::Tomorrow) => "action-later-tomorrow",
        })
    }
    pub fn from_key(key: &str) -> Option<Self> {
        [
            NotificationAction::UpdateNow,
            NotificationAction::Restart,
            NotificationAction::RollBack,
            NotificationAction::Cancel,
            NotificationAction::Later(Later::Hour),
            NotificationAction::Later(Later::Tonight),
            NotificationAction::Later(Later::Tomorrow),
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
    transitions_at(prev, next, may_restart, None)
}

/// [`transition_notifications`] at `now` in a time zone: the update notification then says when
/// it applies itself in local time and offers the "Later" choices.
fn transitions_at(
    prev: Option<&AgentStatus>,
    next: &AgentStatus,
    may_restart: bool,
    at: Option<(u64, &TimeZone)>,
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
            out.push(update_available(next, g, at));
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
                summary: tr_args("notify-rolled-back", &[("g", r.generation.into())]),
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
    let g = || [("g", u.generation.into())];
    let (kind, summary, body) = match u.outcome {
        Outcome::Updated if reboot_needed => (
            NotificationKind::UpdatedRestartNeeded,
            tr_args("notify-updated", &g()),
            tr("notify-restart-to-finish"),
        ),
        Outcome::Updated => (
            NotificationKind::Updated,
            tr_args("notify-updated", &g()),
            tr("notify-up-to-date"),
        ),
        Outcome::Failed | Outcome::Interrupted => {
            let step = u
                .failed_step
                .as_ref()
                .map(|s| tr_args("notify-failed-at", &[("step", s.name().into())]))
                .unwrap_or_else(|| tr("notify-failed"));
            let body = match &u.message {
                Some(m) => format!("{step}: {m}"),
                None => format!("{step}."),
            };
            (
                NotificationKind::UpdateFailed,
                tr_args("notify-update-failed", &g()),
                body,
            )
        }
        // Said from the rollback record when there is a new one; this covers an agent that
        // reports the outcome without one.
        Outcome::RolledBack if !rollback_new => (
            NotificationKind::RolledBack,
            tr_args("notify-rolled-back", &g()),
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
        .map(|g| tr_args("notify-current-generation", &[("g", g.into())]))
        .unwrap_or_else(|| tr("notify-current-system"));
    Notification {
        kind: NotificationKind::ConfirmRollback,
        summary: tr("notify-confirm-rollback"),
        body: tr_args(
            "notify-confirm-rollback-body",
            &[("current", current.into())],
        ),
        actions: vec![NotificationAction::RollBack, NotificationAction::Cancel],
    }
}

/// The notification of a waiting update: its note, when it applies itself (with `now` and the
/// zone, in local time), "Update now" and the "Later" choices.
pub fn update_available(s: &AgentStatus, g: u64, at: Option<(u64, &TimeZone)>) -> Notification {
    let mut body = String::new();
    if let Some(n) = &s.available_note {
        body.push_str(n);
        body.push('\n');
    }
    body.push_str(&match (s.deadline, at) {
        (Some(d), Some((now, tz))) => tr_args(
            "notify-applies-itself",
            &[("when", day_clock(d, now, tz).into())],
        ),
        (Some(_), None) => tr("notify-applies-at-deadline"),
        (None, _) => tr("notify-apply-when-it-suits"),
    });
    let mut actions = vec![NotificationAction::UpdateNow];
    if let Some((now, tz)) = at {
        actions.extend(
            later_choices(s, now, tz)
                .into_iter()
                .map(|(l, _)| NotificationAction::Later(l)),
        );
    }
    Notification {
        kind: NotificationKind::UpdateAvailable,
        summary: tr_args("update-available-generation", &[("g", g.into())]),
        body,
        actions,
    }
}

/// The warning before `auto_reboot` restarts the machine, once per planned time.
fn restart_planned(
    prev: Option<&AgentStatus>,
    next: &AgentStatus,
    tz: &TimeZone,
) -> Option<Notification> {
    let at = next.reboot_planned?;
    if prev.and_then(|p| p.reboot_planned) == Some(at) {
        return None;
    }
    Some(Notification {
        kind: NotificationKind::RestartPlanned,
        summary: tr_args(
            "notify-restart-planned",
            &[("clock", crate::timefmt::clock(at, tz).into())],
        ),
        body: tr("notify-restart-planned-body"),
        actions: vec![],
    })
}

/// Says that an action the user clicked could not start.
pub fn action_failed(what: &str, error: &str) -> Notification {
    // `what` is the app's English name of the action ("Update"); its catalog id is
    // `what-<name>` in lower case with dashes.
    let id = format!("what-{}", what.to_lowercase().replace(' ', "-"));
    let what = tr(&id);
    Notification {
        kind: NotificationKind::ActionFailed,
        summary: tr_args("notify-did-not-start", &[("what", what.into())]),
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
    /// The zone of the times the update notification names.
    pub tz: Option<TimeZone>,
    /// A postponed generation, reminded of once its time has come.
    postponed: Option<crate::status::Postponed>,
}

impl Notifier {
    pub fn new(may_restart: bool) -> Self {
        Self {
            may_restart,
            ..Self::default()
        }
    }

    /// Names times in `tz` (the local zone) rather than UTC.
    pub fn in_zone(mut self, tz: TimeZone) -> Self {
        self.tz = Some(tz);
        self
    }

    /// The notifications due now.
    pub fn observe(&mut self, next: Option<&AgentStatus>, now: u64) -> Vec<Notification> {
        match next {
            Some(s) => {
                self.unreachable_since = None;
                self.unreachable_told = false;
                let tz = self.tz.clone().unwrap_or(TimeZone::UTC);
                let mut out =
                    transitions_at(self.last.as_ref(), s, self.may_restart, Some((now, &tz)));
                let waiting = waiting_generation(s);
                let postponed = s.postponed_until(now).is_some();
                out.retain(|n| {
                    n.kind != NotificationKind::UpdateAvailable
                        || (waiting != self.announced && !postponed)
                });
                out.extend(self.reminder(s, now, &tz));
                out.extend(restart_planned(self.last.as_ref(), s, &tz));
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
                    summary: tr("notify-agent-unreachable"),
                    body: tr_args(
                        "notify-agent-unreachable-body",
                        &[("span", span(now.saturating_sub(since)).into())],
                    ),
                    actions: vec![],
                }]
            }
        }
    }

    /// The reminder of a postponed update once its time has come (once; none while the agent
    /// is busy or once the generation no longer waits).
    fn reminder(&mut self, s: &AgentStatus, now: u64, tz: &TimeZone) -> Option<Notification> {
        if s.postponed_until(now).is_some() {
            self.postponed = s.postponed;
            return None;
        }
        let p = self.postponed?;
        let g = waiting_generation(s);
        if g != Some(p.generation) {
            // Applied, superseded, or the agent is busy with it: no reminder.
            if s.phase.is_busy() {
                return None;
            }
            self.postponed = None;
            return None;
        }
        self.postponed = None;
        self.announced = g;
        Some(update_available(s, p.generation, Some((now, tz))))
    }

    /// When a postponed update is to be reminded of, if one is.
    pub fn reminder_due(&self) -> Option<u64> {
        self.postponed.map(|p| p.until)
    }

    /// When the unreachable notification falls due, if it has not been sent.
    pub fn unreachable_deadline(&self) -> Option<u64> {
        match (self.unreachable_since, self.unreachable_told) {
            (Some(since), false) => Some(since + UNREACHABLE_NOTIFY_AFTER),
            _ => None,
        }
    }
}
