//! The accept loop: each connection gets a slot (at most `max_clients`, and a share per uid)
//! and a [`Handler`] task; on shutdown the loop stops accepting and waits for the handlers.

use super::handler::Handler;
use super::lines::LineReader;
use super::{AccessPolicy, AgentService, Limits, Peer};
use crate::ipc::codec::encode;
use crate::ipc::per_uid::{PerUid, UidSlot};
use crate::ipc::protocol::{ErrorCode, Response, MAX_LINE};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::Instrument;

/// Serves clients until `shutdown` resolves, then tells every handler to stop and waits for them.
pub async fn serve(
    listener: UnixListener,
    service: Arc<dyn AgentService>,
    access: AccessPolicy,
    limits: Limits,
    shutdown: impl Future,
) {
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    let mut server = Listener {
        listener,
        service,
        access: Arc::new(access),
        limits,
        limit_connections: Arc::new(Semaphore::new(limits.max_clients)),
        per_uid: PerUid::new(limits.max_clients_per_uid),
        notify_shutdown,
        shutdown_complete_tx,
    };
    tokio::select! {
        () = server.run() => {}
        _ = shutdown => tracing::info!("socket: no longer accepting clients"),
    }
    let Listener {
        listener,
        notify_shutdown,
        shutdown_complete_tx,
        ..
    } = server;
    // Connections still in the backlog are refused now rather than left hanging.
    drop(listener);
    drop(notify_shutdown);
    drop(shutdown_complete_tx);
    let _ = shutdown_complete_rx.recv().await;
}

struct Listener {
    listener: UnixListener,
    service: Arc<dyn AgentService>,
    access: Arc<AccessPolicy>,
    limits: Limits,
    limit_connections: Arc<Semaphore>,
    per_uid: PerUid,
    notify_shutdown: broadcast::Sender<()>,
    /// Held by every handler; the server has stopped when all clones are gone.
    shutdown_complete_tx: mpsc::Sender<()>,
}

impl Listener {
    async fn run(&mut self) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = match stream.peer_cred() {
                Ok(c) => Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "socket: no peer credentials; closing");
                    continue;
                }
            };
            // The uid's share first, so that a uid over it does not hold one of the others' slots.
            let uid_slot: Option<UidSlot> = if peer.uid == 0 {
                None
            } else {
                match self.per_uid.try_acquire(peer.uid) {
                    Some(s) => Some(s),
                    None => {
                        tracing::info!(
                            uid = peer.uid,
                            limit = self.per_uid.limit(),
                            "socket: refused a client: its uid holds its share of connections"
                        );
                        let why = format!(
                            "uid {} already holds {} connections, the most one user may; close some and try again",
                            peer.uid,
                            self.per_uid.limit()
                        );
                        tokio::spawn(refuse_busy(stream, why, self.limits.write_timeout));
                        continue;
                    }
                }
            };
            let Ok(permit) = self.limit_connections.clone().try_acquire_owned() else {
                let why = "too many clients are connected; try again later".to_string();
                tokio::spawn(refuse_busy(stream, why, self.limits.write_timeout));
                continue;
            };
            let (read, write) = stream.into_split();
            let handler = Handler {
                peer,
                lines: LineReader::new(read, MAX_LINE),
                writer: write,
                service: self.service.clone(),
                access: self.access.clone(),
                limits: self.limits,
                subscription: None,
                calls: JoinSet::new(),
                granted: Vec::new(),
                shutdown: self.notify_shutdown.subscribe(),
                _shutdown_complete: self.shutdown_complete_tx.clone(),
            };
            let span = tracing::info_span!("client", uid = peer.uid, pid = peer.pid);
            tokio::spawn(
                async move {
                    tracing::debug!("connected");
                    match handler.run().await {
                        Ok(()) => tracing::debug!("disconnected"),
                        Err(e) => tracing::info!(error = %e, "client dropped"),
                    }
                    drop(permit);
                    drop(uid_slot);
                }
                .instrument(span),
            );
        }
    }
}

async fn refuse_busy(mut stream: UnixStream, why: String, write_timeout: Duration) {
    let line = encode(&Response::err(0, ErrorCode::Busy, why));
    let _ = timeout(write_timeout, stream.write_all(&line)).await;
}
