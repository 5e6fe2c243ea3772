//! The demo directory and everything in it:
//!
//! ```text
//! <dir>/fleet/        the admin's repository: fleet.toml, common/, hosts/<name>/ (common -> ../../common)
//! <dir>/srv/          the chroot root `fleet publish` writes (what the SFTP server would serve)
//! <dir>/fake-nixos/   the simulated NixOS's scripts (without real Nix)
//! <dir>/nixos-standin/ the NixOS stand-in real Nix builds (with real Nix)
//! <dir>/nixos/        the demo host's NixOS (profile, current/booted system; the fake store)
//! <dir>/state/        the agent's state directory
//! <dir>/run/agent.sock, <dir>/agent.toml, <dir>/agent.log, <dir>/tray.log
//! with --sftp also:
//! <dir>/sshd/         sshd_config, the server's host key, sshd.pid, sshd.log, cut-laptop
//! <dir>/id_laptop     the laptop's client key; <dir>/known_hosts pins the server's key
//! ```

use super::fake_nixos::{toml_string, FakeNixos};
use crate::agent::Pipeline;
use crate::config::{AgentConfig, FleetConfig};
use crate::cycle::{CycleReport, CycleRequest};
use crate::fleet::publish::{publish, HostReport, HostResult, PublishOptions};
use crate::fleet::status::{fleet_status, FleetStatus};
use crate::fleet::Publication;
use crate::fsutil::{self, with_path};
use crate::status::{unix_now, AgentStatus, Outcome};
use anyhow::{bail, Context};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The host whose agent the demo runs.
pub const DEMO_HOST: &str = "laptop";
/// The demo fleet, in the order the demo names them.
pub const HOSTS: [&str; 3] = [DEMO_HOST, "desktop", "server"];

/// Parses as an ed25519 key and lets nobody in: no sshd serves the demo.
const PLACEHOLDER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The module every host imports through its `common` symlink.
const BASE_NIX: &str = r#"# Shared by every host: hosts/<name>/common is a symlink to ../../common, and
# `tiffin fleet publish` resolves it, so each host's publication holds its own copy.
{ pkgs, ... }:
{
  time.timeZone = "Europe/Berlin";
  environment.systemPackages = with pkgs; [ git vim ];
  users.motd = "This machine is managed by tiffin: local changes to its configuration are overwritten.";
}
"#;

/// The line the first change of the walk-through edits.
const PACKAGES_BEFORE: &str = "environment.systemPackages = with pkgs; [ git vim ];";
const PACKAGES_AFTER: &str = "environment.systemPackages = with pkgs; [ git vim htop ];";

const TIFFIN_NIX: &str = r#"# Shared by every host: the tiffin agent keeps the machine on the configuration published for it
# (tiffin's NixOS module, packaging/nixos/agent.nix).
{ config, ... }:
{
  services.tiffin.agent = {
    enable = true;
    server = "fleet.example.org";
    interval = "10m";
  };
}
"#;

/// What the broken change adds to the demo host's configuration.
const BROKEN_RULE: &str = r#"
  # A firewall rule that blocks the way to the fleet server: once this system is active, the
  # machine cannot reach the server any more, so its agent rolls back.
  networking.firewall.extraCommands = "iptables -A OUTPUT -p tcp --dport 22 -j REJECT";
"#;

/// The simulated NixOS's knob (assets/fake-nixos/lib.sh): activating a system built from a
/// tree with this file moves the publication aside, as if the network were cut.
const CUT_NETWORK: &str = "CUT_NETWORK";
/// Its knob for a real server: activating such a system runs `cut-sshd-hook cut`.
const CUT_SSHD: &str = "CUT_SSHD";

/// With `--sftp`: who the hosts are on the demo's sshd.
#[derive(Clone, Debug)]
pub struct SftpServing {
    /// (host, system user), for every host.
    pub users: Vec<(String, String)>,
    /// sshd's loopback port (0 until it runs).
    pub port: u16,
}

