//! What an agent writes into its host's `logs/`, and how the fleet side reads it back: the report
//! of a cycle (`logs/<UTC time>-g<N>-<outcome>.json`, its log `….log.gz`), `logs/seen.json`
//! (the last contact), their names (written by [`report_base`], parsed by [`ReportName::parse`])
//! and the check every uploaded name passes ([`is_log_name`]).
//!
//! Everything here is read back from files the host wrote: parsing is strict about names and
//! lenient about a field the fleet only prints (an unknown `failed_step` reads as `None`).

use crate::status::{Outcome, PublicationNote, Step};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// The structured report of one cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    pub generation: u64,
    pub outcome: Outcome,
    /// A step this fleet does not know (a newer agent's, or garbage) reads as `None`.
    #[serde(default, deserialize_with = "step_or_none")]
    pub failed_step: Option<Step>,
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
    pub publication: Option<PublicationNote>,
    /// Built on the machine or imported from the host's binary cache (absent: no system was
    /// made, or an older agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_by: Option<crate::status::BuiltBy>,
    /// Bytes downloaded from the host's binary cache in this cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_bytes: Option<u64>,
    /// The admin's change note of the generation (`fleet publish -m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The system the cycle found running when it was neither the one tiffin had left nor its
    /// last rollback's (switched by hand; the cycle then applied the publication again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drifted_from: Option<String>,
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
    /// The system tiffin last left running (applied and verified, or rolled back to): a running
    /// system that is neither this nor `rolled_back_to` was switched by hand ("drifted").
    /// Absent from older agents (then drift is not judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiffin_system: Option<String>,
    /// The system tiffin's last rollback went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
}

/// The name of the last-contact file in `logs/`.
pub const SEEN_NAME: &str = "seen.json";

fn step_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Step>, D::Error> {
    let word: Option<serde_json::Value> = Option::deserialize(d)?;
    Ok(word.and_then(|w| serde_json::from_value(w).ok()))
}

impl Report {
    /// The report's JSON as uploaded: pretty, with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        pretty_json(self)
    }
    /// The name of the report's JSON file, beside its log.
    pub fn json_name(&self) -> String {
        format!("{}.json", self.log.trim_end_matches(".log.gz"))
    }
}

impl Seen {
    /// `seen.json` as uploaded: pretty, with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        pretty_json(self)
    }
}

fn pretty_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings, numbers and maps with string keys: serialising cannot fail.
    let mut json = serde_json::to_vec_pretty(v).unwrap_or_default();
    json.push(b'\n');
    json
}

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

/// The name of a report's log: `<base>.log.gz`.
pub fn log_name(base: &str) -> String {
    format!("{base}.log.gz")
}

/// A report known by its file name, `<UTC time>-g<N>-<outcome>.json`: enough to place it
/// without opening it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportName {
    /// Unix seconds of the time in the name (when the cycle finished).
    pub time: u64,
    pub generation: u64,
    pub outcome: Outcome,
    pub file: String,
}

impl ReportName {
    /// `None` for anything that is not a report's name (`seen.json`, logs, stray files).
    pub fn parse(file: &str) -> Option<Self> {
        let base = file.strip_suffix(".json")?;
        let (rest, outcome) = base.rsplit_once('-')?;
        let (time, generation) = rest.rsplit_once("-g")?;
        if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let generation = generation.parse().ok()?;
        let outcome: Outcome =
            serde_json::from_value(serde_json::Value::String(outcome.into())).ok()?;
        let time = parse_time(time)?;
        Some(Self {
            time,
            generation,
            outcome,
            file: file.to_string(),
        })
    }

    /// The order of events: the report's own time, then its generation; never its arrival.
    pub fn key(&self) -> (u64, u64) {
        (self.time, self.generation)
    }
}

/// RFC 3339 UTC to Unix seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// Reads a host's `logs/seen.json` from its bytes.
pub fn parse_seen(bytes: &[u8]) -> Result<Seen, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Reads one of a host's reports (`logs/<UTC time>-g<N>-<outcome>.json`) from its bytes.
pub fn parse_report(bytes: &[u8]) -> Result<Report, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Whether `name` may be uploaded into `logs/`: a plain file name (no directories, no hidden
/// files), of letters, digits and `-_.:+`.
pub fn is_log_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_are_valid_log_names_with_time_generation_and_outcome() {
        let b = report_base(1_764_064_800, 7, Outcome::RolledBack);
        assert_eq!(b, "2025-11-25T10:00:00Z-g7-rolled_back");
        assert!(is_log_name(&format!("{b}.json")));
        let n = ReportName::parse(&format!("{b}.json")).unwrap();
        assert_eq!(
            (n.time, n.generation, n.outcome),
            (1_764_064_800, 7, Outcome::RolledBack)
        );
    }

    #[test]
    fn report_names_give_time_generation_and_outcome() {
        let n = ReportName::parse("2025-11-25T10:00:00Z-g7-rolled_back.json").unwrap();
        assert_eq!(
            (n.time, n.generation, n.outcome),
            (1_764_064_800, 7, Outcome::RolledBack)
        );
        for bad in [
            "seen.json",
            "2025-11-25T10:00:00Z-g7-rolled_back.log.gz",
            "2025-11-25T10:00:00Z-gx-failed.json",
            "2025-11-25T10:00:00Z-g7-exploded.json",
            "yesterday-g7-failed.json",
        ] {
            assert!(ReportName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn log_names_are_plain() {
        assert!(is_log_name("2026-11-25T10:00:00Z-g3-updated.json"));
        for n in ["", ".hidden", "a/b", "../x", "a b", "x\n"] {
            assert!(!is_log_name(n), "{n}");
        }
    }

    #[test]
    fn a_failed_step_this_fleet_does_not_know_reads_as_none_and_known_ones_keep_their_word() {
        let mut r = Report {
            host: "a".into(),
            generation: 1,
            outcome: Outcome::Failed,
            failed_step: Some(Step::RollBack),
            message: None,
            started: rfc3339(0),
            finished: rfc3339(0),
            system_before: None,
            system_after: None,
            reboot_needed: false,
            durations: BTreeMap::new(),
            agent_version: "0".into(),
            log: log_name("x"),
            publication: None,
            built_by: None,
            cache_bytes: None,
            note: None,
            drifted_from: None,
        };
        let json = String::from_utf8(r.to_json()).unwrap();
        assert!(json.contains("\"failed_step\": \"roll_back\""), "{json}");
        assert_eq!(parse_report(json.as_bytes()).unwrap(), r);
        let odd = json.replace("\"roll_back\"", "\"build\\u001b[2J\"");
        r.failed_step = None;
        assert_eq!(parse_report(odd.as_bytes()).unwrap(), r);
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
