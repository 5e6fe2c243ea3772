//! `tiffin fleet …`: the admin's commands.

use super::not_implemented;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The fleet repository (the directory holding fleet.toml).
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    pub fleet: PathBuf,
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create a working fleet repository: fleet.toml, hosts/example, common/.
    Init {
        /// Where to create it (default: the --fleet directory).
        dir: Option<PathBuf>,
    },
    /// Publish each host's configuration into its chroot as a new generation, when it changed.
    Publish {
        /// Hosts to publish (default: all).
        hosts: Vec<String>,
        /// Build each host first; a host whose build fails is not published.
        #[arg(long, conflicts_with = "dry_build")]
        build: bool,
        /// Evaluate each host's build without building; a failure stops its publication.
        #[arg(long)]
        dry_build: bool,
        /// Show what would be published; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete the chroots of hosts no longer in fleet.toml.
        #[arg(long)]
        prune: bool,
    },
    /// Build each host's system (nix) without publishing.
    Build {
        /// Hosts to build (default: all).
        hosts: Vec<String>,
        /// Evaluate only; do not build.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every host: published and running generation, state, last report.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Redraw whenever a host reports or a generation is published.
        #[arg(long)]
        watch: bool,
    },
    /// Show the closure difference between a host's running and expected system.
    Diff {
        /// The host.
        host: String,
    },
    /// Show a host's latest reports and logs.
    Logs {
        /// The host.
        host: String,
        /// How many reports.
        #[arg(long, default_value_t = 5)]
        last: usize,
    },
    /// Print the sshd Match block and the user setup for a non-NixOS server.
    SshdConfig,
}

pub fn run(args: FleetArgs) -> anyhow::Result<u8> {
    let _ = &args.fleet;
    match args.command {
        FleetCommand::Init { .. } => not_implemented("fleet init"),
        FleetCommand::Publish { .. } => not_implemented("fleet publish"),
        FleetCommand::Build { .. } => not_implemented("fleet build"),
        FleetCommand::Status { .. } => not_implemented("fleet status"),
        FleetCommand::Diff { .. } => not_implemented("fleet diff"),
        FleetCommand::Logs { .. } => not_implemented("fleet logs"),
        FleetCommand::SshdConfig => not_implemented("fleet sshd-config"),
    }
}
