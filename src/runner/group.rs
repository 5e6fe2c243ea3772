//! One external command in its own process group, killed as a group, and read without ever
//! waiting on a process it left behind.
//!
//! `sh -c 'sleep 300 & exit 1'` exits at once, but its `sleep` keeps the output pipes open:
//! reading to end-of-file would wait for it. Here the direct child is watched instead: when it
//! exits (or the deadline passes) whatever is left of its process group is killed, the pipes
//! get a short [`GRACE`] to deliver what is already in them, and are then closed unread.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the output pipes may stay open after the command ended or was killed; a process
/// that left the group (`setsid`) and still holds them is not waited for longer.
pub const GRACE: Duration = Duration::from_millis(500);
/// At a deadline, how long the group has to end on SIGTERM before SIGKILL: Nix stops the builders
/// it started on SIGTERM, and they are in sessions of their own, out of reach of a group kill.
pub const TERM_GRACE: Duration = Duration::from_secs(2);
/// The longest pause between two looks at the child.
const TICK: Duration = Duration::from_millis(20);

/// What is done with the rest of the process group when the direct child exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftovers {
    /// Killed: a command's helpers end with it (every agent command).
    Kill,
    /// Left running, and not waited for: launchers (`xdg-open`) start programs that outlive
    /// them. Nothing is killed at the deadline either; the runner only stops waiting.
    Leave,
}

/// How a command in its own group ended.
#[derive(Debug)]
pub struct Ended {
    /// `None` when killed, or when it could not be reaped in time.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    /// The output pipes were closed unread: a process outside the group still held them.
    pub abandoned_output: bool,
}

/// Spawns `cmd` (stdin from /dev/null, stdout and stderr captured) as the leader of a new
/// process group and runs it to its end or its `timeout`.
pub fn run(mut cmd: Command, timeout: Option<Duration>, leftovers: Leftovers) -> io::Result<Ended> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    let mut pipes: [Option<File>; 2] = [
        child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
        child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
    ];
    let mut output = [Vec::new(), Vec::new()];
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut ended: Option<Option<ExitStatus>> = None;
    let mut timed_out = false;
    // Once the child is gone, the time the pipes have left.
    let mut stop_reading: Option<Instant> = None;
    loop {
        if ended.is_none() {
            if let Some(status) = exited(&mut child, pid, leftovers)? {
                ended = Some(Some(status));
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                timed_out = true;
                if leftovers == Leftovers::Kill {
                    stop_group(pid);
                    ended = Some(reap(&mut child, Instant::now() + GRACE));
                } else {
                    ended = Some(None);
                }
            }
            if ended.is_some() {
                stop_reading = Some(Instant::now() + GRACE);
            }
        }
        let open = pipes.iter().any(Option::is_some);
        if ended.is_some() && !open {
            break;
        }
        if stop_reading.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let mut wait = TICK;
        for limit in [deadline, stop_reading].into_iter().flatten() {
            wait = wait.min(limit.saturating_duration_since(Instant::now()));
        }
        read_ready(&mut pipes, &mut output, wait)?;
    }
    let [stdout, stderr] = output;
    Ok(Ended {
        status: ended.flatten(),
        stdout,
        stderr,
        timed_out,
        abandoned_output: pipes.iter().any(Option::is_some),
    })
}

/// The child's status if it has exited. With [`Leftovers::Kill`] its group is killed first,
/// while the unreaped child still holds its process id (so the group id cannot be reused).
fn exited(child: &mut Child, pid: Pid, leftovers: Leftovers) -> io::Result<Option<ExitStatus>> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(_) => {
            if leftovers == Leftovers::Kill {
                kill_group(pid);
            }
            child.wait().map(Some)
        }
        // waitid unavailable: reap first, then kill what is left.
        Err(_) => {
            let status = child.try_wait()?;
            if status.is_some() && leftovers == Leftovers::Kill {
                kill_group(pid);
            }
            Ok(status)
        }
    }
}

/// At the deadline: SIGTERM to the group, so that a command can stop what it started outside
/// it (Nix its builders); SIGKILL to what is left once the child has exited or [`TERM_GRACE`]
/// has passed. The child is not reaped here, so its group id cannot be reused meanwhile.
fn stop_group(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let until = Instant::now() + TERM_GRACE;
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    while Instant::now() < until {
        match waitid(Id::Pid(pgid), flags) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            _ => break,
        }
    }
    kill_group(pgid);
}

fn kill_group(pgid: Pid) {
    // ESRCH: nothing left of the group.
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// Reaps a killed child; `None` if it is not gone by `until` (stuck in the kernel).
fn reap(child: &mut Child, until: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// Waits up to `wait` for output and reads what is there; a pipe at its end is closed.
fn read_ready(
    pipes: &mut [Option<File>; 2],
    output: &mut [Vec<u8>; 2],
    wait: Duration,
) -> io::Result<()> {
    let ready: Vec<usize> = {
        let open: Vec<usize> = (0..2).filter(|&i| pipes[i].is_some()).collect();
        if open.is_empty() {
            std::thread::sleep(wait);
            return Ok(());
        }
        let mut fds: Vec<PollFd> = open
            .iter()
            .filter_map(|&i| pipes[i].as_ref())
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        open.iter()
            .zip(&fds)
            .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(&i, _)| i)
            .collect()
    };
    let mut buf = [0u8; 16 * 1024];
    for i in ready {
        let Some(pipe) = pipes[i].as_mut() else {
            continue;
        };
        match pipe.read(&mut buf) {
            Ok(0) => pipes[i] = None,
            Ok(n) => output[i].extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => pipes[i] = None,
        }
    }
    Ok(())
}
