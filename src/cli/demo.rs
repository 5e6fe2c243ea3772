//! `tiffin demo`: the whole system on one machine, for someone trying tiffin for the first time.
//!
//! It builds the sandbox (`crate::demo`), starts the demo host's agent (and the tray when there
//! is a display), and walks through: a change is published → update available → update → up to
//! date; a broken change → rolled back; then the fleet as the admin sees it.
//!
//! Everything the walk-through waits for arrives on one channel — Enter, the agent's status
//! events, the answers to its calls, and SIGINT/SIGTERM/SIGHUP — so that a signal is seen at any
//! wait, and the cleanup (stop the agent and the tray, remove the demo directory when the demo
//! made it) runs on the main thread, in `Drop`.
//!
//! With `--sftp` (root only) a real sshd on a loopback port serves the publication
//! (`crate::demo::sshd`): the demo adds a group and a system user per host, keys, an sshd, and
//! removes them all at the end.

use super::client::{outcome_line, progress_line, summary};
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::cycle::CycleReport;
use crate::demo::sandbox::{primary_group, SftpServing};
use crate::demo::sshd::{self as demo_sshd, HostAccounts};
use crate::demo::{Sandbox, DEMO_HOST, HOSTS};
use crate::fleet::publish::HostResult;
use crate::fleet::status::{render_table, Style};
use crate::ipc::report::report_from_value;
use crate::ipc::{Client, Command};
use crate::status::{unix_now, AgentStatus, Outcome, Phase};
use anyhow::{anyhow, Context};
use clap::Args;
use nix::sys::signal::Signal;
use std::fs;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// `println!` that ignores a closed stdout (`tiffin demo | head`): the demo must still clean up.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! warn {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps everything: a new or empty directory, kept afterwards (default: a
    /// new temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Do not start the tray app even when a display is present.
    #[arg(long)]
    pub no_tray: bool,
    /// Run the walk-through without waiting for Enter or clicks.
    #[arg(long)]
    pub script: bool,
    /// Serve the publication through a real local sshd on a loopback port (root only) instead
    /// of file://; the demo directory defaults to a new one under /var/lib/tiffin-demo/.
    #[arg(long)]
    pub sftp: bool,
    /// Run the laptop on the embedded shell scripts even when the Nix installed here can build
    /// (by default the demo uses real Nix, with tiffin's NixOS stand-in, when it can).
    #[arg(long)]
    pub simulated_nix: bool,
}

/// How long the agent may take to start and finish its first check.
const AGENT_START: Duration = Duration::from_secs(30);
/// How long a stopping agent may take: it finishes a cycle in flight (verification included).
const AGENT_STOP: Duration = Duration::from_secs(30);
/// How long one cycle of the walk-through may take before the demo gives up on it.
const CYCLE_LIMIT: Duration = Duration::from_secs(120);

