//! `tiffin status|check|update|rollback|log|watch`: clients of the local agent's socket.

use super::{EXIT_FAILED, EXIT_OK, EXIT_ROLLED_BACK};
use crate::cycle::CycleReport;
use crate::ipc::{Client, ClientError, CycleCall};
use crate::status::{unix_now, AgentStatus, CheckResult, Outcome, Phase};
use anyhow::Context;
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

/// The default socket of the agent.
pub const DEFAULT_SOCKET: &str = "/run/tiffin/agent.sock";

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The agent's socket.
    #[arg(long, value_name = "PATH", env = "TIFFIN_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print the status object as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print everything the waiting update changes (packages, versions, restart).
    #[arg(long, conflicts_with = "json")]
    pub changes: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
}

fn connect(a: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::connect(&a.socket)?)
}

/// The exit code of a finished cycle: 0 up to date or updated, 1 failed, 3 rolled back.
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::UpToDate | Outcome::Updated => EXIT_OK,
        Outcome::RolledBack => EXIT_ROLLED_BACK,
        Outcome::Failed | Outcome::Interrupted => EXIT_FAILED,
    }
}

pub fn status(a: StatusArgs) -> anyhow::Result<u8> {
    let mut c = connect(&a.client)?;
    let s = c.status()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else if a.changes {
        print!("{}", super::pending::changes_text(&s));
    } else {
        print!("{}", summary(&s, unix_now()));
    }
    Ok(EXIT_OK)
}

pub fn check(a: ClientArgs) -> anyhow::Result<u8> {
    let mut c = connect(&a)?;
    let report = c.check()?;
    let s = c.status()?;
    match (report.outcome, s.available_generation) {
        (Outcome::Failed, _) => println!("check failed: {}", describe_failure(&report)),
        (_, Some(g)) => println!("generation {g} is available (`tiffin update` applies it)"),
        _ => println!(
            "up to date{}",
            s.applied_generation
                .map(|g| format!(" (generation {g})"))
                .unwrap_or_default()
        ),
    }
    Ok(exit_code(report.outcome))
}

pub fn update(a: ClientArgs) -> anyhow::Result<u8> {
    let mut c = connect(&a)?;
    // Subscribe first, on the same connection, so that the progress of the cycle arrives as
    // events before the answer to `update`.
    let first = c.subscribe()?;
    let mut shown = Some(progress_line(&first));
    let mut out = std::io::stdout();
    let report = c.cycle(CycleCall::Update, &mut |s| {
        let line = progress_line(&s);
        if shown.as_ref() != Some(&line) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            shown = Some(line);
        }
    })?;
    println!("{}", outcome_line(&report));
    Ok(exit_code(report.outcome))
}

pub fn rollback(a: RollbackArgs) -> anyhow::Result<u8> {
    let mut c = connect(&a.client)?;
    if !a.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            eprintln!("tiffin rollback: not asking without a terminal; pass --yes to roll back");
            return Ok(super::EXIT_USAGE);
        }
        let s = c.status()?;
        if !s.rollback.previous_available {
            eprintln!("tiffin rollback: the agent knows no previous system to roll back to");
            return Ok(EXIT_FAILED);
        }
        let from = s
            .current_system
            .as_deref()
            .map(|c| format!(" from {c}"))
            .unwrap_or_default();
        eprint!("Roll back {}{from} to the previous system? [y/N] ", s.host);
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            eprintln!("not rolled back");
            return Ok(EXIT_FAILED);
        }
    }
    let report = c.rollback()?;
    match report.outcome {
        Outcome::RolledBack | Outcome::Updated | Outcome::UpToDate => {
            println!("rolled back{}", msg_suffix(&report));
            Ok(EXIT_OK)
        }
        _ => {
            println!("rollback failed: {}", describe_failure(&report));
            Ok(EXIT_FAILED)
        }
    }
}

pub fn log(a: ClientArgs) -> anyhow::Result<u8> {
    let mut c = connect(&a)?;
    match c.log()? {
        Some(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            Ok(EXIT_OK)
        }
        None => {
            eprintln!("no cycle has run since the agent started");
            Ok(EXIT_FAILED)
        }
    }
}

