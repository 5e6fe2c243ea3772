//! The report of a backup run in the host's `logs/` (docs/backup.md):
//! `<host>-backup-<UTC time>.json`, written by the agent after each run and read by `fleet
//! status` for its backup column. Read back as untrusted input like every report.

use super::report::{parse_time, rfc3339};
use crate::backup::record::BackupRun;
use serde::{Deserialize, Serialize};

/// What the agent uploads after a backup run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    pub host: String,
    pub agent_version: String,
    /// The schedule in seconds: `fleet status` calls a backup stale after twice this.
    pub interval_secs: u64,
    #[serde(flatten)]
    pub run: BackupRun,
}

const INFIX: &str = "-backup-";

impl BackupReport {
    /// `<host>-backup-<UTC time of its end>.json`.
    pub fn name(&self) -> String {
        format!("{}{INFIX}{}.json", self.host, rfc3339(self.run.finished))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The time in a backup report's name, `None` for any other file.
pub fn backup_report_time(file: &str) -> Option<u64> {
    let base = file.strip_suffix(".json")?;
    let (_, time) = base.rsplit_once(INFIX)?;
    parse_time(time)
}

pub fn parse_backup_report(bytes: &[u8]) -> Result<BackupReport, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::record::BackupOutcome;
    use crate::publication::{is_log_name, ReportName};

    #[test]
    fn a_backup_reports_name_is_a_log_name_with_its_time_and_never_a_cycle_report() {
        let r = BackupReport {
            host: "web-1".into(),
            agent_version: "0".into(),
            interval_secs: 86400,
            run: BackupRun {
                started: 1_764_064_700,
                finished: 1_764_064_800,
                outcome: BackupOutcome::Failed,
                files_new: 0,
                files_changed: 0,
                files_unmodified: 0,
                bytes_added: 0,
                bytes_processed: 0,
                snapshot: None,
                message: Some("Fatal: wrong password".into()),
            },
        };
        let name = r.name();
        assert_eq!(name, "web-1-backup-2025-11-25T10:00:00Z.json");
        assert!(is_log_name(&name));
        assert!(ReportName::parse(&name).is_none());
        assert_eq!(backup_report_time(&name), Some(1_764_064_800));
        assert_eq!(
            backup_report_time("2025-11-25T10:00:00Z-g7-failed.json"),
            None
        );
        assert_eq!(parse_backup_report(&r.to_json()).unwrap(), r);
    }
}
