//! Decides each host's row from its records: the rules of the module's header (up to date only
//! when running the published generation, "updating to gN, gN+1 pending", reports placed by
//! their own names).

use super::records::{host_names, HostRecords};
use crate::config::fleet::FleetConfig;
use crate::publication::report::{self, parse_time, Report};
use crate::status::Outcome;
use serde::Serialize;
use std::path::PathBuf;

/// A host is "not seen" after this many of its check intervals without contact.
pub const STALE_INTERVALS: u64 = 3;
/// The agent's default interval, assumed when `seen.json` does not say (older agents).
pub const DEFAULT_INTERVAL_SECS: u64 = 15 * 60;
/// A host's state, most urgent first (the order `fleet status` sorts by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its latest report for the published generation is a failure (or an interrupted cycle).
    Failing,
    /// It rolled the published generation back and will not retry it until a newer one.
    RolledBack,
    /// No contact for more than [`STALE_INTERVALS`] of its intervals.
    NotSeen,
    /// Runs a system tiffin neither applied nor rolled back to (someone switched it by hand).
    Drifted,
    /// Neither `seen.json` nor a report, ever.
    NeverSeen,
    /// Runs the published generation, but its kernel, initrd or modules wait for a reboot.
    RestartNeeded,
    /// Its agent said it started applying a generation and has not reported the end yet.
    Updating,
    /// A newer generation is published than the one it runs.
    UpdatePending,
    /// Runs the published generation.
    UpToDate,
}

impl HostState {
    pub const ALL: [HostState; 9] = [
        HostState::Failing,
        HostState::RolledBack,
        HostState::NotSeen,
        HostState::Drifted,
        HostState::NeverSeen,
        HostState::RestartNeeded,
        HostState::Updating,
        HostState::UpdatePending,
        HostState::UpToDate,
    ];

    /// The words shown in the table.
    pub fn label(self) -> &'static str {
        match self {
            HostState::Failing => "failing",
            HostState::RolledBack => "rolled back",
            HostState::NotSeen => "not seen",
            HostState::Drifted => "drifted",
            HostState::NeverSeen => "never seen",
            HostState::RestartNeeded => "restart needed",
            HostState::Updating => "updating",
            HostState::UpdatePending => "update pending",
            HostState::UpToDate => "up to date",
        }
    }

    pub(super) fn symbol(self) -> &'static str {
        match self {
            HostState::Failing => "✗",
            HostState::RolledBack => "↺",
            HostState::NotSeen => "?",
            HostState::Drifted => "≠",
            HostState::NeverSeen => "·",
            HostState::RestartNeeded => "⟳",
            HostState::Updating => "…",
            HostState::UpdatePending => "↑",
            HostState::UpToDate => "✓",
        }
    }

    /// ANSI SGR parameters.
    pub(super) fn colour(self) -> &'static str {
        match self {
            HostState::Failing => "1;31",
            HostState::RolledBack => "35",
            HostState::NotSeen => "33",
            HostState::Drifted => "1;33",
            HostState::NeverSeen => "2",
            HostState::RestartNeeded => "33",
            HostState::Updating => "36",
            HostState::UpdatePending => "34",
            HostState::UpToDate => "32",
        }
    }
}

/// One row of `fleet status`; its JSON form is the `--json` contract (field names are stable).
#[derive(Clone, Debug, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// False for a chroot directory that fleet.toml does not list (any more).
    pub in_fleet_toml: bool,
    pub state: HostState,
    pub published_generation: Option<u64>,
    /// RFC 3339, from the manifest.
    pub published_at: Option<String>,
    pub publish_age_secs: Option<u64>,
    pub running_generation: Option<u64>,
    /// The generation being applied now, when the agent said it started.
    pub updating_to: Option<u64>,
    /// The published generation when the host neither runs it nor is applying it.
    pub pending_generation: Option<u64>,
    pub expected_system: Option<String>,
    pub running_system: Option<String>,
    /// Whether the running system is the manifest's expected one; null when either is unknown.
    pub system_matches: Option<bool>,
    pub reboot_needed: bool,
    pub last_seen: Option<String>,
    pub last_seen_age_secs: Option<u64>,
    /// The agent's interval (or the default when it did not say).
    pub interval_secs: u64,
    pub report_count: usize,
    /// The newest report by its own time, as the agent uploaded it.
    pub last_report: Option<Report>,
    pub last_report_age_secs: Option<u64>,
    /// Unreadable or invalid files found on the way.
    pub problems: Vec<String>,
    /// Its backups (docs/backup.md), when it makes any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<super::backup::BackupView>,
    /// The live generation's files are sealed to another key than the host's key in fleet.toml
    /// (its key changed since): the next `fleet publish` seals them to the new one.
    pub sealed_to_old_key: bool,
    /// The admin's change note of the published generation (`fleet publish -m`).
    pub note: Option<String>,
    /// The system tiffin last left running, as its agent said (drift is judged against it and
    /// its last rollback's system).
    pub tiffin_system: Option<String>,
}

