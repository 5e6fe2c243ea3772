//! One backup run, the snapshot list and the repository check, for the agent's
//! `[backup]` (docs/backup.md). Blocking: the daemon runs these on its blocking pool, never
//! during an update cycle.

use super::password;
use super::record::{BackupOutcome, BackupRun, Snapshot};
use super::restic::{failure_message, parse_snapshots, parse_summary, Restic};
use crate::config::{AgentConfig, BackupConfig};
use crate::runner::Runner;
use crate::status::unix_now;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The tag every tiffin snapshot carries, so `forget` leaves other snapshots alone.
pub const TAG: &str = "tiffin";
/// How long a snapshot list or a check may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The agent's backups: its `[backup]` settings and how restic reaches the repository.
#[derive(Clone, Debug)]
pub struct Backup {
    pub config: BackupConfig,
    /// The host's name in the fleet: restic's `--host` for its snapshots.
    pub host: String,
    pub restic: Restic,
}

impl Backup {
    /// `None` when agent.toml has no `[backup]`.
    pub fn from_config(c: &AgentConfig) -> Option<Self> {
        let b = c.backup.clone()?;
        let dir = c.state_dir.join("backup");
        let restic = Restic::for_source(
            &b.restic,
            // Backups go to the server reports go to (agent.toml `report_to`).
            c.report_to.as_ref().unwrap_or(&c.source),
            &c.identity,
            &c.known_hosts,
            b.password_path(&c.state_dir),
            dir.join("cache"),
        );
        Some(Self {
            config: b,
            host: c.host.clone(),
            restic,
        })
    }

    pub fn password_file(&self) -> &PathBuf {
        &self.restic.password_file
    }

    /// One run: the password made if missing, the repository made if new, stale locks of
    /// killed runs removed, the backup, then `forget --prune` under `keep`. Never panics; every
    /// failure is a `Failed` run with restic's message.
    pub fn run(&self, runner: &Runner) -> BackupRun {
        let started = unix_now();
        let deadline = Instant::now() + self.config.timeout;
        let mut run = BackupRun {
            started,
            finished: started,
            outcome: BackupOutcome::Failed,
            files_new: 0,
            files_changed: 0,
            files_unmodified: 0,
            bytes_added: 0,
            bytes_processed: 0,
            snapshot: None,
            message: None,
        };
        if let Err(e) = self.prepare(runner, deadline) {
            run.message = Some(e);
            run.finished = unix_now();
            return run;
        }
        self.backup(runner, deadline, &mut run);
        if run.outcome.made_snapshot() {
            if let Err(e) = self.forget(runner, deadline) {
                let note = format!("the snapshot was made, but forget failed: {e}");
                run.message = Some(match run.message.take() {
                    Some(m) => format!("{m}; {note}"),
                    None => note,
                });
            }
        }
        run.finished = unix_now();
        run
    }

    fn left(deadline: Instant) -> Duration {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    }

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    /// Password, repository, stale locks.
    fn prepare(&self, runner: &Runner, deadline: Instant) -> Result<(), String> {
        password::ensure(self.password_file()).map_err(|e| e.to_string())?;
        let exists = self.restic.run(
            runner,
            &Self::args(&["cat", "config"]),
            Self::left(deadline),
        );
        if !exists.success() {
            if !exists
                .stderr
                .contains("Is there a repository at the following location?")
            {
                return Err(failure_message(&exists));
            }
            runner.note(&format!(
                "[tiffin: no repository at {} yet: making it]",
                self.restic.repository
            ));
            let init = self
                .restic
                .run(runner, &Self::args(&["init"]), Self::left(deadline));
            if !init.success() {
                return Err(failure_message(&init));
            }
        }
        // Locks left by a run that was cut off (its process gone) would block forget and check.
        let unlock = self
            .restic
            .run(runner, &Self::args(&["unlock"]), Self::left(deadline));
        if !unlock.success() {
            return Err(failure_message(&unlock));
        }
        Ok(())
    }

    fn backup(&self, runner: &Runner, deadline: Instant, run: &mut BackupRun) {
        let mut args = Self::args(&["backup", "--json", "--host", &self.host, "--tag", TAG]);
        for x in &self.config.exclude {
            args.push("--exclude".into());
            args.push(x.clone());
        }
        args.extend(self.config.paths.iter().map(|p| p.display().to_string()));
        let out = self.restic.run(runner, &args, Self::left(deadline));
        let summary = parse_summary(&out.stdout);
        run.outcome = match (out.code, &summary) {
            (Some(0), Some(_)) if !out.timed_out => BackupOutcome::Ok,
            (Some(3), Some(_)) if !out.timed_out => BackupOutcome::Partial,
            _ => BackupOutcome::Failed,
        };
        if let Some(s) = summary.filter(|_| run.outcome.made_snapshot()) {
            run.files_new = s.files_new;
            run.files_changed = s.files_changed;
            run.files_unmodified = s.files_unmodified;
            run.bytes_added = s.data_added;
            run.bytes_processed = s.total_bytes_processed;
            run.snapshot = s.snapshot_id;
        }
        match run.outcome {
            BackupOutcome::Ok => {}
            BackupOutcome::Partial => {
                run.message = Some(format!(
                    "some files could not be read: {}",
                    unreadable(&out.stdout, &out.stderr)
                ))
            }
            BackupOutcome::Failed => run.message = Some(failure_message(&out)),
        }
    }

    fn forget(&self, runner: &Runner, deadline: Instant) -> Result<(), String> {
        let keep = self.config.keep.args();
        if keep.is_empty() {
            return Ok(());
        }
        let mut args = Self::args(&["forget", "--host", &self.host, "--tag", TAG, "--prune"]);
        args.extend(keep);
        let out = self.restic.run(runner, &args, Self::left(deadline));
        if out.success() {
            Ok(())
        } else {
            Err(failure_message(&out))
        }
    }

    /// The repository's snapshots of this host, oldest first.
    pub fn snapshots(&self, runner: &Runner) -> Result<Vec<Snapshot>, String> {
        let args = Self::args(&["snapshots", "--json", "--host", &self.host]);
        let out = self.restic.run(runner, &args, QUERY_TIMEOUT);
        if !out.success() {
            return Err(failure_message(&out));
        }
        parse_snapshots(&out.stdout)
    }

    /// `restic check`: the repository's structure is sound.
    pub fn check(&self, runner: &Runner) -> Result<(), String> {
        let unlock = self
            .restic
            .run(runner, &Self::args(&["unlock"]), QUERY_TIMEOUT);
        if !unlock.success() {
            return Err(failure_message(&unlock));
        }
        let out = self
            .restic
            .run(runner, &Self::args(&["check"]), QUERY_TIMEOUT);
        if out.success() {
            Ok(())
        } else {
            Err(failure_message(&out))
        }
    }

    /// The restore command as README gives it (root on the machine): `restic … restore
    /// <snapshot> --target <dir>`.
    pub fn restore_line(&self, snapshot: &str, target: &str) -> String {
        self.restic
            .shell_line(&["restore", snapshot, "--target", target])
    }
}

/// The files restic could not read, from its JSON error lines (or its stderr).
fn unreadable(stdout: &str, stderr: &str) -> String {
    let items: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("message_type").and_then(|m| m.as_str()) == Some("error"))
        .filter_map(|v| v.get("item").and_then(|i| i.as_str()).map(str::to_string))
        .take(5)
        .collect();
    if items.is_empty() {
        stderr.lines().take(5).collect::<Vec<_>>().join("; ")
    } else {
        items.join(", ")
    }
}
