//! The daemon's backups (docs/backup.md): one task that runs `[backup]` on its schedule (plus a
//! random jitter, on the wall clock like the scheduler) and when asked, never during an update
//! cycle (it holds the worker's exclusive lock), a scheduled run only when the power and network
//! [`Gate`] the automatic updates ask says so (it waits for the change, and a request does not
//! ask), and that publishes the backup part of the status, remembers the last run in
//! the state directory and queues its report for `logs/` (sent at once if the server answers).

use super::scheduler::{Jitter, MAX_SLEEP};
use super::status_cell::StatusCell;
use super::worker::WorkerHandle;
use crate::agent::conditions::Gate;
use crate::agent::pipeline::outbox::Outbox;
use crate::backup::{state, Backup, BackupRun, BackupStatus, Snapshot};
use crate::config::AgentConfig;
use crate::publication::backup_report::BackupReport;
use crate::runner::Runner;
use crate::status::unix_now;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How clients ask for backups.
#[derive(Clone)]
pub struct BackupHandle {
    tx: mpsc::Sender<oneshot::Sender<BackupRun>>,
    backup: Arc<Backup>,
}

impl BackupHandle {
    /// Runs a backup now (or joins the one running) and waits for its end.
    pub async fn now(&self) -> Result<BackupRun, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(reply)
            .await
            .map_err(|_| "the agent is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the agent is shutting down".to_string())
    }

    /// The repository's snapshots of this host (restic allows this beside a running backup).
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, String> {
        let b = self.backup.clone();
        tokio::task::spawn_blocking(move || b.snapshots(&Runner::new()))
            .await
            .map_err(|e| format!("listing snapshots panicked: {e}"))?
    }
}

/// Starts the backup task when agent.toml has `[backup]`.
pub fn start(
    config: &AgentConfig,
    worker: WorkerHandle,
    status: StatusCell,
    gate: Gate,
    shutdown: broadcast::Receiver<()>,
) -> Option<(BackupHandle, tokio::task::JoinHandle<()>)> {
    let backup = Arc::new(Backup::from_config(config)?);
    let (tx, rx) = mpsc::channel(16);
    let task = BackupTask {
        config: config.clone(),
        backup: backup.clone(),
        worker,
        status,
        gate: Some(gate),
        rx,
        shutdown,
    };
    Some((BackupHandle { tx, backup }, tokio::spawn(task.run())))
}

/// Waits for the gate's conditions to change; true when its follower ended.
async fn changed(gate: &mut Option<Gate>) -> bool {
    match gate {
        Some(g) => !g.changed().await,
        None => std::future::pending().await,
    }
}

struct BackupTask {
    config: AgentConfig,
    backup: Arc<Backup>,
    worker: WorkerHandle,
    status: StatusCell,
    /// On battery or a metered network scheduled runs wait; `None` once the bus follower ended
    /// (nothing is known then, and nothing waits).
    gate: Option<Gate>,
    rx: mpsc::Receiver<oneshot::Sender<BackupRun>>,
    shutdown: broadcast::Receiver<()>,
}

impl BackupTask {
    fn interval(&self) -> Duration {
        self.backup.config.schedule
    }

    /// A scheduled run may start: not on battery or a metered network (agent.toml `on_battery`,
    /// `on_metered`, as for automatic updates).
    fn may_start(&self) -> bool {
        !matches!(&self.gate, Some(g) if g.may_start().is_err())
    }

    async fn run(mut self) {
        let mut memory = state::load(&self.config.state_dir);
        let mut jitter = Jitter::seeded();
        let interval = self.interval();
        let mut due = match memory.last.as_ref().map(|r| r.finished) {
            Some(t) => t + interval.as_secs(),
            None => unix_now(),
        } + jitter.up_to(self.backup.config.jitter).as_secs();
        self.publish(&memory, false, due);
        loop {
            let held_back = unix_now() >= due && !self.may_start();
            let wait = match held_back {
                true => MAX_SLEEP,
                false => Duration::from_secs(due.saturating_sub(unix_now())).min(MAX_SLEEP),
            };
            let mut waiters = Vec::new();
            tokio::select! {
                r = self.rx.recv() => match r {
                    Some(w) => waiters.push(w),
                    None => return,
                },
                () = tokio::time::sleep(wait) => {
                    if unix_now() < due {
                        continue;
                    }
                    if !self.may_start() {
                        continue;
                    }
                }
                ended = changed(&mut self.gate), if held_back => {
                    if ended {
                        self.gate = None;
                    }
                    continue;
                }
                _ = self.shutdown.recv() => return,
            }
            let run = self.one_run(&mut memory, due, &mut waiters).await;
            due = run.finished
                + interval.as_secs()
                + jitter.up_to(self.backup.config.jitter).as_secs();
            self.publish(&memory, false, due);
            for w in waiters {
                let _ = w.send(run.clone());
            }
        }
    }

