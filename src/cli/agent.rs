//! `tiffin agent`: the privileged daemon, or one cycle with `--once`.

use super::{EXIT_OK, EXIT_USAGE};
use crate::config::AgentConfig;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's configuration file.
    #[arg(long, value_name = "FILE", default_value = "/etc/tiffin/agent.toml")]
    pub config: PathBuf,
    /// Run one full cycle in the foreground and exit: 0 up to date or updated, 1 failed,
    /// 3 rolled back, 2 bad configuration or usage.
    #[arg(long)]
    pub once: bool,
    /// Check the configuration file and exit (0 valid, 2 not).
    #[arg(long, conflicts_with = "once")]
    pub check_config: bool,
}

pub fn run(args: AgentArgs) -> anyhow::Result<u8> {
    let config = match AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tiffin agent: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    if args.check_config {
        println!(
            "{}: valid (host {}, source {})",
            args.config.display(),
            config.host,
            config.source
        );
        return Ok(EXIT_OK);
    }
    crate::agent::pipeline::build::nix_version::announce(&config.system);
    if args.once {
        return Ok(crate::agent::run_once(config));
    }
    daemon(config)
}

/// The daemon: the socket, the schedule and the HTTP trigger around the pipeline.
fn daemon(config: AgentConfig) -> anyhow::Result<u8> {
    use crate::agent::daemon::{self, http::listen as http_listen, status_cell::StatusCell};
    use crate::agent::Pipeline;
    // First, before anything runs a command: systemd's sockets must not leak into commands.
    let inherited = http_listen::take_inherited();
    let status = StatusCell::new(crate::status::AgentStatus::default());
    let pipeline = Pipeline::new(config.clone(), status.clone())?;
    daemon::run(config, Box::new(pipeline), status, inherited)
}
