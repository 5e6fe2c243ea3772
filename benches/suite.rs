//! `make bench`: one table, tiffin side by side with what a user would otherwise run, every row
//! measured in this one run (median, min and max over repeated runs). It calls the measuring
//! functions of the other benches (fetch, publish, server_load, serve_checks, agent_idle,
//! tray_idle), prints the table and writes it, with a description of the machine, to
//! bench/results.md.
//!
//! Needs root, sshd, rsync, nginx-light and openssl (row 8), nix-instantiate (optional), and for
//! the tray rows Xvfb and D-Bus.
//! The run keeps to a time budget (10 minutes): a section that would not fit is skipped and says
//! so. Everything it creates (users, sshd, agents, temp dirs) goes when it ends.
//!
//! Knobs: `TIFFIN_BENCH_QUICK=1` (a smoke run: fewer repetitions, smaller fleet, 5 s idle
//! windows), `TIFFIN_BENCH_IDLE_SECS`, `TIFFIN_BENCH_RESULTS` (where to write; default
//! bench/results.md), `TIFFIN_BENCH_ROWS` (e.g. `1,4`: only those rows).

// Each bench includes the shared helpers itself so that it also builds on its own; here they
// are therefore included once per bench module.
#![allow(clippy::duplicate_mod)]

#[path = "agent_idle.rs"]
mod agent_idle;
#[path = "common/mod.rs"]
mod common;
#[path = "fetch.rs"]
mod fetch;
#[path = "fleet_watch_idle.rs"]
mod fleet_watch_idle;
#[path = "prebuilt_cache.rs"]
mod prebuilt_cache;
#[path = "publish.rs"]
mod publish;
#[path = "serve_checks.rs"]
mod serve_checks;
#[path = "server_load.rs"]
mod server_load;
mod tray;
#[path = "tray_idle.rs"]
mod tray_idle;

use common::{spread, Spread};
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// The whole run stays under this.
const BUDGET: Duration = Duration::from_secs(600);

/// bento's figures, measured before tiffin existed in the same kind of lab (issue 11).
const BENTO_CHECK_BYTES: f64 = 8300.0;
const BENTO_CHECK_WALL_MS: f64 = 290.0;

enum Cell {
    Measured { s: Spread, decimals: usize },
    Text(String),
}

impl Cell {
    fn of(v: &[f64], decimals: usize) -> Cell {
        Cell::Measured {
            s: spread(v),
            decimals,
        }
    }

    fn render(&self) -> String {
        match self {
            Cell::Measured { s, decimals: d } if s.runs > 1 => {
                format!("{:.*} ({:.*}–{:.*})", d, s.median, d, s.min, d, s.max)
            }
            Cell::Measured { s, decimals: d } => format!("{:.*}", d, s.median),
            Cell::Text(t) => t.clone(),
        }
    }
}

struct Line {
    what: String,
    tiffin: Cell,
    other: Cell,
    note: String,
}

struct Section {
    number: u32,
    title: String,
    /// What the other column is.
    other: String,
    lines: Vec<Line>,
    /// Free text after the section's lines (conditions, caveats).
    notes: Vec<String>,
}

impl Section {
    fn new(number: u32, title: &str, other: &str) -> Section {
        Section {
            number,
            title: title.into(),
            other: other.into(),
            lines: vec![],
            notes: vec![],
        }
    }

    fn line(
        &mut self,
        what: impl Into<String>,
        tiffin: Cell,
        other: Cell,
        note: impl Into<String>,
    ) {
        self.lines.push(Line {
            what: what.into(),
            tiffin,
            other,
            note: note.into(),
        });
    }

    fn skipped(number: u32, title: &str, why: &str) -> Section {
        let mut s = Section::new(number, title, "");
        s.line(
            "not measured",
            Cell::Text(why.into()),
            Cell::Text("—".into()),
            "",
        );
        s
    }
}

fn none() -> Cell {
    Cell::Text("—".into())
}

/// Whether row `n` is to be measured (`TIFFIN_BENCH_ROWS`, default all).
fn wanted(n: u32) -> bool {
    match std::env::var("TIFFIN_BENCH_ROWS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').any(|r| r.trim() == n.to_string()),
        _ => true,
    }
}