pub fn run(a: DemoArgs) -> anyhow::Result<u8> {
    if a.sftp {
        if let Some(why) = demo_sshd::missing_prerequisite() {
            warn!("tiffin demo: --sftp {why}; run it as root, or run `tiffin demo` without it (file://)");
            return Ok(EXIT_USAGE);
        }
        if let Some(d) = &a.dir {
            // sshd refuses a chroot below a directory others may write: say so before starting.
            let existing = d.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
            if let Err(e) = fs::canonicalize(existing)
                .map_err(anyhow::Error::from)
                .and_then(|p| demo_sshd::check_root_owned_path(&p))
            {
                warn!("tiffin demo: --dir {}: {e:#}", d.display());
                return Ok(EXIT_USAGE);
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    // First, so that a Ctrl-C from here on cleans up instead of killing the demo half-way.
    watch_signals(tx.clone())?;
    let (dir, created) = match &a.dir {
        Some(d) => (prepare_given_dir(d)?, false),
        None => {
            let mut b = tempfile::Builder::new();
            b.prefix("tiffin-demo-");
            let t = if a.sftp {
                // The chroot must be root-owned in every component, so never under /tmp.
                let parent = Path::new(SFTP_DEMO_PARENT);
                demo_sshd::root_dir(parent, 0o755)?;
                b.tempdir_in(parent)
            } else {
                b.tempdir()
            }
            .context("creating the demo directory")?;
            (t.keep(), true)
        }
    };
    let mut sandbox = Sandbox::new(&dir)?;
    let probe = if a.simulated_nix {
        Err("--simulated-nix".to_string())
    } else {
        crate::demo::real_nixos::usable()
    };
    sandbox.real_nix = probe.is_ok();
    sandbox.nix_note = probe.unwrap_or_else(|why| why);
    let mut cleanup = Cleanup {
        dir: sandbox.dir.clone(),
        remove_dir: created,
        agent: None,
        tray: None,
        sshd: None,
        accounts: None,
    };
    if a.sftp {
        if let Err(e) = prepare_sftp(&mut sandbox, &mut cleanup) {
            warn!("tiffin demo: preparing --sftp: {e:#}");
            return Ok(EXIT_FAILED);
        }
    }
    let mut demo = Demo {
        cleanup,
        sandbox,
        tx,
        rx,
        latest: None,
        waits: !a.script,
        input_open: true,
        style: Style::for_stdout(),
        http: None,
        tray_noted: false,
        tiffin: tiffin_command(),
    };
    if demo.waits {
        read_enter_keys(demo.tx.clone());
    }
    let code = match demo.walk(&a) {
        Ok(()) => EXIT_OK,
        Err(Stop::Signal(sig)) => {
            say!("\n{sig}: stopping the demo");
            (128 + sig as i32) as u8
        }
        Err(Stop::Failed(e)) => {
            warn!("tiffin demo: {e:#}");
            EXIT_FAILED
        }
    };
    // The agent and the tray stop, and the directory goes (when the demo made it).
    drop(demo);
    Ok(code)
}

/// Where `--sftp` makes its demo directory.
const SFTP_DEMO_PARENT: &str = "/var/lib/tiffin-demo";

/// `--sftp`, before the walk-through: the directory root-owned and closed, the group and the host
/// users, the laptop's client key (installed as its authorized key).
fn prepare_sftp(sandbox: &mut Sandbox, cleanup: &mut Cleanup) -> anyhow::Result<()> {
    demo_sshd::root_dir(&sandbox.dir, 0o755)?;
    demo_sshd::check_root_owned_path(&sandbox.dir)?;
    let accounts = cleanup.accounts.insert(HostAccounts::create(&HOSTS)?);
    let runner = crate::runner::Runner::new();
    let identity = sandbox.client_identity();
    demo_sshd::keygen(&runner, &identity, &format!("tiffin-agent@{DEMO_HOST}"))?;
    accounts.authorize(
        DEMO_HOST,
        &demo_sshd::public_key(&identity.with_extension("pub"))?,
    )?;
    sandbox.sftp = Some(SftpServing {
        users: accounts
            .users
            .iter()
            .map(|u| (u.host.clone(), u.user.clone()))
            .collect(),
        port: 0,
    });
    Ok(())
}

/// `--dir`: created when missing; an existing one must be an empty directory.
fn prepare_given_dir(d: &Path) -> anyhow::Result<PathBuf> {
    match fs::read_dir(d) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!(
                    "{}: not empty; give `--dir` a new or empty directory (the demo writes a whole fleet into it)",
                    d.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?
        }
        Err(e) => return Err(anyhow!("{}: {e}", d.display())),
    }
    Ok(fs::canonicalize(d)?)
}

/// Why the walk-through stopped early.
enum Stop {
    Signal(Signal),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.into())
    }
}

type Step<T> = Result<T, Stop>;

/// What the walk-through waits for.
enum Event {
    /// The user pressed Enter.
    Enter,
    /// Standard input is closed: nobody will press Enter.
    InputClosed,
    Signal(Signal),
    Status(Box<AgentStatus>),
    /// The status subscription ended (the agent stopped).
    WatchLost(String),
    /// The answer to a `check` or `update` the demo asked for.
    Answer(Result<CycleReport, String>),
}

