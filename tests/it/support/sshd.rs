//! A real OpenSSH sshd on a free loopback port, serving per-host chroots the way the central
//! server does (the Match block, group, key location and modes of the sshd contract).
//!
//! Needs root (system users, chroot) and `/usr/sbin/sshd`. Under `CI=true` a missing
//! prerequisite panics; otherwise [`Sshd::start`] returns `None` after printing why.
//! Everything it creates — users, group, keys, `/srv/tiffin-test/<random>/` — goes on drop.
//!
//! Publications are made by the library's `tiffin fleet publish` from a fleet repository under
//! `<root>/fleet/` ([`Sshd::publish`], [`Sshd::publish_repo`]).

use super::publication::{FleetHost, FleetRepo};
use super::random_suffix;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};
use tiffin::config::AgentConfig;
use tiffin::demo::sshd as demo_sshd;
use tiffin::fleet::sshd::match_block;
use tiffin::manifest::Manifest;
use tiffin::runner::Runner;

const SSHD: &str = "/usr/sbin/sshd";
/// Where the sshd contract puts every host's public key.
const AUTHORIZED_KEYS_DIR: &str = "/etc/ssh/tiffin/authorized_keys";
/// Every chroot path component must be root-owned and not writable by others: never /tmp.
const TEST_ROOT: &str = "/srv/tiffin-test";

/// One host's account on the server.
#[derive(Clone, Debug)]
pub struct HostAccount {
    /// The host's name in the fleet (and its chroot directory name).
    pub host: String,
    /// Its system user on the server.
    pub user: String,
    /// The agent's private key.
    pub identity: PathBuf,
    /// `<chroot>/<host>` on the server's disk.
    pub dir: PathBuf,
    /// Its user's primary group, its own: the group of its publication.
    pub gid: u32,
}

pub struct Sshd {
    port: u16,
    /// `/srv/tiffin-test/<random>`.
    pub root: PathBuf,
    group: String,
    gid: u32,
    hosts: Vec<HostAccount>,
    config: PathBuf,
    log: PathBuf,
    host_key_pub: PathBuf,
    child: Mutex<Option<Child>>,
    runner: Runner,
    /// sshd's `MaxStartups`; `None` leaves sshd's default (10:30:100).
    max_startups: Option<String>,
    /// The admin's repository whose `chroot` is this server's chroot root.
    fleet: Option<FleetRepo>,
}

/// Why the sshd tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not running as root (system users and chroots need root)".into());
    }
    for tool in [
        SSHD,
        "/usr/bin/ssh-keygen",
        "/usr/sbin/useradd",
        "/usr/sbin/groupadd",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (install openssh-server / passwd)"
            ));
        }
    }
    None
}

/// Runs a command that must succeed (retried while /etc/passwd is locked: `demo::sshd`).
fn must_run(runner: &Runner, program: &str, args: &[&str]) {
    demo_sshd::run_retrying(runner, program, args).unwrap_or_else(|e| panic!("{e:#}"));
}