impl SftpServing {
    pub fn user_of(&self, host: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, u)| u.as_str())
    }
}

/// The demo directory.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// Absolute.
    pub dir: PathBuf,
    /// Served by a real sshd (`--sftp`) instead of read through file://.
    pub sftp: Option<SftpServing>,
    /// The laptop runs on real Nix (the NixOS stand-in) instead of the fake scripts.
    pub real_nix: bool,
    /// The Nix version found, or why the demo does not use real Nix.
    pub nix_note: String,
}

impl Sandbox {
    /// The sandbox in `dir` (made absolute).
    pub fn new(dir: &Path) -> io::Result<Self> {
        let dir = fs::canonicalize(dir).map_err(|e| with_path(e, dir))?;
        Ok(Self {
            dir,
            sftp: None,
            real_nix: false,
            nix_note: String::new(),
        })
    }

    pub fn fleet(&self) -> PathBuf {
        self.dir.join("fleet")
    }
    pub fn chroot(&self) -> PathBuf {
        self.dir.join("srv")
    }
    /// The demo host's publication: its agent's `file://` source.
    pub fn publication(&self) -> PathBuf {
        self.chroot().join(DEMO_HOST)
    }
    pub fn machine(&self) -> FakeNixos {
        FakeNixos {
            root: self.dir.join("nixos"),
            scripts: self.dir.join("fake-nixos"),
        }
    }
    /// The laptop on real Nix.
    pub fn real_machine(&self) -> super::real_nixos::RealNixos {
        super::real_nixos::RealNixos {
            root: self.dir.join("nixos"),
            standin: self.dir.join("nixos-standin"),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run").join("agent.sock")
    }
    pub fn files_root(&self) -> PathBuf {
        self.dir.join("fsroot")
    }
    pub fn agent_config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }
    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }
    pub fn tray_log(&self) -> PathBuf {
        self.dir.join("tray.log")
    }
    /// With `--sftp`: sshd's config, host key, pid file and log.
    pub fn sshd_dir(&self) -> PathBuf {
        self.dir.join("sshd")
    }
    /// With `--sftp`: the script the simulated NixOS runs to cut the laptop off sshd.
    pub fn cut_script(&self) -> PathBuf {
        self.sshd_dir().join(format!("cut-{DEMO_HOST}"))
    }
    /// With `--sftp`: the laptop agent's private key.
    pub fn client_identity(&self) -> PathBuf {
        self.dir.join(format!("id_{DEMO_HOST}"))
    }
    /// The demo fleet's secret signing key (`keys/fleet-signing.key`, as `fleet init` makes it).
    pub fn signing_key(&self) -> PathBuf {
        self.fleet().join(crate::config::fleet::DEFAULT_SIGNING_KEY)
    }
    /// Its public key: the demo host agent's `trusted_key`.
    pub fn trusted_key(&self) -> PathBuf {
        crate::sign::public_path_for(&self.signing_key())
    }
    /// With `--sftp`: the laptop agent's known_hosts.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Writes the fleet repository: three hosts sharing `common/` through symlinks.
    pub fn write_fleet(&self) -> io::Result<()> {
        let fleet = self.fleet();
        let served_by = if self.sftp.is_some() {
            "the demo's own sshd on a\n# loopback port serves it (`tiffin demo --sftp`)"
        } else {
            "no\n# SFTP server serves it; the demo host's agent reads it through file://"
        };
        let mut toml = format!(
            "# The demo fleet, written by `tiffin demo`. `chroot` is the demo's own directory: {served_by}.\n\
             chroot = {}\nserver = \"localhost\"\nport = 22\nkeep_generations = 3\n",
            toml_string(&self.chroot().to_string_lossy())
        );
        for host in HOSTS {
            let served = self.sftp.as_ref().and_then(|s| s.user_of(host));
            let key = match served {
                Some(_) if host == DEMO_HOST => {
                    let pub_file = self.client_identity().with_extension("pub");
                    let text =
                        fs::read_to_string(&pub_file).map_err(|e| with_path(e, &pub_file))?;
                    text.trim().to_string()
                }
                _ => format!("{PLACEHOLDER_KEY} {host}@demo"),
            };
            toml.push_str(&format!("\n[hosts.{host}]\nkey = {}\n", toml_string(&key)));
            if let Some(user) = served {
                toml.push_str(&format!("user = {}\n", toml_string(user)));
            }
        }
        write(&fleet.join("fleet.toml"), &toml)?;
        // Signed by default, as `tiffin fleet init` makes a fleet: the demo host's agent trusts
        // this key (`trusted_key` in its agent.toml).
        crate::sign::SecretKey::generate()
            .and_then(|k| k.save(&self.signing_key(), "tiffin demo", true).map(|_| ()))
            .map_err(io::Error::other)?;
        write(&fleet.join("common/base.nix"), BASE_NIX)?;
        write(&fleet.join("common/tiffin.nix"), TIFFIN_NIX)?;
        for host in HOSTS {
            let dir = fleet.join("hosts").join(host);
            let flake = if self.real_nix {
                standin_flake_nix(host, &self.real_machine().standin)
            } else {
                flake_nix(host)
            };
            write(&dir.join("flake.nix"), &flake)?;
            write(&dir.join("configuration.nix"), &configuration_nix(host, ""))?;
            let link = dir.join("common");
            std::os::unix::fs::symlink("../../common", &link).map_err(|e| with_path(e, &link))?;
        }
        Ok(())
    }

    /// The first change: a package for every host, in the shared module.
    pub fn change_common_module(&self) -> io::Result<PathBuf> {
        let path = self.fleet().join("common/base.nix");
        let text = fs::read_to_string(&path).map_err(|e| with_path(e, &path))?;
        if !text.contains(PACKAGES_BEFORE) {
            return Err(io::Error::other(format!(
                "{}: the line to change ({PACKAGES_BEFORE}) is not there",
                path.display()
            )));
        }
        write(&path, &text.replace(PACKAGES_BEFORE, PACKAGES_AFTER))?;
        Ok(path)
    }

    /// The broken change: the demo host's firewall cuts it off the server.
    pub fn break_demo_host(&self) -> io::Result<PathBuf> {
        let dir = self.fleet().join("hosts").join(DEMO_HOST);
        let path = dir.join("configuration.nix");
        // Over SFTP the cut is real: activation runs the cut-sshd-hook, which locks the laptop
        // out of the demo's sshd; over file:// the publication is moved aside.
        let knob = if self.sftp.is_some() {
            CUT_SSHD
        } else {
            CUT_NETWORK
        };
        // The stand-in on real Nix reads its knob from the configuration.
        let standin_knob = if self.real_nix {
            let k = if knob == CUT_SSHD {
                "cutSshd"
            } else {
                "cutNetwork"
            };
            format!("  standin.{k} = true;  # the NixOS stand-in's knob: activating this system cuts the machine off\n")
        } else {
            String::new()
        };
        write(
            &path,
            &configuration_nix(DEMO_HOST, &format!("{BROKEN_RULE}{standin_knob}")),
        )?;
        write(
            &dir.join(knob),
            "Knob of tiffin's simulated NixOS: activating this system cuts the machine off the server.\n",
        )?;
        Ok(path)
    }

    /// Publishes `hosts` (all when empty) into the demo's chroot; a host that is not published
    /// is an error.
    pub fn publish(&self, hosts: &[&str]) -> anyhow::Result<Vec<HostReport>> {
        let config = self.fleet_config()?;
        let opts = PublishOptions {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            // Without sshd the publication stays the user's, also as root: no host users. With
            // it, ownership follows the sshd contract (root:group, logs/ the host user's).
            keep_owner: self.sftp.is_none(),
            ..PublishOptions::default()
        };
        let report = publish(&self.fleet(), &config, &opts)?;
        for h in &report.hosts {
            if let HostResult::Failed { error } = &h.result {
                bail!("publishing {}: {error}", h.host);
            }
        }
        Ok(report.hosts)
    }

    pub fn fleet_config(&self) -> anyhow::Result<FleetConfig> {
        Ok(FleetConfig::load(&self.fleet())?)
    }

    /// What `tiffin fleet status` shows of the demo fleet now.
    pub fn fleet_status(&self) -> anyhow::Result<FleetStatus> {
        Ok(fleet_status(&self.fleet_config()?, unix_now()))
    }

    /// Installs the simulated NixOS of the demo host, running the system built from its live
    /// publication (the machine as it was before its agent first ran). Returns that system.
    pub fn install_machine(&self) -> anyhow::Result<String> {
        let publication = Publication::new(&self.chroot(), DEMO_HOST);
        let live = fs::canonicalize(publication.current_link())
            .with_context(|| format!("{DEMO_HOST} is not published"))?;
        if self.real_nix {
            let m = super::real_nixos::RealNixos::install(
                &self.dir.join("nixos-standin"),
                &self.dir.join("nixos"),
                &self.publication(),
            )?;
            if self.sftp.is_some() {
                fsutil::atomic_write(
                    &m.root.join("cut-sshd-hook"),
                    format!("{}\n", self.cut_script().display()).as_bytes(),
                    0o644,
                )?;
            }
            return m.init(&live.join(crate::publication::TREE), DEMO_HOST);
        }
        let machine = FakeNixos::install(
            &self.dir.join("fake-nixos"),
            &self.dir.join("nixos"),
            &self.publication(),
        )?;
        if self.sftp.is_some() {
            let hook = machine.root.join("cut-sshd-hook");
            fsutil::atomic_write(
                &hook,
                format!("{}\n", self.cut_script().display()).as_bytes(),
                0o644,
            )?;
        }
        machine.init(&live.join(crate::publication::TREE), DEMO_HOST)
    }

    /// Writes agent.toml for the demo host: everything inside the demo directory, policy
    /// `notify` (so that "update available" is visible until someone clicks), the socket and
    /// the right to roll back for `group` (the user's own group).
    pub fn write_agent_config(
        &self,
        group: &str,
        http_trigger: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<AgentConfig> {
        let q = |p: PathBuf| toml_string(&p.to_string_lossy());
        let text = format!(
            "# The demo host's agent, written by `tiffin demo`. Reference: README, \"agent.toml\".\n\
             host = \"{DEMO_HOST}\"\nsource = {source}\nstate_dir = {state}\nsocket = {socket}\n\
             socket_group = {group}\nadmin_group = {group}\npolicy = \"notify\"\ninterval = \"10m\"\n\
             jitter = \"0s\"\n# Short, so that the broken change rolls back quickly.\n\
             verify_timeout = \"5s\"\nhttp_trigger = {http}\n\
             # Every publication must be signed by the demo fleet's key.\ntrusted_key = {trusted}\n{sftp}\n{system}",
            trusted = q(self.trusted_key()),
            source = toml_string(&self.source()),
            state = q(self.state()),
            socket = q(self.socket()),
            group = toml_string(group),
            http = toml_string(&http_trigger.map(|a| a.to_string()).unwrap_or_default()),
            system = if self.real_nix {
                self.real_machine().system_section(&self.files_root())
            } else {
                self.machine().system_section(&self.files_root())
            },
            sftp = if self.sftp.is_some() {
                format!(
                    "identity = {}\nknown_hosts = {}\n",
                    q(self.client_identity()),
                    q(self.known_hosts())
                )
            } else {
                String::new()
            },
        );
        fs::create_dir_all(self.files_root()).map_err(|e| with_path(e, &self.files_root()))?;
        let path = self.agent_config();
        write(&path, &text)?;
        Ok(AgentConfig::load(&path)?)
    }

    /// The demo host agent's source: the demo's sshd, or the publication through file://.
    pub fn source(&self) -> String {
        match &self.sftp {
            Some(s) => format!(
                "sftp://{}@127.0.0.1:{}/",
                s.user_of(DEMO_HOST).unwrap_or(DEMO_HOST),
                s.port
            ),
            None => format!("file://{}", self.publication().display()),
        }
    }

    /// The demo host's first cycle, in this process: it applies generation 1, which builds the
    /// system the machine already runs. Afterwards the machine is a managed, up-to-date host.
    pub fn enroll(&self, config: AgentConfig) -> anyhow::Result<CycleReport> {
        let status = crate::agent::daemon::status_cell::StatusCell::new(AgentStatus::default());
        let mut pipeline = Pipeline::new(config, status)?;
        let r = crate::agent::cycle::CycleRunner::run_cycle(&mut pipeline, CycleRequest::Update);
        if !matches!(r.outcome, Outcome::UpToDate | Outcome::Updated) {
            bail!(
                "the demo host's first cycle ended {:?}: {}",
                r.outcome,
                r.message.as_deref().unwrap_or("no message")
            );
        }
        Ok(r)
    }
}

