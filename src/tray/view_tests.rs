use super::*;
use crate::status::{LastCheck, LastUpdate, Progress, RollbackInfo, RollbackState};

const NOW: u64 = 1_800_000_000;

fn ctx() -> ViewContext {
    ViewContext {
        now: NOW,
        utc_offset: 0,
        user_may_rollback: true,
        start_at_login: false,
        down_reason: DownReason::NotRunning,
    }
}

/// Generation 42 applied 10 minutes ago, checked 2 minutes ago, nothing pending.
fn up_to_date() -> AgentStatus {
    AgentStatus {
        host: "laptop".into(),
        applied_generation: Some(42),
        applied_at: Some(NOW - 600),
        last_check: Some(LastCheck {
            at: NOW - 120,
            result: CheckResult::UpToDate,
            message: None,
        }),
        last_update: Some(LastUpdate {
            at: NOW - 600,
            generation: 42,
            outcome: Outcome::Updated,
            failed_step: None,
            message: None,
        }),
        rollback: RollbackState {
            previous_available: true,
            last: None,
        },
        server_reachable: Some(true),
        admin_group: "wheel".into(),
        ..AgentStatus::default()
    }
}

fn available(policy: Policy) -> AgentStatus {
    let mut s = up_to_date();
    s.policy = policy;
    s.available_generation = Some(43);
    s.last_check = Some(LastCheck {
        at: NOW - 30,
        result: CheckResult::UpdateAvailable,
        message: None,
    });
    s
}

fn downloading() -> AgentStatus {
    let mut s = available(Policy::Auto);
    s.phase = Phase::Downloading;
    s.progress = Some(Progress {
        done_files: 3,
        total_files: 10,
        done_bytes: 250,
        total_bytes: 1000,
    });
    s
}

fn updated_to_43(reboot: bool) -> AgentStatus {
    let mut s = up_to_date();
    s.applied_generation = Some(43);
    s.applied_at = Some(NOW - 5);
    s.last_update = Some(LastUpdate {
        at: NOW - 5,
        generation: 43,
        outcome: Outcome::Updated,
        failed_step: None,
        message: None,
    });
    s.reboot_needed = reboot;
    s
}

fn failed_43() -> AgentStatus {
    let mut s = available(Policy::Auto);
    s.last_update = Some(LastUpdate {
        at: NOW - 5,
        generation: 43,
        outcome: Outcome::Failed,
        failed_step: Some(crate::status::Step::Build),
        message: Some("nix-build exited with 1".into()),
    });
    s
}

/// 14:02 UTC on the day of NOW.
fn at_1402() -> u64 {
    NOW - NOW % 86400 + 14 * 3600 + 2 * 60
}

fn rolled_back_43() -> AgentStatus {
    let mut s = available(Policy::Auto);
    let at = at_1402();
    s.last_update = Some(LastUpdate {
        at,
        generation: 43,
        outcome: Outcome::RolledBack,
        failed_step: Some(crate::status::Step::Verify),
        message: Some("lost contact with the server".into()),
    });
    s.rollback.last = Some(RollbackInfo {
        at,
        generation: 43,
        from_system: "/nix/store/b-43".into(),
        to_system: "/nix/store/a-42".into(),
        reason: "lost contact with the server".into(),
    });
    s
}

fn kinds(n: &[Notification]) -> Vec<NotificationKind> {
    n.iter().map(|n| n.kind).collect()
}

fn view_at(s: Option<&AgentStatus>, now: u64) -> TrayView {
    view(s, &ViewContext { now, ..ctx() })
}

// ---- icon and menu per state ----

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
    assert!(v.status_lines().any(|l| l == "Applies by itself in 5 h"));
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
            utc_offset: 7200,
            ..ctx()
        },
    );
    assert_eq!(
        v2.status_lines().next(),
        Some("Rolled back at 16:02: lost contact with the server")
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
    assert_eq!(clock(at_1402(), 0), "14:02");
    assert_eq!(clock(at_1402(), -15 * 3600), "23:02");
}

#[test]
fn refresh_is_at_the_next_minute_and_only_when_times_are_shown() {
    let s = up_to_date();
    assert_eq!(next_refresh(Some(&s), NOW + 7), Some(NOW - NOW % 60 + 60));
    assert_eq!(next_refresh(None, NOW), None);
    assert_eq!(next_refresh(Some(&AgentStatus::default()), NOW), None);
}

