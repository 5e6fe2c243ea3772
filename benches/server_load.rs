//! Server load: 50, 100, 200 agents checking at the same moment against one real chrooted sshd
//! (each its own host user and key, each one `source::open` + `current_generation`, one thread
//! per agent), with sshd's default `MaxStartups` (10:30:100) and with the value the NixOS server
//! module sets for the fleet (`packaging/nixos/lib.nix`, `maxStartups`). Then the 200-agent burst
//! under the default again, where every agent that fails retries with the daemon's backoff
//! (`agent::scheduler::Schedule::next_delay`), to see whether failures cascade.
//!
//! Needs root and sshd (it creates 200 system users and removes them). Prints a table, asserts
//! nothing. Run: `cargo bench --bench server_load`; `measure` is also called by the suite.
//! `TIFFIN_BENCH_LOAD_REPS` (default 3) and `TIFFIN_BENCH_RETRY_SECS` (default 95) tune it.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};
use support::sshd::Sshd;
use tiffin::agent::daemon::scheduler::{Jitter, Schedule};
use tiffin::config::AgentConfig;
use tiffin::runner::Runner;
use tiffin::source::{self, SourceError};

/// sshd's compiled-in default (sshd_config(5)).
pub const SSHD_DEFAULT: &str = "10:30:100";

/// One burst: every agent checks once, all released at the same instant.
pub struct Burst {
    pub ok: usize,
    pub failed: usize,
    /// From the release to the last agent's answer.
    pub wall_s: f64,
    /// CPU time of sshd and every session process it forked (and reaped) during the burst.
    pub sshd_cpu_s: f64,
    /// Failure reasons and how often each came.
    pub errors: BTreeMap<String, usize>,
}

impl Burst {
    pub fn checks_per_s(&self) -> f64 {
        self.ok as f64 / self.wall_s.max(1e-9)
    }
}

/// The bursts of one (agents, MaxStartups) pair.
pub struct Case {
    pub agents: usize,
    pub max_startups: String,
    /// "sshd default" or "server module".
    pub setting: &'static str,
    pub runs: Vec<Burst>,
}

/// The burst with retries: per agent, the attempt that succeeded and when.
pub struct Retry {
    pub agents: usize,
    pub max_startups: String,
    pub window_s: f64,
    /// Agents that failed their first attempt.
    pub first_failures: usize,
    /// (attempt number, seconds after the burst) of each agent that got through.
    pub successes: Vec<(usize, f64)>,
    /// Agents still failing when the window closed.
    pub gave_up: usize,
}

pub struct LoadResults {
    /// Rounds of bursts actually run.
    pub rounds: usize,
    pub fleet_hosts: usize,
    /// The module's MaxStartups for this fleet, and where it came from.
    pub module_value: String,
    pub module_value_from: String,
    pub setup_s: f64,
    pub cases: Vec<Case>,
    pub retry: Option<Retry>,
}

/// `lib.maxStartups n` evaluated from packaging/nixos/lib.nix with `nix-instantiate`; without
/// it, the same formula mirrored here: max(10,n):30:max(100,2·start).
fn module_max_startups(n: usize) -> (String, String) {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/nixos/lib.nix");
    let expr = format!("(import {}).maxStartups {n}", lib.display());
    if let Ok(o) = Runner::new().run(
        "nix-instantiate",
        &["--eval", "--strict", "-E", &expr],
        Some(Duration::from_secs(60)),
    ) {
        let v = o.stdout.trim().trim_matches('"').to_string();
        if o.success() && v.split(':').count() == 3 {
            return (v, "evaluated from packaging/nixos/lib.nix".into());
        }
    }
    let start = n.max(10);
    (
        format!("{start}:30:{}", (2 * start).max(100)),
        "lib.nix's formula mirrored (nix-instantiate unavailable)".into(),
    )
}

/// What an agent's check does at the start of each cycle.
fn check(cfg: &AgentConfig) -> Result<(), String> {
    let mut s = source::open(cfg).map_err(reason)?;
    s.current_generation().map_err(reason)?;
    Ok(())
}

/// The kind of failure, without the per-agent details (user names, addresses).
fn reason(e: SourceError) -> String {
    let why = match &e {
        SourceError::Unreachable { why, .. } => format!("unreachable: {why}"),
        SourceError::Auth { why, .. } => format!("authentication: {why}"),
        other => other.to_string(),
    };
    why.chars().take(80).collect()
}

fn children_of(pid: u32) -> usize {
    let Ok(rd) = fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
                == Some(pid)
        })
        .count()
}

