//! Small helpers shared by the benchmarks: spreads of repeated measurements, CPU time from
//! getrusage and /proc, resident memory, and environment knobs. Each bench includes it with
//! `#[path = "common/mod.rs"] mod common;`; not every bench uses every part.
#![allow(dead_code)]

use std::fs;
use std::time::Duration;

/// Min, median and max of repeated measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub runs: usize,
}

/// The spread of `v` (all zero when `v` is empty).
pub fn spread(v: &[f64]) -> Spread {
    if v.is_empty() {
        return Spread::default();
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Spread {
        min: s[0],
        median: s[s.len() / 2],
        max: s[s.len() - 1],
        runs: s.len(),
    }
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU time of the calling thread (the in-process agent code runs on it alone).
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// User + system CPU time of every child process waited for so far (and of what they waited
/// for): the delta around a command is that command's CPU time.
pub fn children_cpu() -> Duration {
    rusage(libc::RUSAGE_CHILDREN)
}

pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of /proc/<pid>/stat after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // Field 3 (state) is a letter; keep positions by mapping non-numbers to 0.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of a process, in seconds.
pub fn proc_cpu(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(11)? + f.get(12)?) as f64 / ticks_per_second())
}

/// utime + stime + cutime + cstime of a process, in seconds: its own CPU time and that of every
/// child it has reaped (sshd's listener reaps each connection's processes).
pub fn proc_cpu_with_children(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(11)? + f.get(12)? + f.get(13)? + f.get(14)?) as f64 / ticks_per_second())
}

/// VmRSS of a process in KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A positive number from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// The idle window of the footprint measurements: `TIFFIN_BENCH_IDLE_SECS` (the older
/// `TIFFIN_IDLE_SECS` too), 60 s by default.
pub fn idle_secs() -> u64 {
    let old = env_or("TIFFIN_IDLE_SECS", 60);
    env_or("TIFFIN_BENCH_IDLE_SECS", old) as u64
}