/// The user's primary group: the demo's agent lets its members update and roll back.
pub fn primary_group() -> anyhow::Result<String> {
    let gid = nix::unistd::getegid();
    match nix::unistd::Group::from_gid(gid) {
        Ok(Some(g)) => Ok(g.name),
        Ok(None) => bail!("your primary group (gid {gid}) has no name in the group database"),
        Err(e) => bail!("looking up your primary group (gid {gid}): {e}"),
    }
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| with_path(e, parent))?;
    }
    fsutil::atomic_write(path, text.as_bytes(), 0o644)
}

fn flake_nix(host: &str) -> String {
    format!(
        r#"{{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
  outputs = {{ self, nixpkgs }}: {{
    nixosConfigurations.{host} = nixpkgs.lib.nixosSystem {{
      system = "x86_64-linux";
      modules = [ ./configuration.nix ];
    }};
  }};
}}
"#
    )
}

/// A host's flake on the NixOS stand-in (real Nix, no network).
fn standin_flake_nix(host: &str, standin: &Path) -> String {
    format!(
        r#"{{
  # The demo's nixpkgs is tiffin's NixOS stand-in: real Nix evaluates and builds it, offline.
  inputs.nixpkgs.url = "path:{standin}";
  outputs = {{ self, nixpkgs }}: {{
    nixosConfigurations.{host} = nixpkgs.lib.nixosSystem {{
      system = "{system}";
      modules = [ ./configuration.nix ];
    }};
  }};
}}
"#,
        standin = standin.display(),
        system = super::real_nixos::nix_system(),
    )
}

