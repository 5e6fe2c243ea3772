//! The waiting update under policy `notify`: the admin's note, "applies itself today at …",
//! the "Later" choices within the deadline, and a postponement that silences the reminder until
//! its time. NOW is Fri 15 Jan 2027 08:00 UTC.

use super::*;
use crate::status::Postponed;

fn waiting_with_note(deadline_in: u64) -> AgentStatus {
    let mut s = available(Policy::Notify);
    s.available_note = Some("Adds the office printer".into());
    s.deadline = Some(NOW + deadline_in);
    s
}

fn labels(v: &TrayView) -> Vec<String> {
    v.menu
        .iter()
        .filter_map(|l| match l {
            MenuLine::Action { label, .. } => Some(label.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_note_is_in_the_menu_the_tooltip_and_the_notification() {
    let s = waiting_with_note(5 * 3600);
    let v = view(Some(&s), &ctx());
    let lines: Vec<&str> = v.status_lines().collect();
    assert_eq!(
        lines[..2],
        [
            "Update available: generation 43",
            "“Adds the office printer”"
        ]
    );
    assert!(
        v.tooltip.contains("“Adds the office printer”"),
        "{}",
        v.tooltip
    );
    assert!(v
        .tooltip
        .contains("Applies itself today at 13:00 unless you update now"));
    let mut n = Notifier::new(false).in_zone(jiff::tz::TimeZone::UTC);
    let sent = n.observe(Some(&s), NOW);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body,
        "Adds the office printer\nIt applies itself today at 13:00 unless you update now."
    );
    // Without a note, no note line; an applied generation's note is not a pending one.
    let mut plain = s.clone();
    plain.available_note = None;
    assert!(!view(Some(&plain), &ctx())
        .status_lines()
        .any(|l| l.starts_with('“')));
}

#[test]
fn later_choices_never_reach_past_the_deadline() {
    // Deadline tomorrow 14:00: in 1 hour, tonight at 20:00, tomorrow at 09:00.
    let v = view(Some(&waiting_with_note(30 * 3600)), &ctx());
    let l = labels(&v);
    for want in [
        "Later: in 1 hour",
        "Later: tonight at 20:00",
        "Later: tomorrow at 09:00",
    ] {
        assert!(l.iter().any(|x| x == want), "{want} in {l:?}");
    }
    // Deadline at 10:00: only "in 1 hour" fits.
    let v = view(Some(&waiting_with_note(2 * 3600)), &ctx());
    let later: Vec<String> = labels(&v)
        .into_iter()
        .filter(|x| x.starts_with("Later"))
        .collect();
    assert_eq!(later, ["Later: in 1 hour"]);
    // Deadline in 30 min: none; under `auto`: none.
    let v = view(Some(&waiting_with_note(1800)), &ctx());
    assert!(!labels(&v).iter().any(|x| x.starts_with("Later")));
    let mut auto = waiting_with_note(30 * 3600);
    auto.policy = Policy::Auto;
    assert!(!labels(&view(Some(&auto), &ctx()))
        .iter()
        .any(|x| x.starts_with("Later")));
    // The notification offers the same choices after "Update now".
    let n = update_available(
        &waiting_with_note(2 * 3600),
        43,
        Some((NOW, &jiff::tz::TimeZone::UTC)),
    );
    assert_eq!(
        n.actions,
        [
            NotificationAction::UpdateNow,
            NotificationAction::Later(Later::Hour)
        ]
    );
    assert_eq!(
        NotificationAction::from_key("later-hour"),
        Some(NotificationAction::Later(Later::Hour))
    );
    assert_eq!(
        MenuAction::from_id("later-tomorrow"),
        Some(MenuAction::Later(Later::Tomorrow))
    );
}

#[test]
fn a_postponed_update_is_not_announced_until_its_time_then_once() {
    let mut s = waiting_with_note(10 * 3600);
    s.postponed = Some(Postponed {
        generation: 43,
        until: NOW + 3600,
    });
    let v = view(Some(&s), &ctx());
    assert!(
        v.status_lines().any(|l| l == "Postponed until 09:00"),
        "{:?}",
        v.menu
    );
    let mut n = Notifier::new(false).in_zone(jiff::tz::TimeZone::UTC);
    assert!(n.observe(Some(&s), NOW).is_empty(), "postponed: silent");
    assert!(n.observe(Some(&s), NOW + 1800).is_empty());
    assert_eq!(n.reminder_due(), Some(NOW + 3600));
    let due = n.observe(Some(&s), NOW + 3600);
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].kind, NotificationKind::UpdateAvailable);
    assert!(n.observe(Some(&s), NOW + 3700).is_empty(), "reminded once");
    assert_eq!(n.reminder_due(), None);
}

#[test]
fn a_postponement_of_an_older_generation_does_not_silence_a_newer_one() {
    let mut s = waiting_with_note(10 * 3600);
    s.postponed = Some(Postponed {
        generation: 42,
        until: NOW + 3600,
    });
    let mut n = Notifier::new(false).in_zone(jiff::tz::TimeZone::UTC);
    assert_eq!(n.observe(Some(&s), NOW).len(), 1);
    assert!(!view(Some(&s), &ctx())
        .status_lines()
        .any(|l| l.starts_with("Postponed")));
}

#[test]
fn what_automatic_updates_wait_for_is_said() {
    let mut s = available(Policy::Auto);
    s.waiting_for = vec![crate::status::Waiting::OnBattery];
    let v = view(Some(&s), &ctx());
    assert!(v
        .status_lines()
        .any(|l| l == "Waiting for mains power to update"));
    assert!(v.tooltip.contains("Waiting for mains power to update"));
    s.waiting_for.push(crate::status::Waiting::Metered);
    let v = view(Some(&s), &ctx());
    // The menu line is clipped; the tooltip has it whole.
    assert!(v
        .tooltip
        .contains("Waiting for mains power and a network that is not metered to update"));
}

#[test]
fn the_change_summary_shows_its_first_lines_and_counts_the_rest() {
    let mut s = waiting_with_note(10 * 3600);
    s.available_changes = Some(crate::manifest::Changes {
        lines: vec![
            "firefox 120.0 → 121.0".into(),
            "hello 2.12.1 (new)".into(),
            "linux 6.6.1 → 6.6.2".into(),
            "oldpkg 1.0 (removed)".into(),
        ],
        more: 2,
        restart_needed: true,
    });
    let v = view(Some(&s), &ctx());
    let lines: Vec<&str> = v.status_lines().collect();
    assert_eq!(
        lines[1..7],
        [
            "“Adds the office printer”",
            "· firefox 120.0 → 121.0",
            "· hello 2.12.1 (new)",
            "· linux 6.6.1 → 6.6.2",
            "and 3 more",
            "Restart needed after this update",
        ]
    );
    let text = crate::cli::pending::changes_text(&s);
    assert!(
        text.contains("oldpkg 1.0 (removed)") && text.contains("and 2 more"),
        "{text}"
    );
}

#[test]
fn a_planned_restart_is_announced_once() {
    let mut s = up_to_date();
    s.reboot_needed = true;
    let mut n = Notifier::new(false).in_zone(jiff::tz::TimeZone::UTC);
    assert!(n.observe(Some(&s), NOW).is_empty());
    s.reboot_planned = Some(NOW + 300);
    let sent = n.observe(Some(&s), NOW);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].summary, "This machine restarts at 08:05");
    assert!(n.observe(Some(&s), NOW + 10).is_empty());
}