// ---- notifications per transition ----

#[test]
fn unchanged_status_never_notifies() {
    for s in [
        up_to_date(),
        available(Policy::Notify),
        downloading(),
        failed_43(),
        rolled_back_43(),
        updated_to_43(true),
    ] {
        assert!(
            transition_notifications(Some(&s), &s, true).is_empty(),
            "{s:?}"
        );
    }
}

#[test]
fn new_pending_update_under_notify_policy_offers_update_now() {
    let n = transition_notifications(Some(&up_to_date()), &available(Policy::Notify), true);
    assert_eq!(kinds(&n), vec![NotificationKind::UpdateAvailable]);
    assert_eq!(n[0].summary, "Update available: generation 43");
    assert_eq!(n[0].actions, vec![NotificationAction::UpdateNow]);
}

#[test]
fn pending_update_under_auto_policy_is_not_announced() {
    let n = transition_notifications(Some(&up_to_date()), &available(Policy::Auto), true);
    assert!(n.is_empty());
}

#[test]
fn a_newer_pending_generation_is_announced_again() {
    let mut g44 = available(Policy::Notify);
    g44.available_generation = Some(44);
    let n = transition_notifications(Some(&available(Policy::Notify)), &g44, true);
    assert_eq!(kinds(&n), vec![NotificationKind::UpdateAvailable]);
    assert!(n[0].summary.ends_with("44"));
}

#[test]
fn first_contact_announces_a_pending_update_but_not_past_outcomes() {
    let n = transition_notifications(None, &available(Policy::Notify), true);
    assert_eq!(kinds(&n), vec![NotificationKind::UpdateAvailable]);
    assert!(transition_notifications(None, &rolled_back_43(), true).is_empty());
    assert!(transition_notifications(None, &failed_43(), true).is_empty());
    assert!(transition_notifications(None, &updated_to_43(true), true).is_empty());
}

#[test]
fn progress_changes_do_not_notify() {
    let mut more = downloading();
    if let Some(p) = more.progress.as_mut() {
        p.done_files = 9;
    }
    assert!(transition_notifications(Some(&downloading()), &more, true).is_empty());
    assert!(
        transition_notifications(Some(&available(Policy::Auto)), &downloading(), true).is_empty()
    );
}

#[test]
fn update_done_notifies_once() {
    let n = transition_notifications(Some(&downloading()), &updated_to_43(false), true);
    assert_eq!(kinds(&n), vec![NotificationKind::Updated]);
    assert_eq!(n[0].summary, "Updated to generation 43");
    assert!(n[0].actions.is_empty());
}

#[test]
fn update_done_with_restart_needed_offers_restart_where_allowed() {
    let n = transition_notifications(Some(&downloading()), &updated_to_43(true), true);
    assert_eq!(kinds(&n), vec![NotificationKind::UpdatedRestartNeeded]);
    assert_eq!(n[0].actions, vec![NotificationAction::Restart]);
    let n = transition_notifications(Some(&downloading()), &updated_to_43(true), false);
    assert_eq!(kinds(&n), vec![NotificationKind::UpdatedRestartNeeded]);
    assert!(n[0].actions.is_empty());
}

#[test]
fn update_failed_notifies_with_step_and_message() {
    let n = transition_notifications(Some(&downloading()), &failed_43(), true);
    assert_eq!(kinds(&n), vec![NotificationKind::UpdateFailed]);
    assert_eq!(n[0].summary, "Update to generation 43 failed");
    assert_eq!(n[0].body, "Failed at build: nix-build exited with 1");
}

#[test]
fn rollback_notifies_once_with_the_reason() {
    let mut verifying = downloading();
    verifying.phase = Phase::Verifying;
    let n = transition_notifications(Some(&verifying), &rolled_back_43(), true);
    assert_eq!(kinds(&n), vec![NotificationKind::RolledBack]);
    assert_eq!(n[0].summary, "Generation 43 was rolled back");
    assert_eq!(n[0].body, "lost contact with the server");
}

