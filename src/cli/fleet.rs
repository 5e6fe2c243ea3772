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
    ///
    /// States, most urgent first: failing, rolled back, not seen (no contact for more than 3 of
    /// its check intervals), never seen, restart needed, updating, update pending, up to date.
    /// Reads the chroot of fleet.toml (root is needed to read the hosts' logs/).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Redraw whenever a host reports or a generation is published.
        #[arg(long)]
        watch: bool,
    },
    /// Show the closure difference between a host's running and expected system.
    ///
    /// Runs `nvd diff` when nvd is on PATH, else `nix store diff-closures` ($TIFFIN_NIX, default
    /// `nix`); both store paths must be in this machine's Nix store.
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
        FleetCommand::Status { json, watch } => status(&args.fleet, json, watch),
        FleetCommand::Diff { host } => diff(&args.fleet, &host),
        FleetCommand::Logs { host, last } => logs(&args.fleet, &host, last),
        FleetCommand::SshdConfig => not_implemented("fleet sshd-config"),
    }
}

fn status(fleet_dir: &std::path::Path, json: bool, watch: bool) -> anyhow::Result<u8> {
    use crate::fleet::status::{self, Style, WatchOutput};
    let mut out = std::io::stdout().lock();
    if watch {
        let output = if json {
            WatchOutput::Json
        } else {
            WatchOutput::Table(Style::for_stdout())
        };
        status::watch(fleet_dir, output, &mut out)?;
        return Ok(super::EXIT_OK);
    }
    let config = crate::config::fleet::FleetConfig::load(fleet_dir)?;
    if !config.chroot.is_dir() {
        eprintln!(
            "tiffin: warning: the chroot root {} (fleet.toml `chroot`) does not exist: nothing is published yet",
            config.chroot.display()
        );
    }
    let view = status::fleet_status(&config, crate::status::unix_now());
    use std::io::Write;
    if json {
        serde_json::to_writer_pretty(&mut out, &view)?;
        writeln!(out)?;
    } else {
        out.write_all(status::render_table(&view, Style::for_stdout()).as_bytes())?;
    }
    Ok(super::EXIT_OK)
}

fn diff(fleet_dir: &std::path::Path, host: &str) -> anyhow::Result<u8> {
    let config = crate::config::fleet::FleetConfig::load(fleet_dir)?;
    let code = crate::fleet::diff::closure_diff(
        &config,
        host,
        &crate::runner::Runner::new(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    Ok(code)
}

fn logs(fleet_dir: &std::path::Path, host: &str, last: usize) -> anyhow::Result<u8> {
    let config = crate::config::fleet::FleetConfig::load(fleet_dir)?;
    crate::fleet::logs::show_logs(&config, host, last, &mut std::io::stdout().lock())?;
    Ok(super::EXIT_OK)
}
