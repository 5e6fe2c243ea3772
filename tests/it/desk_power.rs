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

/// UPower on battery, NetworkManager with `Metered` = no (also `backup_power`'s bus).
pub(crate) fn bus_on_battery() -> SystemBus {
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
    agent.publication.set_note(1, "Adds the office printer");
    // Where the agent uploads its reports (a file:// publication's logs/).
    std::fs::create_dir_all(agent.publication.root.join("logs")).expect("logs/");
    agent
        .env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone()));
    agent.spawn_until(|s| !s.waiting_for.is_empty());
    agent
}

pub(crate) fn wait_status(
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
    // The applied generation's note, in the status and in the report uploaded to logs/.
    assert_eq!(s.applied_note.as_deref(), Some("Adds the office printer"));
    let logs = agent.publication.root.join("logs");
    let report = std::fs::read_dir(&logs)
        .expect("logs/")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-g1-updated.json"))
        .expect("the report of generation 1");
    let text = std::fs::read_to_string(&report).expect("report");
    assert!(
        text.contains("\"note\": \"Adds the office printer\""),
        "{text}"
    );
    assert_eq!(
        s.waiting_for,
        [Waiting::OnBattery],
        "still waiting for the automatic runs"
    );
}

/// An agent with `auto_reboot = true` and a window around now, on a machine that needs a
/// restart (its booted system has no kernel link), with dbusmock's logind.
fn auto_reboot_agent(bus: &SystemBus) -> Agent {
    let mut agent = Agent::prepare(AgentOptions {
        interval: "1h",
        ..AgentOptions::default()
    });
    let tz = tiffin::timefmt::local_zone();
    let now = tiffin::status::unix_now();
    let window = format!(
        "{}-{}",
        tiffin::timefmt::clock(now - 3600, &tz),
        tiffin::timefmt::clock(now + 3600, &tz)
    );
    let booted = agent.dir.path().join("booted-elsewhere");
    std::fs::create_dir_all(&booted).unwrap();
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("booted_system = ") {
                format!("booted_system = \"{}\"", booted.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        &agent.config,
        format!("auto_reboot = true\nreboot_window = \"{window}\"\n{text}\n"),
    )
    .unwrap();
    agent
        .env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone()));
    agent
}

fn reboot_calls(bus: &SystemBus) -> String {
    bus.send(&[
        "--print-reply",
        "--dest=org.freedesktop.login1",
        "/org/freedesktop/login1",
        "org.freedesktop.DBus.Mock.GetCalls",
    ])
    .unwrap_or_default()
}

#[test]
fn auto_reboot_restarts_in_the_window_when_nobody_is_active_and_not_over_an_active_session() {
    if !bus_available("desk_power") {
        return;
    }
    // Someone is logged in and active: no restart.
    let mut bus = SystemBus::start();
    bus.mock("logind", "{}", "org.freedesktop.login1");
    bus.send(&[
        "--print-reply",
        "--dest=org.freedesktop.login1",
        "/org/freedesktop/login1",
        "org.freedesktop.DBus.Mock.AddSession",
        "string:c1",
        "string:seat0",
        "uint32:1000",
        "string:someone",
        "boolean:true",
    ])
    .expect("add an active session");
    let mut agent = auto_reboot_agent(&bus);
    agent.spawn();
    assert!(
        agent.try_status().is_some_and(|s| s.reboot_needed),
        "the test machine needs a restart"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !reboot_calls(&bus).contains("\"Reboot\""),
        "restarted over an active session"
    );
    agent.stop();

    // Nobody logged in: logind is asked to reboot (not interactive: the agent is root).
    let mut bus = SystemBus::start();
    bus.mock("logind", "{}", "org.freedesktop.login1");
    let mut agent = auto_reboot_agent(&bus);
    agent.spawn();
    let start = Instant::now();
    loop {
        let calls = reboot_calls(&bus);
        if let Some(after) = calls.split("\"Reboot\"").nth(1) {
            assert!(after.contains("boolean false"), "{calls}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no Reboot call: {calls}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
