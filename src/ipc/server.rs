//! The agent's side of the socket (DESIGN §5): binding the socket with its owner and mode, the
//! accept loop, and one handler per connection.
//!
//! Shape (after mini-redis): a [`Listener`] accepts and hands each connection to a [`Handler`]
//! that owns its stream halves, its peer's credentials, its subscription and its calls in flight.
//! A semaphore bounds the number of clients; a broadcast channel tells every handler to stop.
//!
//! Limits that keep one client from hurting the others:
//! - a request line longer than [`MAX_LINE`] gets a `too_long` answer as soon as the limit is
//!   crossed; the rest of that line is read and thrown away, and the connection stays usable;
//! - every write has a timeout: a client that stops reading is dropped, never waited for;
//! - subscribers read the status through a `watch` receiver, so a slow one skips intermediate
//!   states instead of queueing them (one status per client at most);
//! - a connection that is not subscribed and has no call in flight is closed when idle;
//! - at most [`Limits::max_calls`] long calls (`check`, `update`, `rollback`) per connection;
//! - at most [`Limits::max_clients_per_uid`] connections per uid (root excepted), so that one
//!   local user cannot take every slot.

use super::codec::{decode_request, encode};
use super::per_uid::{PerUid, UidSlot};
use super::protocol::{Command, ErrorCode, Event, Response, MAX_LINE};
use super::report::report_to_value;
use crate::cycle::CycleReport;
use crate::status::AgentStatus;
use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::Instrument;

/// The most of a log that one `log` answer carries (its end).
/// 512 KiB: even fully escaped it stays under what the client reads in one line.
const MAX_LOG_ANSWER: usize = 512 << 10;

