//! Backups of the machine with restic into its own `backup/` on the server (docs/backup.md).
//!
//! - `record`: the words shared by the agent, the socket, the tray and the reports
//!   (`BackupRun`, `BackupStatus`, `Snapshot`), below `status` and `publication`;
//! - `restic`: restic's command lines (repository, `sftp.command` with the machine's key and
//!   the pinned known_hosts, password file, cache) run through the `runner`, and its JSON read;
//! - `password`: the repository password, made at the first run (0600);
//! - `run`: one backup (unlock stale locks, init when new, backup, forget), snapshots, check.
//!
//! The daemon side (schedule, power, never during an update cycle) is `agent::daemon::backup`.

pub mod password;
pub mod record;
pub mod restic;
pub mod run;
pub mod state;

pub use record::{BackupOutcome, BackupRun, BackupStatus, Snapshot};
pub use run::Backup;
