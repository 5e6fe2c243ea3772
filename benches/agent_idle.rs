//! CPU time and wake-ups of the idle agent: the real `tiffin agent` on a `file://` publication,
//! measured from /proc over a window (60 s, or `TIFFIN_IDLE_SECS`). The interval is set so that
//! the window holds one scheduled check and nothing else; no client is connected.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
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

fn main() {
    let secs: u64 = std::env::var("TIFFIN_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // One scheduled check falls inside the window, three quarters of the way in.
    let interval = (secs * 3 / 4).max(1);
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
    fs::write(
        &config,
        format!(
            "host = \"bench\"\nsource = \"file://{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\n\
             socket_group = \"{group}\"\nadmin_group = \"{group}\"\ninterval = \"{interval}s\"\n\
             jitter = \"0s\"\nhttp_trigger = \"\"\n",
            pubdir.display(),
            dir.path().join("state").display(),
            dir.path().join("agent.sock").display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut child = Command::new(TIFFIN)
        .args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Let the start-up check finish before measuring.
    let start_deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("cycle finished")
    {
        assert!(Instant::now() < start_deadline, "agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let before = sample(child.id());
    let cycles_before = fs::read_to_string(&log)
        .unwrap()
        .matches("cycle started")
        .count();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let after = sample(child.id());
    let cycles = fs::read_to_string(&log)
        .unwrap()
        .matches("cycle started")
        .count()
        - cycles_before;
    let _ = child.kill();
    let _ = child.wait();

    let cpu_ms = (after.cpu_ticks - before.cpu_ticks) as f64 / ticks_per_sec * 1000.0;
    let vol = after.voluntary - before.voluntary;
    let nonvol = after.nonvoluntary - before.nonvoluntary;
    println!();
    println!("idle agent (interval {interval}s, no clients, 50-file publication)");
    println!();
    println!("| window s | scheduled checks | CPU ms (utime+stime) | CPU % | voluntary cs (main thread) | involuntary cs | wake-ups/min |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {elapsed:.1} | {cycles} | {cpu_ms:.0} | {:.3} | {vol} | {nonvol} | {:.1} |",
        cpu_ms / (elapsed * 1000.0) * 100.0,
        (vol + nonvol) as f64 / elapsed * 60.0
    );
}