/// Waits (up to 20 s) until sshd has reaped every session, so its CPU counters are complete.
fn sshd_quiet(pid: u32) {
    let end = Instant::now() + Duration::from_secs(20);
    while children_of(pid) > 0 && Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
}

fn burst(srv: &Sshd, cfgs: &[AgentConfig]) -> Burst {
    let pid = srv.pid().expect("sshd is running");
    sshd_quiet(pid);
    let cpu0 = common::proc_cpu_with_children(pid).unwrap_or(0.0);
    let gate = Barrier::new(cfgs.len() + 1);
    let mut start = Instant::now();
    let results: Vec<(Result<(), String>, Instant)> = thread::scope(|s| {
        let handles: Vec<_> = cfgs
            .iter()
            .map(|cfg| {
                let gate = &gate;
                s.spawn(move || {
                    gate.wait();
                    let r = check(cfg);
                    (r, Instant::now())
                })
            })
            .collect();
        start = Instant::now();
        gate.wait();
        handles
            .into_iter()
            .map(|h| h.join().expect("agent thread"))
            .collect()
    });
    let end = results.iter().map(|(_, t)| *t).max().unwrap_or(start);
    sshd_quiet(pid);
    let cpu1 = common::proc_cpu_with_children(pid).unwrap_or(cpu0);
    let mut errors = BTreeMap::new();
    for (r, _) in &results {
        if let Err(e) = r {
            *errors.entry(e.clone()).or_insert(0) += 1;
        }
    }
    let failed = errors.values().sum();
    Burst {
        ok: results.len() - failed,
        failed,
        wall_s: end.duration_since(start).as_secs_f64(),
        sshd_cpu_s: cpu1 - cpu0,
        errors,
    }
}

/// Every agent checks at once; a failed one waits as the daemon does after an unreachable
/// server (30 s, doubling up to the interval) and tries again, until `window` is over.
fn burst_with_retries(srv: &Sshd, cfgs: &[AgentConfig], window: Duration) -> Retry {
    // agent.toml's defaults: the backoff is capped by the interval.
    let schedule = Schedule {
        interval: Duration::from_secs(15 * 60),
        jitter: Duration::from_secs(120),
    };
    let pid = srv.pid().expect("sshd is running");
    sshd_quiet(pid);
    let gate = Barrier::new(cfgs.len() + 1);
    let start = Instant::now() + Duration::from_millis(200);
    let outcomes: Vec<(bool, Option<(usize, f64)>)> = thread::scope(|s| {
        let handles: Vec<_> = cfgs
            .iter()
            .enumerate()
            .map(|(i, cfg)| {
                let (gate, schedule) = (&gate, &schedule);
                s.spawn(move || {
                    gate.wait();
                    thread::sleep(start.saturating_duration_since(Instant::now()));
                    let mut backoff = None;
                    let mut rng = Jitter::from_seed(i as u64 + 1);
                    let mut first_failed = false;
                    for attempt in 1.. {
                        if check(cfg).is_ok() {
                            return (first_failed, Some((attempt, start.elapsed().as_secs_f64())));
                        }
                        first_failed |= attempt == 1;
                        let wait = schedule.next_delay(true, &mut backoff, &mut rng);
                        if start.elapsed() + wait > window {
                            break;
                        }
                        thread::sleep(wait);
                    }
                    (first_failed, None)
                })
            })
            .collect();
        gate.wait();
        handles
            .into_iter()
            .map(|h| h.join().expect("agent thread"))
            .collect()
    });
    Retry {
        agents: cfgs.len(),
        max_startups: String::new(),
        window_s: window.as_secs_f64(),
        first_failures: outcomes.iter().filter(|(f, _)| *f).count(),
        successes: outcomes.iter().filter_map(|(_, s)| *s).collect(),
        gave_up: outcomes.iter().filter(|(_, s)| s.is_none()).count(),
    }
}

