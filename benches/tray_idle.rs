//! The tray at rest under Xvfb on a private D-Bus session: resident memory and CPU time over a
//! window (60 s; `TIFFIN_BENCH_IDLE_SECS` shortens it), with the agent up and with it down
//! (reconnecting with backoff); and how long the menu takes to say "Agent not reachable" after
//! the agent stops and to recover after it is back. Prints a table, asserts nothing.
//! Run with `cargo bench --bench tray_idle` (release build); `at_rest` is also called by the
//! suite (benches/suite.rs), which reuses this file's desktop harness for its tray rows.

#[path = "../tests/it/support/tray/mod.rs"]
pub(crate) mod support_tray;

use std::time::{Duration, Instant};
use support_tray::{wait_for, Desktop, StubAgent};
use tiffin::status::{unix_now, AgentStatus, CheckResult, LastCheck};

fn status() -> AgentStatus {
    AgentStatus {
        host: "laptop".into(),
        applied_generation: Some(42),
        applied_at: Some(unix_now() - 600),
        last_check: Some(LastCheck {
            at: unix_now() - 60,
            result: CheckResult::UpToDate,
            message: None,
        }),
        ..AgentStatus::default()
    }
}

/// (utime + stime in clock ticks, VmRSS in kB) of a process.
fn sample(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn has_line(d: &mut Desktop, line: &str) -> Result<Option<()>, String> {
    let m = d.menu()?;
    Ok(m.iter().any(|e| e.label == line).then_some(()))
}

/// The tray at rest with its agent up: CPU ms over the window, VmRSS in KiB once a second.
pub struct AtRest {
    pub cpu_ms: f64,
    pub rss_kib: Vec<f64>,
}

/// Starts a desktop, an agent (scripted) and the tray, waits until the tray shows the agent,
/// then samples the tray for `window` seconds. Err when the desktop cannot run here.
pub fn at_rest(window: u64) -> Result<AtRest, String> {
    if !support_tray::desktop_or_skip("tray footprint") {
        return Err("no desktop here (Xvfb, dbus-daemon, python3-dbus)".into());
    }
    let mut d = Desktop::start();
    let _agent = StubAgent::start(&d.socket(), status());
    let tray = d.start_tray();
    let pid = tray.0.id();
    wait_for(
        Duration::from_secs(30),
        "the tray to show the agent",
        || has_line(&mut d, "Up to date"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (t0, _) = sample(pid);
    let mut rss_kib = Vec::new();
    let end = Instant::now() + Duration::from_secs(window);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        rss_kib.push(sample(pid).1 as f64);
    }
    let (t1, _) = sample(pid);
    Ok(AtRest {
        cpu_ms: (t1 - t0) as f64 * 1000.0 / ticks_per_second() as f64,
        rss_kib,
    })
}

#[allow(dead_code)] // the suite includes this file as a module and has its own main
fn main() {
    if !support_tray::desktop_or_skip("tray_idle bench") {
        return;
    }
    let window = std::env::var("TIFFIN_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60u64);
    let hz = ticks_per_second();
    let mut rows = Vec::new();
    if let Ok(r) = at_rest(window) {
        let rss = r.rss_kib.iter().copied().fold(0.0, f64::max) as u64;
        rows.push(("agent up, idle", r.cpu_ms as u64 * hz / 1000, rss));
    }
    let mut d = Desktop::start();
    let agent = StubAgent::start(&d.socket(), status());
    let tray = d.start_tray();
    let pid = tray.0.id();
    wait_for(
        Duration::from_secs(30),
        "the tray to show the agent",
        || has_line(&mut d, "Up to date"),
    );

    // Latency of the unreachable state and of the recovery, a few times.
    let mut down = Vec::new();
    let mut up = Vec::new();
    let mut agent = Some(agent);
    for _ in 0..3 {
        let t = Instant::now();
        if let Some(a) = agent.take() {
            a.stop();
        }
        wait_for(Duration::from_secs(30), "unreachable", || {
            has_line(&mut d, "Agent not reachable")
        });
        down.push(t.elapsed());
        // Let the backoff grow to its cap (0.2+0.4+…+5 s > 11 s), the slow case for recovery.
        std::thread::sleep(Duration::from_secs(12));
        let t = Instant::now();
        agent = Some(StubAgent::start(&d.socket(), status()));
        wait_for(Duration::from_secs(30), "recovery", || {
            has_line(&mut d, "Up to date")
        });
        up.push(t.elapsed());
    }

    if let Some(a) = agent.take() {
        a.stop();
    }
    wait_for(Duration::from_secs(30), "unreachable", || {
        has_line(&mut d, "Agent not reachable")
    });
    std::thread::sleep(Duration::from_secs(2));
    let (t0, _) = sample(pid);
    std::thread::sleep(Duration::from_secs(window));
    let (t1, rss) = sample(pid);
    rows.push(("agent down, reconnecting", t1 - t0, rss));

    println!();
    println!("tiffin-tray at rest over {window} s (Xvfb, private D-Bus session, SNI watcher):");
    println!();
    println!("| state | RSS MiB | CPU ms | CPU % |");
    println!("|---|---|---|---|");
    for (name, ticks, rss) in rows {
        let ms = ticks * 1000 / hz;
        println!(
            "| {name} | {:.1} | {ms} | {:.3} |",
            rss as f64 / 1024.0,
            ms as f64 / (window as f64 * 10.0)
        );
    }
    println!("(CPU time is counted in clock ticks of {} ms.)", 1000 / hz);
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    println!();
    println!("| after | min ms | median ms | max ms |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("agent stops: menu says \"Agent not reachable\"", &mut down),
        (
            "agent back (backoff at its 5 s cap): menu recovers",
            &mut up,
        ),
    ] {
        let (min, med, max) = stats(v);
        println!(
            "| {name} | {} | {} | {} |",
            min.as_millis(),
            med.as_millis(),
            max.as_millis()
        );
    }
    drop(tray);
}
