//! The `tiffin` command tree (clap). Each area's arguments live in their own file here and call
//! into the library; nothing in `cli` does the work itself.

pub mod agent;
pub mod backup;
pub mod client;
pub mod demo;
pub mod exit;
pub mod fleet;
pub mod pending;
pub mod postpone;
pub mod publish_to;
pub mod rollout;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub use exit::{EXIT_FAILED, EXIT_OK, EXIT_ROLLED_BACK, EXIT_USAGE};

/// Keep a fleet of NixOS machines on the configuration kept in one repository.
///
/// The admin publishes each machine's configuration with `tiffin fleet publish`; on every machine
/// `tiffin agent` fetches it, builds, activates, verifies it can still reach the server (rolling
/// back when not) and reports back. `tiffin status`, `update` and friends talk to the local agent.
#[derive(Debug, Parser)]
#[command(
    name = "tiffin",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = COMMAND_TREE
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The admin's side: turn the fleet repository into per-host publications and watch the fleet.
    Fleet(fleet::FleetArgs),
    /// The privileged agent that keeps this machine on its published configuration (runs as root).
    Agent(agent::AgentArgs),
    /// Show the local agent's status.
    Status(client::StatusArgs),
    /// Ask the local agent to check the server for a new generation now.
    Check(client::ClientArgs),
    /// Ask the local agent to fetch, build and apply the published configuration now.
    Update(client::ClientArgs),
    /// Return this machine to the previous system (admin group or root only).
    Rollback(client::RollbackArgs),
    /// Print the log of the agent's last cycle.
    Log(client::ClientArgs),
    /// Follow the agent's status as it changes.
    Watch(client::ClientArgs),
    /// This machine's backups: `now`, `status` (default), `snapshots`.
    Backup(backup::BackupArgs),
    /// Do not remind me of the waiting update for DURATION (policy "notify"; never past the
    /// admin's deadline).
    Postpone(postpone::PostponeArgs),
    /// A self-contained fleet sandbox on this machine: publish, update, roll back, with nothing to set up.
    Demo(demo::DemoArgs),
}

/// The whole command tree, shown under `tiffin --help`.
const COMMAND_TREE: &str = "\
The whole command tree:
  tiffin fleet init [DIR]                     create a fleet repository
  tiffin fleet publish [HOST…]                publish changed hosts as new generations
  tiffin fleet publish --staged               publish a release to wave 0 only
  tiffin fleet rollout [--soak D] [--clear]   take a staged release to the next wave, or halt it
  tiffin fleet watch [--alert-command CMD] [--metrics ADDR]
                                              follow the fleet: rollouts, alerts, metrics
  tiffin fleet build [HOST…]                  build hosts' systems without publishing
  tiffin fleet status [--json] [--watch]      every host's state
  tiffin fleet diff HOST                      running vs expected system closure
  tiffin fleet logs HOST [--last N]           a host's latest reports
  tiffin fleet sshd-config                    sshd Match blocks and user setup
  tiffin agent [--config FILE] [--once]       the privileged agent (root)
  tiffin status|check|update|rollback|log|watch   talk to the local agent
  tiffin backup [now|status|snapshots]        this machine's backups
  tiffin postpone DURATION                    no reminder of the waiting update for DURATION
  tiffin demo                                 the whole system in a sandbox
  tiffin-tray                                 the desktop tray app

Each command's --help explains its options.";

/// Entry point of the `tiffin` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Fleet(a) => fleet::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Status(a) => client::status(a),
        Command::Check(a) => client::check(a),
        Command::Update(a) => client::update(a),
        Command::Rollback(a) => client::rollback(a),
        Command::Log(a) => client::log(a),
        Command::Watch(a) => client::watch(a),
        Command::Postpone(a) => postpone::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Backup(a) => backup::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tiffin: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Logs go to stderr (the journal under systemd); `RUST_LOG` sets the level, default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
