//! The measuring half of benches/serve_checks.rs (see there): the sshd and nginx rows. Its
//! parent provides `common` (benches/common) and `support` (tests/it/support), so that the bench,
//! the suite and the harness test in tests/it each include it once.

#[path = "nginx.rs"]
mod nginx;

use super::{common, support};
use nginx::{Listener, Nginx};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};
use support::relay::{Relay, Wire};
use support::sshd::Sshd;
use tiffin::config::AgentConfig;
use tiffin::source::{self, Login, SourceUrl};

/// Host users on the sshd (each its own key and chroot); the agents take turns with them.
const HOSTS: [&str; 4] = ["web0", "web1", "web2", "web3"];
/// Agents checking at the same time.
pub const PARALLEL: usize = 2;
/// The part of a server's CPU the scaling estimate leaves free (for publishing, bursts, the
/// agents' downloads after a change).
pub const HEADROOM: f64 = 0.5;
/// The interval the scaling estimate assumes.
pub const INTERVAL_S: f64 = 600.0;

/// One row: `checks` checks one way against one server.
pub struct Row {
    pub server: &'static str,
    pub how: &'static str,
    pub checks: usize,
    pub failed: usize,
    pub cpu_s: f64,
    pub wire: Wire,
    pub wall_s: f64,
    /// What answered, e.g. "304 × 1000".
    pub answers: String,
}

impl Row {
    pub fn cpu_ms_per_check(&self) -> f64 {
        self.cpu_s * 1e3 / self.ok().max(1) as f64
    }

    pub fn bytes_per_check(&self) -> f64 {
        self.wire.total() as f64 / self.checks.max(1) as f64
    }

    /// Checks one core of the server can answer per second.
    pub fn checks_per_core_s(&self) -> f64 {
        1e3 / self.cpu_ms_per_check().max(1e-9)
    }

    /// Machines one core serves at [`INTERVAL_S`], leaving [`HEADROOM`] free.
    pub fn machines_per_core(&self) -> f64 {
        INTERVAL_S * (1.0 - HEADROOM) * self.checks_per_core_s()
    }

    fn ok(&self) -> usize {
        self.checks - self.failed
    }
}

pub struct ServeResults {
    pub rows: Vec<Row>,
    pub setup_s: f64,
}

