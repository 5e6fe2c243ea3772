//! One connection: reads its requests, checks each one's permission, answers, runs its long
//! calls concurrently, and forwards status changes once it has subscribed.

use super::lines::{Line, LineReader};
use super::{permission_of, AccessPolicy, AgentService, Limits, Peer, Permission};
use crate::ipc::codec::{decode_request, encode};
use crate::ipc::protocol::{Command, ErrorCode, Event, Response, MAX_LINE};
use crate::ipc::report::report_to_value;
use crate::status::AgentStatus;
use std::io;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

/// The most of a log that one `log` answer carries (its end).
/// 512 KiB: even fully escaped it stays under what the client reads in one line.
const MAX_LOG_ANSWER: usize = 512 << 10;

/// One client connection.
pub(super) struct Handler {
    pub(super) peer: Peer,
    pub(super) lines: LineReader<OwnedReadHalf>,
    pub(super) writer: OwnedWriteHalf,
    pub(super) service: Arc<dyn AgentService>,
    pub(super) access: Arc<AccessPolicy>,
    pub(super) limits: Limits,
    /// Set by `subscribe`: the status this client has seen last.
    pub(super) subscription: Option<watch::Receiver<AgentStatus>>,
    /// Answers of long calls still running.
    pub(super) calls: JoinSet<Response>,
    /// Permissions already looked up for this peer.
    pub(super) granted: Vec<(Permission, bool)>,
    pub(super) shutdown: broadcast::Receiver<()>,
    pub(super) _shutdown_complete: mpsc::Sender<()>,
}

impl Handler {
    pub(super) async fn run(mut self) -> io::Result<()> {
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
                Response::ok_with(req.id, &status)
            }
            Command::Subscribe => {
                let mut rx = self.service.subscribe();
                let status = rx.borrow_and_update().clone();
                self.subscription = Some(rx);
                Response::ok_with(req.id, &status)
            }
            Command::Log => Response::ok_with(req.id, &self.clipped_log()),
            Command::Postpone => match req.until {
                Some(until) => match self.service.postpone(until) {
                    Ok(p) => Response::ok_with(req.id, &p),
                    Err(e) => Response::err(req.id, e.code, e.message),
                },
                None => Response::err(
                    req.id,
                    ErrorCode::BadRequest,
                    "postpone needs `until` (Unix seconds)",
                ),
            },
            Command::Check
            | Command::Update
            | Command::Rollback
            | Command::Backup
            | Command::Snapshots => {
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
                    self.spawn_call(req.cmd, req.id).await;
                    return Ok(());
                }
            }
        };
        self.send(&answer).await
    }

    /// The last cycle's log, its start left out beyond [`MAX_LOG_ANSWER`].
    fn clipped_log(&self) -> Option<String> {
        self.service.last_log().map(|mut l| {
            if l.len() > MAX_LOG_ANSWER {
                let mut cut = l.len() - MAX_LOG_ANSWER;
                while !l.is_char_boundary(cut) {
                    cut += 1;
                }
                l = format!("[… {cut} bytes left out …]\n{}", &l[cut..]);
            }
            l
        })
    }

    /// Starts a long call (a cycle or a backup); its answer is sent when it ends.
    async fn spawn_call(&mut self, cmd: Command, id: u64) {
        tracing::info!(?cmd, "requested");
        if matches!(cmd, Command::Backup | Command::Snapshots) {
            let call = self.service.backup(cmd);
            self.calls.spawn(async move {
                match call.await {
                    Ok(answer) => Response::ok(id, answer.to_value()),
                    Err(e) => Response::err(id, e.code, e.message),
                }
            });
            return;
        }
        // Only an admin's update retries a generation marked "do not retry".
        let admin = cmd == Command::Update && self.allowed(Permission::Admin).await;
        let call = self.service.run(cmd, admin);
        self.calls.spawn(async move {
            match call.await {
                Ok(report) => Response::ok(id, report_to_value(&report)),
                Err(e) => Response::err(id, e.code, e.message),
            }
        });
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

async fn changed_or_pending(
    rx: Option<&mut watch::Receiver<AgentStatus>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
