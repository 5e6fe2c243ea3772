//! A real OpenSSH sshd on a free loopback port serving the demo's publication the way the
//! central server does (the sshd contract: one `Match User` block per host, the host users in one
//! group, their keys under [`AUTHORIZED_KEYS_DIR`]). `tiffin demo --sftp` uses it; it needs root.
//!
//! The Match blocks are `fleet sshd-config`'s ([`crate::fleet::sshd::match_block`]). The users
//! and the group carry a random suffix (other demos or tests may run at the same time); all of it
//! — sshd and its sessions, keys, users, group — goes on drop.

use crate::config::FleetConfig;
use crate::fleet::sshd::match_block;
use crate::fleet::users::{sh_quote, AUTHORIZED_KEYS_DIR, NOLOGIN_SHELL};
use crate::fsutil::{self, with_path};
use crate::runner::Runner;
use anyhow::{anyhow, bail, Context};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// Why this machine cannot serve the demo over SFTP, if it cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (system users, a chroot, sshd)".into());
    }
    for tool in [
        SSHD,
        "/usr/bin/ssh-keygen",
        "/usr/sbin/useradd",
        "/usr/sbin/groupadd",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (install openssh-server, passwd)"
            ));
        }
    }
    None
}

/// A random hex suffix for names that must not collide with another run's.
pub fn random_suffix(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    use std::io::Read as _;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(buf))
}

/// Runs a command that must succeed; retries while another process holds /etc/passwd's lock
/// (useradd and groupadd fail at once instead of waiting for it).
pub fn run_retrying(runner: &Runner, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut last = String::new();
    for attempt in 0..60 {
        match runner.run(program, args, Some(Duration::from_secs(30))) {
            Ok(o) if o.success() => return Ok(()),
            Ok(o) => last = o.describe_failure(),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(50 + 20 * (attempt % 7)));
    }
    bail!("`{program} {}`: {last}", args.join(" "))
}

/// An ed25519 key pair without passphrase at `path` and `path.pub`.
pub fn keygen(runner: &Runner, path: &Path, comment: &str) -> anyhow::Result<()> {
    let p = path.to_string_lossy().into_owned();
    run_retrying(
        runner,
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", &p],
    )
}

/// The `ssh-ed25519 AAAA…` part of a `.pub` file.
pub fn public_key(pub_file: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(pub_file).map_err(|e| with_path(e, pub_file))?;
    let key: Vec<&str> = text.split_whitespace().take(2).collect();
    if key.len() != 2 {
        bail!("{}: not an OpenSSH public key", pub_file.display());
    }
    Ok(key.join(" "))
}

/// The global part of the sshd_config: everything before the Match blocks.
pub fn global_config(port: u16, host_key: &Path, pid_file: &Path, group: &str) -> String {
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {hk}\n\
         PidFile {pid}\n\
         UsePAM no\n\
         StrictModes yes\n\
         LogLevel VERBOSE\n\
         PermitRootLogin no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         AuthorizedKeysFile none\n\
         AllowGroups {group}\n\
         Subsystem sftp internal-sftp\n",
        hk = host_key.display(),
        pid = pid_file.display(),
    )
}

/// One host's system user on the demo's server.
#[derive(Clone, Debug)]
pub struct HostUser {
    pub host: String,
    pub user: String,
}

/// The group and the host users, created with a random suffix; deleted on drop.
pub struct HostAccounts {
    pub group: String,
    pub users: Vec<HostUser>,
    runner: Runner,
}