/// Creates `max(sizes)` host users and keys once, runs `reps` rounds of bursts (each size under
/// both settings), then the retry burst of the largest size (skipped when `retry_window` is
/// zero). Stops repeating early when another round and the retry burst would end after
/// `deadline` (at least one round runs). `None` when sshd cannot run here.
pub fn measure(
    sizes: &[usize],
    reps: usize,
    retry_window: Duration,
    deadline: Option<Instant>,
) -> Option<LoadResults> {
    let fleet = sizes.iter().copied().max().unwrap_or(0);
    let t = Instant::now();
    let names: Vec<String> = (0..fleet).map(|i| format!("load{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut srv = Sshd::start(&refs)?;
    let src = tempfile::tempdir().expect("temp dir");
    fs::write(src.path().join("configuration.nix"), "{ ... }: { }\n").expect("write a tree");
    for n in &names {
        srv.publish(n, 1, src.path());
    }
    let state = tempfile::tempdir().expect("temp dir");
    // Written one after the other: each config writes the same known_hosts file.
    let cfgs: Vec<AgentConfig> = names
        .iter()
        .map(|n| srv.agent_config(n, srv.port(), state.path()))
        .collect();
    let setup_s = t.elapsed().as_secs_f64();
    let (module_value, module_value_from) = module_max_startups(fleet);

    let settings = [
        ("sshd default", None),
        ("server module", Some(module_value.as_str())),
    ];
    let mut cases: Vec<Case> = settings
        .iter()
        .flat_map(|&(setting, value)| {
            sizes.iter().map(move |&agents| Case {
                agents,
                max_startups: value.unwrap_or(SSHD_DEFAULT).to_string(),
                setting,
                runs: vec![],
            })
        })
        .collect();
    // Rounds alternate the two settings, so that both see the same moments of a shared machine.
    let rounds_started = Instant::now();
    let mut rounds = 0;
    for round in 0..reps.max(1) {
        let per_round = rounds_started.elapsed() / round.max(1) as u32;
        if round > 0 && deadline.is_some_and(|d| Instant::now() + per_round + retry_window > d) {
            break;
        }
        rounds += 1;
        for (setting, value) in settings {
            srv.set_max_startups(value);
            for c in cases.iter_mut().filter(|c| c.setting == setting) {
                c.runs.push(burst(&srv, &cfgs[..c.agents]));
                thread::sleep(Duration::from_millis(500));
            }
        }
    }
    let retry = (!retry_window.is_zero()).then(|| {
        srv.set_max_startups(None);
        let mut r = burst_with_retries(&srv, &cfgs, retry_window);
        r.max_startups = SSHD_DEFAULT.into();
        r
    });
    Some(LoadResults {
        rounds,
        fleet_hosts: fleet,
        module_value,
        module_value_from,
        setup_s,
        cases,
        retry,
    })
}

/// One line on the retry burst: how many got through, on which attempt, by when.
pub fn describe_retry(r: &Retry) -> String {
    let mut by_attempt: BTreeMap<usize, (usize, f64)> = BTreeMap::new();
    for (attempt, t) in &r.successes {
        let e = by_attempt.entry(*attempt).or_insert((0, 0.0));
        e.0 += 1;
        e.1 = e.1.max(*t);
    }
    let rounds: Vec<String> = by_attempt
        .iter()
        .map(|(a, (n, t))| format!("attempt {a}: {n} (last at {t:.1} s)"))
        .collect();
    format!(
        "{} agents, MaxStartups {}: {} failed their first check; {} of {} succeeded within {:.0} s ({}); {} still failing",
        r.agents,
        r.max_startups,
        r.first_failures,
        r.successes.len(),
        r.agents,
        r.window_s,
        rounds.join(", "),
        r.gave_up
    )
}

#[allow(dead_code)] // the suite includes this file as a module and has its own main
fn main() {
    let reps = common::env_or("TIFFIN_BENCH_LOAD_REPS", 3);
    let retry = common::env_or("TIFFIN_BENCH_RETRY_SECS", 95) as u64;
    let Some(r) = measure(&[50, 100, 200], reps, Duration::from_secs(retry), None) else {
        return;
    };
    println!(
        "\nserver load: {} host users on one sshd (setup {:.0} s); module MaxStartups {} ({}); median (min–max) of {}",
        r.fleet_hosts, r.setup_s, r.module_value, r.module_value_from, r.rounds
    );
    println!("| agents | MaxStartups | checks/s | failures | sshd CPU s | wall s |");
    println!("|---|---|---|---|---|---|");
    for c in &r.cases {
        let f = |g: &dyn Fn(&Burst) -> f64| {
            let s = common::spread(&c.runs.iter().map(g).collect::<Vec<_>>());
            format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max)
        };
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} |",
            c.agents,
            c.max_startups,
            c.setting,
            f(&|b| b.checks_per_s()),
            f(&|b| b.failed as f64),
            f(&|b| b.sshd_cpu_s),
            f(&|b| b.wall_s)
        );
        for b in &c.runs {
            for (e, n) in &b.errors {
                println!("    {n} × {e}");
            }
        }
    }
    if let Some(retry) = &r.retry {
        println!(
            "\nretry with the daemon's backoff: {}",
            describe_retry(retry)
        );
    }
}
