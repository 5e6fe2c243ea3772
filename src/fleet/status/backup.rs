//! The backup part of a host's row (docs/backup.md): the newest `logs/<host>-backup-<time>.json`
//! (its age, outcome, bytes added, message), when the last snapshot was made, the size of the
//! host's `backup/` on the server measured here, fleet.toml's `backup_quota`, and whether the
//! backup is stale (no snapshot for more than twice the host's schedule). Everything under
//! `logs/` and `backup/` is the host's: no symlink is followed, reports are size-capped.

use super::records::{read_host_file, MAX_HOST_FILE};
use crate::backup::BackupOutcome;
use crate::publication::backup_report::{backup_report_time, parse_backup_report};
use crate::publication::{BACKUP, LOGS};
use serde::Serialize;
use std::path::Path;

/// How many reports are opened, newest first, looking for the last snapshot.
const MAX_REPORTS_READ: usize = 64;
/// How many entries of `backup/` are counted at most (a restic repository of a few TB).
const MAX_ENTRIES: usize = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupView {
    /// Age of the newest backup report.
    pub last_run_age_secs: u64,
    pub last_outcome: BackupOutcome,
    pub last_bytes_added: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// Age of the newest run that made a snapshot, among the newest reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_snapshot_age_secs: Option<u64>,
    /// The host's schedule, as its agent reported it.
    pub interval_secs: u64,
    /// No snapshot for more than twice the schedule.
    pub stale: bool,
    /// Bytes in `backup/` on the server.
    pub size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    pub over_quota: bool,
}

/// The backup view of the host at `dir`; `None` when it has neither a backup report nor data in
/// `backup/`. Problems go to `problems`.
pub fn read_backup(
    dir: &Path,
    quota: Option<u64>,
    now: u64,
    problems: &mut Vec<String>,
) -> Option<BackupView> {
    let logs = dir.join(LOGS);
    let mut names: Vec<(u64, String)> = std::fs::read_dir(&logs)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            Some((backup_report_time(&n)?, n))
        })
        .collect();
    names.sort();
    let size = dir_size(&dir.join(BACKUP));
    if names.is_empty() && size == 0 {
        return None;
    }
    let mut newest = None;
    let mut snapshot_at = None;
    // Without a snapshot among the reports read, staleness counts from the oldest of them.
    let mut oldest = now;
    for (_, name) in names.iter().rev().take(MAX_REPORTS_READ) {
        let path = logs.join(name);
        let report = match read_host_file(&path, MAX_HOST_FILE)
            .and_then(|b| parse_backup_report(&b).map_err(std::io::Error::other))
        {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        oldest = oldest.min(report.run.finished);
        if report.run.outcome.made_snapshot() && snapshot_at.is_none() {
            snapshot_at = Some(report.run.finished);
        }
        let found_snapshot = snapshot_at.is_some();
        newest.get_or_insert(report);
        if found_snapshot {
            break;
        }
    }
    let interval = newest.as_ref().map_or(0, |r| r.interval_secs);
    let stale = interval > 0
        && now.saturating_sub(snapshot_at.unwrap_or(oldest)) > interval.saturating_mul(2);
    Some(BackupView {
        last_run_age_secs: newest
            .as_ref()
            .map_or(0, |r| now.saturating_sub(r.run.finished)),
        last_outcome: newest
            .as_ref()
            .map_or(BackupOutcome::Failed, |r| r.run.outcome),
        last_bytes_added: newest.as_ref().map_or(0, |r| r.run.bytes_added),
        last_message: newest.as_ref().and_then(|r| r.run.message.clone()),
        last_snapshot_age_secs: snapshot_at.map(|t| now.saturating_sub(t)),
        interval_secs: interval,
        stale,
        size_bytes: size,
        quota_bytes: quota,
        over_quota: quota.is_some_and(|q| size > q),
    })
}

/// The bytes of the regular files under `dir`, symlinks not followed.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return total;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::BackupRun;
    use crate::publication::backup_report::BackupReport;

    fn report(finished: u64, outcome: BackupOutcome) -> BackupReport {
        BackupReport {
            host: "web".into(),
            agent_version: "0".into(),
            interval_secs: 86400,
            run: BackupRun {
                started: finished - 5,
                finished,
                outcome,
                files_new: 1,
                files_changed: 0,
                files_unmodified: 0,
                bytes_added: 4096,
                bytes_processed: 4096,
                snapshot: None,
                message: (outcome == BackupOutcome::Failed).then(|| "Fatal: gone".into()),
            },
        }
    }

    #[test]
    fn the_newest_report_the_last_snapshot_size_quota_and_staleness_are_read() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::create_dir_all(dir.join("backup/data/00")).unwrap();
        std::fs::write(dir.join("backup/data/00/pack"), vec![0u8; 3000]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("backup/link")).unwrap();
        let now = 10 * 86400;
        for r in [
            report(now - 3 * 86400, BackupOutcome::Ok),
            report(now - 3600, BackupOutcome::Failed),
        ] {
            std::fs::write(dir.join("logs").join(r.name()), r.to_json()).unwrap();
        }
        std::fs::write(dir.join("logs/web-backup-garbage.json"), "{").unwrap();
        let mut problems = vec![];
        let v = read_backup(dir, Some(2000), now, &mut problems).unwrap();
        assert_eq!(v.last_outcome, BackupOutcome::Failed);
        assert_eq!(v.last_run_age_secs, 3600);
        assert_eq!(v.last_snapshot_age_secs, Some(3 * 86400));
        assert!(v.stale, "{v:?}");
        assert_eq!(v.size_bytes, 3000, "the symlink is not followed");
        assert!(v.over_quota);
        assert!(problems.is_empty(), "{problems:?}");
        let fresh = read_backup(dir, None, now - 2 * 86400, &mut vec![]).unwrap();
        assert!(!fresh.stale && !fresh.over_quota, "{fresh:?}");
        // A first run that failed an hour ago is not stale yet.
        let t2 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t2.path().join("logs")).unwrap();
        let r = report(now - 3600, BackupOutcome::Failed);
        std::fs::write(t2.path().join("logs").join(r.name()), r.to_json()).unwrap();
        let first = read_backup(t2.path(), None, now, &mut vec![]).unwrap();
        assert!(
            !first.stale && first.last_snapshot_age_secs.is_none(),
            "{first:?}"
        );
        assert!(read_backup(&dir.join("nothing"), None, now, &mut vec![]).is_none());
    }
}
