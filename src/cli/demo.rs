//! `tiffin demo`'s arguments; the demo itself is `crate::demo::walkthrough`.

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::demo::walkthrough::{self, DemoOptions, Ending};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps everything: a new or empty directory, kept afterwards (default: a
    /// new temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Do not start the tray app even when a display is present.
    #[arg(long)]
    pub no_tray: bool,
    /// Run the walk-through without waiting for Enter or clicks.
    #[arg(long)]
    pub script: bool,
    /// Serve the publication through a real local sshd on a loopback port (root only) instead
    /// of file://; the demo directory defaults to a new one under /var/lib/tiffin-demo/.
    #[arg(long)]
    pub sftp: bool,
    /// Run the laptop on the embedded shell scripts even when the Nix installed here can build
    /// (by default the demo uses real Nix, with tiffin's NixOS stand-in, when it can).
    #[arg(long)]
    pub simulated_nix: bool,
}

pub fn run(a: DemoArgs) -> anyhow::Result<u8> {
    let options = DemoOptions {
        dir: a.dir,
        no_tray: a.no_tray,
        script: a.script,
        sftp: a.sftp,
        simulated_nix: a.simulated_nix,
    };
    Ok(match walkthrough::run(&options)? {
        Ending::Done => EXIT_OK,
        Ending::Usage => EXIT_USAGE,
        Ending::Failed => EXIT_FAILED,
        Ending::Signal(sig) => (128 + sig as i32) as u8,
    })
}
