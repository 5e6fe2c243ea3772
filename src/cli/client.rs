//! `tiffin status|check|update|rollback|log|watch`: clients of the local agent's socket.

use super::not_implemented;
use clap::Args;
use std::path::PathBuf;

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
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
}

pub fn status(_a: StatusArgs) -> anyhow::Result<u8> {
    not_implemented("status")
}
pub fn check(_a: ClientArgs) -> anyhow::Result<u8> {
    not_implemented("check")
}
pub fn update(_a: ClientArgs) -> anyhow::Result<u8> {
    not_implemented("update")
}
pub fn rollback(_a: RollbackArgs) -> anyhow::Result<u8> {
    not_implemented("rollback")
}
pub fn log(_a: ClientArgs) -> anyhow::Result<u8> {
    not_implemented("log")
}
pub fn watch(_a: ClientArgs) -> anyhow::Result<u8> {
    not_implemented("watch")
}