    /// One run under the worker's exclusive lock; requests arriving meanwhile join it.
    async fn one_run(
        &mut self,
        memory: &mut state::BackupMemory,
        due: u64,
        waiters: &mut Vec<oneshot::Sender<BackupRun>>,
    ) -> BackupRun {
        let lock = self.worker.exclusive();
        let _held = lock.lock().await;
        self.publish(memory, true, due);
        let (backup, config) = (self.backup.clone(), self.config.clone());
        let mut task = tokio::task::spawn_blocking(move || {
            let runner = Runner::new();
            let run = backup.run(&runner);
            send_report(&config, &run);
            run
        });
        let run = loop {
            tokio::select! {
                r = &mut task => break r,
                Some(w) = self.rx.recv() => waiters.push(w),
            }
        };
        let run = run.unwrap_or_else(|e| failed_run(format!("the backup panicked: {e}")));
        tracing::info!(outcome = ?run.outcome, bytes_added = run.bytes_added, message = ?run.message, "backup finished");
        if run.outcome.made_snapshot() {
            memory.last_success = Some(run.finished);
        }
        memory.last = Some(run.clone());
        if let Err(e) = state::save(&self.config.state_dir, memory) {
            tracing::warn!(error = %e, "cannot remember the backup run");
        }
        run
    }

    fn publish(&self, memory: &state::BackupMemory, running: bool, due: u64) {
        let b = BackupStatus {
            running,
            interval_secs: self.interval().as_secs(),
            last: memory.last.clone(),
            last_success: memory.last_success,
            next: Some(due),
        };
        self.status.update(|s| s.backup = Some(b));
    }
}

fn failed_run(message: String) -> BackupRun {
    let now = unix_now();
    BackupRun {
        started: now,
        finished: now,
        outcome: crate::backup::BackupOutcome::Failed,
        files_new: 0,
        files_changed: 0,
        files_unmodified: 0,
        bytes_added: 0,
        bytes_processed: 0,
        snapshot: None,
        message: Some(message),
    }
}

/// Queues the run's report for `logs/` and sends the queue if the server answers; otherwise the
/// next cycle sends it.
pub fn send_report(config: &AgentConfig, run: &BackupRun) {
    let report = BackupReport {
        host: config.host.clone(),
        agent_version: crate::VERSION.to_string(),
        interval_secs: config.backup.as_ref().map_or(0, |b| b.schedule.as_secs()),
        run: run.clone(),
    };
    let queued = Outbox::open(&config.state_dir)
        .map_err(|e| e.to_string())
        .and_then(|o| {
            o.enqueue(&report.name(), &report.to_json())
                .map_err(|e| e.to_string())
                .map(|()| o)
        });
    let outbox = match queued {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "cannot queue the backup report");
            return;
        }
    };
    match crate::agent::pipeline::sources::open_report_to(config) {
        Ok(mut src) => {
            if let Err(e) = outbox.flush(&mut *src) {
                tracing::info!(error = %e, "backup report queued; sent at the next contact");
            }
        }
        Err(e) => tracing::info!(error = %e, "backup report queued; sent at the next contact"),
    }
}

/// The socket's `backup` and `snapshots` calls.
pub fn answer(handle: BackupHandle, cmd: crate::ipc::Command) -> crate::ipc::server::BackupCall {
    use crate::ipc::backup::BackupAnswer;
    use crate::ipc::server::ServiceError;
    use crate::ipc::{Command, ErrorCode};
    Box::pin(async move {
        let failed = |message: String| ServiceError {
            code: ErrorCode::Internal,
            message,
        };
        match cmd {
            Command::Snapshots => handle
                .snapshots()
                .await
                .map(BackupAnswer::Snapshots)
                .map_err(failed),
            _ => handle.now().await.map(BackupAnswer::Run).map_err(failed),
        }
    })
}