#[test]
fn rolled_back_outcome_without_a_rollback_record_still_notifies_once() {
    let mut s = rolled_back_43();
    s.rollback.last = None;
    let n = transition_notifications(Some(&downloading()), &s, true);
    assert_eq!(kinds(&n), vec![NotificationKind::RolledBack]);
    assert_eq!(n[0].body, "lost contact with the server");
}

#[test]
fn a_manual_rollback_notifies() {
    let before = up_to_date();
    let mut after = up_to_date();
    after.rollback.last = Some(RollbackInfo {
        at: NOW,
        generation: 42,
        from_system: "b".into(),
        to_system: "a".into(),
        reason: "asked by alice".into(),
    });
    let n = transition_notifications(Some(&before), &after, true);
    assert_eq!(kinds(&n), vec![NotificationKind::RolledBack]);
    assert_eq!(n[0].body, "asked by alice");
}

#[test]
fn an_up_to_date_cycle_does_not_notify() {
    let mut again = up_to_date();
    if let Some(u) = again.last_update.as_mut() {
        u.at = NOW;
        u.outcome = Outcome::UpToDate;
    }
    assert!(transition_notifications(Some(&up_to_date()), &again, true).is_empty());
}

#[test]
fn notifier_tells_unreachable_once_after_five_minutes() {
    let mut n = Notifier::new(true);
    assert!(n.observe(Some(&up_to_date()), NOW).is_empty());
    assert!(n.observe(None, NOW + 1).is_empty());
    assert_eq!(
        n.unreachable_deadline(),
        Some(NOW + 1 + UNREACHABLE_NOTIFY_AFTER)
    );
    assert!(n.observe(None, NOW + 200).is_empty());
    let told = n.observe(None, NOW + 1 + UNREACHABLE_NOTIFY_AFTER);
    assert_eq!(kinds(&told), vec![NotificationKind::AgentUnreachable]);
    assert!(told[0].body.contains("5 min"));
    assert!(
        n.observe(None, NOW + 3600).is_empty(),
        "said once per outage"
    );
    assert_eq!(n.unreachable_deadline(), None);
}

#[test]
fn notifier_repeats_nothing_after_a_reconnect() {
    let mut n = Notifier::new(true);
    assert_eq!(
        kinds(&n.observe(Some(&available(Policy::Notify)), NOW)),
        vec![NotificationKind::UpdateAvailable]
    );
    assert!(n.observe(None, NOW + 10).is_empty());
    assert!(n
        .observe(Some(&available(Policy::Notify)), NOW + 20)
        .is_empty());
    // A new outage is a new event.
    assert!(n.observe(None, NOW + 30).is_empty());
    assert_eq!(
        kinds(&n.observe(None, NOW + 30 + UNREACHABLE_NOTIFY_AFTER)),
        vec![NotificationKind::AgentUnreachable]
    );
}

#[test]
fn short_outage_never_notifies() {
    let mut n = Notifier::new(true);
    n.observe(Some(&up_to_date()), NOW);
    assert!(n.observe(None, NOW + 1).is_empty());
    assert!(n.observe(None, NOW + 60).is_empty());
    assert!(n.observe(Some(&up_to_date()), NOW + 61).is_empty());
    assert!(n.observe(None, NOW + 62).is_empty());
    assert_eq!(
        n.unreachable_deadline(),
        Some(NOW + 62 + UNREACHABLE_NOTIFY_AFTER)
    );
}

#[test]
fn whole_cycle_gives_exactly_available_then_updated() {
    let mut n = Notifier::new(true);
    let mut all = Vec::new();
    let mut busy = available(Policy::Notify);
    busy.phase = Phase::Downloading;
    let mut building = busy.clone();
    building.phase = Phase::Building;
    let mut done = updated_to_43(false);
    done.policy = Policy::Notify;
    for (i, s) in [
        up_to_date(),
        available(Policy::Notify),
        busy,
        building,
        done.clone(),
        done,
    ]
    .iter()
    .enumerate()
    {
        all.extend(n.observe(Some(s), NOW + i as u64));
    }
    assert_eq!(
        kinds(&all),
        vec![NotificationKind::UpdateAvailable, NotificationKind::Updated]
    );
}

