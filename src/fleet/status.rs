//! `tiffin fleet status`: every host's state, read from its publication (`current`, the
//! generation's manifest) and from what its agent uploaded (`logs/seen.json` and the reports
//! `logs/<UTC time>-g<N>-<outcome>.json`). Reads only; never writes.
//!
//! Three rules keep the view honest (bento got each wrong):
//! - a report for an older generation never makes a host look up to date: up to date means the
//!   running generation *is* the published one;
//! - a host applying generation N while N+1 is published shows "updating to gN, gN+1 pending";
//! - reports are placed by the time and generation in their own name, never by when the file
//!   arrived (mtime), so a report that sat in the agent's outbox lands where it belongs.
//!
//! Everything under `logs/` is written by the host, so it is read without following symlinks,
//! only from regular files, and only up to a size cap.

use super::inert::first_line;
use crate::config::fleet::{check_unix_name, FleetConfig, FleetConfigError};
use crate::manifest::Manifest;
use crate::publication::report::{
    self, parse_report, parse_seen, parse_time, Report, ReportName, Seen, SEEN_NAME,
};
use crate::source::parse_current_target;
use crate::status::Outcome;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A host is "not seen" after this many of its check intervals without contact.
pub const STALE_INTERVALS: u64 = 3;
/// The agent's default interval, assumed when `seen.json` does not say (older agents).
pub const DEFAULT_INTERVAL_SECS: u64 = 15 * 60;
/// The most read from one host-written file (report, seen.json); a log's text is capped too.
pub const MAX_HOST_FILE: u64 = 1 << 20;
pub const MAX_LOG_TEXT: u64 = 16 << 20;

/// Why the fleet view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FleetViewError {
    #[error(transparent)]
    Config(#[from] FleetConfigError),
    #[error("{place}: {source}")]
    Io {
        place: String,
        source: std::io::Error,
    },
    #[error("no host {host:?}: it is not in fleet.toml and {chroot} has no directory for it")]
    UnknownHost { host: String, chroot: String },
    #[error("{0}")]
    Unknown(String),
}

/// A host's state, most urgent first (the order `fleet status` sorts by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its latest report for the published generation is a failure (or an interrupted cycle).
    Failing,
    /// It rolled the published generation back and will not retry it until a newer one.
    RolledBack,
    /// No contact for more than [`STALE_INTERVALS`] of its intervals.
    NotSeen,
    /// Neither `seen.json` nor a report, ever.
    NeverSeen,
    /// Runs the published generation, but its kernel, initrd or modules wait for a reboot.
    RestartNeeded,
    /// Its agent said it started applying a generation and has not reported the end yet.
    Updating,
    /// A newer generation is published than the one it runs.
    UpdatePending,
    /// Runs the published generation.
    UpToDate,
}

impl HostState {
    pub const ALL: [HostState; 8] = [
        HostState::Failing,
        HostState::RolledBack,
        HostState::NotSeen,
        HostState::NeverSeen,
        HostState::RestartNeeded,
        HostState::Updating,
        HostState::UpdatePending,
        HostState::UpToDate,
    ];

    /// The words shown in the table.
    pub fn label(self) -> &'static str {
        match self {
            HostState::Failing => "failing",
            HostState::RolledBack => "rolled back",
            HostState::NotSeen => "not seen",
            HostState::NeverSeen => "never seen",
            HostState::RestartNeeded => "restart needed",
            HostState::Updating => "updating",
            HostState::UpdatePending => "update pending",
            HostState::UpToDate => "up to date",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            HostState::Failing => "✗",
            HostState::RolledBack => "↺",
            HostState::NotSeen => "?",
            HostState::NeverSeen => "·",
            HostState::RestartNeeded => "⟳",
            HostState::Updating => "…",
            HostState::UpdatePending => "↑",
            HostState::UpToDate => "✓",
        }
    }

    /// ANSI SGR parameters.
    fn colour(self) -> &'static str {
        match self {
            HostState::Failing => "1;31",
            HostState::RolledBack => "35",
            HostState::NotSeen => "33",
            HostState::NeverSeen => "2",
            HostState::RestartNeeded => "33",
            HostState::Updating => "36",
            HostState::UpdatePending => "34",
            HostState::UpToDate => "32",
        }
    }
}