impl HostAccounts {
    /// `groupadd -r tiffin-<tag>`, then per host `useradd -r -M -s nologin -U -G GROUP` and a `*`
    /// password (a locked `!` is refused by sshd under `UsePAM no`).
    pub fn create(hosts: &[&str]) -> anyhow::Result<Self> {
        let runner = Runner::new();
        let tag = random_suffix(3)?;
        let group = format!("tiffin-{tag}");
        run_retrying(&runner, "groupadd", &["-r", &group])?;
        let mut me = Self {
            group,
            users: Vec::new(),
            runner,
        };
        // From here on, drop undoes whatever was made.
        for host in hosts {
            let user = format!("tf{}-{tag}", &host[..host.len().min(12)]);
            let r = &me.runner;
            run_retrying(
                r,
                "useradd",
                &[
                    "-r",
                    "-M",
                    "-d",
                    "/",
                    "-s",
                    NOLOGIN_SHELL,
                    // A primary group of its own, which alone may read its publication; the
                    // shared group is the one sshd's AllowGroups names.
                    "-U",
                    "-G",
                    &me.group,
                    &user,
                ],
            )?;
            me.users.push(HostUser {
                host: host.to_string(),
                user: user.clone(),
            });
            run_retrying(&me.runner, "usermod", &["-p", "*", &user])?;
        }
        Ok(me)
    }

    pub fn user_of(&self, host: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.host == host)
            .map(|u| u.user.as_str())
    }

    /// Where the sshd contract puts `user`'s public key.
    pub fn authorized_keys(user: &str) -> PathBuf {
        Path::new(AUTHORIZED_KEYS_DIR).join(user)
    }

    /// Installs `key` as `host`'s authorized key (root-owned, 0644).
    pub fn authorize(&self, host: &str, key: &str) -> anyhow::Result<()> {
        let user = self
            .user_of(host)
            .ok_or_else(|| anyhow!("no user for host {host}"))?;
        root_dir(Path::new(AUTHORIZED_KEYS_DIR), 0o755)?;
        fsutil::atomic_write(
            &Self::authorized_keys(user),
            format!("{key}\n").as_bytes(),
            0o644,
        )?;
        Ok(())
    }
}

impl Drop for HostAccounts {
    fn drop(&mut self) {
        for u in &self.users {
            let keys = Self::authorized_keys(&u.user);
            let _ = fs::remove_file(keys.with_extension("cut"));
            let _ = fs::remove_file(&keys);
            try_run(&self.runner, "userdel", &[&u.user]);
        }
        try_run(&self.runner, "groupdel", &[&self.group]);
    }
}

/// Cleanup: retried while /etc/passwd is locked; never fails (it runs in drop).
fn try_run(runner: &Runner, program: &str, args: &[&str]) {
    if let Err(e) = run_retrying(runner, program, args) {
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("cleanup: {e}; undo it yourself\n"),
        );
    }
}

/// A root-owned directory with `mode` (created when missing).
pub fn root_dir(p: &Path, mode: u32) -> anyhow::Result<()> {
    fs::create_dir_all(p).map_err(|e| with_path(e, p))?;
    std::os::unix::fs::chown(p, Some(0), Some(0)).map_err(|e| with_path(e, p))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| with_path(e, p))?;
    Ok(())
}