/// Pids of the processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Waits (up to 20 s) until sshd has reaped every connection's processes.
fn sshd_quiet(pid: u32) {
    let end = Instant::now() + Duration::from_secs(20);
    while !children_of(pid).is_empty() && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `check(i)` for i in 0..checks, [`PARALLEL`] at a time; each thread first makes its
/// state with `init`. Returns the failures (reason → count) and the wall time.
fn run_parallel<S>(
    checks: usize,
    init: impl Fn() -> S + Sync,
    check: impl Fn(&mut S, usize) -> Result<(), String> + Sync,
) -> (BTreeMap<String, usize>, f64) {
    let start = Instant::now();
    let errors: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..PARALLEL)
            .map(|t| {
                let (init, check) = (&init, &check);
                s.spawn(move || {
                    let mut state = init();
                    (t..checks)
                        .step_by(PARALLEL)
                        .filter_map(|i| check(&mut state, i).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("agent thread"))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut m = BTreeMap::new();
    for e in errors {
        *m.entry(e.chars().take(100).collect()).or_insert(0) += 1;
    }
    (m, wall)
}

fn describe(m: &BTreeMap<String, usize>) -> String {
    let v: Vec<String> = m.iter().map(|(k, n)| format!("{k} × {n}")).collect();
    v.join(", ")
}

/// The agent's check over SFTP.
fn sftp_check(cfg: &AgentConfig) -> Result<(), String> {
    let mut s = source::open(cfg).map_err(|e| e.to_string())?;
    match s.current_generation().map_err(|e| e.to_string())? {
        Some(1) => Ok(()),
        other => Err(format!("current is {other:?}, not generation 1")),
    }
}

fn sshd_row(srv: &Sshd, cfgs: &[AgentConfig], relay: &Relay, checks: usize) -> Row {
    let pid = srv.pid().expect("sshd is running");
    sftp_check(&cfgs[0]).expect("a first check over SFTP");
    relay.settle();
    sshd_quiet(pid);
    relay.reset();
    let cpu0 = common::proc_cpu_with_children(pid).unwrap_or(0.0);
    let (errors, wall_s) = run_parallel(checks, || (), |_, i| sftp_check(&cfgs[i % cfgs.len()]));
    let wire = relay.settle();
    sshd_quiet(pid);
    let cpu1 = common::proc_cpu_with_children(pid).unwrap_or(cpu0);
    let failed = errors.values().sum();
    let mut answers = format!("current → gens/1 × {}", checks - failed);
    if failed > 0 {
        answers.push_str(&format!("; failed: {}", describe(&errors)));
    }
    Row {
        server: "sshd",
        how: "SFTP, fresh connection (handshake, key auth, readlink current)",
        checks,
        failed,
        cpu_s: cpu1 - cpu0,
        wire,
        wall_s,
        answers,
    }
}

/// Every host's `current.txt` beside `current`, as `fleet publish` writes it.
fn check_current_txt(chroot: &Path) {
    for h in HOSTS {
        let p = chroot.join(h).join("current.txt");
        let text = fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (fleet publish writes it)", p.display()));
        assert_eq!(text, "gens/1\n", "{}", p.display());
    }
}

/// One agent's check over HTTP(S): the project's `HttpSource` (its process-wide client per base
/// URL keeps the last ETag, so after the first check each is a conditional GET).
fn http_check(url: &SourceUrl, ca: &Path) -> Result<(), String> {
    let none = Path::new("");
    let login = Login {
        url,
        identity: none,
        known_hosts: none,
        http_ca: Some(ca),
    };
    let mut s = source::open(login).map_err(|e| e.to_string())?;
    match s.current_generation().map_err(|e| e.to_string())? {
        Some(1) => Ok(()),
        other => Err(format!("current.txt names {other:?}, not generation 1")),
    }
}

fn how(l: Listener) -> &'static str {
    match l {
        Listener::Http => "HTTP, fresh connection, conditional GET current.txt",
        Listener::HttpKeepAlive => "HTTP, kept-alive connection, conditional GET",
        Listener::Https => "HTTPS, fresh connection, full TLS handshake, conditional GET",
        Listener::HttpsKeepAlive => "HTTPS, kept-alive connection, conditional GET",
    }
}

fn http_row(web: &Nginx, l: Listener, checks: usize) -> Row {
    let relay = Relay::start(web.port(l));
    let urls: Vec<SourceUrl> = HOSTS
        .iter()
        .map(|h| {
            let u = format!("{}://127.0.0.1:{}/{h}/", l.scheme(), relay.port);
            SourceUrl::parse(&u).expect("an http(s) source URL")
        })
        .collect();
    // Each agent's first check (a 200 with the ETag), as before any no-change check.
    for u in &urls {
        http_check(u, &web.ca).unwrap_or_else(|e| {
            panic!("a first check over {u:?}: {e}; nginx's log:\n{}", web.log())
        });
    }
    // Kept-alive connections stay open (the clients are process-wide): their last answer has
    // arrived once the check returned, so the counters can start from here.
    let settle = |r: &Relay| {
        if l.keep_alive() {
            thread::sleep(Duration::from_millis(50));
            r.wire()
        } else {
            r.settle()
        }
    };
    settle(&relay);
    relay.reset();
    let before = web.answers();
    let cpu0 = web.cpu_s();
    let (errors, wall_s) = run_parallel(
        checks,
        || (),
        |_, i| http_check(&urls[i % urls.len()], &web.ca),
    );
    let wire = settle(&relay);
    let cpu1 = web.cpu_s();
    let failed = errors.values().sum();
    let mut after = web.answers();
    for (k, n) in before {
        *after.entry(k).or_insert(0) -= n;
    }
    after.retain(|_, n| *n > 0);
    let mut answers = describe(&after);
    if failed > 0 {
        answers.push_str(&format!("; failed: {}", describe(&errors)));
    }
    Row {
        server: "nginx",
        how: how(l),
        checks,
        failed,
        cpu_s: cpu1 - cpu0,
        wire,
        wall_s,
        answers,
    }
}

/// Starts sshd (with [`HOSTS`] published) and nginx serving the same chroot, then measures
/// `checks` checks each way. `None` when sshd or nginx cannot run here (outside CI).
pub fn measure(checks: usize) -> Option<ServeResults> {
    let t = Instant::now();
    let srv = Sshd::start(&HOSTS)?;
    let src = tempfile::tempdir().expect("temp dir");
    support::publication::write_config_tree(src.path(), 20, 2000, 1);
    for h in HOSTS {
        srv.publish(h, 1, src.path());
    }
    let chroot = srv.root.join("chroot");
    check_current_txt(&chroot);
    let web = Nginx::start(&chroot)?;
    let state = tempfile::tempdir().expect("temp dir");
    let relay = Relay::start(srv.port());
    let cfgs: Vec<AgentConfig> = HOSTS
        .iter()
        .map(|h| srv.agent_config(h, relay.port, state.path()))
        .collect();
    let setup_s = t.elapsed().as_secs_f64();
    let mut rows = vec![sshd_row(&srv, &cfgs, &relay, checks)];
    drop(relay);
    rows.extend(Listener::ALL.map(|l| http_row(&web, l, checks)));
    Some(ServeResults { rows, setup_s })
}

/// The table of rows, as the bench prints it.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| server | check | checks | CPU ms per check | bytes per check | checks/s of one core | machines per core at 10 min (50 % free) | wall s | answers |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.0} | {:.0} | {:.0} | {:.1} | {} |\n",
            r.server,
            r.how,
            r.checks,
            r.cpu_ms_per_check(),
            r.bytes_per_check(),
            r.checks_per_core_s(),
            r.machines_per_core(),
            r.wall_s,
            r.answers
        ));
    }
    t
}
