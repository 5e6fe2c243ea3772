//! The demo's child processes (agent, tray, sshd): started each in its own process group, so
//! that a Ctrl-C in the terminal reaches only the demo (which stops them in order), and sent
//! SIGTERM by the kernel should the demo die without cleaning up (`PR_SET_PDEATHSIG`); stopped
//! in order by [`Cleanup`] however the demo ends.

use super::events::Step;
use super::walkthrough::{Demo, AGENT_START, AGENT_STOP};
use crate::demo::sshd::{self as demo_sshd, HostAccounts};
use crate::demo::DEMO_HOST;
use crate::status::Phase;
use anyhow::{anyhow, Context};
use nix::sys::signal::Signal;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// What must be undone however the demo ends.
pub(super) struct Cleanup {
    pub(super) dir: PathBuf,
    /// The demo made the directory (no `--dir`): it goes at the end.
    pub(super) remove_dir: bool,
    pub(super) agent: Option<Child>,
    pub(super) tray: Option<Child>,
    /// `--sftp`: the demo's sshd, stopped after the agent.
    pub(super) sshd: Option<demo_sshd::Server>,
    /// `--sftp`: the group and host users, deleted after sshd has stopped.
    pub(super) accounts: Option<HostAccounts>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(t) = self.tray.take() {
            stop_child(t, "tiffin-tray", Duration::from_secs(5));
        }
        if let Some(a) = self.agent.take() {
            stop_child(a, "the agent", AGENT_STOP);
        }
        if let Some(mut s) = self.sshd.take() {
            s.stop();
            say!("Stopped sshd.");
        }
        if let Some(acc) = self.accounts.take() {
            let names: Vec<String> = acc.users.iter().map(|u| u.user.clone()).collect();
            let group = acc.group.clone();
            drop(acc);
            say!(
                "Deleted the users {} and the group {group}.",
                names.join(", ")
            );
        }
        if self.remove_dir {
            match fs::remove_dir_all(&self.dir) {
                Ok(()) => say!("Removed the demo directory {}.", self.dir.display()),
                Err(e) => warn!(
                    "tiffin demo: cannot remove {}: {e}; remove it yourself",
                    self.dir.display()
                ),
            }
        } else {
            say!("The demo directory {} stays.", self.dir.display());
        }
    }
}

/// SIGTERM, then SIGKILL when `child` has not ended within `grace`.
fn stop_child(mut child: Child, what: &str, grace: Duration) {
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

impl Demo {
    /// `--sftp`: starts sshd serving the publication, pins its key for the agent and writes the
    /// script that cuts the laptop off it.
    pub(super) fn start_sshd(&mut self) -> Step<()> {
        let s = self.sandbox.clone();
        let accounts = self
            .cleanup
            .accounts
            .as_ref()
            .ok_or_else(|| anyhow!("--sftp without host users"))?;
        let server = demo_sshd::Server::start(&s.sshd_dir(), &s.fleet_config()?, accounts)?;
        let user = accounts.user_of(DEMO_HOST).unwrap_or(DEMO_HOST).to_string();
        crate::fsutil::atomic_write(
            &s.known_hosts(),
            server.known_hosts_line()?.as_bytes(),
            0o644,
        )?;
        server.write_cut_script(&s.cut_script(), &user)?;
        let port = server.port;
        say!(
            "  Each host's directory, symlinks resolved, is now generation 1 under srv/<host>/,\n  \
             owned as the central server's are (root:{group}, logs/ the host's user).\n  \
             sshd (pid {pid}) serves it on 127.0.0.1:{port}, one chroot per host (sshd/sshd_config,\n  \
             the Match blocks of `tiffin fleet sshd-config`).",
            group = accounts.group,
            pid = server.pid().unwrap_or(0),
        );
        self.cleanup.sshd = Some(server);
        if let Some(sftp) = self.sandbox.sftp.as_mut() {
            sftp.port = port;
        }
        say!("  The laptop's agent reads it as {}", self.sandbox.source());
        Ok(())
    }

    /// Starts `tiffin agent` on the demo's agent.toml and waits for its first check.
    pub(super) fn start_agent(&mut self) -> Step<()> {
        let exe = std::env::current_exe().context("finding the tiffin binary")?;
        let log = fs::File::create(self.sandbox.agent_log())?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["agent", "--config"])
            .arg(self.sandbox.agent_config())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        supervise(&mut cmd);
        let child = cmd.spawn().context("starting the agent")?;
        let pid = child.id();
        self.cleanup.agent = Some(child);
        let start = Instant::now();
        loop {
            self.poll()?;
            if let Some(st) = self.fresh_status() {
                if st.last_check.is_some() && st.phase == Phase::Idle {
                    break;
                }
            }
            if let Some(Ok(Some(code))) = self.cleanup.agent.as_mut().map(Child::try_wait) {
                self.cleanup.agent = None;
                return Err(anyhow!(
                    "the agent exited ({code}) while starting; its log:\n{}",
                    self.agent_log_tail()
                )
                .into());
            }
            if start.elapsed() > AGENT_START {
                return Err(anyhow!(
                    "the agent did not answer within {} s; its log:\n{}",
                    AGENT_START.as_secs(),
                    self.agent_log_tail()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        say!("  agent started (pid {pid}): socket run/agent.sock, log agent.log");
        if let Some(addr) = self.http {
            say!("  its HTTP trigger: http://{addr}/ (opening it starts an update)");
        }
        Ok(())
    }

    pub(super) fn agent_log_tail(&self) -> String {
        let text = fs::read_to_string(self.sandbox.agent_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts tiffin-tray when there is a display, it is wanted, and it was built.
    pub(super) fn start_tray(&mut self, a: &super::walkthrough::DemoOptions) {
        let display = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        let tray = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("tiffin-tray")))
            .filter(|p| p.is_file());
        let why_not = match (a.no_tray, display, &tray) {
            (true, _, _) => Some("--no-tray".to_string()),
            (_, false, _) => Some("no display ($DISPLAY and $WAYLAND_DISPLAY are unset)".into()),
            (_, _, None) => {
                Some("tiffin-tray is not next to tiffin (built without the tray?)".into())
            }
            _ => None,
        };
        if let Some(why) = why_not {
            say!("  tray: not started: {why}; the commands below do what its menu does");
            return;
        }
        let Some(tray) = tray else { return };
        let spawned = fs::File::create(self.sandbox.tray_log()).and_then(|log| {
            let mut cmd = std::process::Command::new(&tray);
            cmd.arg("--socket")
                .arg(self.sandbox.socket())
                .env("TIFFIN_SOCKET", self.sandbox.socket())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            supervise(&mut cmd);
            cmd.spawn()
        });
        match spawned {
            Ok(child) => {
                say!(
                    "  tray: tiffin-tray started (pid {}): look for the tiffin icon in your panel",
                    child.id()
                );
                self.cleanup.tray = Some(child);
            }
            Err(e) => say!("  tray: cannot start {}: {e}", tray.display()),
        }
    }

    /// Whether the tray is (still) running; says once when it has ended.
    pub(super) fn tray_running(&mut self) -> bool {
        let Some(t) = self.cleanup.tray.as_mut() else {
            return false;
        };
        match t.try_wait() {
            Ok(None) => true,
            Ok(Some(code)) => {
                if !self.tray_noted {
                    say!(
                        "  (tiffin-tray ended ({code}); see {}; the commands below work without it)",
                        self.sandbox.tray_log().display()
                    );
                    self.tray_noted = true;
                }
                self.cleanup.tray = None;
                false
            }
            Err(_) => false,
        }
    }
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
