//! agent.toml `metrics`: the real agent daemon serves `/metrics` on a listener of its own (the
//! update trigger's stays separate), read with the Prometheus reference parser after a real
//! update cycle (the NixOS stand-in on real Nix).

use crate::daemon_support;
use crate::support::{self, prometheus};
use daemon_support::*;
use std::fs;

#[test]
fn the_agent_serves_cycle_counts_step_times_bytes_and_timestamps_on_its_own_listener() {
    if !require_root("agent metrics")
        || !support::prerequisite("agent metrics", prometheus::missing())
    {
        return;
    }
    let (mport, tport) = (prometheus::free_port(), prometheus::free_port());
    let mut agent = Agent::prepare(AgentOptions {
        http_trigger: format!("127.0.0.1:{tport}"),
        ..Default::default()
    });
    let text = fs::read_to_string(&agent.config).unwrap();
    fs::write(
        &agent.config,
        format!("metrics = \"127.0.0.1:{mport}\"\n{text}"),
    )
    .unwrap();
    agent.spawn();
    agent.publication.publish(2, &files(10, 1000, "g2"));
    let r = agent.client().update().expect("update");
    assert_eq!(r.generation, Some(2), "{r:?}");

    let addr = format!("127.0.0.1:{mport}");
    let (status, page) = prometheus::get(&addr, "/metrics").expect("GET /metrics");
    assert!(status.contains("200"), "{status}\n{page}");
    let m = prometheus::parse(&page);
    let v = |name: &str, labels: &[(&str, &str)]| {
        prometheus::value(&m, name, labels).unwrap_or_else(|| panic!("{name} {labels:?}\n{page}"))
    };
    // The start-up check found g1 up to date... or applied it; the update applied g2.
    assert!(
        v("tiffin_agent_cycles_total", &[("outcome", "updated")]) >= 1.0,
        "{page}"
    );
    assert_eq!(
        v("tiffin_agent_cycles_total", &[("outcome", "rolled_back")]),
        0.0
    );
    assert!(
        v("tiffin_agent_step_seconds_total", &[("step", "build")]) > 0.0,
        "{page}"
    );
    assert!(v("tiffin_agent_step_runs_total", &[("step", "fetch")]) >= 1.0);
    assert!(v("tiffin_agent_last_step_seconds", &[("step", "fetch")]) >= 0.0);
    assert!(
        v("tiffin_agent_downloaded_bytes_total", &[]) >= 10_000.0,
        "{page}"
    );
    assert!(v("tiffin_agent_last_check_timestamp_seconds", &[]) > 1.7e9);
    assert!(v("tiffin_agent_last_update_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(v("tiffin_agent_applied_generation", &[]), 2.0);
    assert!(m.contains_key("tiffin_agent_reboot_needed"));
    // Its own listener: the trigger's port does not serve metrics, this one starts nothing.
    let (code, _) = http_get(tport, "GET", "/metrics", "127.0.0.1");
    assert_eq!(code, 404);
    let (status, _) = prometheus::get(&addr, "/").unwrap();
    assert!(status.contains("404"), "{status}");
    agent.stop();
}
