//! The status lines at the top of the menu and the tooltip: what the agent is doing, what it
//! last did and when, and what the user may need to know (restart, publication notes).

use super::context::{DownReason, ViewContext};
use super::icon::IconKind;
use super::icon::headline;
use super::pending;
use crate::status::{AgentStatus, CheckResult, Outcome, Phase, PublicationNote};
use crate::timefmt::ago;

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
    match status {
        Some(s) => agent_lines(&mut out, s, icon, ctx),
        None => out.both(
            match ctx.down_reason {
                DownReason::NotRunning => "Is the tiffin agent running?",
                DownReason::NotAllowed => "Not allowed to use its socket: ask to join its group",
            }
            .into(),
        ),
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
            Some(at) => format!("Generation {g}, applied {}", ago(at, ctx.now)),
            None => format!("Generation {g}"),
        });
    }
    out.lines.push(check_line(s, ctx.now));
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
        out.both("Restart needed".into());
    }
    if let Some(note) = s.publication {
        out.both(
            match note {
                PublicationNote::Unsigned => "Publication unsigned (not verified)",
                PublicationNote::TooOld => "Publication too old: not applied",
            }
            .into(),
        );
    }
}

/// "Checking for updates…", "Last check 2 min ago[: what went wrong]" or "Not checked yet".
fn check_line(s: &AgentStatus, now: u64) -> String {
    if s.phase == Phase::Checking {
        return "Checking for updates…".into();
    }
    let Some(c) = &s.last_check else {
        return "Not checked yet".into();
    };
    let mut line = format!("Last check {}", ago(c.at, now));
    match c.result {
        CheckResult::Unreachable => line.push_str(": server not reachable"),
        CheckResult::Failed => line.push_str(": failed"),
        _ => {}
    }
    line
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
