//! `tiffin fleet publish --staged`, `fleet rollout` and `fleet watch`: the arguments and what
//! they print; the work is `fleet::rollout` and `fleet::watcher`.

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::FleetConfig;
use crate::fleet::rollout::{self, RolloutError, RolloutState, Step};
use crate::fleet::{self, PublishOptions};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// How long the waves that have the release must have had it (default: fleet.toml's
    /// `[rollout] soak`, else 1h), e.g. `0s`, `30m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub soak: Option<Duration>,
    /// Lift every quarantine (and end a halted rollout), so that `publish --staged` of that
    /// content is accepted again.
    #[arg(long, conflicts_with = "soak")]
    pub clear: bool,
    /// Publish the next wave without signing (see `publish --unsigned`).
    #[arg(long)]
    pub unsigned: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Run this (through `sh -c`) on every transition to failing, rolled back, stale, drifted or
    /// halted, with the event as one JSON object on its stdin.
    #[arg(long, value_name = "CMD")]
    pub alert_command: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. `127.0.0.1:9102`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Advance staged rollouts with this soak (default: fleet.toml's `[rollout] soak`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub soak: Option<Duration>,
    /// Do not advance rollouts (only watch, alert and serve metrics).
    #[arg(long)]
    pub no_rollout: bool,
    /// Publish promoted waves without signing.
    #[arg(long)]
    pub unsigned: bool,
}

/// Reads fleet.toml; a bad one is reported here (exit 2 by the caller).
fn load(fleet: &Path) -> Option<FleetConfig> {
    match FleetConfig::load(fleet) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("tiffin fleet: {e}");
            None
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like \"30m\": {e}"))
}

/// `fleet publish --staged`.
pub fn publish_staged(fleet_dir: &Path, opts: PublishOptions) -> anyhow::Result<u8> {
    let Some(config) = load(fleet_dir) else {
        return Ok(EXIT_USAGE);
    };
    match rollout::stage(fleet_dir, &config, &opts, crate::status::unix_now()) {
        Ok((release, report)) => {
            print!("{}", fleet::report::publish_table(&report));
            for w in &report.warnings {
                eprintln!("tiffin fleet publish: warning: {w}");
            }
            println!(
                "release {} staged to wave {} ({}); `tiffin fleet rollout` takes it further",
                release.id,
                release.wave,
                hosts_of(&release.generations)
            );
            Ok(EXIT_OK)
        }
        Err(e) => fail("publish", e),
    }
}

/// `fleet rollout`.
pub fn rollout(fleet_dir: &Path, args: RolloutArgs) -> anyhow::Result<u8> {
    let Some(config) = load(fleet_dir) else {
        return Ok(EXIT_USAGE);
    };
    if args.clear {
        return match rollout::clear(&config) {
            Ok(v) if v.is_empty() => {
                println!("no release was quarantined");
                Ok(EXIT_OK)
            }
            Ok(v) => {
                println!("quarantine lifted: {}", v.join(", "));
                Ok(EXIT_OK)
            }
            Err(e) => fail("rollout", e),
        };
    }
    let opts = PublishOptions {
        unsigned: args.unsigned,
        ..PublishOptions::default()
    };
    let now = crate::status::unix_now();
    match rollout::advance(fleet_dir, &config, &opts, args.soak, now) {
        Ok(step) => Ok(print_step(&step)),
        Err(e) => fail("rollout", e),
    }
}

fn print_step(step: &Step) -> u8 {
    match step {
        Step::NoRollout => {
            println!("no staged release (`tiffin fleet publish --staged` stages one)");
            EXIT_OK
        }
        Step::Complete { id } => {
            println!("release {id}: every wave has it");
            EXIT_OK
        }
        Step::Halted { id, halt, .. } => {
            println!(
                "release {id}: HALTED: host {} {}{} (g{}){}; it is quarantined until `tiffin fleet rollout --clear`",
                halt.host,
                halt.outcome.replace('_', " "),
                halt.step.as_deref().map(|s| format!(" at {s}")).unwrap_or_default(),
                halt.generation,
                halt.message
                    .as_deref()
                    .map(|m| format!(": {}", fleet::inert::first_line(m, 80)))
                    .unwrap_or_default()
            );
            EXIT_FAILED
        }
        Step::Waiting {
            id,
            wave,
            hosts,
            unseen,
            soak_left,
        } => {
            for (h, why) in hosts {
                println!("release {id}: waiting for {h} ({why})");
            }
            if *soak_left > 0 {
                println!(
                    "release {id}: wave {wave} soaks {} more",
                    crate::timefmt::span(*soak_left)
                );
            }
            print_unseen(id, unseen);
            EXIT_OK
        }
        Step::Promoted {
            id,
            wave,
            unseen,
            report,
        } => {
            print!("{}", fleet::report::publish_table(report));
            print_unseen(id, unseen);
            println!("release {id}: published to wave {wave}");
            EXIT_OK
        }
    }
}

fn print_unseen(id: &str, unseen: &[String]) {
    if !unseen.is_empty() {
        println!(
            "release {id}: not seen within the grace period (not waited for): {}",
            unseen.join(", ")
        );
    }
}

fn hosts_of(g: &std::collections::BTreeMap<String, u64>) -> String {
    g.iter()
        .map(|(h, g)| format!("{h} g{g}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fail(what: &str, e: RolloutError) -> anyhow::Result<u8> {
    eprintln!("tiffin fleet {what}: {e}");
    Ok(match e {
        RolloutError::Quarantined { .. } | RolloutError::RepositoryChanged { .. } => EXIT_USAGE,
        _ => EXIT_FAILED,
    })
}

/// The rollout's line above `fleet status`'s table.
pub fn status_line(config: &FleetConfig) -> Option<String> {
    match RolloutState::load(&config.chroot) {
        Ok(st) => rollout::summary_line(&st, crate::status::unix_now()),
        Err(e) => Some(format!("rollout: {e}")),
    }
}

/// The rollout state for `fleet status --json` (`null` when nothing was staged or quarantined;
/// the error's text when the file is unreadable).
pub fn status_json(config: &FleetConfig) -> serde_json::Value {
    match RolloutState::load(&config.chroot) {
        Ok(st) if st == RolloutState::default() => serde_json::Value::Null,
        Ok(st) => serde_json::to_value(st).unwrap_or_default(),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// `fleet watch`.
pub fn watch(fleet_dir: &Path, args: WatchArgs) -> anyhow::Result<u8> {
    let opts = fleet::watcher::WatchOptions {
        alert_command: args.alert_command,
        metrics: args.metrics,
        soak: args.soak,
        advance: !args.no_rollout,
        publish: PublishOptions {
            unsigned: args.unsigned,
            ..PublishOptions::default()
        },
    };
    fleet::watcher::run(&PathBuf::from(fleet_dir), &opts)?;
    Ok(EXIT_OK)
}
