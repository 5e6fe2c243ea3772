//! Icon, tooltip and menu per state.

use super::*;

#[test]
fn up_to_date_shows_generation_age_and_last_check() {
    let s = up_to_date();
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::UpToDate);
    let lines: Vec<_> = v.status_lines().collect();
    assert_eq!(
        lines,
        vec![
            "Up to date",
            "Generation 42, applied 10 min ago",
            "Last check 2 min ago"
        ]
    );
    assert!(v.tooltip.starts_with("tiffin: Up to date"));
    assert!(v.tooltip.contains("Generation 42"));
    assert!(v.is_enabled(MenuAction::UpdateNow));
    assert!(v.is_enabled(MenuAction::CheckNow));
    assert!(v.is_enabled(MenuAction::RollBack));
    assert!(v.is_enabled(MenuAction::ShowLog));
    assert!(v.is_enabled(MenuAction::Quit));
}

#[test]
fn menu_has_every_action_in_order() {
    let v = view(Some(&up_to_date()), &ctx());
    let actions: Vec<_> = v
        .menu
        .iter()
        .filter_map(|l| match l {
            MenuLine::Action { action, .. } | MenuLine::Check { action, .. } => Some(*action),
            _ => None,
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            MenuAction::UpdateNow,
            MenuAction::CheckNow,
            MenuAction::RollBack,
            MenuAction::ShowLog,
            MenuAction::StartAtLogin,
            MenuAction::Quit
        ]
    );
    for a in actions {
        assert_eq!(MenuAction::from_id(a.id()), Some(a));
    }
}

#[test]
fn update_available_names_the_generation() {
    let v = view(Some(&available(Policy::Notify)), &ctx());
    assert_eq!(v.icon, IconKind::UpdateAvailable);
    assert_eq!(
        v.status_lines().next(),
        Some("Update available: generation 43")
    );
    assert!(v.is_enabled(MenuAction::UpdateNow));
}

#[test]
fn notify_policy_shows_when_the_update_applies_by_itself() {
    let mut s = available(Policy::Notify);
    s.deadline = Some(NOW + 5 * 3600 + 10);
    let v = view(Some(&s), &ctx());
    assert!(v
        .status_lines()
        .any(|l| l == "Applies itself today at 13:00 unless you update now"));
}

#[test]
fn applied_generation_equal_to_available_is_not_an_update() {
    let mut s = up_to_date();
    s.available_generation = Some(42);
    assert_eq!(icon(Some(&s)), IconKind::UpToDate);
}

#[test]
fn downloading_shows_progress_and_disables_update_check_and_rollback() {
    let s = downloading();
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::Updating(Some(25)));
    assert_eq!(
        v.status_lines().next(),
        Some("Updating to generation 43: downloading 3 of 10 files (25%)")
    );
    assert!(!v.is_enabled(MenuAction::UpdateNow));
    assert!(!v.is_enabled(MenuAction::CheckNow));
    assert!(!v.is_enabled(MenuAction::RollBack));
    assert!(v.is_enabled(MenuAction::ShowLog));
}

#[test]
fn a_download_from_the_host_s_cache_shows_paths_and_the_bytes_percentage() {
    let mut s = downloading();
    s.cache_download = Some(crate::status::CacheProgress {
        done_paths: 2,
        total_paths: 8,
        done_bytes: 600,
        total_bytes: 1000,
    });
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::Updating(Some(60)));
    assert_eq!(
        v.status_lines().next(),
        Some("Updating to generation 43: downloading 2 of 8 paths (60%)")
    );
}

#[test]
fn every_busy_phase_is_updating_without_percentage() {
    for phase in [
        Phase::Building,
        Phase::Activating,
        Phase::Verifying,
        Phase::Committing,
        Phase::RollingBack,
    ] {
        let mut s = downloading();
        s.phase = phase;
        assert_eq!(icon(Some(&s)), IconKind::Updating(None), "{phase:?}");
        assert!(!view(Some(&s), &ctx()).is_enabled(MenuAction::UpdateNow));
    }
}

#[test]
fn checking_keeps_update_enabled_but_not_check() {
    let mut s = up_to_date();
    s.phase = Phase::Checking;
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::UpToDate);
    assert!(v.status_lines().any(|l| l == "Checking for updates…"));
    assert!(v.is_enabled(MenuAction::UpdateNow));
    assert!(!v.is_enabled(MenuAction::CheckNow));
}

#[test]
fn failed_update_names_step_and_message() {
    let v = view(Some(&failed_43()), &ctx());
    assert_eq!(v.icon, IconKind::Failed);
    let lines: Vec<_> = v.status_lines().collect();
    assert_eq!(lines[0], "Update to generation 43 failed at build");
    assert_eq!(lines[1], "nix-build exited with 1");
    assert!(v.is_enabled(MenuAction::UpdateNow), "a retry is allowed");
}

