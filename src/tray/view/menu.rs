//! The tray menu: the status lines (clipped), then the actions, each enabled only when it can
//! work (agent reachable, not busy, a previous system to roll back to, the user allowed).

use super::context::ViewContext;
use super::later::{later_key, Later};
use super::lines::clip;
use super::pending::later_choices;
use crate::status::{AgentStatus, Phase};
use crate::tray::i18n::tr;

/// What a clickable menu entry does. The string ids are the muda menu ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MenuAction {
    UpdateNow,
    CheckNow,
    RollBack,
    ShowLog,
    StartAtLogin,
    Quit,
    BackUpNow,
    /// Postpone the waiting update (policy `notify`).
    Later(Later),
    /// Ask logind to restart (shown while a restart is needed).
    RestartNow,
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
            MenuAction::BackUpNow => "back-up-now",
            MenuAction::Later(l) => later_key(l),
            MenuAction::RestartNow => "restart-now",
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
            MenuAction::BackUpNow,
            MenuAction::Later(Later::Hour),
            MenuAction::Later(Later::Tonight),
            MenuAction::Later(Later::Tomorrow),
            MenuAction::RestartNow,
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

/// The English labels of the actions (the catalog's `menu-*` messages, which the menu shows in
/// the user's language); tests and the E2E harness find entries by them.
pub const LABEL_UPDATE_NOW: &str = "Update now";
pub const LABEL_CHECK_NOW: &str = "Check for updates";
pub const LABEL_ROLL_BACK: &str = "Roll back to previous system…";
pub const LABEL_SHOW_LOG: &str = "Show last log";
pub const LABEL_START_AT_LOGIN: &str = "Start at login";
pub const LABEL_QUIT: &str = "Quit";
pub const LABEL_BACK_UP_NOW: &str = "Back up now";
pub const LABEL_RESTART_NOW: &str = "Restart now";

/// The menu under the status `lines`.
pub(super) fn menu(
    lines: &[String],
    status: Option<&AgentStatus>,
    ctx: &ViewContext,
) -> Vec<MenuLine> {
    let reachable = status.is_some();
    let busy = status.is_some_and(|s| s.phase.is_busy());
    let checking = status.is_some_and(|s| s.phase == Phase::Checking);
    let rollback_possible = status.is_some_and(|s| s.rollback.previous_available);
    let mut menu: Vec<MenuLine> = lines.iter().map(|l| MenuLine::Status(clip(l))).collect();
    let action = |action, id: &str, enabled| MenuLine::Action {
        action,
        label: tr(id),
        enabled,
    };
    menu.extend([
        MenuLine::Separator,
        action(MenuAction::UpdateNow, "menu-update-now", reachable && !busy),
        action(
            MenuAction::CheckNow,
            "menu-check-now",
            reachable && !busy && !checking,
        ),
        action(
            MenuAction::RollBack,
            "menu-roll-back",
            reachable && !busy && rollback_possible && ctx.user_may_rollback,
        ),
    ]);
    if status.is_some_and(|s| s.backup.is_some()) {
        let enabled = super::backup::can_back_up(status);
        menu.push(action(MenuAction::BackUpNow, "menu-back-up-now", enabled));
    }
    if status.is_some_and(|s| s.reboot_needed) {
        menu.push(action(MenuAction::RestartNow, "menu-restart-now", !busy));
    }
    if let Some(s) = status.filter(|_| !busy) {
        for (l, until) in later_choices(s, ctx.now, &ctx.tz) {
            menu.push(MenuLine::Action {
                action: MenuAction::Later(l),
                label: l.menu_label(until, &ctx.tz),
                enabled: true,
            });
        }
    }
    menu.extend([
        action(MenuAction::ShowLog, "menu-show-log", reachable),
        MenuLine::Separator,
        MenuLine::Check {
            action: MenuAction::StartAtLogin,
            label: tr("menu-start-at-login"),
            checked: ctx.start_at_login,
        },
        action(MenuAction::Quit, "menu-quit", true),
    ]);
    menu
}
