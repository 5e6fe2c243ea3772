//! The tray's view model: the agent's status in; icon, tooltip, menu and notifications out.
//!
//! Plain data in, plain data out, no I/O and no clock: the caller passes `now` (Unix seconds)
//! and the local time zone, so every state and transition can be unit-tested without GTK.
//! `icon` picks the icon and the headline, `lines` the status lines and the tooltip, `menu` the
//! menu, `notify` the notifications.

mod backup;
mod context;
mod icon;
mod later;
mod lines;
mod menu;
mod notify;
mod pending;

pub use crate::timefmt::{ago, from_now};
pub use backup::BackupNotes;
pub use context::{DownReason, ViewContext};
pub use icon::{icon, IconKind};
pub use later::Later;
pub use lines::{clip, MAX_LINE_CHARS};
pub use menu::{
    MenuAction, MenuLine, LABEL_BACK_UP_NOW, LABEL_CHECK_NOW, LABEL_QUIT, LABEL_RESTART_NOW,
    LABEL_ROLL_BACK, LABEL_SHOW_LOG, LABEL_START_AT_LOGIN, LABEL_UPDATE_NOW,
};
pub use notify::update_available;
pub use notify::{
    action_failed, rollback_confirmation, transition_notifications, Notification,
    NotificationAction, NotificationKind, Notifier, UNREACHABLE_NOTIFY_AFTER,
};
pub use pending::later_choices;

use crate::status::AgentStatus;

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

/// The whole tray for one moment.
pub fn view(status: Option<&AgentStatus>, ctx: &ViewContext) -> TrayView {
    let icon = icon(status);
    let (lines, tooltip) = lines::status_lines(status, icon, ctx);
    let menu = menu::menu(&lines, status, ctx);
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
        s.postponed.map(|p| p.until),
    ];
    // Minute granularity is what the lines show; one wake-up a minute at most.
    times.iter().flatten().next().map(|_| now - now % 60 + 60)
}

#[cfg(test)]
mod tests;
