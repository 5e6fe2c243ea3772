//! `tiffin agent`: the daemon loop (async, on tokio). It wires the pieces together and owns
//! their lifetimes:
//!
//! - one **worker** task ([`worker`]) owns the [`CycleRunner`]; every cycle and rollback goes
//!   through its queue, so two pipelines never run at once, and requests that arrive during a
//!   cycle join it or wait for the next one (see [`Worker`]);
//! - the **scheduler** ([`scheduler`]) asks the worker for the periodic check;
//! - the **socket server** ([`crate::ipc::server`]) and the **HTTP trigger** ([`http`])
//!   turn client requests into worker requests;
//! - the **status cell** ([`status_cell`]) carries what the pipeline does to every subscriber;
//! - shutdown (SIGTERM/SIGINT): stop accepting, let a cycle in flight finish, remove the socket,
//!   exit 0.

pub mod auto_reboot;
pub mod backup;
pub mod http;
pub mod metrics_http;
pub mod postpone;
pub mod scheduler;
pub mod status_cell;
pub mod worker;

pub use worker::{Work, Worker, WorkerGone, WorkerHandle};

use super::cycle::CycleRunner;
use crate::config::AgentConfig;
use crate::cycle::{CycleReport, CycleRequest};
use crate::ipc::server::{self, AccessPolicy, AgentService, Limits, ServiceError};
use crate::ipc::{Command, ErrorCode};
use crate::status::AgentStatus;
use anyhow::Context;
use status_cell::StatusCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// Runs the agent until SIGTERM or SIGINT. Returns the process exit code. `inherited`: the
/// HTTP trigger's socket from systemd ([`http::listen::take_inherited`]).
pub fn run(
    config: AgentConfig,
    runner: Box<dyn CycleRunner>,
    status: StatusCell,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<u8> {
    // One thread is plenty for a few hundred clients and keeps the idle agent's wake-ups low;
    // the blocking pipeline runs on tokio's blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(config, runner, status, inherited))
}

async fn serve(
    config: AgentConfig,
    runner: Box<dyn CycleRunner>,
    status: StatusCell,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<u8> {
    starting_status(&config, &status);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for SIGINT")?;
    let http_listener = trigger_listener(&config, inherited, &status).await;
    let access = AccessPolicy::resolve(&config.socket_group, &config.admin_group)?;
    let listener = server::bind(&config.socket, access.socket_gid)?;
    let socket_id = server::socket_identity(&config.socket);

    let (shutdown_tx, _) = broadcast::channel::<()>(1);
    let mut tasks = Tasks::start(&config, runner, &status, &shutdown_tx, http_listener);
    let metrics = metrics_http::start(&config, &status, &shutdown_tx).await;
    let mut server_shutdown = shutdown_tx.subscribe();
    postpone::restore(&config.state_dir, &status);
    let auto_reboot = config
        .reboot_window
        .filter(|_| config.auto_reboot)
        .map(|w| tokio::spawn(auto_reboot::run(w, status.clone(), shutdown_tx.subscribe())));
    let service: Arc<dyn AgentService> = Arc::new(Api {
        worker: tasks.worker.clone(),
        status: status.clone(),
        backup: tasks.backup.as_ref().map(|(h, _)| h.clone()),
        state_dir: config.state_dir.clone(),
    });
    let socket_server = tokio::spawn(server::serve(
        listener,
        service,
        access,
        Limits::default(),
        async move {
            let _ = server_shutdown.recv().await;
        },
    ));
    tracing::info!(
        socket = %config.socket.display(),
        http = %config.http_trigger,
        host = %config.host,
        "agent ready"
    );
    notify_systemd("READY=1");

    let mut exit_code = 0;
    let worker_done = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); false }
        _ = int.recv() => { tracing::info!("SIGINT: stopping"); false }
        r = &mut tasks.worker_task => {
            // The runner panicked: without it no cycle can run. Exit non-zero so that systemd
            // restarts the agent.
            tracing::error!(result = ?r.err(), "the pipeline worker stopped; exiting");
            exit_code = 1;
            true
        }
    };
    notify_systemd("STOPPING=1");
    let _ = shutdown_tx.send(());
    tasks.join(worker_done).await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let _ = socket_server.await;
    if let Some(t) = auto_reboot {
        let _ = t.await;
    }
    remove_own_socket(&config.socket, socket_id);
    tracing::info!("stopped");
    Ok(exit_code)
}

/// The status an agent starts with: who it is, its policy, idle.
fn starting_status(config: &AgentConfig, status: &StatusCell) {
    status.update(|s| {
        s.host = config.host.clone();
        s.policy = config.policy;
        s.admin_group = config.admin_group.clone();
        s.phase = crate::status::Phase::Idle;
        s.progress = None;
    });
}

/// Removes the socket this agent bound, unless another process replaced it meanwhile.
fn remove_own_socket(socket: &std::path::Path, bound: Option<(u64, u64)>) {
    if bound.is_some() && server::socket_identity(socket) == bound {
        if let Err(e) = std::fs::remove_file(socket) {
            tracing::warn!(socket = %socket.display(), error = %e, "cannot remove the socket");
        }
    }
}