/// Bounds on what clients may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more get a `busy` answer and are closed.
    pub max_clients: usize,
    /// A connection that is neither subscribed nor waiting for a call is closed after this long
    /// without a request.
    pub idle_timeout: Duration,
    /// A write that takes longer than this drops the client.
    pub write_timeout: Duration,
    /// Long calls (`check`, `update`, `rollback`) in flight per connection.
    pub max_calls: usize,
    /// Connections one uid may hold at once (root is not counted); more get a `busy` answer.
    pub max_clients_per_uid: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: 256,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            max_calls: 8,
            max_clients_per_uid: 16,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("socket group {group:?} does not exist (set `socket_group` in agent.toml to an existing group, or create it)")]
    NoSocketGroup { group: String },
    #[error("{path}: another agent is already listening on this socket")]
    InUse { path: PathBuf },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The credentials of a connected client, from `SO_PEERCRED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// What a command needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Anyone who could connect (the socket's mode is the gate).
    Connected,
    /// Members of the socket group, and root.
    Member,
    /// Members of the admin group, and root.
    Admin,
}

/// The permission each command needs (DESIGN §5).
pub fn permission_of(cmd: Command) -> Permission {
    match cmd {
        Command::Status | Command::Subscribe | Command::Log => Permission::Connected,
        Command::Check | Command::Update => Permission::Member,
        Command::Rollback => Permission::Admin,
    }
}

/// The groups that grant permissions, resolved once at startup.
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    pub socket_group: String,
    pub socket_gid: Option<Gid>,
    pub admin_group: String,
    pub admin_gid: Option<Gid>,
}

impl AccessPolicy {
    /// Looks the groups up. A missing socket group is an error for an agent running as root
    /// (it could not give the socket to the right people); otherwise a warning.
    pub fn resolve(socket_group: &str, admin_group: &str) -> Result<Self, ServerError> {
        let lookup = |name: &str| Group::from_name(name).ok().flatten().map(|g| g.gid);
        let socket_gid = lookup(socket_group);
        if socket_gid.is_none() {
            if Uid::effective().is_root() {
                return Err(ServerError::NoSocketGroup {
                    group: socket_group.into(),
                });
            }
            tracing::warn!(
                group = socket_group,
                "socket group does not exist; not running as root, so the socket keeps its owner's group"
            );
        }
        let admin_gid = lookup(admin_group);
        if admin_gid.is_none() {
            tracing::warn!(
                group = admin_group,
                "admin group does not exist; only root may roll back"
            );
        }
        Ok(Self {
            socket_group: socket_group.into(),
            socket_gid,
            admin_group: admin_group.into(),
            admin_gid,
        })
    }

    /// Whether `peer` may do what needs `need`.
    pub fn allows(&self, peer: &Peer, need: Permission) -> bool {
        if peer.uid == 0 {
            return true;
        }
        match need {
            Permission::Connected => true,
            Permission::Member => is_member(peer, self.socket_gid),
            Permission::Admin => is_member(peer, self.admin_gid),
        }
    }

    fn refusal(&self, cmd: Command) -> String {
        let group = match permission_of(cmd) {
            Permission::Admin => &self.admin_group,
            _ => &self.socket_group,
        };
        format!(
            "`{}` needs membership in group {group:?} (or root)",
            serde_json::to_value(cmd)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )
    }
}

/// Membership by the peer's primary gid or, through the group database, by its user's
/// supplementary groups (`SO_PEERCRED` carries only the primary gid).
fn is_member(peer: &Peer, group: Option<Gid>) -> bool {
    let Some(group) = group else { return false };
    if peer.gid == group.as_raw() {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(peer.uid)) else {
        return false;
    };
    let Ok(name) = CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(peer.gid))
        .map(|groups| groups.contains(&group))
        .unwrap_or(false)
}

/// What the server asks of the agent.
pub trait AgentService: Send + Sync + 'static {
    /// A receiver of the live status (its current value included).
    fn subscribe(&self) -> watch::Receiver<AgentStatus>;
    /// The log of the last cycle, if one ran.
    fn last_log(&self) -> Option<String>;
    /// Runs `check`, `update` or `rollback`; resolves when it has finished. `admin`: the caller
    /// is in the admin group (or root), so its `update` also retries a generation that failed.
    fn run(
        &self,
        cmd: Command,
        admin: bool,
    ) -> Pin<Box<dyn Future<Output = Result<CycleReport, ServiceError>> + Send>>;
}

/// A call the agent could not serve.
#[derive(Clone, Debug)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
}

/// Binds the socket: creates its directory, removes a stale socket left by a dead agent, and
/// gives it mode 0660 and the group `group` (when known).
pub fn bind(path: &Path, group: Option<Gid>) -> Result<UnixListener, ServerError> {
    let io_at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ServerError::Io { path: p, source }
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_at(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io_at(dir))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse { path: path.into() });
            }
            std::fs::remove_file(path).map_err(io_at(path))?;
        }
        Ok(_) => return Err(ServerError::NotASocket { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(path)(e)),
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(io_at(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_at(path))?;
    if let Some(gid) = group {
        let owner = Uid::effective().is_root().then(|| Uid::from_raw(0));
        if let Err(e) = nix::unistd::chown(path, owner, Some(gid)) {
            if Uid::effective().is_root() {
                return Err(io_at(path)(e.into()));
            }
            tracing::warn!(path = %path.display(), error = %e, "cannot give the socket to its group");
        }
    }
    std_listener.set_nonblocking(true).map_err(io_at(path))?;
    UnixListener::from_std(std_listener).map_err(io_at(path))
}

/// The inode of the socket we bound, so that shutdown removes only our own socket.
pub fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

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

/// One client connection.
struct Handler {
    peer: Peer,
    lines: LineReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    service: Arc<dyn AgentService>,
    access: Arc<AccessPolicy>,
    limits: Limits,
    /// Set by `subscribe`: the status this client has seen last.
    subscription: Option<watch::Receiver<AgentStatus>>,
    /// Answers of long calls still running.
    calls: JoinSet<Response>,
    /// Permissions already looked up for this peer.
    granted: Vec<(Permission, bool)>,
    shutdown: broadcast::Receiver<()>,
    _shutdown_complete: mpsc::Sender<()>,
}

impl Handler {
    async fn run(mut self) -> io::Result<()> {
        let mut idle_deadline = Instant::now() + self.limits.idle_timeout;
        // After the client has closed its sending side, calls in flight are still answered and a
        // subscription still delivered (`echo '{"id":1,"cmd":"update"}' | socat - UNIX:…`).
        let mut end_of_requests = false;
        // On shutdown no new request is read, but the answers of calls in flight (the cycle the
        // agent lets finish) are still delivered, with their progress events.
        let mut stopping = false;
        loop {
            if self.calls.is_empty()
                && (stopping || (end_of_requests && self.subscription.is_none()))
            {
                return Ok(());
            }
            let idle_allowed = self.subscription.is_none() && self.calls.is_empty();
            tokio::select! {
                line = self.lines.next_line(), if !end_of_requests => {
                    match line? {
                        None => {
                            end_of_requests = true;
                            // A subscriber that closed (not just its sending side) is gone now,
                            // not at the next status change: its slot is free again at once.
                            if self.subscription.is_some() && self.calls.is_empty() && peer_closed(&self.writer) {
                                return Ok(());
                            }
                        }
                        Some(Line::TooLong) => {
                            let r = Response::err(0, ErrorCode::TooLong, format!("request longer than {MAX_LINE} bytes; the rest of the line is ignored"));
                            self.send(&r).await?;
                        }
                        Some(Line::Complete(bytes)) => self.handle_line(&bytes).await?,
                    }
                    idle_deadline = Instant::now() + self.limits.idle_timeout;
                }
                changed = changed_or_pending(self.subscription.as_mut()) => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let status = match self.subscription.as_mut() {
                        Some(rx) => rx.borrow_and_update().clone(),
                        None => continue,
                    };
                    self.send(&Event::Status(status)).await?;
                }
                Some(done) = self.calls.join_next(), if !self.calls.is_empty() => {
                    let r = done.unwrap_or_else(|e| Response::err(0, ErrorCode::Internal, format!("call failed: {e}")));
                    self.send(&r).await?;
                    idle_deadline = Instant::now() + self.limits.idle_timeout;
                }
                () = sleep_until(idle_deadline), if idle_allowed => {
                    tracing::debug!("idle; closing");
                    return Ok(());
                }
                _ = self.shutdown.recv(), if !stopping => {
                    stopping = true;
                    end_of_requests = true;
                }
            }
        }
    }

    async fn handle_line(&mut self, line: &[u8]) -> io::Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let req = match decode_request(line) {
            Ok(r) => r,
            Err(answer) => return self.send(&answer).await,
        };
        if !self.allowed(permission_of(req.cmd)).await {
            tracing::info!(cmd = ?req.cmd, "refused: not permitted");
            let r = Response::err(req.id, ErrorCode::Forbidden, self.access.refusal(req.cmd));
            return self.send(&r).await;
        }
        let answer = match req.cmd {
            Command::Status => {
                let status = self.service.subscribe().borrow().clone();
                Response::ok(req.id, status_value(&status))
            }
            Command::Subscribe => {
                let mut rx = self.service.subscribe();
                let status = rx.borrow_and_update().clone();
                self.subscription = Some(rx);
                Response::ok(req.id, status_value(&status))
            }
            Command::Log => {
                let log = self.service.last_log().map(|mut l| {
                    if l.len() > MAX_LOG_ANSWER {
                        let mut cut = l.len() - MAX_LOG_ANSWER;
                        while !l.is_char_boundary(cut) {
                            cut += 1;
                        }
                        l = format!("[… {cut} bytes left out …]\n{}", &l[cut..]);
                    }
                    l
                });
                Response::ok(req.id, serde_json::Value::from(log))
            }
            Command::Check | Command::Update | Command::Rollback => {
                if self.calls.len() >= self.limits.max_calls {
                    Response::err(
                        req.id,
                        ErrorCode::Busy,
                        format!(
                            "at most {} calls in flight per connection",
                            self.limits.max_calls
                        ),
                    )
                } else {
                    tracing::info!(cmd = ?req.cmd, "requested");
                    // Only an admin's update retries a generation marked "do not retry".
                    let admin = req.cmd == Command::Update && self.allowed(Permission::Admin).await;
                    let call = self.service.run(req.cmd, admin);
                    let id = req.id;
                    self.calls.spawn(async move {
                        match call.await {
                            Ok(report) => Response::ok(id, report_to_value(&report)),
                            Err(e) => Response::err(id, e.code, e.message),
                        }
                    });
                    return Ok(());
                }
            }
        };
        self.send(&answer).await
    }

    /// Asks the group database off the async thread (NSS may be slow: LDAP, sssd) and
    /// remembers the answer for this connection.
    async fn allowed(&mut self, need: Permission) -> bool {
        if need == Permission::Connected || self.peer.uid == 0 {
            return true;
        }
        if let Some((_, known)) = self.granted.iter().find(|(p, _)| *p == need) {
            return *known;
        }
        let (access, peer) = (self.access.clone(), self.peer);
        let ok = tokio::task::spawn_blocking(move || access.allows(&peer, need))
            .await
            .unwrap_or(false);
        self.granted.push((need, ok));
        ok
    }

    async fn send<T: serde::Serialize>(&mut self, v: &T) -> io::Result<()> {
        let bytes = encode(v);
        match timeout(self.limits.write_timeout, self.writer.write_all(&bytes)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client does not read; dropped",
            )),
        }
    }
}

/// Whether the client has closed the connection entirely (`POLLHUP`), as opposed to only its
/// sending side (`shutdown(SHUT_WR)`, after which it still reads answers and events).
fn peer_closed(w: &OwnedWriteHalf) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stream: &UnixStream = w.as_ref();
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

fn status_value(s: &AgentStatus) -> serde_json::Value {
    serde_json::to_value(s).unwrap_or(serde_json::Value::Null)
}

async fn changed_or_pending(
    rx: Option<&mut watch::Receiver<AgentStatus>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// A line as the reader delivers it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Complete(Vec<u8>),
    /// The line crossed the limit; its remainder will be skipped.
    TooLong,
}

/// Reads newline-terminated lines of at most `max` bytes without ever holding more.
/// Cancel-safe: all state lives in the struct and the only await is `fill_buf`.
pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    discarding: bool,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(r: R, max: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(16 * 1024, r),
            line: Vec::new(),
            discarding: false,
            max,
        }
    }

    /// The next line; `None` at the end of the stream (a last line without newline is dropped).
    pub(crate) async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (chunk, found_newline) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            let mut too_long = false;
            if !self.discarding {
                if self.line.len() + chunk > self.max {
                    too_long = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(&buf[..chunk]);
                }
            }
            self.inner.consume(chunk + usize::from(found_newline));
            if found_newline {
                let was_discarding = std::mem::replace(&mut self.discarding, false);
                if too_long {
                    return Ok(Some(Line::TooLong));
                }
                if !was_discarding {
                    return Ok(Some(Line::Complete(std::mem::take(&mut self.line))));
                }
            } else if too_long {
                self.discarding = true;
                return Ok(Some(Line::TooLong));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: Vec<u8>, max: usize) -> Vec<Line> {
        let mut r = LineReader::new(std::io::Cursor::new(input), max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn long_line_is_reported_once_and_the_next_line_still_reads() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\n{\"id\":1}\nshort\n");
        let got = lines_of(input, 1000).await;
        assert_eq!(
            got,
            vec![
                Line::TooLong,
                Line::Complete(b"{\"id\":1}".to_vec()),
                Line::Complete(b"short".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn line_of_exactly_the_limit_is_accepted() {
        let mut input = vec![b'y'; 1000];
        input.push(b'\n');
        assert_eq!(
            lines_of(input, 1000).await,
            vec![Line::Complete(vec![b'y'; 1000])]
        );
    }

    struct FakeAgent {
        status: watch::Sender<AgentStatus>,
        /// A call finishes when the test adds a permit.
        gate: Arc<Semaphore>,
        calls_started: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AgentService for FakeAgent {
        fn subscribe(&self) -> watch::Receiver<AgentStatus> {
            self.status.subscribe()
        }
        fn last_log(&self) -> Option<String> {
            None
        }
        fn run(
            &self,
            _cmd: Command,
            _admin: bool,
        ) -> Pin<Box<dyn Future<Output = Result<CycleReport, ServiceError>> + Send>> {
            let gate = self.gate.clone();
            self.calls_started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                let _ = gate.acquire().await.map(|p| p.forget());
                Ok(CycleReport {
                    outcome: crate::status::Outcome::Updated,
                    generation: Some(2),
                    failed_step: None,
                    message: None,
                })
            })
        }
    }

    async fn read_all(s: &mut UnixStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        timeout(Duration::from_secs(30), s.read_to_string(&mut out))
            .await
            .expect("the server should close the connection")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn client_limit_idle_timeout_and_answers_after_half_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("agent.sock");
        let listener = bind(&path, None).unwrap();
        let gate = Arc::new(Semaphore::new(0));
        let (status, _) = watch::channel(AgentStatus::default());
        let calls_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let service = Arc::new(FakeAgent {
            status,
            gate: gate.clone(),
            calls_started: calls_started.clone(),
        });
        let access = AccessPolicy {
            socket_group: "test".into(),
            socket_gid: Some(nix::unistd::getegid()),
            admin_group: "test".into(),
            admin_gid: None,
        };
        let limits = Limits {
            max_clients: 2,
            idle_timeout: Duration::from_millis(200),
            write_timeout: Duration::from_secs(5),
            max_calls: 8,
            max_clients_per_uid: 16,
        };
        tokio::spawn(serve(
            listener,
            service,
            access,
            limits,
            std::future::pending::<()>(),
        ));

        // A subscriber is never idle; a silent client is closed.
        let mut subscriber = UnixStream::connect(&path).await.unwrap();
        subscriber
            .write_all(b"{\"id\":1,\"cmd\":\"subscribe\"}\n")
            .await
            .unwrap();
        let mut silent = UnixStream::connect(&path).await.unwrap();
        assert_eq!(read_all(&mut silent).await, "");

        // An update sent before closing the sending side is still answered.
        let mut caller = UnixStream::connect(&path).await.unwrap();
        caller
            .write_all(b"{\"id\":9,\"cmd\":\"update\"}\n")
            .await
            .unwrap();
        caller.shutdown().await.unwrap();

        // Two clients are connected: a third gets `busy` and is closed.
        let mut third = UnixStream::connect(&path).await.unwrap();
        let answer = read_all(&mut third).await;
        assert!(answer.contains("\"code\":\"busy\""), "{answer}");

        gate.add_permits(1);
        let answer = read_all(&mut caller).await;
        let v: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
        assert_eq!(v["id"], 9);
        assert_eq!(v["data"]["outcome"], "updated");
    }

    #[tokio::test]
    async fn shutdown_still_delivers_the_answer_of_a_call_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = bind(&path, None).unwrap();
        let gate = Arc::new(Semaphore::new(0));
        let (status, _) = watch::channel(AgentStatus::default());
        let calls_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let service = Arc::new(FakeAgent {
            status,
            gate: gate.clone(),
            calls_started: calls_started.clone(),
        });
        let access = AccessPolicy {
            socket_group: "test".into(),
            socket_gid: Some(nix::unistd::getegid()),
            admin_group: "test".into(),
            admin_gid: None,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, service, access, Limits::default(), stop_rx));
        let mut caller = UnixStream::connect(&path).await.unwrap();
        caller
            .write_all(b"{\"id\":3,\"cmd\":\"update\"}\n")
            .await
            .unwrap();
        // Once the call has started, stop the server.
        while calls_started.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        stop_tx.send(()).unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !server.is_finished(),
            "the server stopped before the call's answer"
        );
        gate.add_permits(1);
        let answer = read_all(&mut caller).await;
        assert!(
            answer.contains("\"id\":3") && answer.contains("updated"),
            "{answer}"
        );
        server.await.unwrap();
    }

    #[test]
    fn permissions_follow_the_design() {
        let access = AccessPolicy {
            socket_group: "users".into(),
            socket_gid: Some(Gid::from_raw(4242)),
            admin_group: "wheel".into(),
            admin_gid: Some(Gid::from_raw(4243)),
        };
        // A uid that exists nowhere: only its primary gid counts.
        let member = Peer {
            uid: 4_000_000_001,
            gid: 4242,
            pid: None,
        };
        let admin = Peer {
            gid: 4243,
            ..member
        };
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        assert!(access.allows(&member, permission_of(Command::Update)));
        assert!(!access.allows(&member, permission_of(Command::Rollback)));
        assert!(access.allows(&admin, permission_of(Command::Rollback)));
        assert!(!access.allows(&admin, permission_of(Command::Check)));
        assert!(access.allows(&root, permission_of(Command::Rollback)));
        assert!(access.refusal(Command::Rollback).contains("\"wheel\""));
    }
}
