//! The tray's view model: the agent's status in; icon, tooltip, menu and notifications out.
//!
//! Plain data in, plain data out, no I/O and no clock: the caller passes `now` (Unix seconds)
//! and the local UTC offset, so every state and transition can be unit-tested without GTK.

use crate::status::{AgentStatus, CheckResult, Outcome, Phase, Policy, PublicationNote};

/// After this long without the agent, the user is told once (DESIGN §6).
pub const UNREACHABLE_NOTIFY_AFTER: u64 = 5 * 60;

/// The states with a distinct icon (DESIGN §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IconKind {
    UpToDate,
    UpdateAvailable,
    /// A cycle that changes the machine is running; the download's percentage when known.
    Updating(Option<u8>),
    Failed,
    RolledBack,
    RebootNeeded,
    AgentUnreachable,
    ServerUnreachable,
}

impl IconKind {
    /// The icon's file name stem in `assets/` (`assets/<stem>.svg`, `assets/png/<size>/<stem>.png`).
    pub fn asset_stem(self) -> &'static str {
        match self {
            IconKind::UpToDate => "tiffin-up-to-date",
            IconKind::UpdateAvailable => "tiffin-update-available",
            IconKind::Updating(_) => "tiffin-updating",
            IconKind::Failed => "tiffin-failed",
            IconKind::RolledBack => "tiffin-rolled-back",
            IconKind::RebootNeeded => "tiffin-reboot-needed",
            IconKind::AgentUnreachable => "tiffin-agent-unreachable",
            IconKind::ServerUnreachable => "tiffin-server-unreachable",
        }
    }

    /// One of each icon, for tests and asset checks.
    pub const ALL: [IconKind; 8] = [
        IconKind::UpToDate,
        IconKind::UpdateAvailable,
        IconKind::Updating(None),
        IconKind::Failed,
        IconKind::RolledBack,
        IconKind::RebootNeeded,
        IconKind::AgentUnreachable,
        IconKind::ServerUnreachable,
    ];
}

/// What a clickable menu entry does. The string ids are the muda menu ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MenuAction {
    UpdateNow,
    CheckNow,
    RollBack,
    ShowLog,
    StartAtLogin,
    Quit,
}

impl MenuAction {
    pub fn id(self) -> &'static str {
        match self {
            MenuAction::UpdateNow => "update-now",
            MenuAction::CheckNow => "check-now",
            MenuAction::RollBack => "roll-back",
            MenuAction::ShowLog => "show-log",
            MenuAction::StartAtLogin => "start-at-login",
            MenuAction::Quit => "quit",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        [
            MenuAction::UpdateNow,
            MenuAction::CheckNow,
            MenuAction::RollBack,
            MenuAction::ShowLog,
            MenuAction::StartAtLogin,
            MenuAction::Quit,
        ]
        .into_iter()
        .find(|a| a.id() == id)
    }
}

/// One line of the tray menu, top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MenuLine {
    /// A status line: shown, never clickable.
    Status(String),
    Separator,
    Action {
        action: MenuAction,
        label: String,
        enabled: bool,
    },
    Check {
        action: MenuAction,
        label: String,
        checked: bool,
    },
}

/// Everything the tray draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrayView {
    pub icon: IconKind,
    pub tooltip: String,
    pub menu: Vec<MenuLine>,
}

impl TrayView {
    /// The entry for `action`, if the menu has it.
    pub fn entry(&self, action: MenuAction) -> Option<&MenuLine> {
        self.menu.iter().find(|l| match l {
            MenuLine::Action { action: a, .. } | MenuLine::Check { action: a, .. } => *a == action,
            _ => false,
        })
    }

    /// Whether `action` can be clicked now.
    pub fn is_enabled(&self, action: MenuAction) -> bool {
        match self.entry(action) {
            Some(MenuLine::Action { enabled, .. }) => *enabled,
            Some(MenuLine::Check { .. }) => true,
            _ => false,
        }
    }