fn quick() -> bool {
    std::env::var("TIFFIN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A section measured only when its estimated time still fits in the budget.
fn within_budget(started: Instant, estimate: Duration) -> bool {
    started.elapsed() + estimate <= BUDGET
}

/// Measures `rows` with `run` when any of them is wanted and `estimate` still fits in the
/// budget; otherwise says in the table that they were skipped.
fn run_rows(
    sections: &mut Vec<Section>,
    started: Instant,
    rows: &[(u32, &str)],
    estimate: Duration,
    run: impl FnOnce() -> Vec<Section>,
) {
    if !rows.iter().any(|(n, _)| wanted(*n)) {
        return;
    }
    let names: Vec<String> = rows.iter().map(|(n, t)| format!("{n} {t}")).collect();
    if !within_budget(started, estimate) {
        println!(
            "[{:>5.1} s] skipping {}: the time budget ran out",
            started.elapsed().as_secs_f64(),
            names.join(", ")
        );
        sections.extend(
            rows.iter()
                .map(|(n, t)| Section::skipped(*n, t, "skipped: the time budget ran out")),
        );
        return;
    }
    println!(
        "[{:>5.1} s] {}…",
        started.elapsed().as_secs_f64(),
        names.join(", ")
    );
    sections.extend(run());
}

fn fetch_sections(runs: usize) -> Vec<Section> {
    let Some(r) = fetch::measure(runs) else {
        return vec![
            Section::skipped(
                1,
                "No-change check",
                "sshd unavailable (needs root and /usr/sbin/sshd)",
            ),
            Section::skipped(2, "Update after one changed file", "sshd unavailable"),
        ];
    };
    let mut one = Section::new(
        1,
        "No-change check",
        "OpenSSH `sftp -b`: `ls -l current/manifest.json` (bento's check)",
    );
    let (t, o) = (&r.check, &r.ls);
    let total = spread(&t.total()).median;
    let wall = spread(&t.wall_ms).median;
    one.line(
        "bytes client → server",
        Cell::of(&t.up, 0),
        Cell::of(&o.up, 0),
        "",
    );
    one.line(
        "bytes server → client",
        Cell::of(&t.down, 0),
        Cell::of(&o.down, 0),
        "",
    );
    one.line(
        "bytes on the wire, total",
        Cell::of(&t.total(), 0),
        Cell::of(&o.total(), 0),
        format!(
            "bento ≈ {BENTO_CHECK_BYTES:.0} B: tiffin {}",
            if total < BENTO_CHECK_BYTES {
                "beats it"
            } else {
                "does NOT beat it"
            }
        ),
    );
    one.line(
        "wall ms",
        Cell::of(&t.wall_ms, 0),
        Cell::of(&o.wall_ms, 0),
        format!(
            "bento ≈ {BENTO_CHECK_WALL_MS:.0} ms: tiffin {}",
            if wall < BENTO_CHECK_WALL_MS {
                "beats it"
            } else {
                "does NOT beat it"
            }
        ),
    );
    one.line(
        "client CPU ms",
        Cell::of(&t.cpu_ms, 1),
        Cell::of(&o.cpu_ms, 1),
        "tiffin: getrusage of its thread; sftp: of its processes (sftp + ssh)",
    );
    one.notes.push(format!(
        "tiffin's check is `source::open` + `agent::fetch::sync` (one `readlink current` after login); bytes counted at the TCP level through a loopback relay; {} runs; negotiated {}.",
        t.wall_ms.len(),
        r.negotiated
    ));

    let mut two = Section::new(
        2,
        "Update after one changed file",
        "OpenSSH `sftp -b`: `get -R` of the tree (bento re-downloads it every time)",
    );
    let (t, o) = (&r.update, &r.get);
    let ratio = 100.0 * spread(&t.total()).median / spread(&o.total()).median;
    two.line(
        "bytes on the wire, total",
        Cell::of(&t.total(), 0),
        Cell::of(&o.total(), 0),
        format!("tiffin moves {ratio:.2} % of what the full download moves"),
    );
    two.line(
        "bytes server → client",
        Cell::of(&t.down, 0),
        Cell::of(&o.down, 0),
        "",
    );
    two.line(
        "wall ms",
        Cell::of(&t.wall_ms, 0),
        Cell::of(&o.wall_ms, 0),
        "",
    );
    two.line(
        "client CPU ms",
        Cell::of(&t.cpu_ms, 1),
        Cell::of(&o.cpu_ms, 1),
        "",
    );
    two.line(
        "bytes total with `sftp -C` (compression)",
        none(),
        Cell::of(&r.get_c.total(), 0),
        "",
    );
    two.line(
        "tiffin's first fetch (whole tree): bytes, wall ms",
        Cell::Text(format!(
            "{} B, {} ms",
            Cell::of(&r.first.total(), 0).render(),
            Cell::of(&r.first.wall_ms, 0).render()
        )),
        none(),
        "for scale: what a new machine downloads once",
    );
    two.notes.push(format!(
        "Tree: {} files, {} bytes; each run publishes a new generation with one more module changed.",
        r.files, r.tree_bytes
    ));
    vec![one, two]
}

fn publish_section(hosts: usize, files: usize, reps: usize, deadline: Instant) -> Section {
    let r = publish::measure(hosts, files, reps, Some(deadline));
    let mut s = Section::new(
        3,
        &format!("Publish of {} hosts × {} files", r.hosts, r.files_per_host),
        "`rsync -rltgoDL --delete hosts/<h>/ <chroot>/<h>/tree/`, 4 hosts at a time",
    );
    for c in &r.cases {
        let other = if c.rsync_s.is_empty() {
            Cell::Text("rsync not installed".into())
        } else {
            Cell::of(&c.rsync_s, 2)
        };
        s.line(
            format!("{}, s", c.what),
            Cell::of(&c.tiffin_s, 2),
            other,
            "",
        );
    }
    s.notes.push(format!(
        "{} files, {:.1} MB, 20 shared through common/; `tiffin fleet publish` (library call), 4 hosts at a time; {} repetitions. tiffin hashes every file, writes a manifest, makes each new generation durable (syncfs) and switches it atomically; rsync compares size+mtime, writes in place and does not sync.",
        r.total_files, r.mb, r.reps
    ));
    s
}

fn load_section(sizes: &[usize], reps: usize, retry: Duration, deadline: Instant) -> Section {
    let Some(r) = server_load::measure(sizes, reps, retry, Some(deadline)) else {
        return Section::skipped(
            4,
            "Server load",
            "sshd unavailable (needs root and /usr/sbin/sshd)",
        );
    };
    let mut s = Section::new(
        4,
        "Server load: agents checking at once against one sshd",
        &format!(
            "the same agents against sshd's default MaxStartups {}",
            server_load::SSHD_DEFAULT
        ),
    );
    let module = r
        .cases
        .iter()
        .filter(|c| c.setting == "server module")
        .collect::<Vec<_>>();
    let default = r
        .cases
        .iter()
        .filter(|c| c.setting == "sshd default")
        .collect::<Vec<_>>();
    for m in &module {
        let Some(d) = default.iter().find(|d| d.agents == m.agents) else {
            continue;
        };
        let col = |c: &server_load::Case, f: &dyn Fn(&server_load::Burst) -> f64, dec| {
            Cell::of(&c.runs.iter().map(f).collect::<Vec<_>>(), dec)
        };
        s.line(
            format!("{} agents: checks per second", m.agents),
            col(m, &|b| b.checks_per_s(), 1),
            col(d, &|b| b.checks_per_s(), 1),
            "",
        );
        s.line(
            format!("{} agents: failed checks", m.agents),
            col(m, &|b| b.failed as f64, 0),
            col(d, &|b| b.failed as f64, 0),
            "",
        );
        s.line(
            format!("{} agents: sshd CPU s (listener + sessions)", m.agents),
            col(m, &|b| b.sshd_cpu_s, 2),
            col(d, &|b| b.sshd_cpu_s, 2),
            "",
        );
        s.line(
            format!("{} agents: sshd CPU ms per successful check", m.agents),
            col(m, &|b| b.sshd_cpu_s * 1e3 / b.ok.max(1) as f64, 1),
            col(d, &|b| b.sshd_cpu_s * 1e3 / b.ok.max(1) as f64, 1),
            "a refused connection costs sshd little",
        );
        let mut errors = std::collections::BTreeMap::<String, usize>::new();
        for b in m.runs.iter().chain(&d.runs) {
            for (e, n) in &b.errors {
                *errors.entry(e.clone()).or_insert(0) += n;
            }
        }
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(|(e, n)| format!("{n} × {e}")).collect();
            s.notes.push(format!(
                "{} agents, failures seen: {}.",
                m.agents,
                list.join("; ")
            ));
        }
    }
    if let Some(retry) = &r.retry {
        let last = retry
            .successes
            .iter()
            .map(|(_, t)| *t)
            .fold(0.0f64, f64::max);
        s.line(
            format!(
                "{} agents, failed ones retry with the daemon's backoff: succeeded / still failing",
                retry.agents
            ),
            none(),
            Cell::Text(format!(
                "{} / {} (last success at {last:.1} s)",
                retry.successes.len(),
                retry.gave_up
            )),
            "backoff 30 s doubling (agent::scheduler)",
        );
        s.notes.push(format!(
            "Retry burst: {}.",
            server_load::describe_retry(retry)
        ));
    }
    s.notes.push(format!(
        "{} host users (one key each) on one sshd, created once for all sizes (setup {:.0} s) and removed at the end; an agent is a thread doing `source::open` + `current_generation`; all released at one instant; checks per second = successful checks / time to the last answer; sshd CPU = utime+stime+cutime+cstime of the listener (sessions are its reaped children). Server module's MaxStartups for {} hosts: {} ({}). {} rounds (each: every size under both settings).",
        r.fleet_hosts, r.setup_s, r.fleet_hosts, r.module_value, r.module_value_from, r.rounds
    ));
    s
}

fn serve_section(checks: usize) -> Section {
    let title = "Serving no-change checks: server CPU and bytes per check, sshd beside nginx";
    let Some(r) = serve_checks::measure(checks) else {
        return Section::skipped(
            8,
            title,
            "sshd or nginx unavailable (needs root, sshd, nginx-light, openssl)",
        );
    };
    let mut s = Section::new(8, title, "—");
    for row in &r.rows {
        s.line(
            format!("{}: {}", row.server, row.how),
            Cell::Text(format!(
                "{:.3} CPU ms, {:.0} B per check",
                row.cpu_ms_per_check(),
                row.bytes_per_check()
            )),
            none(),
            format!(
                "{:.0} checks/s of one core: {:.0} machines per core at a 10-minute interval with half of it free; {}",
                row.checks_per_core_s(),
                row.machines_per_core(),
                row.answers
            ),
        );
    }
    s.notes.push(format!(
        "{checks} checks per row, {} agents at a time, against a real chrooted sshd and nginx-light serving the same publications (`benches/serve_checks.rs`). sshd: `source::open` + `current_generation` (a fresh SSH login and one readlink per check), CPU = utime+stime+cutime+cstime of the listener (connections are its reaped children). nginx: the agent's `HttpSource` (conditional GET of `current.txt` answered 304), CPU = schedstat run time of master and workers. Bytes: TCP payload both ways through a loopback relay.",
        serve_checks::PARALLEL
    ));
    s
}

fn cache_section(runs: usize) -> Section {
    let title = "Prebuilt system through the host's binary cache (NixOS stand-in, real Nix)";
    let Some(r) = prebuilt_cache::measure(runs) else {
        return Section::skipped(7, title, "real Nix is not installed");
    };
    let mut s = Section::new(
        7,
        title,
        "a local evaluation and build of the same system (`build = \"local\"`)",
    );
    for (what, c) in [
        ("first install", &r.first),
        ("one-package update", &r.update),
    ] {
        let pct = 100.0 * spread(&c.cache_bytes).median / c.nar_bytes.max(1) as f64;
        s.line(
            format!("{what}: bytes downloaded"),
            Cell::of(&c.cache_bytes, 0),
            Cell::Text("0 (built here)".into()),
            format!(
                "{} paths the store lacked, their NARs {} B: {pct:.1} % of that (goal ≤ 110 %)",
                c.paths, c.nar_bytes
            ),
        );
        s.line(
            format!("{what}: wall s"),
            Cell::of(&c.cache_s, 2),
            Cell::of(&c.local_s, 2),
            "",
        );
    }
    s.notes.push(format!(
        "{} packages of {} KiB of random bytes each; the update changes one. Cache: `prebuilt::realise` (store query, download of the narinfos and zstd NARs from a `file://` publication, each checked against the manifest, `nix copy --from`, GC root); local: `build::build_system` (evaluation and build of the flake). Before each measured run the paths are deleted from the store. A real NixOS's local build would also download its inputs from its substituters; the stand-in has none.",
        r.packages, r.package_kib
    ));
    s
}

/// `fleet watch` on a synthetic fleet: CPU seconds per minute and RSS.
fn watch_lines(five: &mut Section, watch: &Result<fleet_watch_idle::WatchIdle, String>) {
    match watch {
        Ok(w) => {
            let what = format!("fleet watch, {} hosts", w.hosts);
            five.line(
                format!("{what}: RSS MiB (sampled each second)"),
                Cell::of(&w.rss_kib.iter().map(|k| k / 1024.0).collect::<Vec<_>>(), 1),
                none(),
                "",
            );
            five.line(
                format!("{what}: CPU s per minute"),
                Cell::Text(format!("{:.3}", w.cpu_s_per_min())),
                none(),
                format!(
                    "{:.2} CPU s in {:.0} s; inotify on every host's logs/, one look a minute, /metrics served ({} bytes)",
                    w.cpu_s, w.window_s, w.page_bytes
                ),
            );
        }
        Err(why) => five.line("fleet watch", Cell::Text(why.clone()), none(), ""),
    }
}

fn footprint_and_responsiveness(idle: u64) -> Vec<Section> {
    // The agent's and the tray's idle windows run at the same time: both are idle, and the
    // budget is tight.
    let watch_hosts = if quick() { 20 } else { 200 };
    let (agent, tray, watch) = std::thread::scope(|s| {
        let a = s.spawn(|| agent_idle::measure(idle));
        let t = s.spawn(|| tray::idle(idle));
        let w = s.spawn(|| fleet_watch_idle::measure(watch_hosts, idle));
        (
            a.join().expect("agent idle measurement"),
            t.join().expect("tray idle measurement"),
            w.join().expect("fleet watch idle measurement"),
        )
    });
    let mut five = Section::new(5, &format!("Footprint at rest over {idle} s"), "—");
    // /proc counts CPU time in clock ticks (10 ms): zero means under one tick.
    let cpu = |ms: f64| {
        Cell::Text(if ms == 0.0 {
            "0 (under one 10 ms tick)".into()
        } else {
            format!("{:.2}", ms / 1000.0)
        })
    };
    five.line(
        "agent: RSS MiB (sampled each second)",
        Cell::of(
            &agent.rss_kib.iter().map(|k| k / 1024.0).collect::<Vec<_>>(),
            1,
        ),
        none(),
        "",
    );
    five.line(
        "agent: CPU s over the window",
        cpu(agent.cpu_ms),
        none(),
        format!(
            "{} scheduled check(s) in the window; {} voluntary context switches of the runtime thread",
            agent.scheduled_checks, agent.voluntary
        ),
    );
    match &tray {
        Ok(t) => {
            five.line(
                "tray: RSS MiB (sampled each second)",
                Cell::of(&t.rss_kib.iter().map(|k| k / 1024.0).collect::<Vec<_>>(), 1),
                none(),
                "",
            );
            five.line("tray: CPU s over the window", cpu(t.cpu_ms), none(), "");
        }
        Err(why) => {
            five.line("tray", Cell::Text(why.clone()), none(), "");
        }
    }
    watch_lines(&mut five, &watch);
    five.notes.push(
        "The agent: the real `tiffin agent` daemon on a 50-file `file://` publication, no clients, interval set so that one scheduled check falls in the window. CPU = utime+stime from /proc (10 ms ticks). The tray: `tiffin-tray` under Xvfb on a private D-Bus session with a StatusNotifierWatcher, connected to an agent socket.".into(),
    );
    let mut six = Section::new(6, "Responsiveness", "—");
    match tray::responsiveness() {
        Ok(r) => {
            six.line(
                "agent status change → tray menu updated (dbusmenu signal), ms",
                Cell::of(&r.status_to_menu_ms, 1),
                none(),
                "",
            );
            six.line(
                "menu click → agent phase change, ms",
                Cell::of(&r.click_to_phase_ms, 1),
                none(),
                "",
            );
            six.notes.extend(r.notes);
        }
        Err(why) => six.line("tray", Cell::Text(why), none(), ""),
    }
    vec![five, six]
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Cores, memory, kernel, CPU model.
fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    format!(
        "{cores} cores ({cpu}), {:.1} GiB memory, Linux {kernel}",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn git_commit() -> String {
    tiffin::runner::Runner::new()
        .run_in(
            "git",
            &["rev-parse", "--short", "HEAD"],
            Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))),
            Some(Duration::from_secs(10)),
        )
        .ok()
        .filter(|o| o.success())
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn render(sections: &[Section]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| # | measurement | tiffin: median (min–max) | otherwise: median (min–max) | goal / note |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    for s in sections {
        let other = if s.other.is_empty() || s.other == "—" {
            String::new()
        } else {
            format!(" — otherwise: {}", s.other)
        };
        let _ = writeln!(t, "| **{}** | **{}**{other} | | | |", s.number, s.title);
        for l in &s.lines {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} |",
                s.number,
                l.what,
                l.tiffin.render(),
                l.other.render(),
                l.note
            );
        }
    }
    t
}

