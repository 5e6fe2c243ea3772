//! Fault injection: the agent's clock jumps. The agent runs under libfaketime (Debian package
//! `faketime`), which moves its wall clock (`SystemTime`) and leaves the monotonic clock alone,
//! as NTP or an admin setting the date would; the server is a real sshd.
//!
//! - The daemon's schedule: after the wall clock goes back two hours or forward a day, checks
//!   go on at the interval — none lost (no two-hour pause), none doubled (no burst).
//! - Report names: after the clock went back, a report still sorts after the ones before it and
//!   never takes an earlier one's name, so `fleet status` shows the latest report as the latest.
//!
//! Outside CI a missing libfaketime skips these tests with the reason; under CI=true it fails.

use crate::faults_support;
use crate::support;

use faults_support::{SshMachine, HOST};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::relay::Relay;

const INTERVAL_SECS: u64 = 3;

/// The preload library: Debian's multiarch paths, else next to a `faketime` on PATH (Nix).
fn libfaketime() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if let Ok(bin) = fs::canonicalize(dir.join("faketime")) {
            if let Some(prefix) = bin.parent().and_then(Path::parent) {
                candidates.push(prefix.join("lib/faketime/libfaketimeMT.so.1"));
                candidates.push(prefix.join("lib/libfaketimeMT.so.1"));
            }
        }
    }
    let found = candidates.into_iter().find(|p| p.exists());
    let why = "libfaketime is missing (install the Debian package faketime)";
    support::prerequisite("faketime", found.is_none().then(|| why.to_string()));
    found
}

/// Runs the agent with its wall clock at the offset written in `offset_file` (`+0`, `-7200`,
/// `+86400`: seconds from the real time), re-read at every clock call.
fn with_fake_clock(c: &mut Command, lib: &Path, offset_file: &Path) {
    c.env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_DONT_RESET", "1");
}

fn set_offset(file: &Path, offset: &str) {
    fs::write(file, format!("{offset}\n")).expect("write the faketime offset");
}

/// Waits (up to `limit`) until the relay has accepted `n` connections.
fn wait_for_connections(relay: &Relay, n: usize, limit: Duration, what: &str) {
    let start = Instant::now();
    while relay.accepted().len() < n {
        assert!(
            start.elapsed() < limit,
            "{what}: {} checks after {limit:?}, expected {n}",
            relay.accepted().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_wall_clock_jumping_back_or_forward_neither_skips_nor_doubles_scheduled_checks() {
    let Some(lib) = libfaketime() else { return };
    let Some(mut m) = SshMachine::new() else {
        return;
    };
    m.write("modules/a.nix", "{ a = 1; }\n");
    m.publish();
    let relay = Relay::start(m.srv.port());
    m.write_config(
        relay.port,
        &format!(
            "interval = \"{INTERVAL_SECS}s\"\njitter = \"0s\"\nsocket_group = \"root\"\n\
             admin_group = \"root\""
        ),
    );
    // Applied before the daemon starts, so that each of its checks is one connection.
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let base = relay.accepted().len();
    let offset = m.dir.path().join("faketime-offset");
    set_offset(&offset, "+0");
    let mut c = Command::new(env!("CARGO_BIN_EXE_tiffin"));
    c.args(["agent", "--config"])
        .arg(&m.config_path)
        .env("RUST_LOG", "warn")
        .env(faults_support::STANDIN_ROOT, &m.root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    with_fake_clock(&mut c, &lib, &offset);
    let _daemon = Daemon(c.spawn().expect("start tiffin agent"));

    // Generous limits: a check is due every 3 s; a missed one would be hours away.
    let limit = Duration::from_secs(8 * INTERVAL_SECS);
    // Each jump lands in the middle of a wait, after the next check's time was set.
    let mid_wait = Duration::from_millis(INTERVAL_SECS * 1000 / 2);
    wait_for_connections(&relay, base + 2, limit, "before the jumps");
    std::thread::sleep(mid_wait);
    set_offset(&offset, "-7200");
    let back = relay.accepted().len();
    wait_for_connections(&relay, back + 2, limit, "after the clock went back 2 h");
    std::thread::sleep(mid_wait);
    set_offset(&offset, "+86400");
    let forward = relay.accepted().len();
    wait_for_connections(
        &relay,
        forward + 2,
        limit,
        "after the clock went forward 1 day",
    );

    let at = relay.accepted()[base..].to_vec();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("faults_clock: gaps between checks: {gaps:?}");
    // One check per interval: a jump never starts two at once.
    let half = Duration::from_millis(INTERVAL_SECS * 500);
    assert!(
        gaps.iter().all(|g| *g >= half),
        "two checks closer than half the interval: {gaps:?}"
    );
    // The agent is up to date and told the server so (its seen.json carries the faked time).
    let seen: serde_json::Value =
        serde_json::from_slice(&fs::read(m.host_dir().join("logs/seen.json")).expect("seen.json"))
            .expect("seen.json is JSON");
    assert_eq!(seen["host"], HOST);
}

#[test]
fn reports_stay_in_the_order_they_happened_when_the_clock_jumps() {
    let Some(lib) = libfaketime() else { return };
    let Some(mut m) = SshMachine::new() else {
        return;
    };
    let offset = m.dir.path().join("faketime-offset");
    let mut names = Vec::new();
    // Now, two hours back, a day ahead, and back to the real time (NTP correcting it).
    for (round, off) in ["+0", "-7200", "+86400", "+0"].iter().enumerate() {
        m.write("modules/a.nix", &format!("{{ a = {round}; }}\n"));
        let g = m.publish();
        set_offset(&offset, off);
        let before = m.delivered();
        let mut c = Command::new(env!("CARGO_BIN_EXE_tiffin"));
        c.args(["agent", "--once", "--config"])
            .arg(&m.config_path)
            .env("RUST_LOG", "warn")
            .env(faults_support::STANDIN_ROOT, &m.root);
        with_fake_clock(&mut c, &lib, &offset);
        let out = c.output().expect("run tiffin agent --once");
        assert!(out.status.success(), "clock {off}: {out:?}");
        let new: Vec<String> = m
            .delivered()
            .difference(&before)
            .filter(|n| n.ends_with(&format!("-g{g}-updated.json")))
            .cloned()
            .collect();
        assert_eq!(new.len(), 1, "clock {off}: new reports {new:?}");
        names.push(new[0].clone());
    }
    eprintln!("faults_clock: report names {names:?}");
    // RFC 3339 UTC names sort as their times: they must sort as the cycles happened.
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, names, "report names out of order");

    // The fleet view agrees: the newest report is the last generation's.
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(["fleet", "status", "--json", "--fleet"])
        .arg(&m.fleet)
        .output()
        .expect("run fleet status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fleet status --json: {e}: {out:?}"));
    let host = &v["hosts"][0];
    assert_eq!(
        host["last_report"]["generation"].as_u64(),
        Some(4),
        "{host}"
    );
    assert_eq!(host["running_generation"].as_u64(), Some(4), "{host}");
}
