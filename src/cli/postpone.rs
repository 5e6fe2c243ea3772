//! `tiffin postpone DURATION`: under policy `notify`, no reminder of the waiting update for that
//! long (the tray's "Later"); the agent refuses a time past the admin's deadline and names it.

use super::client::ClientArgs;
use super::{EXIT_FAILED, EXIT_OK};
use crate::ipc::{Client, ClientError};
use crate::status::unix_now;
use clap::Args;

#[derive(Debug, Args)]
pub struct PostponeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// How long not to be reminded: `1h`, `30m`, `3h 30m`. The update still applies itself at
    /// the admin's deadline; a longer postponement is refused.
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    pub duration: u64,
}

fn parse_duration(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 1h, 30m)"))?;
    match d.as_secs() {
        0 => Err(format!("{s:?}: postpone by at least a second")),
        n => Ok(n),
    }
}

pub fn run(a: PostponeArgs) -> anyhow::Result<u8> {
    let mut c = Client::connect(&a.client.socket)?;
    let until = unix_now().saturating_add(a.duration);
    match c.postpone(until) {
        Ok(p) => {
            println!(
                "generation {} postponed until {}",
                p.generation,
                crate::timefmt::date_time(p.until, &crate::timefmt::local_zone())
            );
            Ok(EXIT_OK)
        }
        Err(ClientError::Agent(e)) => {
            eprintln!("tiffin postpone: {}", e.message);
            Ok(EXIT_FAILED)
        }
        Err(e) => Err(e.into()),
    }
}
