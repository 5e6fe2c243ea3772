//! The rows `tiffin status` adds about the update waiting for the user: the admin's note, when it
//! applies itself (local time), and a postponement.

use crate::status::{AgentStatus, Policy};
use crate::timefmt::{self, day_clock};

/// (label, value) rows for `tiffin status`, at `now` in the zone `tz`.
pub fn rows(s: &AgentStatus, now: u64, tz: &jiff::tz::TimeZone) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let waiting = s
        .available_generation
        .filter(|g| !matches!(s.applied_generation, Some(a) if a >= *g));
    match (waiting, &s.available_note, &s.applied_note) {
        (Some(_), Some(n), _) => out.push(("note", n.clone())),
        (None, _, Some(n)) => out.push(("note", n.clone())),
        _ => {}
    }
    if let (Some(_), Some(c)) = (waiting, &s.available_changes) {
        let mut v = format!("{} (`tiffin status --changes` lists them)", c.total());
        if c.restart_needed {
            v.push_str("; restart needed after this update");
        }
        out.push(("changes", v));
    }
    if let (Some(_), Some(d), Policy::Notify) = (waiting, s.deadline, s.policy) {
        out.push((
            "applies itself",
            format!(
                "{} ({}) unless you update now",
                day_clock(d, now, tz),
                timefmt::from_now(d, now)
            ),
        ));
    }
    if let Some(u) = s.postponed_until(now) {
        out.push(("postponed until", day_clock(u, now, tz)));
    }
    if !s.waiting_for.is_empty() {
        let what: Vec<&str> = s.waiting_for.iter().map(|w| w.label()).collect();
        out.push((
            "waiting for",
            format!(
                "{} before updating by itself (`tiffin update` goes ahead)",
                what.join(" and ")
            ),
        ));
    }
    out
}

/// `tiffin status --changes`: every line of what the waiting update changes.
pub fn changes_text(s: &AgentStatus) -> String {
    let Some(c) = &s.available_changes else {
        return "no change summary (the admin publishes one with `fleet publish --build`)\n".into();
    };
    let mut out: String = c.lines.iter().map(|l| format!("{l}\n")).collect();
    if c.more > 0 {
        out.push_str(&format!("… and {} more\n", c.more));
    }
    if c.restart_needed {
        out.push_str("restart needed after this update (kernel, initrd or modules change)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Postponed;

    #[test]
    fn a_waiting_update_shows_its_note_deadline_and_postponement() {
        let now = 1_700_000_000; // 22:13 UTC
        let s = AgentStatus {
            policy: Policy::Notify,
            applied_generation: Some(6),
            available_generation: Some(7),
            available_note: Some("Adds the office printer".into()),
            applied_note: Some("older".into()),
            deadline: Some(now + 600),
            postponed: Some(Postponed {
                generation: 7,
                until: now + 300,
            }),
            ..AgentStatus::default()
        };
        let rows = rows(&s, now, &jiff::tz::TimeZone::UTC);
        assert_eq!(
            rows,
            vec![
                ("note", "Adds the office printer".to_string()),
                (
                    "applies itself",
                    "today at 22:23 (in 10 min) unless you update now".to_string()
                ),
                ("postponed until", "today at 22:18".to_string()),
            ]
        );
        let applied = AgentStatus {
            applied_generation: Some(7),
            ..s
        };
        assert_eq!(
            super::rows(&applied, now, &jiff::tz::TimeZone::UTC),
            vec![("note", "older".to_string())]
        );
    }
}
