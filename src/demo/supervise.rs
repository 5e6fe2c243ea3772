//! The demo's child processes (agent, tray, sshd): started each in its own process group, so
//! that a Ctrl-C in the terminal reaches only the demo (which stops them in order), and sent
//! SIGTERM by the kernel should the demo die without cleaning up (`PR_SET_PDEATHSIG`); stopped
//! with SIGTERM, then SIGKILL after a grace period (`session::Cleanup` stops them in order however
//! the demo ends).

use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Puts `cmd`'s child in a process group of its own and has it end with the demo.
pub fn supervise(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: `pre_exec` is unsafe because the closure runs in the forked child before exec,
    // where only async-signal-safe calls are allowed. `set_pdeathsig` is one prctl(2) call and,
    // on failure, reads errno; neither allocates nor takes a lock, and the closure touches no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
}

/// SIGTERM, then SIGKILL when `child` has not ended within `grace`.
pub(super) fn stop_child(mut child: Child, what: &str, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            say!("Stopped {what}.");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    warn!(
        "tiffin demo: {what} did not stop within {} s; killing it",
        grace.as_secs()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback address with a free port for the HTTP trigger (None: the trigger stays off).
pub(super) fn free_loopback_port() -> Option<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    /// The child leads its own process group.
    #[test]
    fn child_leads_its_own_process_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo $$ $(cut -d' ' -f5 /proc/$$/stat)"])
            .stdout(std::process::Stdio::piped());
        supervise(&mut cmd);
        let out = cmd.output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut it = text.split_whitespace();
        let (pid, pgid) = (it.next().unwrap(), it.next().unwrap());
        assert_eq!(pid, pgid, "the child leads its own process group");
    }

    /// The kernel sends SIGTERM when the parent goes. The parent-death signal follows the thread
    /// that forked, so a thread that spawns the child and ends stands in for a demo that died.
    #[test]
    fn child_gets_sigterm_when_its_parent_ends() {
        let mut child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            supervise(&mut cmd);
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let status = status.expect("the child outlived its parent by 5 s");
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
    }
}