/// Every component of `path` must be owned by root and writable by nobody else, or sshd refuses
/// a chroot below it: the first that is not, named.
pub fn check_root_owned_path(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for p in path.ancestors() {
        let m = fs::metadata(p).map_err(|e| with_path(e, p))?;
        if m.uid() != 0 || m.mode() & 0o022 != 0 {
            bail!(
                "{}: owned by uid {} with mode {:o}; sshd accepts a chroot only below directories \
                 owned by root and writable by no one else",
                p.display(),
                m.uid(),
                m.mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// sshd, started with `-D` on a free loopback port; it and its sessions are killed on drop.
#[derive(Debug)]
pub struct Server {
    pub port: u16,
    pub config: PathBuf,
    pub pid_file: PathBuf,
    pub host_key: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Writes `<dir>/sshd_config` (global settings, then `fleet sshd-config`'s Match block for
    /// each host) and the host key in `dir`, and starts sshd.
    pub fn start(dir: &Path, fleet: &FleetConfig, accounts: &HostAccounts) -> anyhow::Result<Self> {
        let runner = Runner::new();
        root_dir(dir, 0o700)?;
        // The privilege separation directory sshd insists on.
        root_dir(Path::new("/run/sshd"), 0o755)?;
        let host_key = dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            keygen(&runner, &host_key, "tiffin-demo-server")?;
        }
        let mut server = Self {
            port: 0,
            config: dir.join("sshd_config"),
            pid_file: dir.join("sshd.pid"),
            host_key,
            log: dir.join("sshd.log"),
            child: None,
        };
        // Another program may take the port between the probe and sshd's bind: try a few.
        for _ in 0..5 {
            server.port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .context("finding a free loopback port")?;
            let mut text = global_config(
                server.port,
                &server.host_key,
                &server.pid_file,
                &accounts.group,
            );
            for u in &accounts.users {
                text.push('\n');
                text.push_str(&match_block(fleet, &u.host, &u.user));
            }
            fsutil::atomic_write(&server.config, text.as_bytes(), 0o600)?;
            if server.spawn()? {
                return Ok(server);
            }
        }
        bail!(
            "sshd did not start; its log ({}):\n{}",
            server.log.display(),
            fs::read_to_string(&server.log).unwrap_or_default()
        )
    }

    /// True once sshd answers with an SSH banner; false when it exited (the port was taken).
    fn spawn(&mut self) -> anyhow::Result<bool> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| with_path(e, &self.log))?;
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Its own process group (a Ctrl-C in the terminal reaches only the demo), and ended
        // should the demo die without cleaning up.
        super::supervise::supervise(&mut cmd);
        let mut child = cmd.spawn().with_context(|| format!("starting {SSHD}"))?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(false);
            }
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("SSH-2.0-") {
                    self.child = Some(child);
                    return Ok(true);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(false)
    }

    /// sshd's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A known_hosts line pinning this server's key at `127.0.0.1:port`.
    pub fn known_hosts_line(&self) -> anyhow::Result<String> {
        let key = public_key(&self.host_key.with_extension("pub"))?;
        Ok(format!("[127.0.0.1]:{} {key}\n", self.port))
    }

    /// Writes an executable `SCRIPT cut|restore` for the simulated NixOS's `cut-sshd-hook`:
    /// `cut` moves `user`'s authorized_keys aside (new logins are refused) and kills that user's
    /// sessions below this sshd (found by pid), the way a firewall on the host would cut it off;
    /// `restore` puts the key back.
    pub fn write_cut_script(&self, script: &Path, user: &str) -> anyhow::Result<()> {
        let uid = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .ok_or_else(|| anyhow!("user {user} does not exist"))?;
        let text = format!(
            r#"#!/bin/sh
# cut|restore: the demo host loses (or regains) the server, done at the demo's sshd.
set -eu
keys={keys}
case $1 in
    cut)
        if [ -e "$keys" ]; then mv "$keys" "$keys.cut"; fi
        listener=$(cat {pidfile})
        # Its sessions: processes of uid {uid} descending from this server's listener.
        ps -e -o pid=,ppid=,uid= | awk -v root="$listener" -v uid={uid} '
            {{ parent[$1] = $2; owner[$1] = $3 }}
            END {{
                for (p in parent) if (owner[p] == uid) {{
                    q = p
                    while ((q in parent) && q != root) q = parent[q]
                    if (q == root) print p
                }}
            }}' | while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done
        ;;
    restore)
        if [ -e "$keys.cut" ]; then mv "$keys.cut" "$keys"; fi
        ;;
    *) echo "usage: $0 cut|restore" >&2; exit 2 ;;
esac
"#,
            keys = sh_quote(&HostAccounts::authorized_keys(user).to_string_lossy()),
            pidfile = sh_quote(&self.pid_file.to_string_lossy()),
        );
        fsutil::atomic_write(script, text.as_bytes(), 0o755)?;
        Ok(())
    }

    /// Kills sshd and every session process it forked.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = child.id() as i32;
        // Stop the listener first so that it forks nothing while its children are collected.
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        let family = descendants(pid);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        for p in family {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every process below `pid`, from /proc.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            // /proc/<pid>/stat: "pid (comm) state ppid …"; comm may hold spaces, so cut at ')'.
            if let Ok(stat) = fs::read_to_string(e.path().join("stat")) {
                if let Some(ppid) = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|s| s.parse::<i32>().ok())
                {
                    parent_of.push((p, ppid));
                }
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}
