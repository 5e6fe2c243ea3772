//! The agent's Prometheus metrics (agent.toml `metrics`): what every cycle adds is kept in
//! `<state_dir>/metrics.json` (written by the pipeline at the end of each cycle, atomically, so
//! counters survive a restart), and the page is that plus the live status (last check and update
//! times, reboot needed), rendered in the text format (version 0.0.4).

use crate::fsutil;
use crate::publication::report::outcome_word;
use crate::status::{AgentStatus, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The counters' file under the state directory.
pub const METRICS_FILE: &str = "metrics.json";

/// What the agent counted since its state directory was made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Cycles by outcome word (`up_to_date`, `updated`, `failed`, `rolled_back`, `interrupted`).
    #[serde(default)]
    pub cycles: BTreeMap<String, u64>,
    /// Seconds spent per step, summed over every cycle, and how many cycles ran it.
    #[serde(default)]
    pub step_seconds: BTreeMap<String, f64>,
    #[serde(default)]
    pub step_runs: BTreeMap<String, u64>,
    /// The last cycle's seconds per step.
    #[serde(default)]
    pub last_step_seconds: BTreeMap<String, f64>,
    #[serde(default)]
    pub downloaded_bytes: u64,
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(METRICS_FILE)
}

impl Counters {
    /// The counters, or zeros when the file is missing or unreadable (metrics never stop a
    /// cycle).
    pub fn load(state_dir: &Path) -> Self {
        std::fs::read(path(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Adds one cycle and saves.
    pub fn record_cycle(
        state_dir: &Path,
        outcome: Outcome,
        durations: &BTreeMap<String, f64>,
        downloaded_bytes: u64,
    ) -> std::io::Result<()> {
        let mut c = Self::load(state_dir);
        *c.cycles.entry(outcome_word(outcome)).or_default() += 1;
        for (step, secs) in durations {
            *c.step_seconds.entry(step.clone()).or_default() += secs;
            *c.step_runs.entry(step.clone()).or_default() += 1;
        }
        c.last_step_seconds = durations.clone();
        c.downloaded_bytes = c.downloaded_bytes.saturating_add(downloaded_bytes);
        let json = serde_json::to_vec(&c).map_err(std::io::Error::other)?;
        fsutil::atomic_write(&path(state_dir), &json, 0o600)
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The page `/metrics` serves.
pub fn render(c: &Counters, s: &AgentStatus) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "tiffin_agent_cycles",
        "counter",
        "cycles by outcome",
    );
    for outcome in [
        Outcome::UpToDate,
        Outcome::Updated,
        Outcome::Failed,
        Outcome::RolledBack,
        Outcome::Interrupted,
    ] {
        let w = outcome_word(outcome);
        let n = c.cycles.get(&w).copied().unwrap_or(0);
        let _ = writeln!(o, "tiffin_agent_cycles_total{{outcome=\"{w}\"}} {n}");
    }
    head(
        &mut o,
        "tiffin_agent_step_seconds",
        "counter",
        "seconds spent in each step, all cycles",
    );
    for (step, secs) in &c.step_seconds {
        let _ = writeln!(
            o,
            "tiffin_agent_step_seconds_total{{step=\"{step}\"}} {secs}"
        );
    }
    head(
        &mut o,
        "tiffin_agent_step_runs",
        "counter",
        "cycles that ran each step",
    );
    for (step, n) in &c.step_runs {
        let _ = writeln!(o, "tiffin_agent_step_runs_total{{step=\"{step}\"}} {n}");
    }
    head(
        &mut o,
        "tiffin_agent_last_step_seconds",
        "gauge",
        "the last cycle's seconds per step",
    );
    for (step, secs) in &c.last_step_seconds {
        let _ = writeln!(
            o,
            "tiffin_agent_last_step_seconds{{step=\"{step}\"}} {secs}"
        );
    }
    head(
        &mut o,
        "tiffin_agent_downloaded_bytes",
        "counter",
        "bytes of publications downloaded",
    );
    let _ = writeln!(
        o,
        "tiffin_agent_downloaded_bytes_total {}",
        c.downloaded_bytes
    );
    render_status(&mut o, s);
    o
}

/// The part of the page that comes from the live status.
fn render_status(o: &mut String, s: &AgentStatus) {
    head(
        o,
        "tiffin_agent_last_check_timestamp_seconds",
        "gauge",
        "the last check (Unix time)",
    );
    if let Some(l) = &s.last_check {
        let _ = writeln!(o, "tiffin_agent_last_check_timestamp_seconds {}", l.at);
    }
    head(
        o,
        "tiffin_agent_last_update_timestamp_seconds",
        "gauge",
        "the last update attempt (Unix time)",
    );
    if let Some(u) = &s.last_update {
        let _ = writeln!(o, "tiffin_agent_last_update_timestamp_seconds {}", u.at);
    }
    head(
        o,
        "tiffin_agent_applied_generation",
        "gauge",
        "the generation applied",
    );
    if let Some(g) = s.applied_generation {
        let _ = writeln!(o, "tiffin_agent_applied_generation {g}");
    }
    head(
        o,
        "tiffin_agent_reboot_needed",
        "gauge",
        "1 when the kernel, initrd or modules wait for a reboot",
    );
    let _ = writeln!(
        o,
        "tiffin_agent_reboot_needed {}",
        u8::from(s.reboot_needed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_add_up_across_loads_and_a_bad_file_reads_as_zeros() {
        let d = tempfile::tempdir().unwrap();
        let mut dur = BTreeMap::new();
        dur.insert("fetch".to_string(), 0.5);
        Counters::record_cycle(d.path(), Outcome::Updated, &dur, 100).unwrap();
        Counters::record_cycle(d.path(), Outcome::UpToDate, &dur, 0).unwrap();
        let c = Counters::load(d.path());
        assert_eq!((c.cycles["updated"], c.cycles["up_to_date"]), (1, 1));
        assert_eq!(
            (
                c.step_seconds["fetch"],
                c.step_runs["fetch"],
                c.downloaded_bytes
            ),
            (1.0, 2, 100)
        );
        let page = render(&c, &AgentStatus::default());
        assert!(
            page.contains("tiffin_agent_cycles_total{outcome=\"rolled_back\"} 0"),
            "{page}"
        );
        std::fs::write(d.path().join(METRICS_FILE), "{").unwrap();
        assert_eq!(Counters::load(d.path()), Counters::default());
    }
}
