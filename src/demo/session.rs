//! The demo's state while it runs: the sandbox, the processes it started and what must be undone
//! ([`Cleanup`]), the agent's latest status, and the channel of [`Event`]s. Its methods start
//! the agent, the tray and sshd, follow the agent's cycles and wait for the user; the acts of
//! the walk-through (`walkthrough`) are told with them.

use super::events::{finished, started, Event, Step, Stop};
use super::supervise::{stop_child, supervise};
use crate::cli::client::{outcome_line, progress_line};
use crate::cycle::CycleReport;
use crate::demo::sshd::{self as demo_sshd, HostAccounts};
use crate::demo::{Sandbox, DEMO_HOST};
use crate::fleet::publish::HostResult;
use crate::fleet::status::{render_table, Style};
use crate::ipc::{Client, CycleCall};
use crate::status::{unix_now, AgentStatus, Outcome, Phase};
use anyhow::{anyhow, Context};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// What `tiffin demo` was asked for (`cli::demo` fills it from the command line).
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// Where the demo keeps everything (default: a new temporary directory, removed at the end).
    pub dir: Option<PathBuf>,
    /// Do not start the tray app even when a display is present.
    pub no_tray: bool,
    /// Run without waiting for Enter or clicks.
    pub script: bool,
    /// Serve the publication through a real local sshd (root only).
    pub sftp: bool,
    /// Use the embedded shell scripts even when the Nix installed here can build.
    pub simulated_nix: bool,
}

/// How long the agent may take to start and finish its first check.
pub(super) const AGENT_START: Duration = Duration::from_secs(30);
/// How long a stopping agent may take: it finishes a cycle in flight (verification included).
pub(super) const AGENT_STOP: Duration = Duration::from_secs(30);
/// How long one cycle of the walk-through may take before the demo gives up on it.
pub(super) const CYCLE_LIMIT: Duration = Duration::from_secs(120);

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

