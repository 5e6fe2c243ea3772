//! `tiffin backup now|status|snapshots`: the machine's backups through the agent's socket
//! (docs/backup.md). Restoring is a restic command, documented in README.

use super::client::ClientArgs;
use super::exit::{EXIT_FAILED, EXIT_OK};
use crate::backup::{BackupOutcome, BackupRun};
use crate::fleet::report::human_bytes;
use crate::ipc::Client;
use crate::status::unix_now;
use crate::timefmt::{ago, from_now, span};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub what: Option<BackupCommand>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back this machine up now and wait for the end (socket group members and root).
    Now,
    /// The last backup, its outcome and the next one (the default).
    Status,
    /// The snapshots in this machine's repository on the server.
    Snapshots,
}

pub fn run(a: BackupArgs) -> anyhow::Result<u8> {
    let mut c = Client::connect(&a.client.socket)?;
    match a.what.unwrap_or(BackupCommand::Status) {
        BackupCommand::Now => {
            let r = c.backup_now()?;
            println!("{}", describe_run(&r, unix_now()));
            Ok(if r.outcome.made_snapshot() {
                EXIT_OK
            } else {
                EXIT_FAILED
            })
        }
        BackupCommand::Status => {
            let s = c.status()?;
            let Some(b) = s.backup else {
                println!("no backups: agent.toml has no [backup]");
                return Ok(EXIT_FAILED);
            };
            let now = unix_now();
            match &b.last {
                Some(r) => println!("last backup: {}", describe_run(r, now)),
                None => println!("last backup: none yet"),
            }
            if b.running {
                println!("a backup is running now");
            } else if let Some(n) = b.next {
                println!("next backup: {}", from_now(n, now));
            }
            if b.is_stale(now, now) {
                println!(
                    "stale: no snapshot for more than twice the schedule ({})",
                    span(b.interval_secs * 2)
                );
            }
            Ok(EXIT_OK)
        }
        BackupCommand::Snapshots => {
            let snaps = c.snapshots()?;
            for s in &snaps {
                let id: String = s.id.chars().take(8).collect();
                println!("{id}  {}  {}", s.time, s.paths.join(" "));
            }
            println!("{} snapshot(s)", snaps.len());
            Ok(EXIT_OK)
        }
    }
}

/// "3 h ago: ok, 2 new and 1 changed file(s), 300 KiB added in 4 s" or the failure's message.
pub fn describe_run(r: &BackupRun, now: u64) -> String {
    let when = ago(r.finished, now);
    match r.outcome {
        BackupOutcome::Failed => format!(
            "{when}: failed: {}",
            r.message.as_deref().unwrap_or("no message")
        ),
        o => format!(
            "{when}: {}, {} new and {} changed file(s), {} added in {}{}",
            o.word(),
            r.files_new,
            r.files_changed,
            human_bytes(r.bytes_added),
            span(r.duration_secs()),
            r.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ),
    }
}
