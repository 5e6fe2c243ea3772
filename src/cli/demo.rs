//! `tiffin demo`: the whole system on one machine.

use super::not_implemented;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps everything (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Do not start the tray app even when a display is present.
    #[arg(long)]
    pub no_tray: bool,
    /// Run the walk-through without waiting for clicks.
    #[arg(long)]
    pub script: bool,
    /// Serve the publication through a real local sshd (root only) instead of file://.
    #[arg(long)]
    pub sftp: bool,
}

pub fn run(_a: DemoArgs) -> anyhow::Result<u8> {
    not_implemented("demo")
}