/// Everything in one host's chroot that the fleet view reads.
#[derive(Clone, Debug, Default)]
pub struct HostRecords {
    pub host: String,
    pub dir: PathBuf,
    /// The generation `current` points to.
    pub published: Option<u64>,
    pub manifest: Option<Manifest>,
    /// Sorted by (time in the name, generation): oldest first.
    pub reports: Vec<ReportName>,
    pub seen: Option<Seen>,
    /// What could not be read, for the row's note; the row is still shown.
    pub problems: Vec<String>,
}

/// Reads a file the host wrote: no symlink followed, a regular file only, at most `max` bytes.
pub fn read_host_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > max {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {max} read",
            meta.len()
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

impl HostRecords {
    /// Reads `<chroot>/<host>`; what is missing or unreadable is noted, not fatal.
    pub fn read(chroot: &Path, host: &str) -> Self {
        let dir = chroot.join(host);
        let mut r = HostRecords {
            host: host.to_string(),
            dir: dir.clone(),
            ..Default::default()
        };
        if !dir.is_dir() {
            return r;
        }
        let current = dir.join("current");
        match std::fs::read_link(&current) {
            Ok(target) => {
                let place = current.display().to_string();
                match parse_current_target(&target.to_string_lossy(), &place) {
                    Ok(g) => {
                        r.published = Some(g);
                        let mpath = dir.join("gens").join(g.to_string()).join("manifest.json");
                        let origin = mpath.display().to_string();
                        match std::fs::read(&mpath) {
                            Ok(bytes) => match Manifest::parse(&bytes, &origin) {
                                Ok(m) => r.manifest = Some(m),
                                Err(e) => r.problems.push(e.to_string()),
                            },
                            Err(e) => r.problems.push(format!("{origin}: {e}")),
                        }
                    }
                    Err(e) => r.problems.push(e.to_string()),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => r.problems.push(format!("{}: {e}", current.display())),
        }
        let logs = dir.join("logs");
        match std::fs::read_dir(&logs) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if name == SEEN_NAME {
                        let path = logs.join(SEEN_NAME);
                        match read_host_file(&path, MAX_HOST_FILE)
                            .and_then(|b| parse_seen(&b).map_err(std::io::Error::other))
                        {
                            Ok(s) => r.seen = Some(s),
                            Err(e) => r.problems.push(format!("{}: {e}", path.display())),
                        }
                    } else if let Some(rn) = ReportName::parse(name) {
                        r.reports.push(rn);
                    }
                }
                r.reports.sort_by_key(ReportName::key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => r.problems.push(format!("{}: {e}", logs.display())),
        }
        r
    }

    /// Opens one of this host's reports.
    pub fn load_report(&self, name: &ReportName) -> Result<Report, String> {
        let path = self.dir.join("logs").join(&name.file);
        read_host_file(&path, MAX_HOST_FILE)
            .and_then(|b| parse_report(&b).map_err(std::io::Error::other))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    fn seen_at(&self) -> Option<u64> {
        self.seen.as_ref().and_then(|s| parse_time(&s.last_seen))
    }
}

/// One row of `fleet status`; its JSON form is the `--json` contract (field names are stable).
#[derive(Clone, Debug, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// False for a chroot directory that fleet.toml does not list (any more).
    pub in_fleet_toml: bool,
    pub state: HostState,
    pub published_generation: Option<u64>,
    /// RFC 3339, from the manifest.
    pub published_at: Option<String>,
    pub publish_age_secs: Option<u64>,
    pub running_generation: Option<u64>,
    /// The generation being applied now, when the agent said it started.
    pub updating_to: Option<u64>,
    /// The published generation when the host neither runs it nor is applying it.
    pub pending_generation: Option<u64>,
    pub expected_system: Option<String>,
    pub running_system: Option<String>,
    /// Whether the running system is the manifest's expected one; null when either is unknown.
    pub system_matches: Option<bool>,
    pub reboot_needed: bool,
    pub last_seen: Option<String>,
    pub last_seen_age_secs: Option<u64>,
    /// The agent's interval (or the default when it did not say).
    pub interval_secs: u64,
    pub report_count: usize,
    /// The newest report by its own time, as the agent uploaded it.
    pub last_report: Option<Report>,
    pub last_report_age_secs: Option<u64>,
    /// Unreadable or invalid files found on the way.
    pub problems: Vec<String>,
}

/// Decides a host's row from its records, as of `now` (Unix seconds).
pub fn assess(rec: &HostRecords, in_fleet_toml: bool, now: u64) -> HostStatus {
    let mut problems = rec.problems.clone();
    let seen = rec.seen.as_ref();
    let seen_at = rec.seen_at();
    if seen.is_some() && seen_at.is_none() {
        problems.push("seen.json: last_seen is not an RFC 3339 time".into());
    }
    let latest = rec.reports.last();
    let mut last_report = None;
    if let Some(l) = latest {
        match rec.load_report(l) {
            Ok(r) => last_report = Some(r),
            Err(e) => problems.push(e),
        }
    }

    // What it runs: seen.json, unless a success was reported after seen.json was written.
    let mut running_generation = seen.and_then(|s| s.applied_generation);
    let mut running_system = seen.and_then(|s| s.running_system.clone());
    for r in rec
        .reports
        .iter()
        .filter(|r| seen_at.map_or(true, |s| r.time > s))
        .filter(|r| matches!(r.outcome, Outcome::Updated | Outcome::UpToDate))
    {
        running_generation = Some(r.generation);
        match rec.load_report(r) {
            Ok(full) => running_system = full.system_after.or(running_system),
            Err(e) => problems.push(e),
        }
    }

    // Updating until a report for that generation ends the cycle the seen.json announced.
    let updating_to = seen.and_then(|s| s.updating_to).filter(|g| {
        !rec.reports
            .iter()
            .any(|r| r.generation == *g && seen_at.is_some_and(|s| r.time >= s))
    });

    let reboot_needed = match (seen.and_then(|s| s.reboot_needed), latest) {
        (Some(b), Some(l)) if seen_at.is_some_and(|s| s >= l.time) => b,
        (Some(b), None) => b,
        _ => last_report.as_ref().is_some_and(|r| r.reboot_needed),
    };

    let published = rec.published;
    let interval_secs = seen
        .and_then(|s| s.interval_secs)
        .filter(|&i| i > 0)
        .unwrap_or(DEFAULT_INTERVAL_SECS);
    let last_contact = seen_at.max(latest.map(|l| l.time));
    let runs_published = published.is_some() && running_generation == published;
    let verdict_on_published = published
        .and_then(|p| rec.reports.iter().rev().find(|r| r.generation == p))
        .map(|r| r.outcome);

    let state = if seen.is_none() && rec.reports.is_empty() {
        HostState::NeverSeen
    } else if last_contact.map_or(true, |t| {
        // interval_secs comes from the host: saturate rather than overflow.
        now.saturating_sub(t) > interval_secs.saturating_mul(STALE_INTERVALS)
    }) {
        HostState::NotSeen
    } else if updating_to.is_some() {
        HostState::Updating
    } else if !runs_published
        && matches!(
            verdict_on_published,
            Some(Outcome::Failed | Outcome::Interrupted)
        )
    {
        HostState::Failing
    } else if !runs_published && verdict_on_published == Some(Outcome::RolledBack) {
        HostState::RolledBack
    } else if published.is_some() && !runs_published {
        HostState::UpdatePending
    } else if reboot_needed {
        HostState::RestartNeeded
    } else {
        HostState::UpToDate
    };

    let pending_generation = published.filter(|p| !runs_published && updating_to != Some(*p));
    let expected_system = rec
        .manifest
        .as_ref()
        .and_then(|m| m.expected_system.clone());
    let system_matches = match (&running_system, &expected_system) {
        (Some(r), Some(e)) => Some(r == e),
        _ => None,
    };
    let published_at = rec.manifest.as_ref().map(|m| m.published.clone());
    HostStatus {
        host: rec.host.clone(),
        in_fleet_toml,
        state,
        publish_age_secs: published_at
            .as_deref()
            .and_then(parse_time)
            .map(|t| now.saturating_sub(t)),
        published_at,
        published_generation: published,
        running_generation,
        updating_to,
        pending_generation,
        expected_system,
        running_system,
        system_matches,
        reboot_needed,
        last_seen: seen.map(|s| s.last_seen.clone()),
        last_seen_age_secs: seen_at.map(|t| now.saturating_sub(t)),
        interval_secs,
        report_count: rec.reports.len(),
        last_report_age_secs: latest.map(|l| now.saturating_sub(l.time)),
        last_report,
        problems,
    }
}

/// The whole fleet at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct FleetStatus {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub chroot: PathBuf,
    pub stale_after_intervals: u64,
    /// Sorted by urgency (state), then name.
    pub hosts: Vec<HostStatus>,
}

/// The hosts to show: fleet.toml's, plus chroot directories it does not list (`false`).
pub fn host_names(config: &FleetConfig) -> Vec<(String, bool)> {
    let listed: BTreeSet<&str> = config.hosts.keys().map(String::as_str).collect();
    let mut out: Vec<(String, bool)> = config.hosts.keys().map(|h| (h.clone(), true)).collect();
    if let Ok(entries) = std::fs::read_dir(&config.chroot) {
        let mut extra: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !listed.contains(n.as_str()) && check_unix_name(n).is_ok())
            .collect();
        extra.sort();
        out.extend(extra.into_iter().map(|h| (h, false)));
    }
    out
}

