//! Notifications per transition.

use super::*;

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
    assert!(!v.status_lines().any(|l| l.starts_with("Applies itself")));
}