fn write_file(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn root_dir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    std::os::unix::fs::chown(p, Some(0), Some(0))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn keygen(runner: &Runner, path: &Path, comment: &str) {
    demo_sshd::keygen(runner, path, comment).unwrap_or_else(|e| panic!("{e:#}"));
}

/// The `ssh-ed25519 AAAA…` part of a `.pub` file.
fn public_key(pub_file: &Path) -> String {
    demo_sshd::public_key(pub_file).unwrap_or_else(|e| panic!("{e:#}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Sshd {
    /// Starts an sshd serving one chroot per host name in `hosts`, each with its own system user
    /// and client key. `None` (after printing why) when the machine cannot run it, outside CI.
    pub fn start(hosts: &[&str]) -> Option<Sshd> {
        if !super::prerequisite("the sshd tests", missing_prerequisite()) {
            return None;
        }
        let runner = Runner::new();
        let tag = random_suffix(3);
        root_dir(Path::new(TEST_ROOT), 0o755);
        let root = Path::new(TEST_ROOT).join(&tag);
        root_dir(&root, 0o755);
        let etc = root.join("etc");
        root_dir(&etc, 0o700);
        let chroot = root.join("chroot");
        root_dir(&chroot, 0o755);
        root_dir(Path::new(AUTHORIZED_KEYS_DIR), 0o755);
        // The privilege separation directory sshd insists on.
        root_dir(Path::new("/run/sshd"), 0o755);

        let group = format!("tiffin-{tag}");
        must_run(&runner, "groupadd", &["-r", &group]);
        let gid = nix::unistd::Group::from_name(&group)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
            .unwrap_or_else(|| panic!("group {group} was not created"));

        let mut server = Sshd {
            port: 0,
            root: root.clone(),
            group: group.clone(),
            gid,
            hosts: Vec::new(),
            config: etc.join("sshd_config"),
            log: root.join("sshd.log"),
            host_key_pub: etc.join("ssh_host_ed25519_key.pub"),
            child: Mutex::new(None),
            runner: runner.clone(),
            // Room for tests that connect many times in parallel.
            max_startups: Some("100:30:200".into()),
            fleet: None,
        };
        // From here on, Drop cleans up whatever was made.
        for host in hosts {
            let user = format!("tf{}-{tag}", &host[..host.len().min(12)]);
            must_run(
                &runner,
                "useradd",
                &[
                    "-r",
                    "-M",
                    "-d",
                    "/",
                    "-s",
                    "/usr/sbin/nologin",
                    // A primary group of its own (its publication's group), and the shared one
                    // sshd's AllowGroups names (the sshd contract, `fleet sshd-config`).
                    "-U",
                    "-G",
                    &group,
                    &user,
                ],
            );
            let (uid, user_gid) = nix::unistd::User::from_name(&user)
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
                .unwrap_or_else(|| panic!("user {user} was not created"));
            server.hosts.push(HostAccount {
                host: host.to_string(),
                user: user.clone(),
                identity: etc.join(format!("id_{host}")),
                dir: chroot.join(host),
                gid: user_gid,
            });
            // A locked password (`!`) is refused by sshd under UsePAM no; `*` only disables it.
            must_run(&runner, "usermod", &["-p", "*", &user]);
            let acct = server.hosts.last().cloned().expect("just pushed");
            keygen(&runner, &acct.identity, &format!("agent@{host}"));
            let key = public_key(&acct.identity.with_extension("pub"));
            write_file(
                &Path::new(AUTHORIZED_KEYS_DIR).join(&user),
                format!("{key}\n").as_bytes(),
                0o644,
            );
            root_dir(&acct.dir, 0o755);
            let logs = acct.dir.join("logs");
            fs::create_dir_all(&logs).expect("mkdir logs");
            std::os::unix::fs::chown(&logs, Some(uid), Some(user_gid)).expect("chown logs");
            fs::set_permissions(&logs, fs::Permissions::from_mode(0o700)).expect("chmod logs");
        }
        keygen(
            &runner,
            &etc.join("ssh_host_ed25519_key"),
            "tiffin-test-server",
        );
        let keys: Vec<String> = server
            .hosts
            .iter()
            .map(|h| public_key(&h.identity.with_extension("pub")))
            .collect();
        let fleet_hosts: Vec<FleetHost> = server
            .hosts
            .iter()
            .zip(&keys)
            .map(|(h, key)| FleetHost {
                name: &h.host,
                user: &h.user,
                key,
            })
            .collect();
        let fleet = FleetRepo::create(&root.join("fleet"), &chroot, &fleet_hosts);
        server.fleet = Some(fleet);

        // Another helper may grab the port between our probe and sshd's bind: try a few.
        for _ in 0..5 {
            server.port = free_port();
            server.write_config();
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("sshd did not start; its log:\n{}", server.log_text());
    }

    /// The demo's global settings and `fleet sshd-config`'s Match blocks, plus room for the
    /// parallel connections of the fault tests.
    fn write_config(&self) {
        let etc = self.root.join("etc");
        let mut c = demo_sshd::global_config(
            self.port,
            &etc.join("ssh_host_ed25519_key"),
            &self.root.join("sshd.pid"),
            &self.group,
        );
        if let Some(m) = &self.max_startups {
            c.push_str(&format!("MaxStartups {m}\n"));
        }
        for h in &self.hosts {
            c.push('\n');
            c.push_str(&match_block(&self.fleet().config, &h.host, &h.user));
        }
        c.push_str(tiffin::fleet::sshd::CLOSE_MATCH);
        write_file(&self.config, c.as_bytes(), 0o600);
    }

    /// Starts sshd on `self.port`; true once it answers with an SSH banner.
    fn spawn(&self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the sshd log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SSHD}: {e}"));
        *self.child.lock().expect("sshd child lock") = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(Ok(Some(_))) = self
                .child
                .lock()
                .ok()
                .and_then(|mut c| c.as_mut().map(|c| c.try_wait()))
            {
                self.child.lock().expect("sshd child lock").take();
                return false;
            }
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("SSH-2.0-") {
                    return true;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Kills sshd and every session process it forked (SIGKILL: open connections break).
    pub fn kill(&self) {
        let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        let pid = child.id() as i32;
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        // Stop the listener first so that it forks nothing while its children are collected.
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        let family = descendants(pid);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        for p in family {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = child.wait();
    }

    /// Freezes sshd and its sessions (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal_family(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Undoes [`Sshd::pause`].
    pub fn resume(&self) {
        self.signal_family(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal_family(&self, sig: nix::sys::signal::Signal) {
        let Some(pid) = self
            .child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id() as i32))
        else {
            return;
        };
        use nix::unistd::Pid;
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        for p in descendants(pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), sig);
        }
    }

    /// Starts sshd again on the same port after [`Sshd::kill`].
    pub fn restart(&self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("sshd did not restart; its log:\n{}", self.log_text());
    }

    /// Restarts sshd on the same port with `MaxStartups value` (`None`: sshd's default).
    pub fn set_max_startups(&mut self, value: Option<&str>) {
        self.max_startups = value.map(str::to_string);
        self.write_config();
        self.restart();
    }

    /// The listening sshd's process id (its session processes are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The group every host user is in besides its own (sshd's AllowGroups).
    pub fn gid(&self) -> u32 {
        self.gid
    }

    pub fn host(&self, name: &str) -> &HostAccount {
        self.hosts
            .iter()
            .find(|h| h.host == name)
            .unwrap_or_else(|| panic!("no host {name} on this test server"))
    }

    /// The server's host key fingerprint as `ssh-keygen -l` prints it.
    pub fn host_key_fingerprint(&self) -> String {
        fingerprint_of(&self.runner, &self.host_key_pub)
    }

    /// Writes a known_hosts file pinning this server's key for `127.0.0.1:port` (the sshd port
    /// or a relay in front of it).
    pub fn known_hosts_for(&self, port: u16) -> PathBuf {
        let p = self.root.join(format!("etc/known_hosts-{port}"));
        let key = public_key(&self.host_key_pub);
        write_file(&p, format!("[127.0.0.1]:{port} {key}\n").as_bytes(), 0o644);
        p
    }

    /// A known_hosts file that pins a different key for this server; returns its fingerprint.
    pub fn wrong_known_hosts(&self) -> (PathBuf, String) {
        let key = self.root.join("etc/other_host_key");
        if !key.exists() {
            keygen(&self.runner, &key, "not-the-server");
        }
        let pub_file = key.with_extension("pub");
        let p = self.root.join("etc/known_hosts-wrong");
        write_file(
            &p,
            format!("[127.0.0.1]:{} {}\n", self.port, public_key(&pub_file)).as_bytes(),
            0o644,
        );
        (p, fingerprint_of(&self.runner, &pub_file))
    }

    /// An agent configuration for `host`, reaching the server through `port` (the sshd port or
    /// a relay's), with state under `state_dir`.
    pub fn agent_config(&self, host: &str, port: u16, state_dir: &Path) -> AgentConfig {
        let h = self.host(host);
        let text = format!(
            "host = {host:?}\nsource = \"sftp://{user}@127.0.0.1:{port}/\"\n\
             identity = {id:?}\nknown_hosts = {kh:?}\nstate_dir = {state:?}\n\
             trusted_key = {trusted:?}\n",
            trusted = self.fleet().public_key().display().to_string(),
            user = h.user,
            id = h.identity.display().to_string(),
            kh = self.known_hosts_for(port).display().to_string(),
            state = state_dir.display().to_string(),
        );
        AgentConfig::parse(&text, "test agent config").expect("valid agent config")
    }

    /// The fleet repository whose publications this server serves.
    pub fn fleet(&self) -> &FleetRepo {
        self.fleet
            .as_ref()
            .expect("the fleet repository is made at start")
    }

    /// Makes `src` the host's tree in the fleet repository and publishes it with `tiffin fleet
    /// publish`; `generation` is the number the test expects that to give.
    pub fn publish(&self, host: &str, generation: u64, src: &Path) -> Manifest {
        self.fleet().set_tree(host, src);
        let got = self.publish_repo(host);
        assert_eq!(got, generation, "fleet publish {host} gave this generation");
        self.fleet().current_manifest(host)
    }

    /// Publishes the host's tree as it is in the fleet repository; returns the live generation.
    pub fn publish_repo(&self, host: &str) -> u64 {
        self.fleet().publish(host)
    }

    /// Where the sshd contract puts `host`'s public key.
    pub fn authorized_keys(&self, host: &str) -> PathBuf {
        Path::new(AUTHORIZED_KEYS_DIR).join(&self.host(host).user)
    }

    /// Writes a script that cuts `host` off this server the way a firewall would, at the
    /// server: `SCRIPT cut` moves its authorized_keys file aside (new logins are refused) and
    /// kills its open sessions (processes of its user below this sshd's listener, found by pid);
    /// `SCRIPT restore` puts the key back. Each call appends its argument to `<script>.log`, and
    /// each killed pid to `<script>.killed`.
    pub fn write_cut_script(&self, host: &str) -> PathBuf {
        let h = self.host(host);
        let uid = nix::unistd::User::from_name(&h.user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .unwrap_or_else(|| panic!("user {} is gone", h.user));
        let script = self.root.join(format!("etc/cut-{host}"));
        let text = format!(
            r#"#!/bin/sh
# cut|restore: host {host} loses (or regains) the server, done at the test sshd.
set -eu
keys='{keys}'
printf '%s
' "$1" >> '{script}.log'
case $1 in
    cut)
        if [ -e "$keys" ]; then mv "$keys" "$keys.cut"; fi
        listener=$(cat '{pidfile}')
        # Its sessions: processes of uid {uid} descending from this server's listener.
        ps -e -o pid=,ppid=,uid= | awk -v root="$listener" -v uid={uid} '
            {{ parent[$1] = $2; owner[$1] = $3 }}
            END {{
                for (p in parent) if (owner[p] == uid) {{
                    q = p
                    while ((q in parent) && q != root) q = parent[q]
                    if (q == root) print p
                }}
            }}' | while read -r pid; do
                kill -KILL "$pid" 2>/dev/null && printf '%s\n' "$pid" >> '{script}.killed' || true
            done
        ;;
    restore)
        if [ -e "$keys.cut" ]; then mv "$keys.cut" "$keys"; fi
        ;;
    *) echo "usage: $0 cut|restore" >&2; exit 2 ;;
esac
"#,
            keys = self.authorized_keys(host).display(),
            script = script.display(),
            pidfile = self.root.join("sshd.pid").display(),
        );
        write_file(&script, text.as_bytes(), 0o755);
        script
    }

    /// What the script of [`Sshd::write_cut_script`] was asked to do, in order.
    pub fn cut_script_calls(&self, host: &str) -> Vec<String> {
        self.lines_of(&format!("etc/cut-{host}.log"))
    }

    /// The pids of the sessions the script of [`Sshd::write_cut_script`] killed.
    pub fn cut_script_killed(&self, host: &str) -> Vec<String> {
        self.lines_of(&format!("etc/cut-{host}.killed"))
    }

    fn lines_of(&self, rel: &str) -> Vec<String> {
        fs::read_to_string(self.root.join(rel))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn fingerprint_of(runner: &Runner, pub_file: &Path) -> String {
    let p = pub_file.to_string_lossy().into_owned();
    let o = runner
        .run("ssh-keygen", &["-l", "-E", "sha256", "-f", &p], None)
        .expect("run ssh-keygen -l");
    o.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("ssh-keygen -l printed {:?}", o.stdout))
        .to_string()
}

use demo_sshd::descendants;

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
        for h in &self.hosts {
            let keys = Path::new(AUTHORIZED_KEYS_DIR).join(&h.user);
            let _ = fs::remove_file(keys.with_extension("cut"));
            let _ = fs::remove_file(keys);
            try_run(&self.runner, "userdel", &[&h.user]);
        }
        try_run(&self.runner, "groupdel", &[&self.group]);
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Cleanup: retried while /etc/passwd is locked, never panics (we may be unwinding already).
fn try_run(runner: &Runner, program: &str, args: &[&str]) {
    if let Err(e) = demo_sshd::run_retrying(runner, program, args) {
        eprintln!("cleanup: {e:#}");
    }
}