/// Reads every host and sorts the rows by urgency.
pub fn fleet_status(config: &FleetConfig, now: u64) -> FleetStatus {
    let mut hosts: Vec<HostStatus> = host_names(config)
        .into_iter()
        .map(|(h, listed)| assess(&HostRecords::read(&config.chroot, &h), listed, now))
        .collect();
    hosts.sort_by(|a, b| (a.state, &a.host).cmp(&(b.state, &b.host)));
    FleetStatus {
        generated_at: report::rfc3339(now),
        chroot: config.chroot.clone(),
        stale_after_intervals: STALE_INTERVALS,
        hosts,
    }
}

/// Finds a host for `diff` and `logs`: in fleet.toml or with a chroot directory.
pub fn resolve_host(config: &FleetConfig, host: &str) -> Result<bool, FleetViewError> {
    let listed = config.hosts.contains_key(host);
    if listed {
        return Ok(true);
    }
    if check_unix_name(host).is_ok() && config.chroot.join(host).is_dir() {
        return Ok(false);
    }
    Err(FleetViewError::UnknownHost {
        host: host.into(),
        chroot: config.chroot.display().to_string(),
    })
}

/// "42s", "7m", "3h", "5d".
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// How the table is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours and state symbols (a terminal without NO_COLOR).
    pub colour: bool,
}

