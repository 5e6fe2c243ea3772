//! The view's tests and the statuses they share.

mod menu;
mod notify;
mod pending;

use super::*;
use crate::status::{
    CheckResult, LastCheck, LastUpdate, Outcome, Phase, Policy, Progress, RollbackInfo,
    RollbackState,
};

const NOW: u64 = 1_800_000_000;

fn ctx() -> ViewContext {
    ViewContext {
        now: NOW,
        tz: jiff::tz::TimeZone::UTC,
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
