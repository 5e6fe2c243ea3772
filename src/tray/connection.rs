//! Follows the agent over its socket: subscribe, pass every status on, and while the agent is
//! down say so once and reconnect with backoff. Blocking reads on its own thread; no polling.

use super::view::DownReason;
use crate::ipc::{Client, ClientError};
use crate::status::AgentStatus;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The agent's socket when neither `--socket` nor `$TIFFIN_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tiffin/agent.sock";

/// The first wait before reconnecting, doubled after each failure up to [`BACKOFF_MAX`]. Short
/// enough that an agent restart is seen at once, long enough not to spin.
pub const BACKOFF_START: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the agent may take to answer `subscribe` and `status`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// `--socket`, else `$TIFFIN_SOCKET`, else the default.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("TIFFIN_SOCKET").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// What the connection thread reports.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentLink {
    Status(Box<AgentStatus>),
    Down(DownReason),
}

/// Runs forever: reports each status the agent sends, and `Down` once each time the agent
/// becomes unreachable (again when the reason changes). Returns when `on_link` returns false
/// (the tray is quitting).
pub fn follow(socket: &Path, mut on_link: impl FnMut(AgentLink) -> bool) {
    let mut backoff = BACKOFF_START;
    let mut told_down: Option<DownReason> = None;
    loop {
        let mut got_any = false;
        let result = session(socket, &mut |s| {
            got_any = true;
            told_down = None;
            on_link(AgentLink::Status(Box::new(s)))
        });
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!("agent connection: {e}");
                if got_any {
                    backoff = BACKOFF_START;
                }
                let reason = down_reason(&e);
                if told_down != Some(reason) {
                    told_down = Some(reason);
                    if !on_link(AgentLink::Down(reason)) {
                        return;
                    }
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A socket this user may not open is told apart from an agent that is not there.
fn down_reason(e: &ClientError) -> DownReason {
    match e {
        ClientError::Connect { error, .. }
            if error.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            DownReason::NotAllowed
        }
        _ => DownReason::NotRunning,
    }
}

/// One connection: subscribe, fetch the current status, then relay events until it breaks.
/// `Ok` only when the sink asked to stop.
fn session(socket: &Path, sink: &mut dyn FnMut(AgentStatus) -> bool) -> Result<(), ClientError> {
    let mut client = Client::connect(socket)?;
    // An agent that accepts but does not answer counts as unreachable; once subscribed, silence
    // is normal (events come only on change).
    client.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    // The status now, then every change.
    let current = client.subscribe()?;
    if !sink(current) {
        return Ok(());
    }
    client.set_read_timeout(None)?;
    loop {
        let s = client.next_status()?;
        if !sink(s) {
            return Ok(());
        }
    }
}

/// Whether the user running the tray may roll back: root, or a member of `admin_group`
/// (the agent checks again; this only decides whether the menu entry is enabled).
pub fn user_may_rollback(admin_group: &str) -> bool {
    use nix::unistd::{getgroups, getuid, Group, User};
    if getuid().is_root() {
        return true;
    }
    if admin_group.is_empty() {
        return false;
    }
    let Ok(Some(group)) = Group::from_name(admin_group) else {
        return false;
    };
    if getgroups().is_ok_and(|gs| gs.contains(&group.gid)) {
        return true;
    }
    // Membership granted after login is not in the process's groups yet; the agent reads the
    // group database, so do the same.
    match User::from_uid(getuid()) {
        Ok(Some(u)) => u.gid == group.gid || group.mem.contains(&u.name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::codec::{decode_request, encode};
    use crate::ipc::{Command, Event, Response};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    /// Serves one client, then closes. `status_in_subscribe`: like the daemon, the answer to
    /// `subscribe` carries the status; otherwise it is null and a `status` request follows.
    fn serve_once(listener: &UnixListener, generation: u64, status_in_subscribe: bool) {
        let (stream, _) = listener.accept().expect("accept");
        let mut w = stream.try_clone().expect("clone");
        let mut r = BufReader::new(stream);
        let status = AgentStatus {
            applied_generation: Some(generation),
            ..AgentStatus::default()
        };
        let requests = if status_in_subscribe { 1 } else { 2 };
        for _ in 0..requests {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).expect("read");
            let req = decode_request(line.trim_ascii_end()).expect("request");
            let answer = match req.cmd {
                Command::Status => Response::ok_with(req.id, &status),
                Command::Subscribe if status_in_subscribe => Response::ok_with(req.id, &status),
                _ => Response::ok_with(req.id, &()),
            };
            w.write_all(&encode(&answer)).expect("write");
        }
        let mut next = status.clone();
        next.applied_generation = Some(generation + 1);
        w.write_all(&encode(&Event::Status(next))).expect("write");
    }

    #[test]
    fn follows_statuses_says_unreachable_once_and_reconnects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("agent.sock");
        let (tx, rx) = mpsc::channel();
        let follower_sock = sock.clone();
        std::thread::spawn(move || follow(&follower_sock, |l| tx.send(as_option(l)).is_ok()));
        // Nobody listens yet: unreachable, said once.
        assert_eq!(rx.recv_timeout(Duration::from_secs(2)), Ok(None));
        assert!(
            rx.recv_timeout(Duration::from_millis(700)).is_err(),
            "said twice"
        );
        let listener = UnixListener::bind(&sock).expect("bind");
        serve_once(&listener, 7, false);
        let got: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("status"))
            .collect();
        let gens: Vec<_> = got
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.applied_generation))
            .collect();
        assert_eq!(gens, vec![Some(7), Some(8), None]);
        // Back again: recovers without a restart.
        serve_once(&listener, 20, true);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("status")
                .and_then(|s| s.applied_generation),
            Some(20)
        );
    }

    #[test]
    fn an_agent_that_accepts_but_never_answers_is_unreachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        // Accepts and keeps every connection open without a word.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming().flatten() {
                held.push(c);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || follow(&sock, |l| tx.send(as_option(l)).is_ok()));
        let got = rx
            .recv_timeout(HANDSHAKE_TIMEOUT + Duration::from_secs(5))
            .expect("a verdict");
        assert_eq!(got, None);
    }

    fn as_option(l: AgentLink) -> Option<AgentStatus> {
        match l {
            AgentLink::Status(s) => Some(*s),
            AgentLink::Down(_) => None,
        }
    }

    #[test]
    fn permission_denied_is_told_apart_from_no_agent() {
        let refused = |kind| ClientError::Connect {
            path: PathBuf::from("/run/tiffin/agent.sock"),
            error: std::io::Error::from(kind),
        };
        assert_eq!(
            down_reason(&refused(std::io::ErrorKind::PermissionDenied)),
            DownReason::NotAllowed
        );
        assert_eq!(
            down_reason(&refused(std::io::ErrorKind::NotFound)),
            DownReason::NotRunning
        );
        assert_eq!(down_reason(&ClientError::Closed), DownReason::NotRunning);
    }

    #[test]
    fn socket_flag_wins_over_the_default() {
        assert_eq!(
            socket_path(Some(PathBuf::from("/tmp/x.sock"))),
            PathBuf::from("/tmp/x.sock")
        );
    }
}