impl Style {
    /// Colour when stdout is a terminal and NO_COLOR is unset or empty (no-color.org).
    pub fn for_stdout() -> Self {
        use std::io::IsTerminal;
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            colour: std::io::stdout().is_terminal() && !no_colour,
        }
    }
}

fn gen(g: Option<u64>) -> String {
    g.map(|g| format!("g{g}")).unwrap_or_else(|| "-".into())
}

fn note(h: &HostStatus) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !h.in_fleet_toml {
        parts.push("not in fleet.toml".into());
    }
    if let Some(g) = h.updating_to {
        parts.push(format!("updating to g{g}"));
    }
    if let Some(p) = h.pending_generation {
        // Elsewhere the state already says that the published generation is not running.
        if matches!(h.state, HostState::Updating | HostState::NotSeen) {
            parts.push(format!("g{p} pending"));
        }
    }
    if h.published_generation.is_none() {
        parts.push("nothing published".into());
    }
    if h.reboot_needed && h.state != HostState::RestartNeeded {
        parts.push("restart needed".into());
    }
    if h.system_matches == Some(false) && h.running_generation == h.published_generation {
        parts.push("running system is not the expected one".into());
    }
    if let Some(r) = &h.last_report {
        if matches!(h.state, HostState::Failing | HostState::RolledBack) {
            let step = r
                .failed_step
                .map(|s| format!(" at {s}"))
                .unwrap_or_default();
            let msg = r
                .message
                .as_deref()
                .map(|m| format!(": {}", first_line(m, 60)))
                .unwrap_or_default();
            parts.push(format!("{}{step}{msg}", outcome_words(r.outcome)));
        }
        // Its agent applies what it cannot verify (`allow_unsigned`), or refused an old one.
        if let Some(n) = r.publication {
            parts.push(n.label().to_string());
        }
    }
    if h.state == HostState::NotSeen {
        parts.push(format!(
            "no contact for more than {STALE_INTERVALS} × {}",
            age(h.interval_secs)
        ));
    }
    parts.extend(h.problems.iter().map(|p| first_line(p, 100)));
    parts.join("; ")
}

/// `rolled back`, for people (the files say `rolled_back`).
fn outcome_words(o: Outcome) -> String {
    report::outcome_word(o).replace('_', " ")
}