/// Decides a host's row from its records, as of `now` (Unix seconds).
pub fn assess(rec: &HostRecords, in_fleet_toml: bool, now: u64) -> HostStatus {
    let mut problems = rec.problems.clone();
    let seen = rec.seen.as_ref();
    let seen_at = rec.seen_at();
    if seen.is_some() && seen_at.is_none() {
        problems.push("seen.json: last_seen is not an RFC 3339 time".into());
    }
    let latest = rec.reports.last();
    let last_report = latest.and_then(|l| rec.load_report(l).map_err(|e| problems.push(e)).ok());

    let (running_generation, running_system) = what_runs(rec, seen_at, &mut problems);

    let updating_to = updating_to(rec, seen_at);

    let reboot_needed = reboot_needed(rec, seen_at, last_report.as_ref());

    let published = rec.published;
    let interval_secs = interval_secs(rec);
    let last_contact = seen_at.max(latest.map(|l| l.time));
    let runs_published = published.is_some() && running_generation == published;
    let verdict_on_published = published
        .and_then(|p| rec.reports.iter().rev().find(|r| r.generation == p))
        .map(|r| r.outcome);

    let state = if seen.is_none() && rec.reports.is_empty() {
        HostState::NeverSeen
    } else if last_contact.map_or(true, |t| {
        // interval_secs comes from the host: saturate rather than overflow.
        now.saturating_sub(t) > interval_secs.saturating_mul(STALE_INTERVALS)
    }) {
        HostState::NotSeen
    } else if updating_to.is_some() {
        HostState::Updating
    } else if drifted(rec, seen_at) || put_back(last_report.as_ref(), latest, now, interval_secs) {
        HostState::Drifted
    } else {
        seen_state(
            published,
            runs_published,
            verdict_on_published,
            reboot_needed,
        )
    };

    let pending_generation = published.filter(|p| !runs_published && updating_to != Some(*p));
    let (expected_system, system_matches) = expected_system(rec, running_system.as_ref());
    let published_at = rec.manifest.as_ref().map(|m| m.published.clone());
    HostStatus {
        host: rec.host.clone(),
        in_fleet_toml,
        state,
        publish_age_secs: published_at
            .as_deref()
            .and_then(parse_time)
            .map(|t| now.saturating_sub(t)),
        published_at,
        published_generation: published,
        running_generation,
        updating_to,
        pending_generation,
        expected_system,
        running_system,
        system_matches,
        reboot_needed,
        last_seen: seen.map(|s| s.last_seen.clone()),
        last_seen_age_secs: seen_at.map(|t| now.saturating_sub(t)),
        interval_secs,
        report_count: rec.reports.len(),
        last_report_age_secs: latest.map(|l| now.saturating_sub(l.time)),
        last_report,
        problems,
        backup: None,
        sealed_to_old_key: false,
        note: rec.manifest.as_ref().and_then(|m| m.note.clone()),
        tiffin_system: seen.and_then(|s| s.tiffin_system.clone()),
    }
}

/// The manifest's expected system, and whether the running one is it (null when either is
/// unknown).
fn expected_system(rec: &HostRecords, running: Option<&String>) -> (Option<String>, Option<bool>) {
    let expected = rec
        .manifest
        .as_ref()
        .and_then(|m| m.expected_system.clone());
    let matches = running.zip(expected.as_ref()).map(|(r, e)| r == e);
    (expected, matches)
}

/// The newest report says its cycle found the machine switched by hand (and applied the
/// publication again); shown for [`STALE_INTERVALS`] of the host's intervals.
fn put_back(
    report: Option<&Report>,
    name: Option<&report::ReportName>,
    now: u64,
    interval: u64,
) -> bool {
    report.is_some_and(|r| r.drifted_from.is_some())
        && name
            .is_some_and(|n| now.saturating_sub(n.time) <= interval.saturating_mul(STALE_INTERVALS))
}

