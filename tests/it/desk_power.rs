//! Automatic updates wait on battery and on a metered network, and go ahead by themselves when
//! that clears: the real agent (policy `auto`) on a private system bus with python-dbusmock's
//! `upower` and `networkmanager` templates, whose property changes are the services' own
//! `PropertiesChanged` signals. A request (`tiffin update`, what a click sends) goes ahead on
//! battery.

use crate::daemon_support::{files, require_root, Agent, AgentOptions, TIFFIN};
use crate::support;
use crate::system_bus::{self, SystemBus};
use std::process::Command;
use std::time::{Duration, Instant};
use tiffin::status::{AgentStatus, Waiting};

fn bus_available(test: &str) -> bool {
    require_root(test) && support::prerequisite(test, system_bus::missing_prerequisite())
}

/// UPower on battery, NetworkManager with `Metered` = no.
fn bus_on_battery() -> SystemBus {
    let mut bus = SystemBus::start();
    bus.mock("upower", r#"{"OnBattery": true}"#, "org.freedesktop.UPower");
    bus.mock("networkmanager", "{}", "org.freedesktop.NetworkManager");
    bus.add_property(
        "org.freedesktop.NetworkManager",
        "/org/freedesktop/NetworkManager",
        "org.freedesktop.NetworkManager",
        "Metered",
        "uint32:2",
    );
    bus
}

fn agent_on(bus: &SystemBus) -> Agent {
    let mut agent = Agent::prepare(AgentOptions {
        interval: "2s",
        ..AgentOptions::default()
    });
    agent
        .env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone()));
    agent.spawn_until(|s| !s.waiting_for.is_empty());
    agent
}

fn wait_status(
    agent: &Agent,
    within: Duration,
    what: &str,
    ok: impl Fn(&AgentStatus) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let s = agent.try_status();
        if s.as_ref().is_some_and(&ok) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "waited {within:?} for {what}; status: {s:?}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_text(agent: &Agent) -> String {
    let out = Command::new(TIFFIN)
        .args(["status", "--socket"])
        .arg(&agent.socket)
        .output()
        .expect("tiffin status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn on_battery_the_automatic_update_waits_says_why_and_goes_ahead_when_on_mains() {
    if !bus_available("desk_power") {
        return;
    }
    let bus = bus_on_battery();
    let agent = agent_on(&bus);
    let s = agent.try_status().expect("status");
    assert_eq!(s.waiting_for, [Waiting::OnBattery]);
    // Several intervals pass: no automatic cycle starts.
    std::thread::sleep(Duration::from_secs(5));
    let s = agent.try_status().expect("status");
    assert_eq!(
        (s.applied_generation, s.last_check.is_none()),
        (None, true),
        "{s:?}"
    );
    let text = status_text(&agent);
    assert!(
        text.contains("waiting for") && text.contains("on battery"),
        "{text}"
    );

    // Mains power: the update goes ahead by itself, without a poll.
    bus.set_on_battery(false);
    let took = wait_status(
        &agent,
        Duration::from_secs(60),
        "generation 1 applied",
        |s| s.applied_generation == Some(1) && s.waiting_for.is_empty(),
    );
    eprintln!("desk_power: applied {took:?} after OnBattery turned false");

    // A metered network: the next automatic run waits for it.
    bus.set_metered(1);
    agent.publication.publish(2, &files(3, 100, "g2"));
    wait_status(
        &agent,
        Duration::from_secs(30),
        "waiting for a metered network",
        |s| s.waiting_for == [Waiting::Metered],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        agent.try_status().and_then(|s| s.applied_generation),
        Some(1)
    );
    bus.set_metered(4);
    wait_status(
        &agent,
        Duration::from_secs(60),
        "generation 2 applied",
        |s| s.applied_generation == Some(2) && s.waiting_for.is_empty(),
    );
}

#[test]
fn a_request_goes_ahead_on_battery() {
    if !bus_available("desk_power") {
        return;
    }
    let bus = bus_on_battery();
    let agent = agent_on(&bus);
    let report = agent.client().update().expect("update");
    assert_eq!(
        report.outcome,
        tiffin::status::Outcome::Updated,
        "{report:?}"
    );
    let s = agent.try_status().expect("status");
    assert_eq!(s.applied_generation, Some(1));
    assert_eq!(
        s.waiting_for,
        [Waiting::OnBattery],
        "still waiting for the automatic runs"
    );
}
