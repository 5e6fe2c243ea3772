//! The Prometheus text format (version 0.0.4) of the fleet: per host its state, the generation
//! published and running, last seen, its last update's time and outcome; per rollout its wave
//! and whether it halted.

use crate::fleet::rollout::RolloutState;
use crate::fleet::status::{FleetStatus, HostState, HostStatus};
use crate::publication::report::{outcome_word, parse_time};
use std::fmt::Write;

/// A label value with `\`, `"` and newlines escaped.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// A per-host gauge: its name, its help and how to read it from the row.
type Gauge = (&'static str, &'static str, fn(&HostStatus) -> Option<u64>);

/// The whole page.
pub fn render(status: &FleetStatus, rollout: &RolloutState, now: u64) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "tiffin_fleet_host_state",
        "1 for the host's state (fleet status)",
    );
    for h in &status.hosts {
        for s in HostState::ALL {
            let v = u8::from(h.state == s);
            let state = s.label().replace(' ', "_");
            let _ = writeln!(
                o,
                "tiffin_fleet_host_state{{host=\"{}\",state=\"{state}\"}} {v}",
                label(&h.host)
            );
        }
    }
    let gauges: [Gauge; 4] = [
        (
            "tiffin_fleet_host_published_generation",
            "the generation `current` names",
            |h| h.published_generation,
        ),
        (
            "tiffin_fleet_host_running_generation",
            "the generation the host runs",
            |h| h.running_generation,
        ),
        (
            "tiffin_fleet_host_last_seen_timestamp_seconds",
            "the host's last seen.json (Unix time)",
            |h| h.last_seen.as_deref().and_then(parse_time),
        ),
        (
            "tiffin_fleet_host_last_update_timestamp_seconds",
            "when the host's newest report's cycle finished (Unix time)",
            |h| h.last_report.as_ref().and_then(|r| parse_time(&r.finished)),
        ),
    ];
    for (name, help, get) in gauges {
        family(&mut o, name, help);
        for h in &status.hosts {
            if let Some(v) = get(h) {
                let _ = writeln!(o, "{name}{{host=\"{}\"}} {v}", label(&h.host));
            }
        }
    }
    family(
        &mut o,
        "tiffin_fleet_host_last_update_outcome",
        "1 for the outcome of the host's newest report",
    );
    for h in &status.hosts {
        if let Some(r) = &h.last_report {
            let _ = writeln!(
                o,
                "tiffin_fleet_host_last_update_outcome{{host=\"{}\",outcome=\"{}\"}} 1",
                label(&h.host),
                outcome_word(r.outcome)
            );
        }
    }
    render_rollout(&mut o, rollout, now);
    o
}

/// Per rollout: its wave and whether it halted; the quarantined releases; the watcher's look.
fn render_rollout(o: &mut String, rollout: &RolloutState, now: u64) {
    family(
        o,
        "tiffin_fleet_rollout_wave",
        "the highest wave the staged release reached",
    );
    family(
        o,
        "tiffin_fleet_rollout_halted",
        "1 when the staged release halted",
    );
    if let Some(r) = &rollout.release {
        let id = label(&r.id);
        let _ = writeln!(
            o,
            "tiffin_fleet_rollout_wave{{release=\"{id}\"}} {}",
            r.wave
        );
        let _ = writeln!(
            o,
            "tiffin_fleet_rollout_halted{{release=\"{id}\"}} {}",
            u8::from(r.halted.is_some())
        );
    }
    family(
        o,
        "tiffin_fleet_quarantined_releases",
        "releases publish --staged refuses",
    );
    let _ = writeln!(
        o,
        "tiffin_fleet_quarantined_releases {}",
        rollout.quarantined.len()
    );
    family(
        o,
        "tiffin_fleet_watch_last_look_timestamp_seconds",
        "when fleet watch last looked (Unix time)",
    );
    let _ = writeln!(o, "tiffin_fleet_watch_last_look_timestamp_seconds {now}");
}