fn configuration_nix(host: &str, extra: &str) -> String {
    // The laptop's person decides when to update; the others update at once.
    let policy = if host == DEMO_HOST { "notify" } else { "auto" };
    format!(
        r#"# The machine "{host}".
{{ ... }}:
{{
  imports = [ ./common/base.nix ./common/tiffin.nix ];
  networking.hostName = "{host}";
  services.tiffin.agent.policy = "{policy}";
  boot.loader.grub.device = "nodev";
  fileSystems."/" = {{ device = "/dev/disk/by-label/nixos"; fsType = "ext4"; }};
  system.stateVersion = "24.11";
{extra}}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_fleet_parses_and_every_host_shares_the_common_module() {
        let d = tempfile::tempdir().unwrap();
        let s = Sandbox::new(d.path()).unwrap();
        s.write_fleet().unwrap();
        let c = s.fleet_config().unwrap();
        assert_eq!(c.hosts.len(), 3);
        assert_eq!(c.chroot, s.chroot());
        for h in HOSTS {
            let base = s.fleet().join("hosts").join(h).join("common/base.nix");
            assert_eq!(fs::read_to_string(base).unwrap(), BASE_NIX);
        }
        s.change_common_module().unwrap();
        let changed = fs::read_to_string(s.fleet().join("hosts/desktop/common/base.nix")).unwrap();
        assert!(changed.contains("htop"), "{changed}");
        // Only once: the line to change is gone.
        assert!(s.change_common_module().is_err());
    }
}