/// seen.json, newer than every report, says the machine runs a system that is neither the one
/// tiffin last left running nor the one its last rollback went to.
fn drifted(rec: &HostRecords, seen_at: Option<u64>) -> bool {
    let Some(s) = rec.seen.as_ref() else {
        return false;
    };
    let newest = rec
        .reports
        .last()
        .map_or(true, |l| seen_at.is_some_and(|t| t >= l.time));
    match (&s.running_system, &s.tiffin_system) {
        (Some(run), Some(left)) => newest && run != left && s.rolled_back_to.as_ref() != Some(run),
        _ => false,
    }
}

/// Updating until a report for that generation ends the cycle the seen.json announced.
fn updating_to(rec: &HostRecords, seen_at: Option<u64>) -> Option<u64> {
    let seen = rec.seen.as_ref();
    seen.and_then(|s| s.updating_to).filter(|g| {
        !rec.reports
            .iter()
            .any(|r| r.generation == *g && seen_at.is_some_and(|s| r.time >= s))
    })
}

/// The agent's interval, or the default when it did not say.
fn interval_secs(rec: &HostRecords) -> u64 {
    rec.seen
        .as_ref()
        .and_then(|s| s.interval_secs)
        .filter(|&i| i > 0)
        .unwrap_or(DEFAULT_INTERVAL_SECS)
}

/// Whether a restart is needed: seen.json's word when it is newer than the latest report (or
/// there is none), else the latest report's.
fn reboot_needed(rec: &HostRecords, seen_at: Option<u64>, last_report: Option<&Report>) -> bool {
    match (
        rec.seen.as_ref().and_then(|s| s.reboot_needed),
        rec.reports.last(),
    ) {
        (Some(b), Some(l)) if seen_at.is_some_and(|s| s >= l.time) => b,
        (Some(b), None) => b,
        _ => last_report.is_some_and(|r| r.reboot_needed),
    }
}

/// What a host runs: what seen.json says, unless a success was reported after it was written.
fn what_runs(
    rec: &HostRecords,
    seen_at: Option<u64>,
    problems: &mut Vec<String>,
) -> (Option<u64>, Option<String>) {
    let seen = rec.seen.as_ref();
    let mut running_generation = seen.and_then(|s| s.applied_generation);
    let mut running_system = seen.and_then(|s| s.running_system.clone());
    for r in rec
        .reports
        .iter()
        .filter(|r| seen_at.map_or(true, |s| r.time > s))
        .filter(|r| matches!(r.outcome, Outcome::Updated | Outcome::UpToDate))
    {
        running_generation = Some(r.generation);
        match rec.load_report(r) {
            Ok(full) => running_system = full.system_after.or(running_system),
            Err(e) => problems.push(e),
        }
    }
    (running_generation, running_system)
}

/// The state of a host seen lately and not updating: how the published generation fared.
fn seen_state(
    published: Option<u64>,
    runs_published: bool,
    verdict_on_published: Option<Outcome>,
    reboot_needed: bool,
) -> HostState {
    if !runs_published
        && matches!(
            verdict_on_published,
            Some(Outcome::Failed | Outcome::Interrupted)
        )
    {
        HostState::Failing
    } else if !runs_published && verdict_on_published == Some(Outcome::RolledBack) {
        HostState::RolledBack
    } else if published.is_some() && !runs_published {
        HostState::UpdatePending
    } else if reboot_needed {
        HostState::RestartNeeded
    } else {
        HostState::UpToDate
    }
}

/// The whole fleet at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct FleetStatus {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub chroot: PathBuf,
    pub stale_after_intervals: u64,
    /// Sorted by urgency (state), then name.
    pub hosts: Vec<HostStatus>,
}

/// Reads every host and sorts the rows by urgency.
pub fn fleet_status(config: &FleetConfig, now: u64) -> FleetStatus {
    let mut hosts: Vec<HostStatus> = host_names(config)
        .into_iter()
        .map(|(h, listed)| {
            let rec = HostRecords::read(&config.chroot, &h);
            let mut s = assess(&rec, listed, now);
            s.sealed_to_old_key = super::sealed::to_old_key(config, &rec);
            let quota = config.hosts.get(&h).and_then(|c| c.backup_quota);
            let dir = config.chroot.join(&h);
            s.backup = super::backup::read_backup(&dir, quota, now, &mut s.problems);
            s
        })
        .collect();
    hosts.sort_by(|a, b| (a.state, &a.host).cmp(&(b.state, &b.host)));
    FleetStatus {
        generated_at: report::rfc3339(now),
        chroot: config.chroot.clone(),
        stale_after_intervals: STALE_INTERVALS,
        hosts,
    }
}
