//! The backup lines under `fleet status`'s table (docs/backup.md): one per host that makes
//! backups — the last run's age and outcome, bytes added, the last snapshot's age, the size of
//! its `backup/` against fleet.toml's `backup_quota` — with stale backups and full quotas flagged.

use super::assess::FleetStatus;
use super::backup::BackupView;
use crate::fleet::inert::first_line;
use crate::fleet::report::human_bytes;
use crate::timefmt::compact;

/// The section; empty when no host makes backups.
pub fn section(status: &FleetStatus) -> String {
    let rows: Vec<(&str, String)> = status
        .hosts
        .iter()
        .filter_map(|h| Some((h.host.as_str(), line(h.backup.as_ref()?))))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let width = rows
        .iter()
        .map(|(h, _)| h.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::from("\nBACKUPS (last run; last snapshot; size on the server)\n");
    for (host, text) in rows {
        out.push_str(&format!("{host:width$}  {text}\n"));
    }
    out
}

/// `3h ago ok +4.0 KiB; snapshot 3h ago; 1.2 GiB of 50 GiB`, with `STALE` and `OVER QUOTA`.
pub fn line(b: &BackupView) -> String {
    let mut last = format!(
        "{} ago {}",
        compact(b.last_run_age_secs),
        b.last_outcome.word()
    );
    if b.last_outcome.made_snapshot() {
        last.push_str(&format!(" +{}", human_bytes(b.last_bytes_added)));
    } else if let Some(m) = &b.last_message {
        last.push_str(&format!(": {}", first_line(m, 60)));
    }
    let mut snapshot = match b.last_snapshot_age_secs {
        Some(a) => format!("snapshot {} ago", compact(a)),
        None => "no snapshot".into(),
    };
    if b.stale {
        snapshot.push_str(&format!(
            " STALE (more than 2 × {})",
            compact(b.interval_secs)
        ));
    }
    let mut size = human_bytes(b.size_bytes);
    if let Some(q) = b.quota_bytes {
        size.push_str(&format!(" of {}", human_bytes(q)));
        if b.over_quota {
            size.push_str(" OVER QUOTA");
        }
    }
    format!("{last}; {snapshot}; {size}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::BackupOutcome;

    #[test]
    fn a_stale_failed_backup_over_its_quota_says_so_on_one_line_without_control_characters() {
        let v = BackupView {
            last_run_age_secs: 3600,
            last_outcome: BackupOutcome::Failed,
            last_bytes_added: 0,
            last_message: Some("Fatal: gone\u{1b}[2J\nmore".into()),
            last_snapshot_age_secs: Some(3 * 86400),
            interval_secs: 86400,
            stale: true,
            size_bytes: 3 << 30,
            quota_bytes: Some(2 << 30),
            over_quota: true,
        };
        let l = line(&v);
        assert!(l.starts_with("1h ago failed: Fatal: gone"), "{l}");
        assert!(l.contains("STALE") && l.contains("OVER QUOTA"), "{l}");
        assert!(!l.contains('\u{1b}') && !l.contains('\n'), "{l}");
    }
}
