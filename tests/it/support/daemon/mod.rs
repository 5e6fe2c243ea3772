//! Shared harness for the daemon and client tests: a `file://` publication laid out as in
//! docs/publication.md, real groups and users with random suffixes, the real `tiffin agent` process, and
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

use crate::pipeline_support;

pub const TIFFIN: &str = env!("CARGO_BIN_EXE_tiffin");

/// Every published tree is a buildable (fake) NixOS configuration.
/// The fake NixOS's knob files (a file of that name in the tree) and the stand-in's knob each
/// becomes on real Nix.
const KNOBS: [(&str, &str); 6] = [
    ("FAIL_BUILD", "failBuild"),
    ("NO_SPACE", "noSpace"),
    ("FAIL_ACTIVATE", "failActivate"),
    ("CUT_NETWORK", "cutNetwork"),
    ("CUT_SSHD", "cutSshd"),
    ("NO_SPACE_BOOT", "noSpaceBoot"),
];

/// Generation `n`'s configuration: each generation is a system of its own, with the stand-in's
/// knobs for the fake's knob files among `files`.
fn configuration_nix(n: u64, files: &[(String, Vec<u8>)]) -> String {
    let knobs: String = KNOBS
        .iter()
        .filter(|(file, _)| files.iter().any(|(p, _)| p == file))
        .map(|(_, knob)| format!(" standin.{knob} = true;"))
        .collect();
    format!("{{ ... }}: {{ tiffin.generation = {n};{knobs} }}\n")
}

/// True when the test may run; false (with a printed reason) when it must skip. Under CI a
/// missing prerequisite fails.
pub fn require_root(test: &str) -> bool {
    use crate::support::{needs_root, prerequisite};
    prerequisite(test, needs_root("to create users and groups"))
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

/// A host's publication on disk (docs/publication.md).
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
        fs::write(tree.join("configuration.nix"), configuration_nix(n, files)).unwrap();
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

    /// Gives generation `n`'s manifest the admin's change note (`fleet publish -m`).
    pub fn set_note(&self, n: u64, note: &str) {
        let path = self
            .root
            .join("gens")
            .join(n.to_string())
            .join("manifest.json");
        let mut m = Manifest::parse(&fs::read(&path).unwrap(), "test").unwrap();
        m.note = Some(note.into());
        fs::write(&path, m.to_bytes()).unwrap();
    }

    /// Gives generation `n`'s manifest a change summary (`fleet publish --build`).
    pub fn set_changes(&self, n: u64, changes: tiffin::manifest::Changes) {
        let path = self
            .root
            .join("gens")
            .join(n.to_string())
            .join("manifest.json");
        let mut m = Manifest::parse(&fs::read(&path).unwrap(), "test").unwrap();
        m.changes = Some(changes);
        fs::write(&path, m.to_bytes()).unwrap();
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
        // The agent runs the real pipeline on real Nix (the NixOS stand-in; the fake NixOS of
        // assets/fake-nixos only where Nix is missing outside CI).
        let nixos = dir.path().join("nixos");
        let initial = dir.path().join("initial-tree");
        fs::create_dir_all(&initial).unwrap();
        fs::write(initial.join("configuration.nix"), configuration_nix(0, &[])).unwrap();
        let real = pipeline_support::default_is_real();
        if real {
            pipeline_support::install_real_nixos(&nixos, &publication.root, &initial);
        } else {
            pipeline_support::install_fake_nixos(&nixos, &publication.root, &initial, host);
        }
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
            + &pipeline_support::system_section(&nixos, &files_root);
        fs::write(&config, text).unwrap();
        let log = dir.path().join("agent.log");
        Self {
            dir,
            config,
            socket,
            log,
            publication,
            child: None,
            // The stand-in's switch-to-configuration acts on this machine's root.
            env: vec![("TIFFIN_STANDIN_ROOT".into(), nixos.display().to_string())],
        }
    }

    pub fn start(opts: AgentOptions) -> Self {
        let mut a = Self::prepare(opts);
        a.spawn();
        a
    }

    /// Starts the agent process and waits until its first scheduled check is done.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(TIFFIN);
        cmd.args(["agent", "--config"]).arg(&self.config);
        self.spawn_via(cmd);
    }

    /// Starts the agent process and waits until its status satisfies `ready`.
    pub fn spawn_until(&mut self, ready: impl Fn(&AgentStatus) -> bool) {
        let mut cmd = Command::new(TIFFIN);
        cmd.args(["agent", "--config"]).arg(&self.config);
        self.spawn_via_until(cmd, ready);
    }

    /// As [`Agent::spawn`], with `cmd` running the agent (a wrapper that execs it, say).
    pub fn spawn_via(&mut self, cmd: Command) {
        self.spawn_via_until(cmd, |s| {
            s.last_check.is_some() && s.phase == tiffin::status::Phase::Idle
        });
    }

    fn spawn_via_until(&mut self, mut cmd: Command, ready: impl Fn(&AgentStatus) -> bool) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = cmd
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
            if self.try_status().is_some_and(|s| ready(&s)) {
                return;
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
    http_request(port, method, path, host, &[])
}