/// The table `fleet status` prints: a summary line, a header, one row per host.
pub fn render_table(status: &FleetStatus, style: Style) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for h in &status.hosts {
        *counts.entry(h.state).or_insert(0usize) += 1;
    }
    let summary: Vec<String> = HostState::ALL
        .iter()
        .filter_map(|s| counts.get(s).map(|n| format!("{n} {}", s.label())))
        .collect();
    let mut out = format!(
        "{} hosts: {}   (at {}, chroot {})\n",
        status.hosts.len(),
        if summary.is_empty() {
            "none".to_string()
        } else {
            summary.join(", ")
        },
        status.generated_at,
        status.chroot.display()
    );
    let header = [
        "HOST",
        "STATE",
        "PUBLISHED",
        "RUNNING",
        "SYSTEM",
        "LAST REPORT",
        "SEEN",
        "NOTE",
    ];
    let rows: Vec<(HostState, [String; 8])> = status
        .hosts
        .iter()
        .map(|h| {
            let published = match (h.published_generation, h.publish_age_secs) {
                (Some(g), Some(a)) => format!("g{g} {} ago", age(a)),
                (g, _) => gen(g),
            };
            let system = match h.system_matches {
                Some(true) => "expected",
                Some(false) => "differs",
                None => "-",
            };
            let last = match (&h.last_report, h.last_report_age_secs) {
                (Some(r), Some(a)) => format!(
                    "g{} {} {} ago",
                    r.generation,
                    outcome_words(r.outcome),
                    age(a)
                ),
                _ => "-".into(),
            };
            let seen = h
                .last_seen_age_secs
                .map(|a| format!("{} ago", age(a)))
                .unwrap_or_else(|| "-".into());
            (
                h.state,
                [
                    h.host.clone(),
                    h.state.label().to_string(),
                    published,
                    gen(h.running_generation),
                    system.to_string(),
                    last,
                    seen,
                    note(h),
                ],
            )
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for (_, cells) in &rows {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String; 8]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string()
    };
    let lead = if style.colour { "  " } else { "" };
    out.push_str(lead);
    out.push_str(&line(&header.map(String::from)));
    out.push('\n');
    for (state, cells) in &rows {
        let text = line(cells);
        if style.colour {
            out.push_str(&format!(
                "\x1b[{}m{} {text}\x1b[0m\n",
                state.colour(),
                state.symbol()
            ));
        } else {
            out.push_str(&text);
            out.push('\n');
        }
    }
    out
}

/// What `--watch` prints each time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchOutput {
    /// The table; on a terminal the screen is cleared first, otherwise a blank line separates.
    Table(Style),
    /// One compact JSON document per line.
    Json,
}