/// What must be undone however the demo ends.
struct Cleanup {
    dir: PathBuf,
    /// The demo made the directory (no `--dir`): it goes at the end.
    remove_dir: bool,
    agent: Option<Child>,
    tray: Option<Child>,
    /// `--sftp`: the demo's sshd, stopped after the agent.
    sshd: Option<demo_sshd::Server>,
    /// `--sftp`: the group and host users, deleted after sshd has stopped.
    accounts: Option<HostAccounts>,
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

struct Demo {
    sandbox: Sandbox,
    cleanup: Cleanup,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// The agent's latest status, from the subscription.
    latest: Option<AgentStatus>,
    /// Waits for the user between steps (not `--script`).
    waits: bool,
    input_open: bool,
    style: Style,
    http: Option<std::net::SocketAddr>,
    /// The tray's exit was reported.
    tray_noted: bool,
    /// How the user runs this tiffin, for the commands the demo suggests.
    tiffin: String,
}

impl Demo {
    fn walk(&mut self, a: &DemoArgs) -> Step<()> {
        let mut s = self.sandbox.clone();
        // sun_path holds 108 bytes with its NUL; a longer path fails deep inside the agent.
        if s.socket().as_os_str().len() > 107 {
            return Err(anyhow!(
                "{}: too long a path for the agent's socket ({}); use a shorter --dir",
                s.dir.display(),
                s.socket().display()
            )
            .into());
        }
        say!("tiffin demo: the whole system on one machine, in one directory.");
        say!("demo directory: {}", s.dir.display());
        say!(
            "  ({} at the end; nothing outside it is touched. Ctrl-C stops the demo at any time.)",
            if self.cleanup.remove_dir {
                "removed"
            } else {
                "kept"
            }
        );

        self.heading("1/6", "A fleet repository with three hosts");
        s.write_fleet()?;
        say!("  fleet/fleet.toml             hosts {}", HOSTS.join(", "));
        if let Some(sftp) = &s.sftp {
            for (host, user) in &sftp.users {
                say!("                               {host}: system user {user}");
            }
        }
        say!("  fleet/common/base.nix        a module every host shares");
        say!("  fleet/hosts/<host>/          flake.nix, configuration.nix, common -> ../../common");
        say!("  This is the admin's git repository; `tiffin fleet init` starts one.");

        self.heading("2/6", "Publishing it (tiffin fleet publish)");
        self.publish(&[])?;
        if s.sftp.is_some() {
            self.start_sshd()?;
            s = self.sandbox.clone();
        } else {
            say!(
                "  Each host's directory, symlinks resolved, is now generation 1 under srv/<host>/ —\n  \
                 what the central SFTP server serves, one chroot per host. Here the agent reads it\n  \
                 through file:// instead."
            );
        }

        if s.real_nix {
            self.heading(
                "3/6",
                "The laptop: real Nix, a NixOS stand-in, and its agent",
            );
            let system = s.install_machine()?;
            say!("  nixos/        real Nix builds the laptop's systems (nixos-standin/: tiffin's");
            say!("                offline stand-in for nixpkgs) into the real store, with a real");
            say!("                profile; only switch-to-configuration is simulated. Running");
            say!("                {} ({})", short_system(&system), s.nix_note);
        } else {
            self.heading("3/6", "The laptop: a simulated NixOS and its agent");
            let system = s.install_machine()?;
            say!("  nixos/        a simulated NixOS (shell scripts standing in for nix and");
            say!(
                "                switch-to-configuration), running {}",
                short_system(&system)
            );
            say!("                (not real Nix: {})", s.nix_note);
        }
        let group = primary_group()?;
        self.http = free_loopback_port();
        let config = s.write_agent_config(&group, self.http)?;
        s.enroll(config)?;
        say!(
            "  agent.toml    policy \"notify\": a new generation waits until someone asks for it;"
        );
        say!(
            "                members of group {group:?} may update and roll back; verification 5 s"
        );
        say!("  Its first cycle applied generation 1, which builds the system it already runs.");
        self.start_agent()?;
        self.start_tray(a);
        self.start_watch();
        self.poll()?;
        say!("\n  Follow along in another terminal (any time):");
        say!("    export TIFFIN_SOCKET={}", s.socket().display());
        say!(
            "    {} watch      (and status, log, update, rollback)",
            self.tiffin
        );
        self.fleet_table()?;
        self.pause("Press Enter to publish a change for every host.")?;

        self.heading(
            "4/6",
            "A change for every host → update available → update → up to date",
        );
        s.change_common_module()?;
        say!("  fleet/common/base.nix: htop is added to every host's packages.");
        self.publish(&[])?;
        self.check(2)?;
        self.update_when_asked(2)?;
        if let Some(st) = self.fresh_status() {
            say!("\n  `tiffin status` now says:");
            for line in summary(&st, unix_now()).lines() {
                say!("    {line}");
            }
        }
        self.pause("Press Enter to publish a broken change for the laptop.")?;

        self.heading("5/6", "A broken change → rolled back");
        s.break_demo_host()?;
        let knob = |fake: &str, standin: &str| {
            if s.real_nix {
                format!("the NixOS stand-in's knob standin.{standin}")
            } else {
                format!("the simulated NixOS's knob {fake}")
            }
        };
        if s.sftp.is_some() {
            say!(
                "  fleet/hosts/{DEMO_HOST}/configuration.nix: a firewall rule that blocks the way to the\n  \
                 server (and {}: activating this system runs\n  \
                 sshd/cut-{DEMO_HOST}, which locks the laptop's user out of the demo's sshd and ends\n  \
                 its sessions).",
                knob("CUT_SSHD", "cutSshd")
            );
        } else {
            say!(
                "  fleet/hosts/{DEMO_HOST}/configuration.nix: a firewall rule that blocks the way to the\n  \
                 server (and {}: activating this system cuts the\n  \
                 laptop off the server).",
                knob("CUT_NETWORK", "cutNetwork")
            );
        }
        self.publish(&[DEMO_HOST])?;
        self.check(3)?;
        say!(
            "  When it is applied, the agent activates it without making it the boot default, then\n  \
             verifies that it can still reach the server. It cannot, so it rolls back."
        );
        let r = self.update_when_asked(3)?;
        if let Some(st) = self.fresh_status() {
            say!(
                "  The laptop runs generation {} again; generation 3 is not tried again until a newer\n  \
                 one is published.",
                st.applied_generation
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "?".into())
            );
        }
        if self.tray_running() {
            say!("  In the tray: the icon shows the rollback; \"Show last log\" in its menu has the cycle's log.");
        }
        if r.outcome != Outcome::RolledBack {
            say!(
                "  (This time the outcome was {:?} instead of a rollback.)",
                r.outcome
            );
        }

