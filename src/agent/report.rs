//! Step 7: the report of a cycle (`logs/<UTC time>-g<N>-<outcome>.json` and the matching
//! `.log.gz` with the output of every command), and `logs/seen.json`, refreshed at each check.
//! Both go through the [`Outbox`], so a report that cannot be sent now is sent next time.

use super::pipeline::outbox::Outbox;
use crate::source::SourceError;
use crate::status::Outcome;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// The structured report of one cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    pub generation: u64,
    pub outcome: Outcome,
    #[serde(default)]
    pub failed_step: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// RFC 3339, UTC.
    pub started: String,
    pub finished: String,
    pub system_before: Option<String>,
    pub system_after: Option<String>,
    pub reboot_needed: bool,
    /// Seconds per step (`fetch`, `build`, `activate`, `files`, `verify`, `commit`, `roll_back`).
    pub durations: BTreeMap<String, f64>,
    pub agent_version: String,
    /// The name of the matching log in `logs/`.
    pub log: String,
    /// "unsigned" (`allow_unsigned`) or "publication too old" (`max_age`), when so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<crate::status::PublicationNote>,
}

/// `logs/seen.json`: the last contact, for `fleet status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub host: String,
    /// RFC 3339, UTC.
    pub last_seen: String,
    pub applied_generation: Option<u64>,
    pub running_system: Option<String>,
    pub booted_system: Option<String>,
    pub agent_version: String,
    /// The agent's check interval in seconds: `fleet status` calls a host "not seen" after a few
    /// intervals without contact. Absent from older agents (then 15 min is assumed).
    #[serde(default)]
    pub interval_secs: Option<u64>,
    /// The generation the agent is applying right now: set in the `seen.json` uploaded when a
    /// cycle starts applying a new generation, `None` in the one uploaded when the cycle ends.
    #[serde(default)]
    pub updating_to: Option<u64>,
    /// The running kernel, initrd or modules differ from the booted ones (a restart is needed).
    /// Absent from older agents (then the latest report's `reboot_needed` is used).
    #[serde(default)]
    pub reboot_needed: Option<bool>,
}

pub const SEEN_NAME: &str = "seen.json";

/// Unix seconds as RFC 3339 UTC (`2026-11-25T10:00:00Z`).
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The outcome as it is written in reports and file names (`rolled_back`).
pub fn outcome_word(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{o:?}"))
}

/// The base name of a report: `<UTC time>-g<N>-<outcome>`.
pub fn report_base(finished_unix: u64, generation: u64, outcome: Outcome) -> String {
    format!(
        "{}-g{generation}-{}",
        rfc3339(finished_unix),
        outcome_word(outcome)
    )
}

/// Queues the report and its gzip'd log; returns the JSON's name.
pub fn enqueue_report(outbox: &Outbox, report: &Report, log: &str) -> Result<String, SourceError> {
    let base = report.log.trim_end_matches(".log.gz").to_string();
    let json_name = format!("{base}.json");
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gz = enc
        .write_all(log.as_bytes())
        .and_then(|()| enc.finish())
        .map_err(|source| SourceError::Io {
            place: report.log.clone(),
            source,
        })?;
    // Log first: a reader that sees the JSON finds its log already there.
    outbox.enqueue(&report.log, &gz)?;
    let mut json = serde_json::to_vec_pretty(report).map_err(|e| SourceError::Io {
        place: json_name.clone(),
        source: std::io::Error::other(e),
    })?;
    json.push(b'\n');
    outbox.enqueue(&json_name, &json)?;
    Ok(json_name)
}

/// Queues `seen.json`.
pub fn enqueue_seen(outbox: &Outbox, seen: &Seen) -> Result<(), SourceError> {
    let mut json = serde_json::to_vec_pretty(seen).map_err(|e| SourceError::Io {
        place: SEEN_NAME.into(),
        source: std::io::Error::other(e),
    })?;
    json.push(b'\n');
    outbox.enqueue(SEEN_NAME, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_are_valid_log_names_with_time_generation_and_outcome() {
        let b = report_base(1_764_064_800, 7, Outcome::RolledBack);
        assert_eq!(b, "2025-11-25T10:00:00Z-g7-rolled_back");
        assert!(crate::source::check_log_name(&format!("{b}.json")).is_ok());
    }

    #[test]
    fn a_seen_json_from_an_agent_without_interval_updating_or_reboot_fields_still_reads() {
        let s: Seen = serde_json::from_str(
            r#"{"host":"a","last_seen":"2025-11-25T10:00:00Z","applied_generation":3,
                "running_system":null,"booted_system":null,"agent_version":"0.1.0"}"#,
        )
        .unwrap();
        assert_eq!(
            (s.interval_secs, s.updating_to, s.reboot_needed),
            (None, None, None)
        );
        assert_eq!(s.applied_generation, Some(3));
    }
}