/// Follows the status until interrupted; reconnects with backoff when the agent goes away.
pub fn watch(a: ClientArgs) -> anyhow::Result<u8> {
    let mut backoff = Duration::from_millis(200);
    let mut said_lost = false;
    loop {
        match watch_once(&a) {
            Ok(()) => {}
            Err(WatchEnd::Connect(e)) => {
                if !said_lost {
                    eprintln!("{e}; retrying");
                    said_lost = true;
                }
            }
            Err(WatchEnd::Lost(e)) => {
                eprintln!("lost the agent ({e}); reconnecting");
                said_lost = true;
                backoff = Duration::from_millis(200);
            }
            Err(WatchEnd::Refused(e)) => return Err(e).context("watch"),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

enum WatchEnd {
    Connect(ClientError),
    Lost(ClientError),
    Refused(ClientError),
}

fn watch_once(a: &ClientArgs) -> Result<(), WatchEnd> {
    let mut c = Client::connect(&a.socket).map_err(WatchEnd::Connect)?;
    let first = c.subscribe().map_err(|e| match e {
        ClientError::Agent(_) => WatchEnd::Refused(e),
        e => WatchEnd::Lost(e),
    })?;
    print_watch_line(&first);
    loop {
        let s = c.next_status().map_err(WatchEnd::Lost)?;
        print_watch_line(&s);
    }
}

fn print_watch_line(s: &AgentStatus) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", watch_line(s, unix_now()));
    let _ = out.flush();
}

/// One line per event: the time, the phase with progress, and the generations.
pub fn watch_line(s: &AgentStatus, now: u64) -> String {
    let mut line = format!(
        "{} {}",
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(now)),
        progress_line(s)
    );
    if let Some(g) = s.applied_generation {
        line.push_str(&format!(" applied={g}"));
    }
    if let Some(g) = s.available_generation {
        line.push_str(&format!(" available={g}"));
    }
    if let Some(r) = s.server_reachable {
        line.push_str(if r {
            " server=reachable"
        } else {
            " server=unreachable"
        });
    }
    line
}

fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Idle => "idle",
        Phase::Checking => "checking",
        Phase::Downloading => "downloading",
        Phase::Building => "building",
        Phase::Activating => "activating",
        Phase::Verifying => "verifying",
        Phase::Committing => "committing",
        Phase::RollingBack => "rolling back",
    }
}

/// The phase, with download progress when there is some.
pub fn progress_line(s: &AgentStatus) -> String {
    if let (Phase::Downloading, Some(c)) = (s.phase, s.cache_download) {
        return format!(
            "downloading from the host's cache: {}/{} paths, {}/{} bytes",
            c.done_paths, c.total_paths, c.done_bytes, c.total_bytes
        );
    }
    match (s.phase, s.progress) {
        (Phase::Downloading, Some(p)) => format!(
            "downloading: {}/{} files, {}/{} bytes",
            p.done_files, p.total_files, p.done_bytes, p.total_bytes
        ),
        (p, _) => phase_word(p).to_string(),
    }
}

fn msg_suffix(r: &CycleReport) -> String {
    r.message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

fn describe_failure(r: &CycleReport) -> String {
    match (&r.failed_step, &r.message) {
        (Some(step), Some(m)) => format!("{step}: {m}"),
        (Some(step), None) => step.to_string(),
        (None, Some(m)) => m.clone(),
        (None, None) => "no reason given".into(),
    }
}

/// One line for a finished cycle: "updated (generation 2)", "rolled back (generation 3): …".
pub fn outcome_line(r: &CycleReport) -> String {
    let g = r
        .generation
        .map(|g| format!(" (generation {g})"))
        .unwrap_or_default();
    match r.outcome {
        Outcome::UpToDate => format!("up to date{g}"),
        Outcome::Updated => format!("updated{g}"),
        Outcome::RolledBack => format!("rolled back{g}{}", msg_suffix(r)),
        Outcome::Failed => format!("failed{g}: {}", describe_failure(r)),
        Outcome::Interrupted => format!("interrupted{g}"),
    }
}

fn when(now: u64, at: u64) -> String {
    let t = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(at));
    format!("{t} ({})", crate::timefmt::relative(at, now))
}

