//! Shared harness for the daemon and client tests: a `file://` publication laid out as in
//! DESIGN §2, real groups and users with random suffixes, the real `tiffin agent` process, and
//! client processes started under other uids.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tiffin::ipc::Client;
use tiffin::manifest::{entries_of, walk_tree, Manifest};
use tiffin::status::AgentStatus;

#[path = "../pipeline_support/mod.rs"]
mod pipeline_support;

pub const TIFFIN: &str = env!("CARGO_BIN_EXE_tiffin");

/// Every published tree is a buildable (fake) NixOS configuration.
const CONFIGURATION_NIX: &str = "{ ... }: { }\n";

/// True when the test may run; false (with a printed reason) when it must skip. Under CI a
/// missing prerequisite fails.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (CI=true: failing instead of skipping)");
    }
    eprintln!("{test}: skipped: needs root to create users and groups");
    false
}

pub fn suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id() & 0xffff, n & 0xfffff)
}

/// A temp directory others may traverse (clients run under other uids).
pub fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("tiffin-daemon-test-")
        .tempdir()
        .unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Runs a user/group admin command, retrying while another process holds the lock.
fn admin(cmd: &str, args: &[&str]) {
    for attempt in 0..30 {
        let out = Command::new(cmd).args(args).output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if attempt < 29 && (err.contains("lock") || err.contains("try again")) {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        panic!("{cmd} {args:?}: {err}");
    }
}

pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

impl TestGroup {
    pub fn new(prefix: &str) -> Self {
        let name = format!("{prefix}{}", suffix());
        admin("groupadd", &[&name]);
        let gid = nix::unistd::Group::from_name(&name)
            .unwrap()
            .expect("group just created")
            .gid
            .as_raw();
        Self { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// A system user without home whose supplementary groups are `groups`.
    pub fn new(prefix: &str, groups: &[&TestGroup]) -> Self {
        let name = format!("{prefix}{}", suffix());
        let list: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let joined = list.join(",");
        let mut args = vec!["-M", "-U", "-s", "/usr/sbin/nologin"];
        if !list.is_empty() {
            args.extend(["-G", &joined]);
        }
        args.push(&name);
        admin("useradd", &args);
        let u = nix::unistd::User::from_name(&name)
            .unwrap()
            .expect("user just created");
        Self {
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }

    /// The user's groups as a login would set them.
    pub fn login_groups(&self) -> Vec<u32> {
        let name = std::ffi::CString::new(self.name.clone()).unwrap();
        nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(self.gid))
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A `tiffin` client command running as `uid`/`gid` with exactly `groups`.
pub fn tiffin_as(uid: u32, gid: u32, groups: Vec<u32>, args: &[&str]) -> Command {
    let mut c = Command::new(TIFFIN);
    c.args(args).env_remove("TIFFIN_SOCKET").current_dir("/");
    unsafe {
        c.pre_exec(move || {
            let gs: Vec<nix::unistd::Gid> = groups
                .iter()
                .map(|g| nix::unistd::Gid::from_raw(*g))
                .collect();
            nix::unistd::setgroups(&gs)?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
            Ok(())
        });
    }
    c
}

pub fn output_text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A host's publication on disk (DESIGN §2).
pub struct Publication {
    pub root: PathBuf,
    pub host: String,
}

impl Publication {
    pub fn new(root: PathBuf, host: &str) -> Self {
        fs::create_dir_all(root.join("gens")).unwrap();
        Self {
            root,
            host: host.into(),
        }
    }

    /// Lays out generation `n` with `files` and points `current` at it.
    pub fn publish(&self, n: u64, files: &[(String, Vec<u8>)]) {
        let gen = self.root.join("gens").join(n.to_string());
        let tree = gen.join("tree");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("configuration.nix"), CONFIGURATION_NIX).unwrap();
        for (path, data) in files {
            let p = tree.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, data).unwrap();
        }
        let walked = walk_tree(&tree, &tree).unwrap();
        let m = Manifest::new(
            &self.host,
            n,
            "2026-11-25T00:00:00Z".into(),
            entries_of(&walked),
        );
        fs::write(gen.join("manifest.json"), m.to_bytes()).unwrap();
        tiffin::fsutil::atomic_symlink(Path::new(&format!("gens/{n}")), &self.root.join("current"))
            .unwrap();
    }

    /// Changes a published file behind the manifest's back.
    pub fn corrupt(&self, n: u64, path: &str) {
        let p = self
            .root
            .join("gens")
            .join(n.to_string())
            .join("tree")
            .join(path);
        let mut data = fs::read(&p).unwrap();
        data[0] ^= 0xff;
        fs::write(&p, data).unwrap();
    }
}

/// `count` files of `size` bytes, each different.
pub fn files(count: usize, size: usize, salt: &str) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let mut data = format!("{salt}-{i}-").into_bytes();
            data.resize(size, b'a' + (i % 26) as u8);
            (format!("etc/f{i:04}"), data)
        })
        .collect()
}

