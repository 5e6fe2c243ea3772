//! The backup part of the tray (docs/backup.md): "Last backup: 3 h ago" in the menu and the
//! tooltip, and a notification when a backup failed or is older than twice its schedule.

use crate::backup::{BackupOutcome, BackupStatus};
use crate::status::AgentStatus;
use crate::timefmt::{ago, span};
use crate::tray::i18n::{tr, tr_args};

/// The backup lines: none when the agent makes no backups.
pub(super) fn backup_lines(s: &AgentStatus, now: u64) -> Vec<String> {
    let Some(b) = &s.backup else {
        return vec![];
    };
    let mut lines = vec![match (b.running, b.last_success) {
        (true, _) => tr("backup-running"),
        (false, Some(t)) => tr_args("backup-last", &[("ago", ago(t, now).into())]),
        (false, None) => tr("backup-none-yet"),
    }];
    if let Some(r) = b
        .last
        .as_ref()
        .filter(|r| r.outcome == BackupOutcome::Failed)
    {
        let why = r.message.as_deref().and_then(|m| m.lines().next());
        lines.push(match why {
            Some(w) => tr_args(
                "backup-failed-because",
                &[("ago", ago(r.finished, now).into()), ("why", w.into())],
            ),
            None => tr_args("backup-failed-ago", &[("ago", ago(r.finished, now).into())]),
        });
    }
    lines
}

/// "Back up now" can be clicked: the agent makes backups and none is running.
pub(super) fn can_back_up(s: Option<&AgentStatus>) -> bool {
    s.and_then(|s| s.backup.as_ref())
        .is_some_and(|b| !b.running)
}

/// A backup notification, before `notify` makes it a `Notification`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupNote {
    pub stale: bool,
    pub summary: String,
    pub body: String,
}

/// What was said about backups, so each failure and each stale spell is told once.
#[derive(Clone, Debug, Default)]
pub struct BackupNotes {
    /// The end time of the failed run last told.
    failed_told: Option<u64>,
    stale_told: bool,
    /// When the tray first saw the backup status (a machine never backed up is stale from then).
    since: Option<u64>,
}

impl BackupNotes {
    pub fn observe(&mut self, s: &AgentStatus, now: u64) -> Vec<BackupNote> {
        let Some(b) = &s.backup else {
            return vec![];
        };
        let since = *self.since.get_or_insert(now);
        let mut out = Vec::new();
        if let Some(r) = b
            .last
            .as_ref()
            .filter(|r| r.outcome == BackupOutcome::Failed)
        {
            if self.failed_told != Some(r.finished) {
                self.failed_told = Some(r.finished);
                out.push(BackupNote {
                    stale: false,
                    summary: tr("notify-backup-failed"),
                    body: r.message.clone().unwrap_or_default(),
                });
            }
        }
        let stale = b.is_stale(now, since);
        if stale && !self.stale_told {
            out.push(stale_note(b, now));
        }
        self.stale_told = stale;
        out
    }
}

fn stale_note(b: &BackupStatus, now: u64) -> BackupNote {
    let body = match b.last_success {
        Some(t) => tr_args(
            "notify-backup-old",
            &[
                ("age", span(now.saturating_sub(t)).into()),
                ("every", span(b.interval_secs).into()),
            ],
        ),
        None => tr("notify-backup-never"),
    };
    BackupNote {
        stale: true,
        summary: tr("notify-backup-overdue"),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::BackupRun;

    fn run(finished: u64, outcome: BackupOutcome) -> BackupRun {
        BackupRun {
            started: finished - 10,
            finished,
            outcome,
            files_new: 1,
            files_changed: 0,
            files_unmodified: 0,
            bytes_added: 10,
            bytes_processed: 10,
            snapshot: None,
            message: (outcome == BackupOutcome::Failed).then(|| "Fatal: connection lost".into()),
        }
    }

    fn status(b: BackupStatus) -> AgentStatus {
        AgentStatus {
            backup: Some(b),
            ..AgentStatus::default()
        }
    }

    #[test]
    fn the_age_of_the_last_backup_and_a_failure_are_shown() {
        let now = 1_000_000;
        let ok = status(BackupStatus {
            interval_secs: 86400,
            last: Some(run(now - 3 * 3600, BackupOutcome::Ok)),
            last_success: Some(now - 3 * 3600),
            ..Default::default()
        });
        assert_eq!(backup_lines(&ok, now), ["Last backup: 3 h ago"]);
        let failed = status(BackupStatus {
            interval_secs: 86400,
            last: Some(run(now - 60, BackupOutcome::Failed)),
            last_success: Some(now - 3 * 3600),
            ..Default::default()
        });
        assert_eq!(
            backup_lines(&failed, now),
            [
                "Last backup: 3 h ago",
                "Backup failed 1 min ago: Fatal: connection lost"
            ]
        );
        assert!(backup_lines(&AgentStatus::default(), now).is_empty());
    }

    #[test]
    fn a_failure_and_a_stale_backup_are_each_told_once() {
        let now = 1_000_000;
        let mut notes = BackupNotes::default();
        let failed = status(BackupStatus {
            interval_secs: 3600,
            last: Some(run(now - 60, BackupOutcome::Failed)),
            last_success: Some(now - 3 * 3600),
            ..Default::default()
        });
        let stale = |v: Vec<BackupNote>| v.into_iter().map(|n| n.stale).collect::<Vec<_>>();
        assert_eq!(stale(notes.observe(&failed, now)), [false, true]);
        assert!(notes.observe(&failed, now + 60).is_empty());
        let fresh = status(BackupStatus {
            interval_secs: 3600,
            last: Some(run(now + 100, BackupOutcome::Ok)),
            last_success: Some(now + 100),
            ..Default::default()
        });
        assert!(notes.observe(&fresh, now + 120).is_empty());
    }
}