/// The human summary of `tiffin status`.
pub fn summary(s: &AgentStatus, now: u64) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<20} {v}\n"));
    row("host", s.host.clone());
    row("state", progress_line(s));
    row(
        "applied generation",
        s.applied_generation
            .map(|g| g.to_string())
            .unwrap_or_else(|| "none".into()),
    );
    if let Some(g) = s.available_generation {
        row("available", format!("generation {g}"));
    }
    for (k, v) in super::pending::rows(s, now, &crate::timefmt::local_zone()) {
        row(k, v);
    }
    if let Some(c) = &s.last_check {
        let result = match c.result {
            CheckResult::UpToDate => "up to date",
            CheckResult::UpdateAvailable => "update available",
            CheckResult::Unreachable => "server unreachable",
            CheckResult::Failed => "failed",
        };
        let mut v = format!("{} — {result}", when(now, c.at));
        if let Some(m) = &c.message {
            v.push_str(&format!(": {m}"));
        }
        row("last check", v);
        if let Some(url) = s
            .served_by
            .as_ref()
            .filter(|_| c.result != CheckResult::Unreachable)
        {
            row("served by", format!("checked {url}: {result}"));
        }
    }
    if let Some(u) = &s.last_update {
        let r = CycleReport {
            outcome: u.outcome,
            generation: Some(u.generation),
            failed_step: u.failed_step,
            message: u.message.clone(),
        };
        row(
            "last update",
            format!("{} — {}", when(now, u.at), outcome_line(&r)),
        );
    }
    row(
        "rollback",
        if s.rollback.previous_available {
            "previous system available".into()
        } else {
            "no previous system".into()
        },
    );
    if let Some(r) = &s.rollback.last {
        row(
            "last rollback",
            format!(
                "{} — generation {}, {} → {}: {}",
                when(now, r.at),
                r.generation,
                r.from_system,
                r.to_system,
                r.reason
            ),
        );
    }
    row(
        "reboot needed",
        if s.reboot_needed { "yes" } else { "no" }.into(),
    );
    if let Some(n) = s.next_check {
        row("next check", when(now, n));
    }
    if let Some(r) = s.server_reachable {
        row("server", if r { "reachable" } else { "unreachable" }.into());
    }
    if let Some(e) = &s.http_trigger_error {
        row("http trigger", e.clone());
    }
    if let Some(n) = s.publication {
        let why = match n {
            crate::status::PublicationNote::Unsigned => {
                "allow_unsigned = true: nothing the server sends is verified"
            }
            crate::status::PublicationNote::TooOld => "signed longer ago than max_age: not applied",
        };
        row("publication", format!("{} ({why})", n.label()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Progress;

    #[test]
    fn exit_codes_follow_the_outcome() {
        assert_eq!(exit_code(Outcome::Updated), 0);
        assert_eq!(exit_code(Outcome::UpToDate), 0);
        assert_eq!(exit_code(Outcome::Failed), 1);
        assert_eq!(exit_code(Outcome::RolledBack), 3);
    }

    #[test]
    fn progress_line_shows_download_counts() {
        let s = AgentStatus {
            phase: Phase::Downloading,
            progress: Some(Progress {
                done_files: 3,
                total_files: 10,
                done_bytes: 300,
                total_bytes: 1000,
            }),
            ..Default::default()
        };
        assert_eq!(progress_line(&s), "downloading: 3/10 files, 300/1000 bytes");
        let c = AgentStatus {
            phase: Phase::Downloading,
            cache_download: Some(crate::status::CacheProgress {
                done_paths: 2,
                total_paths: 5,
                done_bytes: 4096,
                total_bytes: 10_000,
            }),
            ..AgentStatus::default()
        };
        assert_eq!(
            progress_line(&c),
            "downloading from the host's cache: 2/5 paths, 4096/10000 bytes"
        );
    }

    #[test]
    fn summary_names_the_source_that_served_the_last_check() {
        let s = AgentStatus {
            last_check: Some(crate::status::LastCheck {
                at: 990,
                result: CheckResult::UpToDate,
                message: None,
            }),
            served_by: Some("sftp://laptop@mirror:22/".into()),
            ..Default::default()
        };
        let text = summary(&s, 1000);
        assert!(
            text.contains("served by            checked sftp://laptop@mirror:22/: up to date"),
            "{text}"
        );
    }

    #[test]
    fn summary_names_generation_and_next_check() {
        let s = AgentStatus {
            host: "laptop".into(),
            applied_generation: Some(7),
            next_check: Some(1000 + 600),
            ..Default::default()
        };
        let text = summary(&s, 1000);
        assert!(text.contains("laptop"), "{text}");
        assert!(text.contains("applied generation   7"), "{text}");
        assert!(text.contains("in 10 min"), "{text}");
        assert!(!text.contains("publication"), "{text}");
    }

    #[test]
    fn summary_says_unsigned_when_the_agent_accepts_unverified_publications() {
        let s = AgentStatus {
            publication: Some(crate::status::PublicationNote::Unsigned),
            ..Default::default()
        };
        let text = summary(&s, 1000);
        assert!(
            text.contains("publication          unsigned (allow_unsigned = true"),
            "{text}"
        );
    }
}
