//! The update that waits for the person at the machine (policy `notify`): the admin's note, when
//! it applies itself in local time ("applies itself today at 17:30 unless you update now"), a
//! postponement, and the "Later" choices — each before the admin's deadline.

use super::icon::{pending_generation, waiting_generation};
use super::later::Later;
use crate::status::{AgentStatus, Outcome, Policy, Waiting};
use crate::timefmt::{clock, day, Day};
use crate::tray::i18n::{day_clock, tr, tr_args};
use jiff::tz::TimeZone;

/// The "Later" choices open now: policy `notify`, an update waiting, and only times before its
/// deadline (`tiffin postpone` refuses later ones).
pub fn later_choices(s: &AgentStatus, now: u64, tz: &TimeZone) -> Vec<(Later, u64)> {
    if s.policy != Policy::Notify || waiting_generation(s).is_none() || rolled_back(s) {
        return Vec::new();
    }
    Later::ALL
        .into_iter()
        .filter_map(|l| Some((l, l.until(now, tz)?)))
        .filter(|(_, t)| s.deadline.is_none_or_ge(*t))
        .collect()
}

/// The admin's note of the waiting update, in quotes.
pub(super) fn note_line(s: &AgentStatus) -> Option<String> {
    pending_generation(s)?;
    s.available_note.as_ref().map(|n| format!("“{n}”"))
}

/// How many change lines the menu shows before "and N more".
pub const CHANGE_LINES_SHOWN: usize = 3;

/// What the waiting update changes: its first lines, "and N more", and whether a restart
/// follows (`tiffin status --changes` lists them all).
pub(super) fn change_lines(s: &AgentStatus) -> Vec<String> {
    let (Some(_), Some(c)) = (pending_generation(s), &s.available_changes) else {
        return Vec::new();
    };
    let mut out: Vec<String> = c
        .lines
        .iter()
        .take(CHANGE_LINES_SHOWN)
        .map(|l| format!("· {l}"))
        .collect();
    let rest = c.total().saturating_sub(out.len() as u64);
    if rest > 0 {
        out.push(tr_args("changes-more", &[("n", rest.into())]));
    }
    if c.restart_needed {
        out.push(tr("changes-restart"));
    }
    out
}

/// "Applies itself today at 17:30 unless you update now": a waiting update under `notify` with
/// a deadline. A generation that was rolled back is not retried, deadline or not.
pub(super) fn deadline_line(s: &AgentStatus, now: u64, tz: &TimeZone) -> Option<String> {
    if s.policy != Policy::Notify || s.phase.is_busy() || rolled_back(s) {
        return None;
    }
    pending_generation(s)?;
    let d = s.deadline?;
    Some(tr_args(
        "applies-itself",
        &[("when", day_clock(d, now, tz).into())],
    ))
}

/// "Reminder postponed until 18:30" while the user's postponement runs.
pub(super) fn postponed_line(s: &AgentStatus, now: u64, tz: &TimeZone) -> Option<String> {
    let u = s.postponed_until(now)?;
    let when = match day(u, now, tz) {
        Day::Today => clock(u, tz),
        _ => day_clock(u, now, tz),
    };
    Some(tr_args("postponed-until", &[("when", when.into())]))
}

/// "Waiting for mains power to update": what automatic updates wait for.
pub(super) fn waiting_line(s: &AgentStatus) -> Option<String> {
    let power = s.waiting_for.contains(&Waiting::OnBattery);
    let network = s.waiting_for.contains(&Waiting::Metered);
    let id = match (power, network) {
        (true, true) => "waiting-for-both",
        (true, false) => "waiting-for-power",
        (false, true) => "waiting-for-network",
        (false, false) => return None,
    };
    Some(tr(id))
}

fn rolled_back(s: &AgentStatus) -> bool {
    let Some(g) = pending_generation(s) else {
        return false;
    };
    s.last_update
        .as_ref()
        .is_some_and(|u| u.outcome == Outcome::RolledBack && u.generation == g)
}

/// `deadline ≥ t`, or no deadline.
trait NoneOrGe {
    fn is_none_or_ge(&self, t: u64) -> bool;
}
impl NoneOrGe for Option<u64> {
    fn is_none_or_ge(&self, t: u64) -> bool {
        !matches!(self, Some(d) if *d < t)
    }
}