    pub fn status_lines(&self) -> impl Iterator<Item = &str> {
        self.menu.iter().filter_map(|l| match l {
            MenuLine::Status(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Why the agent cannot be reached, as far as the tray can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DownReason {
    /// No socket, or nobody answering on it.
    #[default]
    NotRunning,
    /// The socket is there but this user may not open it (not in its group).
    NotAllowed,
}

/// What the view depends on besides the status; gathered by the caller (the view does no I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewContext {
    /// Unix seconds.
    pub now: u64,
    /// The local time zone, for clock times such as "Rolled back at 14:02".
    pub tz: jiff::tz::TimeZone,
    /// Root, or a member of the status's `admin_group`.
    pub user_may_rollback: bool,
    /// The XDG autostart entry exists.
    pub start_at_login: bool,
    /// Shown while the status is `None`.
    pub down_reason: DownReason,
}

/// The labels of the actions; tests and the E2E harness find entries by them.
pub const LABEL_UPDATE_NOW: &str = "Update now";
pub const LABEL_CHECK_NOW: &str = "Check for updates";
pub const LABEL_ROLL_BACK: &str = "Roll back to previous system…";
pub const LABEL_SHOW_LOG: &str = "Show last log";
pub const LABEL_START_AT_LOGIN: &str = "Start at login";
pub const LABEL_QUIT: &str = "Quit";

/// The icon for a status; `None` means the agent cannot be reached.
pub fn icon(status: Option<&AgentStatus>) -> IconKind {
    let Some(s) = status else {
        return IconKind::AgentUnreachable;
    };
    if s.phase.is_busy() {
        return IconKind::Updating(progress_percent(s));
    }
    match s.last_update.as_ref().map(|u| u.outcome) {
        Some(Outcome::RolledBack) => return IconKind::RolledBack,
        Some(Outcome::Failed | Outcome::Interrupted) => return IconKind::Failed,
        _ => {}
    }
    if s.reboot_needed {
        return IconKind::RebootNeeded;
    }
    if server_unreachable(s) {
        return IconKind::ServerUnreachable;
    }
    if pending_generation(s).is_some() {
        return IconKind::UpdateAvailable;
    }
    if s.last_check.as_ref().map(|c| c.result) == Some(CheckResult::Failed) {
        return IconKind::Failed;
    }
    IconKind::UpToDate
}

fn server_unreachable(s: &AgentStatus) -> bool {
    s.server_reachable == Some(false)
        || s.last_check.as_ref().map(|c| c.result) == Some(CheckResult::Unreachable)
}

/// A generation on the server that is newer than the applied one.
fn pending_generation(s: &AgentStatus) -> Option<u64> {
    let g = s.available_generation?;
    match s.applied_generation {
        Some(applied) if applied >= g => None,
        _ => Some(g),
    }
}

/// A pending generation while the agent is not busy: waiting for the user. (During a check the
/// agent may already download it; it is announced once that is over.)
fn waiting_generation(s: &AgentStatus) -> Option<u64> {
    pending_generation(s).filter(|_| !s.phase.is_busy())
}

fn progress_percent(s: &AgentStatus) -> Option<u8> {
    let p = s.progress?;
    if s.phase != Phase::Downloading {
        return None;
    }
    let (done, total) = if p.total_bytes > 0 {
        (p.done_bytes, p.total_bytes)
    } else {
        (p.done_files, p.total_files)
    };
    (total > 0).then(|| (done.min(total) * 100 / total) as u8)
}

/// The first status line and the heart of the tooltip.
fn headline(s: Option<&AgentStatus>, icon: IconKind) -> String {
    let Some(s) = s else {
        return "Agent not reachable".into();
    };
    match icon {
        IconKind::UpToDate => "Up to date".into(),
        IconKind::UpdateAvailable => match pending_generation(s) {
            Some(g) => format!("Update available: generation {g}"),
            None => "Update available".into(),
        },
        IconKind::Updating(_) => updating_line(s),
        IconKind::Failed => match &s.last_update {
            Some(u) if matches!(u.outcome, Outcome::Failed | Outcome::Interrupted) => {
                let how = match (u.outcome, &u.failed_step) {
                    (Outcome::Interrupted, _) => "was interrupted".to_string(),
                    (_, Some(step)) => format!("failed at {step}"),
                    _ => "failed".to_string(),
                };
                format!("Update to generation {} {how}", u.generation)
            }
            _ => "Checking for updates failed".into(),
        },
        IconKind::RolledBack => "Rolled back".into(),
        IconKind::RebootNeeded => "Restart needed".into(),
        IconKind::ServerUnreachable => "Update server not reachable".into(),
        IconKind::AgentUnreachable => "Agent not reachable".into(),
    }
}

fn updating_line(s: &AgentStatus) -> String {
    let step = match s.phase {
        Phase::Downloading => "downloading",
        Phase::Building => "building",
        Phase::Activating => "activating",
        Phase::Verifying => "verifying",
        Phase::Committing => "committing",
        Phase::RollingBack => "rolling back",
        Phase::Idle | Phase::Checking => "starting",
    };
    let target = s
        .available_generation
        .map(|g| format!(" to generation {g}"))
        .unwrap_or_default();
    let mut line = format!("Updating{target}: {step}");
    if let (Phase::Downloading, Some(p)) = (s.phase, s.progress) {
        if p.total_files > 0 {
            line.push_str(&format!(" {} of {} files", p.done_files, p.total_files));
        }
        if let Some(pc) = progress_percent(s) {
            line.push_str(&format!(" ({pc}%)"));
        }
    }
    line
}

pub use crate::timefmt::{ago, from_now};

/// The longest status line, in characters: a panel menu as wide as a long error message is
/// hard to use. The tooltip and the notification keep the whole text.
pub const MAX_LINE_CHARS: usize = 64;

/// `line` cut to [`MAX_LINE_CHARS`] with an ellipsis.
pub fn clip(line: &str) -> String {
    if line.chars().count() <= MAX_LINE_CHARS {
        return line.to_string();
    }
    let mut out: String = line.chars().take(MAX_LINE_CHARS - 1).collect();
    out.push('…');
    out
}

/// The rolled-back line, while the last update ended in a rollback.
fn rollback_line(s: &AgentStatus, ctx: &ViewContext) -> Option<String> {
    if s.last_update.as_ref().map(|u| u.outcome) != Some(Outcome::RolledBack) {
        return None;
    }
    let Some(r) = &s.rollback.last else {
        let why = s.last_update.as_ref().and_then(|u| u.message.clone());
        return Some(match why {
            Some(w) => format!("Rolled back: {w}"),
            None => "Rolled back".into(),
        });
    };
    // A clock time is only unambiguous within the day; older ones say how long ago.
    let when = if ctx.now.saturating_sub(r.at) < 20 * 3600 {
        format!("at {}", crate::timefmt::clock(r.at, &ctx.tz))
    } else {
        ago(r.at, ctx.now)
    };
    Some(format!("Rolled back {when}: {}", r.reason))
}

/// The whole tray for one moment.
pub fn view(status: Option<&AgentStatus>, ctx: &ViewContext) -> TrayView {
    let icon = icon(status);
    let head = headline(status, icon);
    let mut lines = vec![head.clone()];
    let mut tooltip = format!("tiffin: {head}");
    let reachable = status.is_some();
    let busy = status.is_some_and(|s| s.phase.is_busy());
    let checking = status.is_some_and(|s| s.phase == Phase::Checking);

    if let Some(s) = status {
        if icon == IconKind::Failed {
            if let Some(m) = s
                .last_update
                .as_ref()
                .filter(|u| matches!(u.outcome, Outcome::Failed | Outcome::Interrupted))
                .and_then(|u| u.message.as_ref())
                .or_else(|| s.last_check.as_ref().and_then(|c| c.message.as_ref()))
            {
                // The first line: a Nix error's says what and where; the rest (source lines,
                // the caret) is for the notification and `tiffin log`.
                lines.push(m.lines().next().unwrap_or_default().to_string());
            }
        }
        if let Some(r) = rollback_line(s, ctx) {
            if icon == IconKind::RolledBack {
                // The headline says "Rolled back"; the detailed line replaces it.
                lines[0] = r.clone();
            } else {
                lines.push(r.clone());
            }
            tooltip = format!("tiffin: {r}");
        }
        if let Some(g) = s.applied_generation {
            let line = match s.applied_at {
                Some(at) => format!("Generation {g}, applied {}", ago(at, ctx.now)),
                None => format!("Generation {g}"),
            };
            tooltip.push('\n');
            tooltip.push_str(&line);
            lines.push(line);
        }
        if checking {
            lines.push("Checking for updates…".into());
        } else if let Some(c) = &s.last_check {
            let mut line = format!("Last check {}", ago(c.at, ctx.now));
            match c.result {
                CheckResult::Unreachable => line.push_str(": server not reachable"),
                CheckResult::Failed => line.push_str(": failed"),
                _ => {}
            }
            lines.push(line);
        } else {
            lines.push("Not checked yet".into());
        }
        // A generation that was rolled back is not retried, deadline or not.
        let rolled_back = |g: u64| {
            s.last_update
                .as_ref()
                .is_some_and(|u| u.outcome == Outcome::RolledBack && u.generation == g)
        };
        if s.policy == Policy::Notify && !busy {
            if let (Some(g), Some(deadline)) = (pending_generation(s), s.deadline) {
                if !rolled_back(g) {
                    lines.push(format!("Applies by itself {}", from_now(deadline, ctx.now)));
                }
            }
        }
        if s.reboot_needed && icon != IconKind::RebootNeeded {
            lines.push("Restart needed".into());
            tooltip.push_str("\nRestart needed");
        }
        if let Some(note) = s.publication {
            let line = match note {
                PublicationNote::Unsigned => "Publication unsigned (not verified)".to_string(),
                PublicationNote::TooOld => "Publication too old: not applied".to_string(),
            };
            tooltip.push('\n');
            tooltip.push_str(&line);
            lines.push(line);
        }
    } else {
        let hint = match ctx.down_reason {
            DownReason::NotRunning => "Is the tiffin agent running?",
            DownReason::NotAllowed => "Not allowed to use its socket: ask to join its group",
        };
        tooltip.push('\n');
        tooltip.push_str(hint);
        lines.push(hint.into());
    }

    let rollback_possible = status.is_some_and(|s| s.rollback.previous_available);
    let mut menu: Vec<MenuLine> = lines.iter().map(|l| MenuLine::Status(clip(l))).collect();
    menu.push(MenuLine::Separator);
    menu.push(MenuLine::Action {
        action: MenuAction::UpdateNow,
        label: LABEL_UPDATE_NOW.into(),
        enabled: reachable && !busy,
    });
    menu.push(MenuLine::Action {
        action: MenuAction::CheckNow,
        label: LABEL_CHECK_NOW.into(),
        enabled: reachable && !busy && !checking,
    });
    menu.push(MenuLine::Action {
        action: MenuAction::RollBack,
        label: LABEL_ROLL_BACK.into(),
        enabled: reachable && !busy && rollback_possible && ctx.user_may_rollback,
    });
    menu.push(MenuLine::Action {
        action: MenuAction::ShowLog,
        label: LABEL_SHOW_LOG.into(),
        enabled: reachable,
    });
    menu.push(MenuLine::Separator);
    menu.push(MenuLine::Check {
        action: MenuAction::StartAtLogin,
        label: LABEL_START_AT_LOGIN.into(),
        checked: ctx.start_at_login,
    });
    menu.push(MenuLine::Action {
        action: MenuAction::Quit,
        label: LABEL_QUIT.into(),
        enabled: true,
    });
    TrayView {
        icon,
        tooltip,
        menu,
    }
}

/// When the view next changes by itself (a relative time rolls over), so the app can sleep until
/// then instead of polling. `None`: nothing time-dependent is shown except the unreachable timer.
pub fn next_refresh(status: Option<&AgentStatus>, now: u64) -> Option<u64> {
    let s = status?;
    let times = [
        s.applied_at,
        s.last_check.as_ref().map(|c| c.at),
        s.rollback.last.as_ref().map(|r| r.at),
        s.deadline,
    ];
    // Minute granularity is what the lines show; one wake-up a minute at most.
    times.iter().flatten().next().map(|_| now - now % 60 + 60)
}

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
    let mut out = Vec::new();

    if let Some(p) = prev {
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
            match u.outcome {
                Outcome::Updated if next.reboot_needed => out.push(Notification {
                    kind: NotificationKind::UpdatedRestartNeeded,
                    summary: format!("Updated to generation {}", u.generation),
                    body: "Restart to finish the update.".into(),
                    actions: if may_restart {
                        vec![NotificationAction::Restart]
                    } else {
                        vec![]
                    },
                }),
                Outcome::Updated => out.push(Notification {
                    kind: NotificationKind::Updated,
                    summary: format!("Updated to generation {}", u.generation),
                    body: "The system is up to date.".into(),
                    actions: vec![],
                }),
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
                    out.push(Notification {
                        kind: NotificationKind::UpdateFailed,
                        summary: format!("Update to generation {} failed", u.generation),
                        body,
                        actions: vec![],
                    })
                }
                // Said once above, from the rollback record; this covers an agent that
                // reports the outcome without one.
                Outcome::RolledBack if !rollback_new => out.push(Notification {
                    kind: NotificationKind::RolledBack,
                    summary: format!("Generation {} was rolled back", u.generation),
                    body: u.message.clone().unwrap_or_default(),
                    actions: vec![],
                }),
                Outcome::RolledBack | Outcome::UpToDate => {}
            }
        }
    }

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

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