pub(super) struct Demo {
    pub(super) sandbox: Sandbox,
    pub(super) cleanup: Cleanup,
    pub(super) tx: Sender<Event>,
    pub(super) rx: Receiver<Event>,
    /// The agent's latest status, from the subscription.
    pub(super) latest: Option<AgentStatus>,
    /// Waits for the user between steps (not `--script`).
    pub(super) waits: bool,
    pub(super) input_open: bool,
    pub(super) style: Style,
    pub(super) http: Option<std::net::SocketAddr>,
    /// The tray's exit was reported.
    pub(super) tray_noted: bool,
    /// How the user runs this tiffin, for the commands the demo suggests.
    pub(super) tiffin: String,
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
    pub(super) fn start_tray(&mut self, a: &DemoOptions) {
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

    /// Forwards the agent's status events to the walk-through's channel.
    pub(super) fn start_watch(&self) {
        let socket = self.sandbox.socket();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let end = (|| -> Result<(), crate::ipc::ClientError> {
                let mut c = Client::connect(&socket)?;
                let first = c.subscribe()?;
                if tx.send(Event::Status(Box::new(first))).is_err() {
                    return Ok(());
                }
                loop {
                    let s = c.next_status()?;
                    if tx.send(Event::Status(Box::new(s))).is_err() {
                        return Ok(());
                    }
                }
            })();
            if let Err(e) = end {
                let _ = tx.send(Event::WatchLost(e.to_string()));
            }
        });
    }

    /// The agent's status asked now (not from the subscription, which may lag an answer).
    pub(super) fn fresh_status(&self) -> Option<AgentStatus> {
        let mut c = Client::connect(&self.sandbox.socket()).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        c.status().ok()
    }

    /// Sends `call` on its own connection; the answer arrives as [`Event::Answer`].
    pub(super) fn call(&self, call: CycleCall) {
        let socket = self.sandbox.socket();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let answer = Client::connect(&socket)
                .and_then(|mut c| c.cycle(call, &mut |_| {}))
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::Answer(answer));
        });
    }

    /// The next event; a signal stops the walk-through, a status is remembered.
    pub(super) fn next(&mut self, timeout: Duration) -> Step<Option<Event>> {
        let ev = match self.rx.recv_timeout(timeout) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => return Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(anyhow!("the demo's event channel closed").into())
            }
        };
        match ev {
            Event::Signal(sig) => Err(Stop::Signal(sig)),
            Event::Status(s) => {
                self.latest = Some((*s).clone());
                Ok(Some(Event::Status(s)))
            }
            Event::WatchLost(why) => Err(anyhow!(
                "lost the agent ({why}); its log:\n{}",
                self.agent_log_tail()
            )
            .into()),
            Event::InputClosed => {
                if self.input_open && self.waits {
                    say!("  (standard input is closed: the demo goes on without waiting)");
                }
                self.input_open = false;
                Ok(Some(Event::InputClosed))
            }
            other => Ok(Some(other)),
        }
    }

    /// Handles what has arrived without waiting (a signal stops here).
    pub(super) fn poll(&mut self) -> Step<()> {
        while self.next(Duration::ZERO)?.is_some() {}
        Ok(())
    }

    pub(super) fn waiting_for_user(&self) -> bool {
        self.waits && self.input_open
    }

    /// Waits for Enter (not under `--script`).
    pub(super) fn pause(&mut self, prompt: &str) -> Step<()> {
        self.poll()?;
        self.tray_running();
        if !self.waiting_for_user() {
            return Ok(());
        }
        say!("\n{prompt}");
        loop {
            match self.next(Duration::from_secs(3600))? {
                Some(Event::Enter) | Some(Event::InputClosed) => return Ok(()),
                _ => {}
            }
        }
    }

    /// `tiffin check`: the agent looks at the server; under policy notify it only tells.
    pub(super) fn check(&mut self, g: u64) -> Step<()> {
        say!("  The agent checks the server (`tiffin check`; it also checks every 10 minutes):");
        self.call(CycleCall::Check);
        let r = self.answer()?;
        if r.outcome == Outcome::Failed {
            return Err(anyhow!("the check failed: {}", outcome_line(&r)).into());
        }
        match self.fresh_status().and_then(|s| s.available_generation) {
            Some(a) if a == g => {
                say!("  generation {g} is available: the agent waits for a click.")
            }
            other => {
                return Err(anyhow!(
                    "after the check the agent offers generation {other:?}, not {g}"
                )
                .into())
            }
        }
        Ok(())
    }

    /// Waits for the answer to the call in flight.
    pub(super) fn answer(&mut self) -> Step<CycleReport> {
        let start = Instant::now();
        while start.elapsed() < CYCLE_LIMIT {
            if let Some(Event::Answer(r)) = self.next(Duration::from_millis(500))? {
                return r.map_err(|e| Stop::Failed(anyhow!("the agent: {e}")));
            }
        }
        Err(anyhow!(
            "the agent did not answer within {} s",
            CYCLE_LIMIT.as_secs()
        )
        .into())
    }

    /// Says how to apply generation `g`, waits for Enter or for someone else to start it (the
    /// tray, `tiffin update`, the HTTP trigger), follows the cycle and returns how it ended.
    pub(super) fn update_when_asked(&mut self, g: u64) -> Step<CycleReport> {
        let since = unix_now();
        let socket = self.sandbox.socket();
        if self.waiting_for_user() {
            say!();
            let update = format!("`{} update --socket {}`", self.tiffin, socket.display());
            if self.tray_running() {
                say!("  In the tray: the tiffin icon shows an update; open its menu and click \"Update now\".");
                say!("  Or run {update},");
            } else {
                say!("  Apply it: run {update},");
            }
            if let Some(addr) = self.http {
                say!("  or open http://{addr}/ in a browser,");
            }
            say!("  or press Enter here.");
        }
        let mut asked = false;
        if self.waiting_for_user() {
            loop {
                match self.next(Duration::from_secs(3600))? {
                    Some(Event::Enter) | Some(Event::InputClosed) => break,
                    Some(Event::Status(s)) if started(&s, g, since) => {
                        say!("  The agent started the update (asked by the tray, `tiffin update` or the HTTP trigger):");
                        asked = true;
                        break;
                    }
                    _ => {}
                }
            }
        }
        if !asked {
            say!("  The demo asks the agent to update (`tiffin update`):");
            self.call(CycleCall::Update);
        }
        self.follow(g, since)
    }

    /// Prints each phase of the cycle applying `g` until it has ended.
    pub(super) fn follow(&mut self, g: u64, since: u64) -> Step<CycleReport> {
        let start = Instant::now();
        let mut shown: Option<Phase> = None;
        let mut answer: Option<CycleReport> = None;
        let show = |s: &AgentStatus, shown: &mut Option<Phase>| {
            if s.phase != Phase::Idle && *shown != Some(s.phase) {
                say!(
                    "    {:>5.1} s  {}",
                    start.elapsed().as_secs_f64(),
                    progress_line(s)
                );
                *shown = Some(s.phase);
            }
        };
        if let Some(s) = self.latest.clone() {
            show(&s, &mut shown);
        }
        loop {
            if start.elapsed() > CYCLE_LIMIT {
                return Err(anyhow!(
                    "the update of generation {g} did not end within {} s",
                    CYCLE_LIMIT.as_secs()
                )
                .into());
            }
            match self.next(Duration::from_millis(500))? {
                Some(Event::Status(s)) => {
                    show(&s, &mut shown);
                    if let Some(r) = finished(&s, g, since) {
                        // Our own call's answer, when there is one, has the same content.
                        let r = answer.take().unwrap_or(r);
                        say!("  {}", outcome_line(&r));
                        return Ok(r);
                    }
                }
                Some(Event::Answer(Ok(r))) => answer = Some(r),
                Some(Event::Answer(Err(e))) => return Err(anyhow!("`update` failed: {e}").into()),
                _ => {}
            }
        }
    }

    pub(super) fn heading(&self, n: &str, title: &str) {
        if self.style.colour {
            say!("\n\x1b[1m[{n}] {title}\x1b[0m");
        } else {
            say!("\n[{n}] {title}");
        }
    }

    pub(super) fn publish(&mut self, hosts: &[&str]) -> Step<()> {
        let reports = self.sandbox.publish(hosts)?;
        for h in reports {
            let what = match h.result {
                HostResult::Published { generation, .. } => format!("generation {generation}"),
                HostResult::Unchanged { generation } => {
                    format!("unchanged, still generation {generation}")
                }
                HostResult::WouldPublish { generation } => format!("would be {generation}"),
                HostResult::Failed { error } => format!("failed: {error}"),
            };
            say!(
                "  published {:<8} {what} ({} files, {} bytes)",
                h.host,
                h.files,
                h.bytes
            );
        }
        self.poll()
    }

    pub(super) fn fleet_table(&self) -> Step<()> {
        let view = self.sandbox.fleet_status()?;
        say!();
        for line in render_table(&view, self.style).lines() {
            say!("  {line}");
        }
        Ok(())
    }
}