/// Redraws on every change under the chroot (a report or `seen.json` arriving in a host's
/// `logs/`, `current` replaced, a host directory appearing), as inotify reports it; and once a
/// minute, so that ages and "not seen" stay true while nothing changes. Runs until killed or
/// until `out` fails (the reader went away).
pub fn watch(
    fleet_dir: &Path,
    output: WatchOutput,
    out: &mut dyn std::io::Write,
) -> Result<(), FleetViewError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;

    let io_err = |place: &str, e: nix::Error| FleetViewError::Io {
        place: place.to_string(),
        source: std::io::Error::from(e),
    };
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| io_err("inotify", e))?;
    let changes = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE;
    let mut config = FleetConfig::load(fleet_dir)?;
    let mut config_problem: Option<String> = None;
    let mut warned_watch = false;
    let tty_clear = matches!(output, WatchOutput::Table(s) if s.colour);
    loop {
        // Watches are (re)added each round: adding an existing one is a no-op, and hosts or
        // logs/ directories created since the last round get theirs.
        let mut dirs = vec![fleet_dir.to_path_buf(), config.chroot.clone()];
        for (h, _) in host_names(&config) {
            dirs.push(config.chroot.join(&h));
            dirs.push(config.chroot.join(&h).join("logs"));
        }
        for d in dirs.iter().filter(|d| d.is_dir()) {
            if let Err(e) = inotify.add_watch(d.as_path(), changes) {
                if !warned_watch {
                    warned_watch = true;
                    tracing::warn!(
                        "cannot watch {}: {e} (raise fs.inotify.max_user_watches); changes there show at the next minute",
                        d.display()
                    );
                }
            }
        }
        let now = crate::status::unix_now();
        let status = fleet_status(&config, now);
        let text = match output {
            WatchOutput::Json => {
                let mut j = serde_json::to_string(&status)
                    .map_err(|e| FleetViewError::Unknown(format!("JSON: {e}")))?;
                j.push('\n');
                j
            }
            WatchOutput::Table(style) => {
                let mut t = String::new();
                if tty_clear {
                    t.push_str("\x1b[H\x1b[2J");
                }
                t.push_str(&render_table(&status, style));
                if let Some(p) = &config_problem {
                    t.push_str(&format!("fleet.toml: {p} (showing the last valid one)\n"));
                }
                if !tty_clear {
                    t.push('\n');
                }
                t
            }
        };
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }

        // Sleep until something changes or the minute turns.
        let until_minute = ((60 - now % 60) * 1000) as i32;
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(until_minute).unwrap_or(PollTimeout::MAX),
        );
        match ready {
            Ok(0) => {}
            Ok(_) => {
                // Drain, then let a burst (a report and its log, seen.json) settle briefly so
                // that one upload is one redraw.
                // At most 0.5 s of settling, so that a busy fleet still redraws within a second.
                for _ in 0..5 {
                    // Only the wake-up matters; what changed is re-read in full.
                    let _ = inotify.read_events();
                    let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                    if !matches!(poll(&mut fds, PollTimeout::from(100u8)), Ok(n) if n > 0) {
                        break;
                    }
                }
                let _ = inotify.read_events();
            }
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(io_err("waiting for inotify", e)),
        }
        match FleetConfig::load(fleet_dir) {
            Ok(c) => {
                config = c;
                config_problem = None;
            }
            Err(e) => config_problem = Some(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(interval_secs: Option<u64>) -> Seen {
        Seen {
            host: "a".into(),
            last_seen: "2025-11-25T10:00:00Z".into(),
            applied_generation: Some(3),
            running_system: None,
            booted_system: None,
            agent_version: "0.1.0".into(),
            interval_secs,
            updating_to: None,
            reboot_needed: None,
        }
    }

    #[test]
    fn a_huge_interval_in_seen_json_saturates_instead_of_overflowing() {
        let rec = HostRecords {
            host: "a".into(),
            published: Some(3),
            seen: Some(seen(Some(u64::MAX))),
            ..Default::default()
        };
        let h = assess(&rec, true, 1_764_064_800 + 3600);
        assert_eq!(h.state, HostState::UpToDate);
        assert_eq!(h.interval_secs, u64::MAX);
    }

    #[test]
    fn text_a_host_wrote_stays_on_its_row_without_control_characters() {
        let rec = HostRecords {
            host: "a".into(),
            seen: Some(seen(None)),
            problems: vec!["logs/x.json: unknown variant `\u{1b}[2J`".into()],
            ..Default::default()
        };
        let mut h = assess(&rec, true, 1_764_064_800);
        h.state = HostState::Failing;
        h.last_report = Some(Report {
            host: "a".into(),
            generation: 4,
            outcome: Outcome::Failed,
            failed_step: Some(crate::status::Step::Build),
            message: Some("failed\u{1b}[31m red\rover".into()),
            started: "2025-11-25T10:00:00Z".into(),
            finished: "2025-11-25T10:00:00Z".into(),
            system_before: None,
            system_after: None,
            reboot_needed: false,
            durations: Default::default(),
            agent_version: "0.1.0".into(),
            log: "x.log.gz".into(),
            publication: Some(crate::status::PublicationNote::Unsigned),
        });
        let table = render_table(
            &FleetStatus {
                generated_at: "2025-11-25T10:00:00Z".into(),
                chroot: "/srv/tiffin".into(),
                stale_after_intervals: STALE_INTERVALS,
                hosts: vec![h],
            },
            Style { colour: false },
        );
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(!table.contains(['\u{1b}', '\r']), "{table:?}");
        assert!(
            table.contains("failed at build: failed\u{FFFD}[31m red\u{FFFD}over"),
            "{table}"
        );
        // Its agent accepted an unverified publication: the row says so.
        assert!(table.contains("; unsigned"), "{table}");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(
            [age(5), age(120), age(7200), age(200_000)],
            ["5s", "2m", "2h", "2d"]
        );
    }

    #[test]
    fn states_sort_most_urgent_first() {
        let mut v = HostState::ALL.to_vec();
        v.reverse();
        v.sort();
        assert_eq!(v, HostState::ALL.to_vec());
        assert_eq!(v[0], HostState::Failing);
    }
}