#[test]
fn rollback_confirmation_asks_with_two_actions() {
    let c = rollback_confirmation(Some(&up_to_date()));
    assert_eq!(c.kind, NotificationKind::ConfirmRollback);
    assert_eq!(
        c.actions,
        vec![NotificationAction::RollBack, NotificationAction::Cancel]
    );
    assert!(c.body.contains("generation 42"));
    for a in c.actions {
        assert_eq!(NotificationAction::from_key(a.key()), Some(a));
    }
}

#[test]
fn a_socket_the_user_may_not_open_says_so() {
    let v = view(
        None,
        &ViewContext {
            down_reason: DownReason::NotAllowed,
            ..ctx()
        },
    );
    assert_eq!(v.icon, IconKind::AgentUnreachable);
    assert!(v
        .status_lines()
        .any(|l| l == "Not allowed to use its socket: ask to join its group"));
}

#[test]
fn a_generation_fetched_during_a_check_is_announced_once_the_agent_is_idle() {
    // Under `notify`, a check also downloads: the generation shows up while busy.
    let mut n = Notifier::new(true);
    assert!(n.observe(Some(&up_to_date()), NOW).is_empty());
    let mut fetching = available(Policy::Notify);
    fetching.phase = Phase::Downloading;
    assert!(
        n.observe(Some(&fetching), NOW + 1).is_empty(),
        "not while busy"
    );
    assert_eq!(
        kinds(&n.observe(Some(&available(Policy::Notify)), NOW + 2)),
        vec![NotificationKind::UpdateAvailable]
    );
}

#[test]
fn a_failed_update_does_not_announce_its_generation_again() {
    let mut n = Notifier::new(true);
    n.observe(Some(&up_to_date()), NOW);
    assert_eq!(
        kinds(&n.observe(Some(&available(Policy::Notify)), NOW + 1)),
        vec![NotificationKind::UpdateAvailable]
    );
    let mut busy = available(Policy::Notify);
    busy.phase = Phase::Building;
    assert!(n.observe(Some(&busy), NOW + 2).is_empty());
    let mut failed = failed_43();
    failed.policy = Policy::Notify;
    assert_eq!(
        kinds(&n.observe(Some(&failed), NOW + 3)),
        vec![NotificationKind::UpdateFailed],
        "the failure, not the same update again"
    );
    // A newer generation is news.
    let mut g44 = failed.clone();
    g44.available_generation = Some(44);
    assert_eq!(
        kinds(&n.observe(Some(&g44), NOW + 4)),
        vec![NotificationKind::UpdateAvailable]
    );
}

#[test]
fn a_failure_is_not_followed_by_announcing_the_same_generation() {
    // The tray started while the agent was already updating: 43 was never announced.
    let mut n = Notifier::new(true);
    let mut busy = available(Policy::Notify);
    busy.phase = Phase::Building;
    assert!(n.observe(Some(&busy), NOW).is_empty());
    let mut failed = failed_43();
    failed.policy = Policy::Notify;
    assert_eq!(
        kinds(&n.observe(Some(&failed), NOW + 1)),
        vec![NotificationKind::UpdateFailed]
    );
}

#[test]
fn long_status_lines_are_clipped_but_the_tooltip_keeps_the_reason() {
    let mut s = rolled_back_43();
    let reason = "verify failed: cannot reach the server within 5s: /srv/tiffin/laptop/: not found";
    if let Some(r) = s.rollback.last.as_mut() {
        r.reason = reason.into();
    }
    let v = view(
        Some(&s),
        &ViewContext {
            now: at_1402() + 60,
            ..ctx()
        },
    );
    let first = v.status_lines().next().unwrap_or_default().to_string();
    assert_eq!(first.chars().count(), MAX_LINE_CHARS);
    assert!(first.ends_with('…'));
    assert!(format!("Rolled back at 14:02: {reason}").starts_with(first.trim_end_matches('…')));
    assert!(v.tooltip.contains(reason));
    assert_eq!(clip("short"), "short");
    assert_eq!(from_now(NOW + 86400 + 5, NOW), "in 1 day");
}

#[test]
fn a_rolled_back_generation_is_not_promised_for_the_deadline() {
    let mut s = rolled_back_43();
    s.policy = Policy::Notify;
    s.deadline = Some(NOW + 5 * 3600);
    let v = view(Some(&s), &ctx());
    assert!(!v.status_lines().any(|l| l.starts_with("Applies by itself")));
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
