//! The table `fleet status` prints: a summary line, a header, one row per host, every text a
//! host wrote made inert and kept on its row.

use super::assess::{FleetStatus, HostState, HostStatus, STALE_INTERVALS};
use crate::fleet::inert::first_line;
use crate::publication::report;
use crate::status::Outcome;

/// "42s", "7m", "3h", "5d".
pub fn age(secs: u64) -> String {
    crate::timefmt::compact(secs)
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
        if let Some(b) = r.built_by {
            parts.push(built_words(b, r.cache_bytes));
        }
    }
    if h.state == HostState::NotSeen {
        parts.push(format!(
            "stale: no contact for more than {STALE_INTERVALS} × {}",
            age(h.interval_secs)
        ));
    }
    if h.sealed_to_old_key {
        parts.push("files sealed to an old key: publish again".into());
    }
    if h.state == HostState::Drifted {
        let short = |s: &Option<String>| {
            s.as_deref()
                .map(|p| first_line(p.rsplit('/').next().unwrap_or(p), 48))
                .unwrap_or_else(|| "-".into())
        };
        match h.last_report.as_ref().and_then(|r| r.drifted_from.clone()) {
            Some(hand) if h.tiffin_system.as_ref() == h.running_system.as_ref() => {
                parts.push(format!(
                    "was switched by hand to {}; tiffin applied g{} again",
                    short(&Some(hand)),
                    h.last_report.as_ref().map_or(0, |r| r.generation)
                ))
            }
            _ => parts.push(format!(
                "runs {} (not switched by tiffin; tiffin left {})",
                short(&h.running_system),
                short(&h.tiffin_system)
            )),
        }
    }
    parts.extend(h.problems.iter().map(|p| first_line(p, 100)));
    if let Some(n) = &h.note {
        parts.push(format!("“{}”", first_line(n, 60)));
    }
    parts.join("; ")
}

/// "built locally", or "from cache, 1.2 MiB downloaded" (the last report's system).
fn built_words(b: crate::status::BuiltBy, bytes: Option<u64>) -> String {
    match (b, bytes) {
        (crate::status::BuiltBy::Cache, Some(n)) => {
            let n = crate::fleet::report::human_bytes(n);
            format!("{}, {n} downloaded", b.name())
        }
        _ => b.name().to_string(),
    }
}

/// `rolled back`, for people (the files say `rolled_back`).
fn outcome_words(o: Outcome) -> String {
    report::outcome_word(o).replace('_', " ")
}

/// The table `fleet status` prints: a summary line, a header, one row per host.
pub fn render_table(status: &FleetStatus, style: Style) -> String {
    let mut out = summary_line(status);
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
    let rows: Vec<(HostState, [String; 8])> =
        status.hosts.iter().map(|h| (h.state, row(h))).collect();
    let mut widths = header.map(|h| h.chars().count());
    for (_, cells) in &rows {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let lead = if style.colour { "  " } else { "" };
    out.push_str(lead);
    out.push_str(&aligned(&header.map(String::from), &widths));
    out.push('\n');
    for (state, cells) in &rows {
        let text = aligned(cells, &widths);
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
    out.push_str(&super::backup_table::section(status));
    out
}

/// `5 hosts: 1 failing, 4 up to date   (at …, chroot …)`.
fn summary_line(status: &FleetStatus) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for h in &status.hosts {
        *counts.entry(h.state).or_insert(0usize) += 1;
    }
    let summary: Vec<String> = HostState::ALL
        .iter()
        .filter_map(|s| counts.get(s).map(|n| format!("{n} {}", s.label())))
        .collect();
    format!(
        "{} hosts: {}   (at {}, chroot {})\n",
        status.hosts.len(),
        if summary.is_empty() {
            "none".to_string()
        } else {
            summary.join(", ")
        },
        status.generated_at,
        status.chroot.display()
    )
}

/// One host's cells, in the header's order.
fn row(h: &HostStatus) -> [String; 8] {
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
    [
        h.host.clone(),
        h.state.label().to_string(),
        published,
        gen(h.running_generation),
        system.to_string(),
        last,
        seen,
        note(h),
    ]
}

/// The cells padded to their column's width (two spaces apart), the last one as it is.
fn aligned(cells: &[String; 8], widths: &[usize; 8]) -> String {
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
}
