//! CPU time and wake-ups of the idle agent: the real `tiffin agent` on a `file://` publication,
//! measured from /proc over a window (60 s, or `TIFFIN_IDLE_SECS`). The interval is set so that
//! the window holds one scheduled check and nothing else; no client is connected. Resident
//! memory (VmRSS) is sampled every second. `measure` is also called by the suite.

#[path = "common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TIFFIN: &str = env!("CARGO_BIN_EXE_tiffin");

struct Sample {
    cpu_ticks: u64,
    voluntary: u64,
    nonvoluntary: u64,
}

fn sample(pid: u32) -> Sample {
    // utime and stime are fields 14 and 15; the command name may hold spaces, so count from ')'.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent running");
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let cpu_ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // The main thread runs the whole async side (the runtime is single-threaded): its context
    // switches are the agent's wake-ups. The cycles run on tokio's blocking pool, whose CPU time
    // is in utime+stime above (exited threads included).
    let mut voluntary = 0;
    let mut nonvoluntary = 0;
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
            voluntary = v.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(v) = l.strip_prefix("nonvoluntary_ctxt_switches:") {
            nonvoluntary = v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Sample {
        cpu_ticks,
        voluntary,
        nonvoluntary,
    }
}

/// What the idle agent cost over the window.
pub struct IdleResults {
    pub window_s: f64,
    pub scheduled_checks: usize,
    pub cpu_ms: f64,
    /// VmRSS samples, one a second, in KiB.
    pub rss_kib: Vec<f64>,
    pub voluntary: u64,
    pub nonvoluntary: u64,
}

/// The real `tiffin agent` daemon on a 50-file `file://` publication in a temp dir, killed on
/// drop. The suite's tray rows talk to it too.
pub struct RunningAgent {
    child: Child,
    #[allow(dead_code)] // read by the suite's tray rows
    pub socket: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningAgent {
    /// Starts the agent with a check every `interval_secs` and waits for its start-up check.
    pub fn start(interval_secs: u64) -> RunningAgent {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let pubdir = dir.path().join("srv/bench");
        let tree = pubdir.join("gens/1/tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        for i in 0..50 {
            fs::write(tree.join(format!("etc/f{i}")), vec![b'x'; 4096]).unwrap();
        }
        let walked = tiffin::manifest::walk_tree(&tree, &tree).unwrap();
        let m = tiffin::manifest::Manifest::new(
            "bench",
            1,
            "2026-11-25T00:00:00Z".into(),
            tiffin::manifest::entries_of(&walked),
        );
        fs::write(pubdir.join("gens/1/manifest.json"), m.to_bytes()).unwrap();
        std::os::unix::fs::symlink("gens/1", pubdir.join("current")).unwrap();
        let group = if nix::unistd::Uid::effective().is_root() {
            "root".to_string()
        } else {
            nix::unistd::Group::from_gid(nix::unistd::getegid())
                .ok()
                .flatten()
                .map(|g| g.name)
                .unwrap_or_else(|| "users".into())
        };
        let config = dir.path().join("agent.toml");
        let socket = dir.path().join("agent.sock");
        fs::write(
            &config,
            format!(
                "host = \"bench\"\nsource = \"file://{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\n\
                 socket_group = \"{group}\"\nadmin_group = \"{group}\"\ninterval = \"{interval_secs}s\"\n\
                 jitter = \"0s\"\nhttp_trigger = \"\"\n",
                pubdir.display(),
                dir.path().join("state").display(),
                socket.display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("agent.log");
        let child = Command::new(TIFFIN)
            .args(["agent", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = RunningAgent {
            child,
            socket,
            log,
            _dir: dir,
        };
        // Let the start-up check finish before anything is measured.
        let start_deadline = Instant::now() + Duration::from_secs(30);
        while agent.cycles_finished() == 0 {
            assert!(Instant::now() < start_deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cycles_started(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("cycle started")
            .count()
    }

    pub fn cycles_finished(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("cycle finished")
            .count()
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real agent idle for `secs` seconds and measures it.
pub fn measure(secs: u64) -> IdleResults {
    // One scheduled check falls inside the window, three quarters of the way in.
    let interval = (secs * 3 / 4).max(1);
    let agent = RunningAgent::start(interval);
    let pid = agent.pid();
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let before = sample(pid);
    let cycles_before = agent.cycles_started();
    let t0 = Instant::now();
    let mut rss_kib = Vec::new();
    let end = t0 + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        if let Some(kib) = common::proc_rss_kib(pid) {
            rss_kib.push(kib as f64);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let after = sample(pid);
    let cycles = agent.cycles_started() - cycles_before;
    drop(agent);

    IdleResults {
        window_s: elapsed,
        scheduled_checks: cycles,
        cpu_ms: (after.cpu_ticks - before.cpu_ticks) as f64 / ticks_per_sec * 1000.0,
        rss_kib,
        voluntary: after.voluntary - before.voluntary,
        nonvoluntary: after.nonvoluntary - before.nonvoluntary,
    }
}

#[allow(dead_code)] // the suite includes this file as a module and has its own main
fn main() {
    let r = measure(common::idle_secs());
    let rss = common::spread(&r.rss_kib);
    println!();
    println!("idle agent (no clients, 50-file publication, one scheduled check in the window)");
    println!();
    println!("| window s | scheduled checks | CPU ms (utime+stime) | CPU % | RSS MiB (min/median/max) | voluntary cs (main thread) | involuntary cs | wake-ups/min |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {:.1} | {} | {:.0} | {:.3} | {:.1}/{:.1}/{:.1} | {} | {} | {:.1} |",
        r.window_s,
        r.scheduled_checks,
        r.cpu_ms,
        r.cpu_ms / (r.window_s * 1000.0) * 100.0,
        rss.min / 1024.0,
        rss.median / 1024.0,
        rss.max / 1024.0,
        r.voluntary,
        r.nonvoluntary,
        (r.voluntary + r.nonvoluntary) as f64 / r.window_s * 60.0
    );
}
