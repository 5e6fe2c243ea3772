//! `tiffin fleet status`: every host's state, read from its publication (`current`, the
//! generation's manifest) and from what its agent uploaded (`logs/seen.json` and the reports
//! `logs/<UTC time>-g<N>-<outcome>.json`). Reads only; never writes.
//!
//! Three rules keep the view honest (bento got each wrong):
//! - a report for an older generation never makes a host look up to date: up to date means the
//!   running generation *is* the published one;
//! - a host applying generation N while N+1 is published shows "updating to gN, gN+1 pending";
//! - reports are placed by the time and generation in their own name, never by when the file
//!   arrived (mtime), so a report that sat in the agent's outbox lands where it belongs.
//!
//! Everything under `logs/` is written by the host, so it is read without following symlinks,
//! only from regular files, and only up to a size cap.

mod assess;
mod backup;
mod backup_table;
mod records;
mod sealed;
mod table;
mod watch;

pub use assess::{
    assess, fleet_status, FleetStatus, HostState, HostStatus, DEFAULT_INTERVAL_SECS,
    STALE_INTERVALS,
};
pub use backup::{read_backup, BackupView};
pub use records::{
    host_names, read_host_file, resolve_host, FleetViewError, HostRecords, MAX_HOST_FILE,
    MAX_LOG_TEXT,
};
pub use table::{age, render_table, Style};
pub(crate) use watch::{add_watches, wait_for_change};
pub use watch::{watch, WatchOutput};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publication::{Report, Seen};
    use crate::status::Outcome;

    fn seen(interval_secs: Option<u64>) -> Seen {
        Seen {
            host: "a".into(),
            last_seen: "2025-11-25T10:00:00Z".into(),
            applied_generation: Some(3),
            running_system: None,
            booted_system: None,
            agent_version: "0.1.0".into(),
            interval_secs,
            updating_to: None,
            reboot_needed: None,
            tiffin_system: None,
            rolled_back_to: None,
        }
    }

    #[test]
    fn a_huge_interval_in_seen_json_saturates_instead_of_overflowing() {
        let rec = HostRecords {
            host: "a".into(),
            published: Some(3),
            seen: Some(seen(Some(u64::MAX))),
            ..Default::default()
        };
        let h = assess(&rec, true, 1_764_064_800 + 3600);
        assert_eq!(h.state, HostState::UpToDate);
        assert_eq!(h.interval_secs, u64::MAX);
    }

    #[test]
    fn text_a_host_wrote_stays_on_its_row_without_control_characters() {
        let rec = HostRecords {
            host: "a".into(),
            seen: Some(seen(None)),
            problems: vec!["logs/x.json: unknown variant `\u{1b}[2J`".into()],
            ..Default::default()
        };
        let mut h = assess(&rec, true, 1_764_064_800);
        h.state = HostState::Failing;
        h.last_report = Some(Report {
            host: "a".into(),
            generation: 4,
            outcome: Outcome::Failed,
            failed_step: Some(crate::status::Step::Build),
            message: Some("failed\u{1b}[31m red\rover".into()),
            started: "2025-11-25T10:00:00Z".into(),
            finished: "2025-11-25T10:00:00Z".into(),
            system_before: None,
            system_after: None,
            reboot_needed: false,
            durations: Default::default(),
            agent_version: "0.1.0".into(),
            log: "x.log.gz".into(),
            publication: Some(crate::status::PublicationNote::Unsigned),
            built_by: Some(crate::status::BuiltBy::Cache),
            cache_bytes: Some(3 << 20),
            note: None,
            drifted_from: None,
        });
        let table = render_table(
            &FleetStatus {
                generated_at: "2025-11-25T10:00:00Z".into(),
                chroot: "/srv/tiffin".into(),
                stale_after_intervals: STALE_INTERVALS,
                hosts: vec![h],
            },
            Style { colour: false },
        );
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(!table.contains(['\u{1b}', '\r']), "{table:?}");
        assert!(
            table.contains("failed at build: failed\u{FFFD}[31m red\u{FFFD}over"),
            "{table}"
        );
        // Its agent accepted an unverified publication: the row says so.
        assert!(table.contains("; unsigned"), "{table}");
        // Where its system came from, and what it downloaded.
        assert!(
            table.contains("; from cache, 3.0 MiB downloaded"),
            "{table}"
        );
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(
            [age(5), age(120), age(7200), age(200_000)],
            ["5s", "2m", "2h", "2d"]
        );
    }

    #[test]
    fn states_sort_most_urgent_first() {
        let mut v = HostState::ALL.to_vec();
        v.reverse();
        v.sort();
        assert_eq!(v, HostState::ALL.to_vec());
        assert_eq!(v[0], HostState::Failing);
    }
}
