//! The status lines at the top of the menu and the tooltip: what the agent is doing, what it
//! last did and when, and what the user may need to know (restart, publication notes).

use super::context::{DownReason, ViewContext};
use super::icon::headline;
use super::icon::IconKind;
use super::pending;
use crate::status::{AgentStatus, CheckResult, Outcome, Phase, PublicationNote};
use crate::tray::i18n::{ago, tr, tr_args};

/// The lines and the tooltip, built together: some lines are in both.
struct Lines {
    lines: Vec<String>,
    tooltip: String,
}

impl Lines {
    /// A line in the menu and on its own line of the tooltip.
    fn both(&mut self, line: String) {
        self.tooltip.push('\n');
        self.tooltip.push_str(&line);
        self.lines.push(line);
    }
}

/// The status lines (the menu's top, each clipped there) and the tooltip for `status` shown
/// with `icon`.
pub(super) fn status_lines(
    status: Option<&AgentStatus>,
    icon: IconKind,
    ctx: &ViewContext,
) -> (Vec<String>, String) {
    let head = headline(status, icon);
    let mut out = Lines {
        lines: vec![head.clone()],
        tooltip: format!("tiffin: {head}"),
    };
    if let Some(note) = status.and_then(pending::note_line) {
        out.both(note);
    }
    for line in status.map(pending::change_lines).unwrap_or_default() {
        out.both(line);
    }
    match status {
        Some(s) => agent_lines(&mut out, s, icon, ctx),
        None => out.both(tr(match ctx.down_reason {
            DownReason::NotRunning => "agent-running-question",
            DownReason::NotAllowed => "agent-not-allowed",
        })),
    }
    (out.lines, out.tooltip)
}

fn agent_lines(out: &mut Lines, s: &AgentStatus, icon: IconKind, ctx: &ViewContext) {
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
            out.lines
                .push(m.lines().next().unwrap_or_default().to_string());
        }
    }
    if let Some(r) = rollback_line(s, ctx) {
        if icon == IconKind::RolledBack {
            // The headline says "Rolled back"; the detailed line replaces it.
            out.lines[0] = r.clone();
        } else {
            out.lines.push(r.clone());
        }
        out.tooltip = format!("tiffin: {r}");
    }
    if let Some(g) = s.applied_generation {
        out.both(match s.applied_at {
            Some(at) => tr_args(
                "generation-applied",
                &[("g", g.into()), ("ago", ago(at, ctx.now).into())],
            ),
            None => tr_args("generation", &[("g", g.into())]),
        });
    }
    out.lines.push(check_line(s, ctx.now));
    if let Some(url) = &s.served_by {
        // Which of agent.toml `sources` answered the last check: in the tooltip only.
        out.tooltip.push('\n');
        out.tooltip
            .push_str(&tr_args("served-by", &[("url", url.clone().into())]));
    }
    for line in super::backup::backup_lines(s, ctx.now) {
        out.both(line);
    }
    if let Some(line) = pending::deadline_line(s, ctx.now, &ctx.tz) {
        out.both(line);
    }
    if let Some(line) = pending::postponed_line(s, ctx.now, &ctx.tz) {
        out.both(line);
    }
    if let Some(line) = pending::waiting_line(s) {
        out.both(line);
    }
    if s.reboot_needed && icon != IconKind::RebootNeeded {
        out.both(tr("restart-needed"));
    }
    if let Some(note) = s.publication {
        out.both(tr(match note {
            PublicationNote::Unsigned => "publication-unsigned",
            PublicationNote::TooOld => "publication-too-old",
        }));
    }
}

/// "Checking for updates…", "Last check 2 min ago[: what went wrong]" or "Not checked yet".
fn check_line(s: &AgentStatus, now: u64) -> String {
    if s.phase == Phase::Checking {
        return tr("checking");
    }
    let Some(c) = &s.last_check else {
        return tr("not-checked-yet");
    };
    let id = match c.result {
        CheckResult::Unreachable => "last-check-unreachable",
        CheckResult::Failed => "last-check-failed",
        _ => "last-check",
    };
    tr_args(id, &[("ago", ago(c.at, now).into())])
}

/// The rolled-back line, while the last update ended in a rollback.
fn rollback_line(s: &AgentStatus, ctx: &ViewContext) -> Option<String> {
    if s.last_update.as_ref().map(|u| u.outcome) != Some(Outcome::RolledBack) {
        return None;
    }
    let Some(r) = &s.rollback.last else {
        let why = s.last_update.as_ref().and_then(|u| u.message.clone());
        return Some(match why {
            Some(w) => tr_args("rolled-back-because", &[("why", w.into())]),
            None => tr("rolled-back"),
        });
    };
    let why = ("why", r.reason.as_str().into());
    // A clock time is only unambiguous within the day; older ones say how long ago.
    Some(if ctx.now.saturating_sub(r.at) < 20 * 3600 {
        let clock = crate::timefmt::clock(r.at, &ctx.tz);
        tr_args("rolled-back-at", &[("clock", clock.into()), why])
    } else {
        tr_args(
            "rolled-back-ago",
            &[("ago", ago(r.at, ctx.now).into()), why],
        )
    })
}

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
