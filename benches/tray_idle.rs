//! The tray at rest under Xvfb on a private D-Bus session: resident memory and CPU time over a
//! window (60 s; `TIFFIN_BENCH_IDLE_SECS` shortens it), with the agent up and with it down
//! (reconnecting with backoff); and how long the menu takes to say "Agent not reachable" after
//! the agent stops and to recover after it is back. Prints a table, asserts nothing.
//! Run with `make bench` (release build).

#[path = "../tests/support_tray/mod.rs"]
mod support_tray;

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

fn main() {
    if !support_tray::desktop_available("tray_idle bench") {
        return;
    }
    let window = std::env::var("TIFFIN_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60u64);
    let hz = ticks_per_second();
    let mut d = Desktop::start();
    let agent = StubAgent::start(&d.socket(), status());
    let tray = d.start_tray();
    let pid = tray.0.id();
    wait_for(
        Duration::from_secs(30),
        "the tray to show the agent",
        || has_line(&mut d, "Up to date"),
    );
    std::thread::sleep(Duration::from_secs(2));

    let mut rows = Vec::new();
    let (t0, _) = sample(pid);
    std::thread::sleep(Duration::from_secs(window));
    let (t1, rss) = sample(pid);
    rows.push(("agent up, idle", t1 - t0, rss));

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