        self.heading(
            "6/6",
            "The fleet as the admin sees it (tiffin fleet status)",
        );
        self.fleet_table()?;
        say!(
            "  {DEMO_HOST}: rolled back to generation 2, with its report; the other hosts have no\n  \
             agent in this demo, so they were never seen."
        );
        self.pause(
            "The demo is over. The agent (and the tray) keep running until you press Enter: try\n\
             `tiffin status`, `tiffin log`, `tiffin rollback` or the tray's menu. Press Enter to stop\n\
             and clean up.",
        )?;
        Ok(())
    }

    fn heading(&self, n: &str, title: &str) {
        if self.style.colour {
            say!("\n\x1b[1m[{n}] {title}\x1b[0m");
        } else {
            say!("\n[{n}] {title}");
        }
    }

    fn publish(&mut self, hosts: &[&str]) -> Step<()> {
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

    fn fleet_table(&self) -> Step<()> {
        let view = self.sandbox.fleet_status()?;
        say!();
        for line in render_table(&view, self.style).lines() {
            say!("  {line}");
        }
        Ok(())
    }

    /// `--sftp`: starts sshd serving the publication, pins its key for the agent and writes the
    /// script that cuts the laptop off it.
    fn start_sshd(&mut self) -> Step<()> {
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
    fn start_agent(&mut self) -> Step<()> {
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

    fn agent_log_tail(&self) -> String {
        let text = fs::read_to_string(self.sandbox.agent_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts tiffin-tray when there is a display, it is wanted, and it was built.
    fn start_tray(&mut self, a: &DemoArgs) {
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
    fn tray_running(&mut self) -> bool {
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
    fn start_watch(&self) {
        let socket = self.sandbox.socket();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let end = (|| -> Result<(), crate::ipc::ClientError> {
                let mut c = Client::connect(&socket)?;
                let first = c.call(Command::Subscribe)?;
                if let Ok(s) = serde_json::from_value::<AgentStatus>(first) {
                    if tx.send(Event::Status(Box::new(s))).is_err() {
                        return Ok(());
                    }
                }
                loop {
                    let crate::ipc::Event::Status(s) = c.next_event()?;
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
    fn fresh_status(&self) -> Option<AgentStatus> {
        let mut c = Client::connect(&self.sandbox.socket()).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        c.status().ok()
    }

    /// Sends `cmd` on its own connection; the answer arrives as [`Event::Answer`].
    fn call(&self, cmd: Command) {
        let socket = self.sandbox.socket();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let answer = Client::connect(&socket)
                .and_then(|mut c| c.call(cmd))
                .map_err(|e| e.to_string())
                .and_then(report_from_value);
            let _ = tx.send(Event::Answer(answer));
        });
    }

    /// The next event; a signal stops the walk-through, a status is remembered.
    fn next(&mut self, timeout: Duration) -> Step<Option<Event>> {
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
    fn poll(&mut self) -> Step<()> {
        while self.next(Duration::ZERO)?.is_some() {}
        Ok(())
    }

    fn waiting_for_user(&self) -> bool {
        self.waits && self.input_open
    }

    /// Waits for Enter (not under `--script`).
    fn pause(&mut self, prompt: &str) -> Step<()> {
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
    fn check(&mut self, g: u64) -> Step<()> {
        say!("  The agent checks the server (`tiffin check`; it also checks every 10 minutes):");
        self.call(Command::Check);
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
    fn answer(&mut self) -> Step<CycleReport> {
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
    fn update_when_asked(&mut self, g: u64) -> Step<CycleReport> {
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
            self.call(Command::Update);
        }
        self.follow(g, since)
    }

    /// Prints each phase of the cycle applying `g` until it has ended.
    fn follow(&mut self, g: u64, since: u64) -> Step<CycleReport> {
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
}

/// The cycle applying `g` is under way, or has ended, since `since`.
fn started(s: &AgentStatus, g: u64, since: u64) -> bool {
    s.phase.is_busy() || finished(s, g, since).is_some()
}

/// The end of the cycle that applied `g`, once the agent is idle again.
fn finished(s: &AgentStatus, g: u64, since: u64) -> Option<CycleReport> {
    let u = s.last_update.as_ref()?;
    (s.phase == Phase::Idle && u.generation == g && u.at >= since).then(|| CycleReport {
        outcome: u.outcome,
        generation: Some(u.generation),
        failed_step: u.failed_step,
        message: u.message.clone(),
    })
}

/// `/…/store/<hash>-nixos-system-laptop` → `<hash…>-nixos-system-laptop`.
fn short_system(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// `tiffin` when that is what PATH finds, else this binary's full path (`make demo` runs it
/// from target/).
fn tiffin_command() -> String {
    let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|e| fs::canonicalize(e).ok())
    else {
        return "tiffin".into();
    };
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("tiffin"))
            .find(|c| c.is_file())
            .and_then(|c| fs::canonicalize(c).ok())
    });
    if on_path.as_ref() == Some(&exe) {
        "tiffin".into()
    } else {
        exe.display().to_string()
    }
}

/// A loopback address with a free port for the HTTP trigger (None: the trigger stays off).
fn free_loopback_port() -> Option<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()
}

/// The demo's children: in their own process group, so that a Ctrl-C in the terminal reaches
/// only the demo (which stops them in order), and sent SIGTERM by the kernel should the demo
/// die without cleaning up.
fn supervise(cmd: &mut std::process::Command) {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// SIGINT, SIGTERM and SIGHUP become [`Event::Signal`]. Returns once the handlers are in place.
fn watch_signals(tx: Sender<Event>) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            use tokio::signal::unix::{signal, SignalKind};
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let streams = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                );
                let (Ok(mut int), Ok(mut term), Ok(mut hup)) = streams else {
                    let _ = ready_tx.send(Err("cannot listen for signals".into()));
                    return;
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    let sig = tokio::select! {
                        _ = int.recv() => Signal::SIGINT,
                        _ = term.recv() => Signal::SIGTERM,
                        _ = hup.recv() => Signal::SIGHUP,
                    };
                    if tx.send(Event::Signal(sig)).is_err() {
                        return;
                    }
                }
            });
        })
        .context("starting the signal thread")?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the signal thread ended"))?
        .map_err(|e| anyhow!("{e}"))
}

/// Each line on standard input is an [`Event::Enter`]; its end is [`Event::InputClosed`].
fn read_enter_keys(tx: Sender<Event>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() || tx.send(Event::Enter).is_err() {
                break;
            }
        }
        let _ = tx.send(Event::InputClosed);
    });
}