#[test]
fn a_nix_error_shows_its_first_line_what_and_where() {
    let mut s = failed_43();
    if let Some(u) = s.last_update.as_mut() {
        u.message = Some(
            "undefined variable 'x' (configuration.nix:3:16)\n`nix build` exited with 1:\n       3|   b = x;\n         |       ^".into(),
        );
    }
    let v = view(Some(&s), &ctx());
    let lines: Vec<_> = v.status_lines().collect();
    assert_eq!(lines[1], "undefined variable 'x' (configuration.nix:3:16)");
}

#[test]
fn interrupted_update_is_a_failure() {
    let mut s = failed_43();
    if let Some(u) = s.last_update.as_mut() {
        u.outcome = Outcome::Interrupted;
    }
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::Failed);
    assert_eq!(
        v.status_lines().next(),
        Some("Update to generation 43 was interrupted")
    );
}

#[test]
fn failed_check_is_failed() {
    let mut s = up_to_date();
    s.last_check = Some(LastCheck {
        at: NOW - 60,
        result: CheckResult::Failed,
        message: Some("manifest signature invalid".into()),
    });
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::Failed);
    let lines: Vec<_> = v.status_lines().collect();
    assert_eq!(lines[0], "Checking for updates failed");
    assert!(lines.contains(&"manifest signature invalid"));
    assert!(lines.contains(&"Last check 1 min ago: failed"));
}

#[test]
fn rolled_back_line_has_local_clock_time_and_reason() {
    let v = view(
        Some(&rolled_back_43()),
        &ViewContext {
            now: at_1402() + 300,
            ..ctx()
        },
    );
    assert_eq!(v.icon, IconKind::RolledBack);
    assert_eq!(
        v.status_lines().next(),
        Some("Rolled back at 14:02: lost contact with the server")
    );
    assert!(v.tooltip.contains("lost contact with the server"));
    // Same moment seen from UTC+2.
    let v2 = view(
        Some(&rolled_back_43()),
        &ViewContext {
            now: at_1402() + 300,
            tz: jiff::tz::TimeZone::fixed(jiff::tz::offset(2)),
            ..ctx()
        },
    );
    assert_eq!(
        v2.status_lines().next(),
        Some("Rolled back at 16:02: lost contact with the server")
    );
}

/// A rollback the night before Berlin's switch to summer time (2026-03-29), seen the next
/// morning: the clock time is the one the wall clock showed then (CET), not today's offset
/// applied to it.
#[test]
fn a_rollback_before_a_dst_change_shows_the_clock_time_of_that_night() {
    let mut s = rolled_back_43();
    let at = 1_774_740_600; // 2026-03-28 23:30 UTC: 00:30 CET
    if let Some(r) = s.rollback.last.as_mut() {
        r.at = at;
    }
    let v = view(
        Some(&s),
        &ViewContext {
            now: at + 9 * 3600, // 10:30 CEST
            tz: jiff::tz::TimeZone::get("Europe/Berlin").expect("the system's tz database"),
            ..ctx()
        },
    );
    assert_eq!(
        v.status_lines().next(),
        Some("Rolled back at 00:30: lost contact with the server")
    );
}

#[test]
fn old_rollback_says_how_long_ago_instead_of_a_clock_time() {
    let v = view_at(Some(&rolled_back_43()), at_1402() + 3 * 86400);
    assert_eq!(
        v.status_lines().next(),
        Some("Rolled back 3 days ago: lost contact with the server")
    );
}

#[test]
fn rolled_back_outranks_reboot_and_available() {
    let mut s = rolled_back_43();
    s.reboot_needed = true;
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::RolledBack);
    assert!(v.status_lines().any(|l| l == "Restart needed"));
}

#[test]
fn reboot_needed_is_its_own_state_with_one_restart_line() {
    let s = updated_to_43(true);
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::RebootNeeded);
    assert_eq!(
        v.status_lines().filter(|l| *l == "Restart needed").count(),
        1
    );
}

#[test]
fn server_unreachable_outranks_a_known_update() {
    let mut s = available(Policy::Auto);
    s.server_reachable = Some(false);
    s.last_check = Some(LastCheck {
        at: NOW - 60,
        result: CheckResult::Unreachable,
        message: None,
    });
    let v = view(Some(&s), &ctx());
    assert_eq!(v.icon, IconKind::ServerUnreachable);
    assert_eq!(v.status_lines().next(), Some("Update server not reachable"));
    assert!(v
        .status_lines()
        .any(|l| l == "Last check 1 min ago: server not reachable"));
}