/// As [`http_get`], with more headers (`("Sec-Fetch-Site", "cross-site")`). A connection the
/// server drops unanswered gives code 0.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    // The server may close before reading a request it will not serve.
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
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

/// Where a [`HeldConnections`] helper connects.
pub enum Target<'a> {
    Socket(&'a Path),
    Tcp(u16),
    /// Not a connection: tries to listen on 127.0.0.1:port (ok 1 when it could).
    Listen(u16),
}

/// A helper process running as another uid that opens `count` connections and holds them until
/// dropped: the test binary itself, re-run on its test `helper_test` (which calls
/// [`hold_connections_if_asked`]).
pub struct HeldConnections {
    child: Child,
    /// Socket: connections whose `subscribe` was answered ok. TCP: connections opened.
    pub ok: usize,
    /// Socket: connections answered `busy`.
    pub busy: usize,
}

impl HeldConnections {
    // The child is waited for in Drop, once the returned value owns it.
    #[allow(clippy::zombie_processes)]
    pub fn open(helper_test: &str, user: &TestUser, target: Target, count: usize) -> Self {
        let (uid, gid, groups) = (user.uid, user.gid, user.login_groups());
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([helper_test, "--exact", "--nocapture", "--test-threads=1"])
            .env("TIFFIN_HOLD_COUNT", count.to_string())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        match target {
            Target::Socket(p) => c.env("TIFFIN_HOLD_SOCKET", p),
            Target::Tcp(port) => c.env("TIFFIN_HOLD_PORT", port.to_string()),
            Target::Listen(port) => c.env("TIFFIN_HOLD_LISTEN", port.to_string()),
        };
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
        let mut child = c.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert!(n > 0, "the connection helper ended without reporting");
            // libtest prints `test NAME ... ` on the same line first.
            if let Some(rest) = line.trim().split("HELD ").nth(1) {
                let (ok, busy) = rest.split_once(' ').unwrap();
                return Self {
                    child,
                    ok: ok.parse().unwrap(),
                    busy: busy.parse().unwrap(),
                };
            }
        }
    }
}

impl Drop for HeldConnections {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper's side: when the test binary runs as a [`HeldConnections`] helper, opens the
/// connections, prints `HELD <ok> <busy>` and holds them until stdin closes.
pub fn hold_connections_if_asked() {
    let Ok(count) = std::env::var("TIFFIN_HOLD_COUNT") else {
        return;
    };
    let count: usize = count.parse().unwrap();
    let (mut ok, mut busy) = (0, 0);
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    if let Ok(path) = std::env::var("TIFFIN_HOLD_SOCKET") {
        for _ in 0..count {
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let _ = s.write_all(b"{\"id\":1,\"cmd\":\"subscribe\"}\n");
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(
                &mut std::io::BufReader::new(s.try_clone().unwrap()),
                &mut line,
            );
            if line.contains("\"ok\":true") {
                ok += 1;
            } else if line.contains("busy") {
                busy += 1;
            }
            held.push(Box::new(s));
        }
    } else if let Ok(port) = std::env::var("TIFFIN_HOLD_LISTEN") {
        match std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())) {
            Ok(l) => {
                ok += 1;
                held.push(Box::new(l));
            }
            Err(_) => busy += 1,
        }
    } else {
        let port: u16 = std::env::var("TIFFIN_HOLD_PORT").unwrap().parse().unwrap();
        for _ in 0..count {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                ok += 1;
                held.push(Box::new(s));
            }
        }
    }
    println!("\nHELD {ok} {busy}");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(held);
}
