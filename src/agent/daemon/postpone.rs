//! `postpone` (docs/protocol.md): under policy `notify`, the person at the machine asks not to be
//! reminded of the waiting update before a time of their choosing — never after the admin's
//! deadline, at which the update applies itself anyway. The postponement names its generation,
//! so a newer one is announced at once; it is kept in `<state_dir>/postponed.json` so that a
//! restarted agent (or tray) does not remind early.

use crate::agent::daemon::status_cell::StatusCell;
use crate::status::{AgentStatus, Policy, Postponed};
use crate::timefmt;
use std::path::{Path, PathBuf};

/// The file the postponement is kept in.
pub fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("postponed.json")
}

/// Whether the waiting update may be postponed until `until` (Unix seconds), and if not why, in
/// words for the person who asked (the deadline in the zone `tz`).
pub fn decide(
    s: &AgentStatus,
    until: u64,
    now: u64,
    tz: &jiff::tz::TimeZone,
) -> Result<Postponed, String> {
    if s.policy != Policy::Notify {
        return Err("this machine applies updates as soon as they are found (policy \"auto\"); there is nothing to postpone".into());
    }
    let Some(g) = s
        .available_generation
        .filter(|g| s.applied_generation.is_none_or_lt(*g))
    else {
        return Err("no update is waiting".into());
    };
    if until <= now {
        return Err(format!(
            "{} has passed; choose a later time",
            timefmt::date_time(until, tz)
        ));
    }
    if let Some(d) = s.deadline.filter(|d| until > *d) {
        return Err(format!(
            "generation {g} applies itself at {} (the admin's deadline); postpone it to that time at the latest",
            timefmt::date_time(d, tz)
        ));
    }
    Ok(Postponed {
        generation: g,
        until,
    })
}

/// `applied < g`, or nothing applied.
trait AppliedBefore {
    fn is_none_or_lt(&self, g: u64) -> bool;
}
impl AppliedBefore for Option<u64> {
    fn is_none_or_lt(&self, g: u64) -> bool {
        !matches!(self, Some(a) if *a >= g)
    }
}

/// Postpones the waiting update: decided against the live status, written to `state_dir`, then
/// shown in the status.
pub fn postpone(state_dir: &Path, status: &StatusCell, until: u64) -> Result<Postponed, String> {
    let now = crate::status::unix_now();
    let p = decide(&status.get(), until, now, &timefmt::local_zone())?;
    let bytes = serde_json::to_vec(&p).unwrap_or_default();
    let path = file(state_dir);
    crate::fsutil::atomic_write(&path, &bytes, 0o600)
        .map_err(|e| format!("cannot keep the postponement in {}: {e}", path.display()))?;
    status.update(|s| s.postponed = Some(p));
    tracing::info!(generation = p.generation, until, "update postponed");
    Ok(p)
}

/// Puts a postponement kept by an earlier run back into the status (a missing or unreadable file:
/// none).
pub fn restore(state_dir: &Path, status: &StatusCell) {
    let Ok(bytes) = std::fs::read(file(state_dir)) else {
        return;
    };
    match serde_json::from_slice::<Postponed>(&bytes) {
        Ok(p) => status.update(|s| s.postponed = Some(p)),
        Err(e) => tracing::warn!(
            "{}: not a postponement ({e}); ignored",
            file(state_dir).display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(deadline: Option<u64>) -> AgentStatus {
        AgentStatus {
            policy: Policy::Notify,
            applied_generation: Some(6),
            available_generation: Some(7),
            deadline,
            ..AgentStatus::default()
        }
    }

    #[test]
    fn a_waiting_update_is_postponed_up_to_the_deadline_and_not_past_it() {
        let utc = jiff::tz::TimeZone::UTC;
        let now = 1_800_000_000;
        let deadline = now + 3 * 3600;
        let s = waiting(Some(deadline));
        assert_eq!(
            decide(&s, now + 3600, now, &utc),
            Ok(Postponed {
                generation: 7,
                until: now + 3600
            })
        );
        assert!(decide(&s, deadline, now, &utc).is_ok());
        let past = decide(&s, deadline + 1, now, &utc).unwrap_err();
        assert!(
            past.contains("2027-01-15 11:00 UTC") && past.contains("deadline"),
            "{past}"
        );
        assert!(decide(&s, now, now, &utc).unwrap_err().contains("passed"));
    }

    #[test]
    fn nothing_is_postponed_under_auto_or_without_a_waiting_update() {
        let utc = jiff::tz::TimeZone::UTC;
        let now = 1_800_000_000;
        let auto = AgentStatus {
            policy: Policy::Auto,
            ..waiting(None)
        };
        assert!(decide(&auto, now + 60, now, &utc)
            .unwrap_err()
            .contains("auto"));
        let none = AgentStatus {
            applied_generation: Some(7),
            ..waiting(None)
        };
        assert!(decide(&none, now + 60, now, &utc)
            .unwrap_err()
            .contains("no update"));
    }

    #[test]
    fn a_kept_postponement_comes_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cell = StatusCell::new(waiting(Some(u64::MAX / 2)));
        let until = crate::status::unix_now() + 600;
        postpone(dir.path(), &cell, until).unwrap();
        let fresh = StatusCell::new(AgentStatus::default());
        restore(dir.path(), &fresh);
        assert_eq!(
            fresh.get().postponed,
            Some(Postponed {
                generation: 7,
                until
            })
        );
    }
}
