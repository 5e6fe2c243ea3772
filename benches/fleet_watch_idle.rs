//! The idle cost of `tiffin fleet watch` on a 200-host fleet (`TIFFIN_WATCH_HOSTS`): the real
//! binary follows a synthetic chroot (each host with a published generation, `seen.json` and a
//! report, written with the agent's own types) and serves `/metrics`; nothing changes during the
//! window (60 s, or `TIFFIN_BENCH_IDLE_SECS`), so what it costs is its inotify wait and its
//! once-a-minute look. CPU = utime+stime from /proc; RSS (VmRSS) sampled each second.
//! `measure` is also called by the suite (row 5).

#[path = "common/mod.rs"]
mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiffin::manifest::Manifest;
use tiffin::publication::report::{rfc3339, Report, Seen};
use tiffin::status::{unix_now, Outcome};

const TIFFIN: &str = env!("CARGO_BIN_EXE_tiffin");
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa";

/// What the idle watcher cost.
pub struct WatchIdle {
    pub hosts: usize,
    pub window_s: f64,
    pub cpu_s: f64,
    pub rss_kib: Vec<f64>,
    /// Bytes of one `/metrics` page.
    pub page_bytes: usize,
}

impl WatchIdle {
    pub fn cpu_s_per_min(&self) -> f64 {
        self.cpu_s / self.window_s * 60.0
    }
}

struct Watcher(Child);
impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_fleet(dir: &Path, hosts: usize, now: u64) {
    let chroot = dir.join("chroot");
    let repo = dir.join("repo");
    fs::create_dir_all(&repo).unwrap();
    let mut toml = format!("chroot = {:?}\nserver = \"fleet.test\"\n", chroot);
    for i in 0..hosts {
        let h = format!("host{i:03}");
        toml.push_str(&format!(
            "\n[hosts.{h}]\nkey = \"{KEY}\"\nwave = {}\n",
            i % 3
        ));
        let hd = chroot.join(&h);
        let gen = hd.join("gens/1");
        fs::create_dir_all(&gen).unwrap();
        fs::create_dir_all(hd.join("logs")).unwrap();
        let m = Manifest::new(&h, 1, rfc3339(now - 3600), Vec::new());
        fs::write(gen.join("manifest.json"), m.to_bytes()).unwrap();
        std::os::unix::fs::symlink("gens/1", hd.join("current")).unwrap();
        let system = format!("/nix/store/{i:032}-nixos-system");
        let base = tiffin::publication::report::report_base(now - 600, 1, Outcome::Updated);
        let r = Report {
            host: h.clone(),
            generation: 1,
            outcome: Outcome::Updated,
            failed_step: None,
            message: None,
            started: rfc3339(now - 660),
            finished: rfc3339(now - 600),
            system_before: None,
            system_after: Some(system.clone()),
            reboot_needed: false,
            durations: Default::default(),
            agent_version: tiffin::VERSION.into(),
            log: format!("{base}.log.gz"),
            publication: None,
            built_by: None,
            cache_bytes: None,
            note: None,
            drifted_from: None,
        };
        fs::write(hd.join("logs").join(format!("{base}.json")), r.to_json()).unwrap();
        let seen = Seen {
            host: h.clone(),
            last_seen: rfc3339(now - 60),
            applied_generation: Some(1),
            running_system: Some(system.clone()),
            booted_system: Some(system.clone()),
            agent_version: tiffin::VERSION.into(),
            interval_secs: Some(900),
            updating_to: None,
            reboot_needed: Some(false),
            tiffin_system: Some(system),
            rolled_back_to: None,
        };
        fs::write(hd.join("logs/seen.json"), seen.to_json()).unwrap();
    }
    fs::write(repo.join("fleet.toml"), toml).unwrap();
}

fn get_metrics(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut t = String::new();
    s.read_to_string(&mut t).ok()?;
    t.contains(" 200 ").then_some(t)
}

/// Runs `fleet watch` on `hosts` synthetic hosts for `secs` seconds of idleness.
pub fn measure(hosts: usize, secs: u64) -> Result<WatchIdle, String> {
    let dir = tempfile::Builder::new()
        .prefix("tiffin-watch-idle-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    write_fleet(dir.path(), hosts, unix_now());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let w = Watcher(
        Command::new(TIFFIN)
            .args(["fleet", "--fleet"])
            .arg(dir.path().join("repo"))
            .args(["watch", "--metrics", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting tiffin fleet watch: {e}"))?,
    );
    let pid = w.0.id();
    let up = Instant::now();
    let page = loop {
        if let Some(p) = get_metrics(&addr).filter(|p| p.contains("host199") || hosts < 200) {
            break p;
        }
        if up.elapsed() > Duration::from_secs(30) {
            return Err("fleet watch did not serve /metrics within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let cpu0 = common::proc_cpu(pid).ok_or("fleet watch exited")?;
    let t0 = Instant::now();
    let mut rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(common::proc_rss_kib(pid).ok_or("fleet watch exited")? as f64);
    }
    let cpu1 = common::proc_cpu(pid).ok_or("fleet watch exited")?;
    Ok(WatchIdle {
        hosts,
        window_s: t0.elapsed().as_secs_f64(),
        cpu_s: cpu1 - cpu0,
        rss_kib: rss,
        page_bytes: page.len(),
    })
}

#[allow(dead_code)] // the suite includes this file for `measure` only
fn main() {
    let hosts = common::env_or("TIFFIN_WATCH_HOSTS", 200);
    let secs = common::idle_secs();
    match measure(hosts, secs) {
        Ok(r) => {
            let s = common::spread(&r.rss_kib.iter().map(|k| k / 1024.0).collect::<Vec<_>>());
            println!("| what | value |\n|---|---|");
            println!("| hosts | {} |", r.hosts);
            println!("| window s | {:.0} |", r.window_s);
            println!("| CPU s over the window | {:.2} |", r.cpu_s);
            println!("| CPU s per minute | {:.3} |", r.cpu_s_per_min());
            println!(
                "| RSS MiB median (min–max) | {:.1} ({:.1}–{:.1}) |",
                s.median, s.min, s.max
            );
            println!("| /metrics page bytes | {} |", r.page_bytes);
        }
        Err(e) => {
            eprintln!("fleet_watch_idle: {e}");
            std::process::exit(1);
        }
    }
}