fn main() {
    let started = Instant::now();
    let load_at_start = load_average();
    let when = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let q = quick();
    let idle = if q { 5 } else { common::idle_secs() };
    println!(
        "tiffin benchmark suite{} — started {when}, load average {load_at_start}",
        if q { " (quick)" } else { "" }
    );

    let mut sections = Vec::new();

    let fetch_runs = if q { 3 } else { 5 };
    let (hosts, reps) = if q { (20, 1) } else { (200, 3) };
    let retry = if q {
        Duration::ZERO
    } else {
        Duration::from_secs(95)
    };
    // Rows 5–6 take the idle window and about 40 s more; earlier rows leave room for them.
    let last = Duration::from_secs(idle + 40);
    // The user setup and one round of bursts, then the retry burst.
    let load_estimate = Duration::from_secs(if q { 60 } else { 110 }) + retry;
    // Publishing repeats while the load row and rows 5–6 still fit after it.
    let publish_deadline = started + BUDGET - load_estimate - last;
    run_rows(
        &mut sections,
        started,
        &[(1, "No-change check"), (2, "Update after one changed file")],
        Duration::ZERO,
        || fetch_sections(fetch_runs),
    );
    let serve_estimate = Duration::from_secs(if q { 20 } else { 90 });
    run_rows(
        &mut sections,
        started,
        &[(8, "Serving no-change checks")],
        serve_estimate + Duration::from_secs(if q { 20 } else { 90 }) + load_estimate + last,
        || vec![serve_section(if q { 100 } else { 1000 })],
    );
    run_rows(
        &mut sections,
        started,
        &[(3, "Publish")],
        Duration::from_secs(if q { 20 } else { 90 }) + load_estimate + last,
        || vec![publish_section(hosts, 300, reps, publish_deadline)],
    );
    run_rows(
        &mut sections,
        started,
        &[(4, "Server load")],
        load_estimate + last,
        || {
            vec![load_section(
                &[50, 100, 200],
                if q { 1 } else { 3 },
                retry,
                started + BUDGET - last,
            )]
        },
    );
    run_rows(
        &mut sections,
        started,
        &[(7, "Prebuilt system through the cache")],
        Duration::from_secs(if q { 15 } else { 40 }) + last,
        || vec![cache_section(if q { 1 } else { 3 })],
    );
    run_rows(
        &mut sections,
        started,
        &[(5, "Footprint"), (6, "Responsiveness")],
        last,
        || footprint_and_responsiveness(idle),
    );

    let table = render(&sections);
    let total = started.elapsed().as_secs_f64();
    let load_at_end = load_average();
    println!();
    println!("{table}");
    for s in &sections {
        for n in &s.notes {
            println!("{}. {n}", s.number);
        }
    }
    println!(
        "\n{} — {total:.0} s; load average {load_at_start} at start, {load_at_end} at the end",
        machine()
    );

    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark results\n");
    let _ = writeln!(
        md,
        "Written by `make bench` (`cargo bench --bench suite`, release build){}. Every row was measured in this one run, tiffin beside what a user would otherwise run.\n",
        if q { " in quick mode (`TIFFIN_BENCH_QUICK=1`: fewer repetitions, a smaller fleet; not for comparison)" } else { "" }
    );
    let _ = writeln!(
        md,
        "- When: {when}, commit {}, {total:.0} s in all",
        git_commit()
    );
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(
        md,
        "- Load average (1, 5, 15 min): {load_at_start} at the start, {load_at_end} at the end. The machine is shared with other jobs (builds, tests), so wall times and their spread include their load.\n"
    );
    let _ = writeln!(md, "{table}");
    let _ = writeln!(md, "Notes:\n");
    for s in &sections {
        for n in &s.notes {
            let _ = writeln!(md, "- ({}) {n}", s.number);
        }
    }
    let _ = writeln!(
        md,
        "\nGoals (measured for bento before tiffin existed): a check costs about {BENTO_CHECK_BYTES:.0} B on the wire and {:.2} s of wall time; an update re-downloads the whole tree every time.",
        BENTO_CHECK_WALL_MS / 1000.0
    );
    let out = std::env::var_os("TIFFIN_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/results.md"));
    if let Some(dir) = out.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match tiffin::fsutil::atomic_write(&out, md.as_bytes(), 0o644) {
        Ok(()) => println!("written to {}", out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
}