#[test]
fn agent_unreachable_disables_everything_but_login_toggle_and_quit() {
    let v = view(None, &ctx());
    assert_eq!(v.icon, IconKind::AgentUnreachable);
    assert_eq!(
        v.tooltip,
        "tiffin: Agent not reachable\nIs the tiffin agent running?"
    );
    assert_eq!(v.status_lines().next(), Some("Agent not reachable"));
    for a in [
        MenuAction::UpdateNow,
        MenuAction::CheckNow,
        MenuAction::RollBack,
        MenuAction::ShowLog,
    ] {
        assert!(!v.is_enabled(a), "{a:?}");
    }
    assert!(v.is_enabled(MenuAction::StartAtLogin));
    assert!(v.is_enabled(MenuAction::Quit));
}

#[test]
fn rollback_needs_permission_and_a_previous_system() {
    let s = up_to_date();
    let not_admin = view(
        Some(&s),
        &ViewContext {
            user_may_rollback: false,
            ..ctx()
        },
    );
    assert!(!not_admin.is_enabled(MenuAction::RollBack));
    let mut none = up_to_date();
    none.rollback.previous_available = false;
    assert!(!view(Some(&none), &ctx()).is_enabled(MenuAction::RollBack));
    assert!(view(Some(&s), &ctx()).is_enabled(MenuAction::RollBack));
}

#[test]
fn start_at_login_check_follows_the_context() {
    let on = view(
        None,
        &ViewContext {
            start_at_login: true,
            ..ctx()
        },
    );
    assert!(matches!(
        on.entry(MenuAction::StartAtLogin),
        Some(MenuLine::Check { checked: true, .. })
    ));
    assert!(matches!(
        view(None, &ctx()).entry(MenuAction::StartAtLogin),
        Some(MenuLine::Check { checked: false, .. })
    ));
}

#[test]
fn never_checked_says_so() {
    let mut s = up_to_date();
    s.last_check = None;
    assert!(view(Some(&s), &ctx())
        .status_lines()
        .any(|l| l == "Not checked yet"));
}

#[test]
fn each_icon_kind_has_its_own_asset() {
    let mut stems: Vec<_> = IconKind::ALL.iter().map(|k| k.asset_stem()).collect();
    stems.sort();
    stems.dedup();
    assert_eq!(stems.len(), IconKind::ALL.len());
}

#[test]
fn relative_times_read_naturally() {
    assert_eq!(ago(NOW - 10, NOW), "just now");
    assert_eq!(ago(NOW - 600, NOW), "10 min ago");
    assert_eq!(ago(NOW - 3 * 3600, NOW), "3 h ago");
    assert_eq!(ago(NOW - 86400, NOW), "1 day ago");
    assert_eq!(ago(NOW - 5 * 86400, NOW), "5 days ago");
    assert_eq!(
        ago(NOW + 100, NOW),
        "just now",
        "a clock skew is not negative"
    );
    let zone = |h| jiff::tz::TimeZone::fixed(jiff::tz::offset(h));
    assert_eq!(crate::timefmt::clock(at_1402(), &zone(0)), "14:02");
    assert_eq!(crate::timefmt::clock(at_1402(), &zone(-15)), "23:02");
}

#[test]
fn refresh_is_at_the_next_minute_and_only_when_times_are_shown() {
    let s = up_to_date();
    assert_eq!(next_refresh(Some(&s), NOW + 7), Some(NOW - NOW % 60 + 60));
    assert_eq!(next_refresh(None, NOW), None);
    assert_eq!(next_refresh(Some(&AgentStatus::default()), NOW), None);
}

#[test]
fn an_unsigned_or_too_old_publication_is_said_in_the_tooltip_and_the_menu() {
    let mut s = up_to_date();
    s.publication = Some(crate::status::PublicationNote::Unsigned);
    let v = view(Some(&s), &ctx());
    assert!(v.tooltip.contains("unsigned"), "{}", v.tooltip);
    assert!(v.status_lines().any(|l| l.contains("unsigned")));
    s.publication = Some(crate::status::PublicationNote::TooOld);
    let v = view(Some(&s), &ctx());
    assert!(v.tooltip.contains("Publication too old"), "{}", v.tooltip);
    s.publication = None;
    let v = view(Some(&s), &ctx());
    assert!(!v.tooltip.contains("ublication"), "{}", v.tooltip);
}

#[test]
fn the_source_that_served_the_last_check_is_named_in_the_tooltip() {
    let mut s = up_to_date();
    let v = view(Some(&s), &ctx());
    assert!(!v.tooltip.contains("Checked at"), "{}", v.tooltip);
    s.served_by = Some("sftp://laptop@mirror.example:22/".into());
    let v = view(Some(&s), &ctx());
    assert!(
        v.tooltip
            .contains("Checked at sftp://laptop@mirror.example:22/"),
        "{}",
        v.tooltip
    );
    // The menu keeps its lines.
    assert!(!v.status_lines().any(|l| l.contains("mirror.example")));
}
