//! The walk-through of `tiffin demo`: the whole system on one machine, for someone trying tiffin
//! for the first time.
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
//! `events` is that channel; `session` holds the demo's state (`Demo`, `Cleanup`) and the steps
//! the acts are told with (start the agent, tray and sshd, follow a cycle, wait for Enter);
//! `supervise` runs the children. `cli::demo` only parses the arguments.
//!
//! With `--sftp` (root only) a real sshd on a loopback port serves the publication
//! (`crate::demo::sshd`): the demo adds a group and a system user per host, keys, an sshd, and
//! removes them all at the end.

use super::events::{read_enter_keys, watch_signals, Step, Stop};
pub use super::session::DemoOptions;
use super::session::{Cleanup, Demo};
use super::supervise::free_loopback_port;
use crate::cli::client::summary;
use crate::demo::sandbox::{primary_group, SftpServing};
use crate::demo::sshd::{self as demo_sshd, HostAccounts};
use crate::demo::{Sandbox, DEMO_HOST, HOSTS};
use crate::fleet::status::Style;
use crate::status::{unix_now, Outcome};
use anyhow::{anyhow, Context};
use nix::sys::signal::Signal;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// How the demo ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The walk-through ran to its end.
    Done,
    /// It could not start as asked (e.g. `--sftp` without root).
    Usage,
    /// A step failed (said on stderr).
    Failed,
    /// Stopped by this signal.
    Signal(Signal),
}

/// Runs the demo; how it ended decides the exit code.
pub fn run(a: &DemoOptions) -> anyhow::Result<Ending> {
    if a.sftp && !sftp_possible(a) {
        return Ok(Ending::Usage);
    }
    let (tx, rx) = mpsc::channel();
    // First, so that a Ctrl-C from here on cleans up instead of killing the demo half-way.
    watch_signals(tx.clone())?;
    let (dir, created) = demo_dir(a)?;
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
            return Ok(Ending::Failed);
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
    let code = match demo.walk(a) {
        Ok(()) => Ending::Done,
        Err(Stop::Signal(sig)) => {
            say!("\n{sig}: stopping the demo");
            Ending::Signal(sig)
        }
        Err(Stop::Failed(e)) => {
            warn!("tiffin demo: {e:#}");
            Ending::Failed
        }
    };
    // The agent and the tray stop, and the directory goes (when the demo made it).
    drop(demo);
    Ok(code)
}

/// `--sftp` can run here: as root, and with a `--dir` sshd accepts as a chroot (said on stderr
/// when not).
fn sftp_possible(a: &DemoOptions) -> bool {
    if let Some(why) = demo_sshd::missing_prerequisite() {
        warn!(
            "tiffin demo: --sftp {why}; run it as root, or run `tiffin demo` without it (file://)"
        );
        return false;
    }
    if let Some(d) = &a.dir {
        // sshd refuses a chroot below a directory others may write: say so before starting.
        let existing = d.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        if let Err(e) = fs::canonicalize(existing)
            .map_err(anyhow::Error::from)
            .and_then(|p| demo_sshd::check_root_owned_path(&p))
        {
            warn!("tiffin demo: --dir {}: {e:#}", d.display());
            return false;
        }
    }
    true
}

/// The demo directory, and whether the demo made it (then it goes at the end).
fn demo_dir(a: &DemoOptions) -> anyhow::Result<(PathBuf, bool)> {
    if let Some(d) = &a.dir {
        return Ok((prepare_given_dir(d)?, false));
    }
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
    Ok((t.keep(), true))
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
impl Demo {
    fn walk(&mut self, a: &DemoOptions) -> Step<()> {
        let s = self.sandbox.clone();
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
        self.act_repository()?;
        self.act_publish()?;
        self.act_laptop(a)?;
        self.act_change()?;
        self.act_broken()?;
        self.act_fleet_view()
    }

    /// The fleet repository: what the admin keeps.
    fn act_repository(&mut self) -> Step<()> {
        let s = self.sandbox.clone();
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
        Ok(())
    }

    /// Publishing, and for `--sftp` the sshd that serves it.
    fn act_publish(&mut self) -> Step<()> {
        let s = self.sandbox.clone();
        self.heading("2/6", "Publishing it (tiffin fleet publish)");
        self.publish(&[])?;
        if s.sftp.is_some() {
            self.start_sshd()?;
        } else {
            say!(
                "  Each host's directory, symlinks resolved, is now generation 1 under srv/<host>/ —\n  \
                 what the central SFTP server serves, one chroot per host. Here the agent reads it\n  \
                 through file:// instead."
            );
        }
        Ok(())
    }

    /// The laptop: its (real or simulated) NixOS, its agent, the tray, the subscription.
    fn act_laptop(&mut self, a: &DemoOptions) -> Step<()> {
        let s = self.sandbox.clone();
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
        Ok(())
    }

    /// A change for every host, checked and applied when asked.
    fn act_change(&mut self) -> Step<()> {
        let s = self.sandbox.clone();
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
        Ok(())
    }

    /// A broken change for the laptop: applied, cut off, rolled back.
    fn act_broken(&mut self) -> Step<()> {
        let s = self.sandbox.clone();
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
        Ok(())
    }

    /// The fleet as the admin sees it, then the wait before cleaning up.
    fn act_fleet_view(&mut self) -> Step<()> {
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
}

/// `/…/store/<hash>-nixos-system-laptop` → `<hash…>-nixos-system-laptop`.
pub(super) fn short_system(path: &str) -> String {
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
