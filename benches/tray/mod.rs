//! The suite's responsiveness row: the real `tiffin-tray` under Xvfb on a private D-Bus session
//! (the tray tests' desktop harness), following the real `tiffin agent` on a `file://`
//! publication. A click on "Check for updates" goes through dbusmenu to the tray, over the
//! socket to the agent, whose phase change comes back to the tray and out as a dbusmenu signal.
//! The agent's side is watched by a subscriber on its socket, the menu's by `dbus-monitor` on
//! the session bus; both stamp the wall clock.

use crate::agent_idle::RunningAgent;
use crate::tray_idle::support_tray::{self, wait_for, Desktop};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tiffin::ipc::Client;
use tiffin::status::Phase;
use tiffin::tray::view::LABEL_CHECK_NOW;

const CLICKS: usize = 7;

pub struct Responsiveness {
    pub status_to_menu_ms: Vec<f64>,
    pub click_to_phase_ms: Vec<f64>,
    pub notes: Vec<String>,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// (wall-clock seconds, member) of every dbusmenu signal on the bus, as `dbus-monitor` saw it.
type Signals = Arc<Mutex<Vec<(f64, String)>>>;

fn watch_menu_signals(bus: &str) -> Result<(support_tray::Proc, Signals), String> {
    let mut child = Command::new("dbus-monitor")
        .args([
            "--address",
            bus,
            "type='signal',interface='com.canonical.dbusmenu'",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("dbus-monitor: {e}"))?;
    let out = child.stdout.take().ok_or("dbus-monitor: no stdout")?;
    let signals: Signals = Arc::default();
    let sink = signals.clone();
    std::thread::spawn(move || {
        // "signal time=1764100000.123456 sender=… member=LayoutUpdated"
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Some(rest) = line.strip_prefix("signal time=") else {
                continue;
            };
            let t = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok());
            let member = line
                .split("member=")
                .nth(1)
                .map(|m| m.trim().to_string())
                .unwrap_or_default();
            if let Some(t) = t {
                sink.lock().expect("signals").push((t, member));
            }
        }
    });
    Ok((support_tray::Proc(child), signals))
}

/// (wall-clock seconds, phase) of every status the agent sends to a subscriber.
type Phases = Arc<Mutex<Vec<(f64, Phase)>>>;

fn subscribe(agent: &RunningAgent) -> Result<Phases, String> {
    let mut c = Client::connect(&agent.socket).map_err(|e| e.to_string())?;
    c.subscribe().map_err(|e| e.to_string())?;
    let phases: Phases = Arc::default();
    let sink = phases.clone();
    std::thread::spawn(move || {
        while let Ok(s) = c.next_status() {
            sink.lock().expect("phases").push((now_s(), s.phase));
        }
    });
    Ok(phases)
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn responsiveness() -> Result<Responsiveness, String> {
    if !support_tray::desktop_or_skip("tray responsiveness") {
        return Err("no desktop here (Xvfb, dbus-daemon, python3-dbus)".into());
    }
    // No scheduled check during the measurement: only the clicks move the agent.
    let agent = RunningAgent::start(3600);
    let mut d = Desktop::start();
    let (_monitor, signals) = watch_menu_signals(&d.bus)?;
    let _tray = d.start_tray_on(&agent.socket);
    wait_for(Duration::from_secs(30), "the tray's menu", || {
        Ok(d.menu()?
            .iter()
            .any(|e| e.label == LABEL_CHECK_NOW && e.enabled)
            .then_some(()))
    });
    let phases = subscribe(&agent)?;
    std::thread::sleep(Duration::from_millis(500));
    let mut r = Responsiveness {
        status_to_menu_ms: vec![],
        click_to_phase_ms: vec![],
        notes: vec![],
    };
    let mut members = std::collections::BTreeSet::new();
    for _ in 0..CLICKS {
        let id = wait_for(Duration::from_secs(30), "Check for updates enabled", || {
            Ok(d.menu()?
                .iter()
                .find(|e| e.label == LABEL_CHECK_NOW && e.enabled)
                .map(|e| e.id))
        });
        // Let the tray finish drawing the last status before the next click.
        std::thread::sleep(Duration::from_millis(300));
        let finished = agent.cycles_finished();
        let clicked = now_s();
        d.call(json!({"cmd": "click", "id": id}))?;
        let changed = poll(Duration::from_secs(10), || {
            phases
                .lock()
                .expect("phases")
                .iter()
                .find(|(t, p)| *t >= clicked && *p != Phase::Idle)
                .map(|(t, _)| *t)
        })
        .ok_or("the agent's phase did not change after the click")?;
        let (shown, member) = poll(Duration::from_secs(10), || {
            signals
                .lock()
                .expect("signals")
                .iter()
                .find(|(t, _)| *t >= changed)
                .cloned()
        })
        .ok_or("no dbusmenu signal after the agent's status changed")?;
        r.click_to_phase_ms.push((changed - clicked) * 1e3);
        r.status_to_menu_ms.push((shown - changed) * 1e3);
        members.insert(member);
        poll(Duration::from_secs(30), || {
            (agent.cycles_finished() > finished).then_some(())
        })
        .ok_or("the check did not finish")?;
    }
    r.notes.push(format!(
        "{CLICKS} clicks on \"{LABEL_CHECK_NOW}\" (dbusmenu Event through the test harness) with the real `tiffin-tray` under Xvfb following the real `tiffin agent`; the agent's phase change is stamped by a subscriber on its socket, the menu's update by `dbus-monitor` on the session bus (first dbusmenu signal after the phase change: {}). The agent sends each status to all its subscribers at once, so the first figure runs from the moment another subscriber has the same status, not from inside the agent.",
        members.into_iter().collect::<Vec<_>>().join(", ")
    ));
    Ok(r)
}

/// The tray's footprint at rest (tray_idle's measurement).
pub fn idle(secs: u64) -> Result<crate::tray_idle::AtRest, String> {
    crate::tray_idle::at_rest(secs)
}
