//! Where the HTTP trigger listens, and what happens when it cannot.
//!
//! - **Socket activation**: when systemd passes the trigger's listening socket (`LISTEN_FDS`,
//!   `LISTEN_PID`, the one named `http-trigger` in `LISTEN_FDNAMES` or else the first), the agent
//!   serves that one. systemd holds the port from boot on, across agent restarts, so no local
//!   user can take it first (`packaging/systemd/tiffin-agent-http.socket`).
//! - Otherwise the agent binds `http_trigger` itself. A port already taken is not fatal: the agent
//!   runs without the trigger, says so in its log and in the status (`http_trigger_error`), and
//!   tries again every [`RETRY_BIND`].

use super::status_cell::StatusCell;
use super::work::WorkerHandle;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// How often a trigger port that was taken is tried again.
pub const RETRY_BIND: Duration = Duration::from_secs(60);
/// Tests set this (a duration such as `200ms`) so as not to wait a minute; nothing else should.
pub const RETRY_BIND_ENV: &str = "TIFFIN_TEST_HTTP_RETRY";
/// The `FileDescriptorName=` of the trigger's socket unit.
pub const FD_NAME: &str = "http-trigger";

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The trigger's listening socket passed by systemd, if any. Call once, at startup, before the
/// agent runs any command: it also marks every passed descriptor close-on-exec and removes the
/// `LISTEN_*` variables, so that no build or activation inherits systemd's sockets.
pub fn take_inherited() -> Option<std::net::TcpListener> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return None;
    }
    let var = |k: &str| std::env::var(k).ok();
    let (pid, count, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    if pid?.trim().parse::<u32>().ok()? != std::process::id() {
        return None;
    }
    let count: i32 = count?
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=64).contains(n))?;
    let names: Option<Vec<String>> = names.map(|n| n.split(':').map(str::to_owned).collect());
    let mut chosen = None;
    for i in 0..count {
        let fd = LISTEN_FDS_START + i;
        if fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
            tracing::warn!(fd, "LISTEN_FDS: descriptor {fd} is not open; ignored");
            continue;
        }
        let wanted = match &names {
            Some(n) => n.get(i as usize).is_some_and(|n| n == FD_NAME),
            None => true,
        };
        if wanted && chosen.is_none() {
            chosen = Some(fd);
        }
    }
    let Some(fd) = chosen else {
        tracing::info!("systemd passed no socket named {FD_NAME:?}; binding http_trigger");
        return None;
    };
    // SAFETY: systemd passed descriptors LISTEN_FDS_START.. to this process (LISTEN_PID is ours)
    // and nothing in the agent has taken ownership of them: `TAKEN` makes this run once, and a
    // descriptor opened since start gets a number above the passed ones. `fd` is open (the
    // fcntl above succeeded).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match check_listening_tcp(&owned) {
        Ok(addr) if addr.ip().is_loopback() => {
            tracing::info!(%addr, fd, "http trigger: using the socket systemd passed");
            Some(std::net::TcpListener::from(owned))
        }
        Ok(addr) => {
            tracing::error!(%addr, "http trigger: the socket systemd passed is not on a loopback address; refused (the trigger serves only this machine)");
            None
        }
        Err(why) => {
            tracing::error!(
                fd,
                "http trigger: descriptor {fd} from systemd {why}; ignored"
            );
            None
        }
    }
}

fn check_listening_tcp(fd: &OwnedFd) -> Result<SocketAddr, String> {
    let ty = getsockopt(fd, sockopt::SockType).map_err(|e| format!("is not a socket ({e})"))?;
    if ty != nix::sys::socket::SockType::Stream {
        return Err("is not a stream socket".into());
    }
    if !getsockopt(fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err("is not listening".into());
    }
    let l = std::net::TcpListener::from(fd.try_clone().map_err(|e| e.to_string())?);
    l.local_addr()
        .map_err(|e| format!("is not a TCP socket ({e})"))
}

/// The retry interval: [`RETRY_BIND`] unless a test set [`RETRY_BIND_ENV`].
pub fn retry_interval() -> Duration {
    std::env::var(RETRY_BIND_ENV)
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(RETRY_BIND)
}

/// The listener to start with: the inherited one, or `addr` bound now. `None` (with the reason
/// in the log and the status) when the port is taken or cannot be bound.
pub async fn open(
    addr: &str,
    inherited: Option<std::net::TcpListener>,
    status: &StatusCell,
) -> Option<TcpListener> {
    if let Some(l) = inherited {
        let got = l.local_addr().ok();
        if got != addr.parse::<SocketAddr>().ok() {
            tracing::warn!(
                http_trigger = addr,
                systemd = ?got,
                "http trigger: the socket systemd passed differs from http_trigger; serving systemd's"
            );
        }
        match l
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(l))
        {
            Ok(l) => return Some(l),
            Err(e) => tracing::error!(error = %e, "http trigger: cannot use systemd's socket"),
        }
    }
    try_bind(addr, status, true).await
}

async fn try_bind(addr: &str, status: &StatusCell, first: bool) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => {
            if !first {
                tracing::info!(http_trigger = addr, "http trigger: listening now");
            }
            status.update(|s| s.http_trigger_error = None);
            Some(l)
        }
        Err(e) => {
            let every = humantime::format_duration(retry_interval());
            let why = format!(
                "http_trigger {addr}: cannot listen ({e}); the agent runs without the trigger and tries again every {every}"
            );
            if first {
                tracing::warn!("{why}");
            } else {
                tracing::debug!("{why}");
            }
            status.update(|s| s.http_trigger_error = Some(why));
            None
        }
    }
}

/// Serves the trigger until shutdown: on `first`, or, when that is `None`, on `addr` as soon as
/// it can be bound.
pub async fn serve(
    addr: String,
    first: Option<TcpListener>,
    worker: WorkerHandle,
    status: StatusCell,
    mut shutdown: broadcast::Receiver<()>,
) {
    let listener = match first {
        Some(l) => l,
        None => loop {
            tokio::select! {
                () = tokio::time::sleep(retry_interval()) => {}
                _ = shutdown.recv() => return,
            }
            if let Some(l) = try_bind(&addr, &status, false).await {
                break l;
            }
        },
    };
    super::http::serve(listener, worker, status, shutdown).await;
}