pub struct AgentOptions {
    pub socket_group: String,
    pub admin_group: String,
    pub http_trigger: String,
    pub interval: &'static str,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            socket_group: "root".into(),
            admin_group: "root".into(),
            http_trigger: String::new(),
            interval: "1h",
        }
    }
}

/// A running `tiffin agent` with its own config, socket, state and publication.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub publication: Publication,
    pub child: Option<Child>,
    /// Extra environment for the agent process.
    pub env: Vec<(String, String)>,
}

impl Agent {
    /// Writes the configuration and lays out the publication with generation 1; not started.
    pub fn prepare(opts: AgentOptions) -> Self {
        let dir = open_tempdir();
        let host = "testhost";
        let publication = Publication::new(dir.path().join("srv").join(host), host);
        publication.publish(1, &files(3, 100, "g1"));
        let socket = dir.path().join("run").join("agent.sock");
        let config = dir.path().join("agent.toml");
        // The agent runs the real pipeline against the fake NixOS of assets/fake-nixos.
        let nixos = dir.path().join("nixos");
        let initial = dir.path().join("initial-tree");
        fs::create_dir_all(&initial).unwrap();
        fs::write(initial.join("configuration.nix"), CONFIGURATION_NIX).unwrap();
        pipeline_support::install_fake_nixos(&nixos, &publication.root, &initial, host);
        let files_root = dir.path().join("fsroot");
        fs::create_dir_all(&files_root).unwrap();
        let text = format!(
            "host = \"{host}\"\nsource = \"file://{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\n\
             socket_group = \"{}\"\nadmin_group = \"{}\"\ninterval = \"{}\"\njitter = \"0s\"\n\
             http_trigger = \"{}\"\n",
            publication.root.display(),
            dir.path().join("state").display(),
            socket.display(),
            opts.socket_group,
            opts.admin_group,
            opts.interval,
            opts.http_trigger,
        ) + "verify_timeout = \"5s\"\n"
            + &pipeline_support::fake_system_section(&nixos, &files_root);
        fs::write(&config, text).unwrap();
        let log = dir.path().join("agent.log");
        Self {
            dir,
            config,
            socket,
            log,
            publication,
            child: None,
            env: Vec::new(),
        }
    }

    pub fn start(opts: AgentOptions) -> Self {
        let mut a = Self::prepare(opts);
        a.spawn();
        a
    }

    /// Starts the agent process and waits until its first scheduled check is done.
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(TIFFIN)
            .args(["agent", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.try_status() {
                if s.last_check.is_some() && s.phase == tiffin::status::Phase::Idle {
                    return;
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("agent exited with {st} during startup:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready after 30 s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn try_status(&self) -> Option<AgentStatus> {
        let mut c = Client::connect(&self.socket).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        c.status().ok()
    }

    pub fn client(&self) -> Client {
        let c = Client::connect(&self.socket).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        child.wait().unwrap()
    }

    /// Resident memory of the agent, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Picks a free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request with a given Host header; returns the status code and body.
pub fn http_get(port: u16, method: &str, path: &str, host: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (code, body)
}

/// Waits until `f` holds, failing with `what` after `secs`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