/// The trigger's port: a port already taken leaves the agent running without the trigger,
/// trying again every minute (see `http::listen`): `Some(None)`. `None` when `http_trigger` is
/// "".
async fn trigger_listener(
    config: &AgentConfig,
    inherited: Option<std::net::TcpListener>,
    status: &StatusCell,
) -> Option<Option<tokio::net::TcpListener>> {
    if config.http_trigger.is_empty() {
        if inherited.is_some() {
            tracing::warn!("systemd passed a socket for the HTTP trigger but http_trigger is \"\"; not serving it");
        }
        return None;
    }
    Some(http::listen::open(&config.http_trigger, inherited, status).await)
}

/// The daemon's tasks besides the socket server: the worker, the scheduler and the trigger.
struct Tasks {
    worker: WorkerHandle,
    worker_task: tokio::task::JoinHandle<()>,
    scheduler: tokio::task::JoinHandle<()>,
    http: Option<tokio::task::JoinHandle<()>>,
    /// `[backup]`'s task (docs/backup.md), when configured.
    backup: Option<(backup::BackupHandle, tokio::task::JoinHandle<()>)>,
}

impl Tasks {
    fn start(
        config: &AgentConfig,
        runner: Box<dyn CycleRunner>,
        status: &StatusCell,
        shutdown: &broadcast::Sender<()>,
        http_listener: Option<Option<tokio::net::TcpListener>>,
    ) -> Self {
        let (worker, worker_task) = Worker::start(runner, status.clone(), shutdown.subscribe());
        // Power and network, for automatic updates and scheduled backups alike.
        let gate = crate::agent::conditions::Gate::follow_system_bus(
            crate::agent::conditions::Rules::from_config(config),
        );
        let scheduler = tokio::spawn(scheduler::run(
            scheduler::Schedule::from_config(config),
            worker.clone(),
            status.clone(),
            gate.clone(),
            shutdown.subscribe(),
        ));
        let http = http_listener.map(|l| {
            tokio::spawn(http::listen::serve(
                config.http_trigger.clone(),
                l,
                worker.clone(),
                status.clone(),
                shutdown.subscribe(),
            ))
        });
        let backup = backup::start(
            config,
            worker.clone(),
            status.clone(),
            gate,
            shutdown.subscribe(),
        );
        Self {
            worker,
            worker_task,
            scheduler,
            http,
            backup,
        }
    }

    /// Waits for the tasks after shutdown was sent. The worker lets a cycle in flight finish
    /// (an activation must not be cut in half); `worker_done`: it has ended already.
    async fn join(self, worker_done: bool) {
        if !worker_done {
            if let Err(e) = self.worker_task.await {
                tracing::error!(error = %e, "worker ended abnormally");
            }
        }
        let _ = self.scheduler.await;
        if let Some(h) = self.http {
            let _ = h.await;
        }
        if let Some((_, h)) = self.backup {
            // A backup may take hours: it is not waited for. Under systemd restic goes with the
            // unit's cgroup; its lock is removed at the next run (docs/backup.md).
            h.abort();
            let _ = h.await;
        }
    }
}

/// Tells systemd (`Type=notify`) about the agent's state; nothing without `$NOTIFY_SOCKET`.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The socket's view of the agent.
struct Api {
    worker: WorkerHandle,
    status: StatusCell,
    backup: Option<backup::BackupHandle>,
    state_dir: std::path::PathBuf,
}

impl AgentService for Api {
    fn backup(&self, cmd: Command) -> server::BackupCall {
        match &self.backup {
            Some(b) => backup::answer(b.clone(), cmd),
            None => server::no_backups(),
        }
    }

    fn subscribe(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }

    fn last_log(&self) -> Option<String> {
        self.worker.last_log()
    }

    fn postpone(&self, until: u64) -> Result<crate::status::Postponed, ServiceError> {
        postpone::postpone(&self.state_dir, &self.status, until).map_err(|message| ServiceError {
            code: ErrorCode::NotPossible,
            message,
        })
    }

    fn run(
        &self,
        cmd: Command,
        admin: bool,
    ) -> Pin<Box<dyn Future<Output = Result<CycleReport, ServiceError>> + Send>> {
        let worker = self.worker.clone();
        Box::pin(async move {
            let work = match cmd {
                Command::Check => Work::Cycle(CycleRequest::Check),
                Command::Update if admin => Work::Cycle(CycleRequest::Retry),
                Command::Update => Work::Cycle(CycleRequest::Update),
                Command::Rollback => Work::Rollback,
                other => {
                    return Err(ServiceError {
                        code: ErrorCode::BadRequest,
                        message: format!("{other:?} is not a long call"),
                    })
                }
            };
            worker.request(work).await.map_err(|e| ServiceError {
                code: ErrorCode::Internal,
                message: e.to_string(),
            })
        })
    }
}
