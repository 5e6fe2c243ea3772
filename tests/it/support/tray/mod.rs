//! A private desktop for the tray tests: Xvfb, a private D-Bus session bus, the D-Bus harness
//! (a StatusNotifierWatcher and a notification server, `tests/dbus/harness.py`), the real
//! `tiffin-tray` binary, and a scripted agent that serves the real socket protocol.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tiffin::ipc::codec::{decode_request, encode};
use tiffin::ipc::{Command as AgentCommand, Event, Response};
use tiffin::status::AgentStatus;

const PYTHON: &str = "/usr/bin/python3";

/// What the desktop tests need, or why they cannot run.
pub fn missing_prerequisite() -> Option<String> {
    for tool in ["Xvfb", "dbus-daemon"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "`{tool}` is not installed (packaging/deps.sh test)"
            ));
        }
    }
    let py = Command::new(PYTHON)
        .args(["-c", "import dbus, gi"])
        .stderr(Stdio::null())
        .status();
    if !py.is_ok_and(|s| s.success()) {
        return Some(format!(
            "{PYTHON} cannot import dbus and gi (python3-dbus, python3-gi)"
        ));
    }
    None
}

/// True when `what` can run here; otherwise says why on stderr. (The tests go through
/// `crate::desktop_available`, which fails under CI=true instead; the benches only skip.)
pub fn desktop_or_skip(what: &str) -> bool {
    match missing_prerequisite() {
        None => true,
        Some(why) => {
            eprintln!("skipping {what}: {why}");
            false
        }
    }
}

/// Kills a child we started, by its id, on drop.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Xvfb + a private session bus + the harness on it.
pub struct Desktop {
    pub dir: tempfile::TempDir,
    pub display: String,
    pub bus: String,
    /// None: no StatusNotifierWatcher on the bus, so the tray falls back to an XEmbed icon.
    harness: Option<Harness>,
    // Dropped last: the X server and the bus outlive their clients.
    _dbus: Proc,
    _xvfb: Proc,
}

fn read_first_line(out: ChildStdout, what: &str) -> String {
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("reading {what}'s first line: {e}"));
    assert!(
        !line.trim().is_empty(),
        "{what} printed nothing (did it start?)"
    );
    line.trim().to_string()
}

impl Desktop {
    /// A desktop whose bus has the test watcher and notification server.
    pub fn start() -> Self {
        Self::start_with(true, "1024x600x24")
    }

    /// A desktop for an XEmbed panel (trayer): no watcher on the bus.
    pub fn start_without_watcher(screen: &str) -> Self {
        Self::start_with(false, screen)
    }

    fn start_with(with_harness: bool, screen: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tiffin-tray-test-")
            .tempdir()
            .expect("temp dir");
        for sub in ["run", "config", "home", "bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod run");

        // -displayfd: Xvfb picks a free display and prints it once it accepts clients.
        let mut xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                screen,
                "-nolisten",
                "tcp",
                // A white root window: screenshots show a plain desktop.
                "-wr",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let out = xvfb.stdout.take().expect("Xvfb stdout");
        let xvfb = Proc(xvfb);
        let display = format!(":{}", read_first_line(out, "Xvfb"));

        let mut dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let out = dbus.stdout.take().expect("dbus-daemon stdout");
        let dbus = Proc(dbus);
        let bus = read_first_line(out, "dbus-daemon");

        let harness = with_harness.then(|| Harness::start(&bus));
        Self {
            dir,
            display,
            bus,
            harness,
            _dbus: dbus,
            _xvfb: xvfb,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    pub fn config_home(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// The environment of a desktop session on this display and bus.
    pub fn session_env(&self, cmd: &mut Command) {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("HOME", self.dir.path().join("home"))
            .env("TIFFIN_SOCKET", self.socket())
            .env("GDK_BACKEND", "x11")
            // No accessibility bus on a private session.
            .env("NO_AT_BRIDGE", "1")
            .env("PATH", path);
    }

    /// Starts the real tray binary in this session.
    pub fn start_tray(&self) -> Proc {
        self.start_tray_on(&self.socket())
    }

    /// Starts the real tray binary in this session, following the agent at `socket`.
    pub fn start_tray_on(&self, socket: &Path) -> Proc {
        self.start_tray_with(socket, &[])
    }

    /// [`Desktop::start_tray_on`] with more environment (a system bus, a language).
    pub fn start_tray_with(&self, socket: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tiffin-tray"));
        self.session_env(&mut cmd);
        cmd.env("TIFFIN_SOCKET", socket);
        cmd.envs(env.iter().copied());
        cmd.env("TIFFIN_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("tray.log")).expect("log"));
        Proc(cmd.spawn().expect("start tiffin-tray"))
    }

    pub fn tray_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tray.log")).unwrap_or_default()
    }

    pub fn call(&mut self, req: Value) -> Result<Value, String> {
        match self.harness.as_mut() {
            Some(h) => h.call(req),
            None => Err("this desktop has no D-Bus harness".into()),
        }
    }

    /// The registered item's properties, once it has registered.
    pub fn item(&mut self) -> Result<Value, String> {
        self.call(json!({"cmd": "item"}))
    }

    /// The menu as dbusmenu exports it: (id, label, enabled, toggle-state) for each child.
    pub fn menu(&mut self) -> Result<Vec<MenuEntry>, String> {
        let root = self.call(json!({"cmd": "layout"}))?;
        Ok(root["children"]
            .as_array()
            .map(|c| c.iter().map(MenuEntry::from_node).collect())
            .unwrap_or_default())
    }

    pub fn click(&mut self, label: &str) -> Result<(), String> {
        let menu = self.menu()?;
        let e = menu
            .iter()
            .find(|e| e.label == label)
            .ok_or_else(|| format!("no menu entry {label:?} in {menu:?}"))?;
        self.call(json!({"cmd": "click", "id": e.id})).map(|_| ())
    }

    pub fn notifications(&mut self) -> Result<Vec<Value>, String> {
        self.call(json!({"cmd": "notifications"}))
            .map(|v| v.as_array().cloned().unwrap_or_default())
    }

    pub fn invoke_action(&mut self, id: u64, key: &str) -> Result<(), String> {
        self.call(json!({"cmd": "invoke", "id": id, "key": key}))
            .map(|_| ())
    }

    /// The icon the item shows, as RGBA pixels read from the file it names.
    pub fn icon_pixels(&mut self) -> Result<(u32, u32, Vec<u8>), String> {
        let item = self.item()?;
        let name = item["IconName"].as_str().unwrap_or_default().to_string();
        let path = if name.starts_with('/') {
            PathBuf::from(&name)
        } else {
            Path::new(item["IconThemePath"].as_str().unwrap_or_default())
                .join(format!("{name}.png"))
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        tiffin::tray::icons::decode_rgba(&bytes).map_err(|e| e.to_string())
    }

    pub fn shows_icon(&mut self, kind: tiffin::tray::view::IconKind) -> bool {
        let want = tiffin::tray::icons::rgba(kind).expect("embedded icon");
        self.icon_pixels().is_ok_and(|got| got == want)
    }

    /// The labels of the menu's entries, in order.
    pub fn labels(&mut self) -> Result<Vec<String>, String> {
        Ok(self.menu()?.into_iter().map(|e| e.label).collect())
    }

    /// Waits until the menu has an entry with this label; returns the whole menu's labels.
    pub fn wait_for_line(&mut self, within: Duration, line: &str) -> Vec<String> {
        wait_for(within, &format!("menu line {line:?}"), || {
            let l = self.labels()?;
            if l.iter().any(|x| x == line) {
                Ok(Some(l))
            } else {
                Err(format!("menu: {l:?}"))
            }
        })
    }

    /// Waits until the item shows the embedded icon of `kind`, pixel for pixel.
    pub fn wait_for_icon(&mut self, within: Duration, kind: tiffin::tray::view::IconKind) {
        wait_for(within, &format!("icon {kind:?}"), || {
            if self.shows_icon(kind) {
                Ok(Some(()))
            } else {
                Err("another icon".into())
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MenuEntry {
    pub id: i64,
    pub label: String,
    pub enabled: bool,
    pub separator: bool,
    /// dbusmenu toggle-state: 1 checked, 0 not, -1/absent not a check item.
    pub toggle_state: i64,
}

impl MenuEntry {
    fn from_node(n: &Value) -> Self {
        let p = &n["props"];
        Self {
            id: n["id"].as_i64().unwrap_or(-1),
            label: p["label"].as_str().unwrap_or_default().to_string(),
            enabled: p["enabled"].as_bool().unwrap_or(true),
            separator: p["type"].as_str() == Some("separator"),
            toggle_state: p["toggle-state"].as_i64().unwrap_or(-1),
        }
    }
}

/// The Python harness process and its line protocol.
struct Harness {
    _proc: Proc,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Harness {
    fn start(bus: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dbus/harness.py");
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the D-Bus harness");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut h = Self {
            _proc: Proc(child),
            stdin,
            stdout,
        };
        let ready = h.read_answer().expect("harness ready");
        assert_eq!(ready, json!("ready"));
        h
    }

    fn read_answer(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("harness: {e}"))?;
        let v: Value =
            serde_json::from_str(&line).map_err(|e| format!("harness said {line:?}: {e}"))?;
        if v["ok"] == json!(true) {
            Ok(v["data"].clone())
        } else {
            Err(v["error"].as_str().unwrap_or("?").to_string())
        }
    }

    fn call(&mut self, req: Value) -> Result<Value, String> {
        let mut line = req.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .map_err(|e| format!("harness: {e}"))?;
        self.read_answer()
    }
}

/// Polls `probe` until it gives a value, or panics after `timeout` naming `what` and the last
/// thing seen.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>, String>,
) -> T {
    let start = Instant::now();
    let mut last = String::from("nothing yet");
    loop {
        match probe() {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e,
        }
        if start.elapsed() > timeout {
            panic!("waited {timeout:?} for {what}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scripted agent on a real Unix socket, speaking the real protocol (tiffin::ipc codec and
/// envelopes): answers `status`, streams statuses after `subscribe`, records every other
/// command. The test plays the agent's part by setting statuses.
pub struct StubAgent {
    path: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    status: AgentStatus,
    subscribers: Vec<UnixStream>,
    connections: Vec<UnixStream>,
    commands: Vec<AgentCommand>,
}

impl StubAgent {
    pub fn start(path: &Path, status: AgentStatus) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the stub agent's socket");
        let shared = Arc::new(Mutex::new(Shared {
            status,
            ..Shared::default()
        }));
        let stopping = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stopping.clone());
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    sh.lock().expect("lock").connections.push(c);
                }
                let sh = sh.clone();
                std::thread::spawn(move || serve(conn, sh));
            }
        });
        Self {
            path: path.to_path_buf(),
            shared,
            stopping,
            acceptor: Some(acceptor),
        }
    }

    /// Changes the status and sends it to every subscriber, as the agent does on each change.
    pub fn set_status(&self, s: AgentStatus) {
        let mut sh = self.shared.lock().expect("lock");
        sh.status = s.clone();
        let line = encode(&Event::Status(s));
        sh.subscribers.retain_mut(|w| w.write_all(&line).is_ok());
    }

    pub fn status(&self) -> AgentStatus {
        self.shared.lock().expect("lock").status.clone()
    }

    pub fn commands(&self) -> Vec<AgentCommand> {
        self.shared.lock().expect("lock").commands.clone()
    }

    /// Stops like a killed agent: every connection closed, the socket gone.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        {
            let mut sh = self.shared.lock().expect("lock");
            for c in sh.connections.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
            sh.subscribers.clear();
        }
        // Wake the acceptor so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for StubAgent {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.shutdown();
        }
    }
}

fn serve(conn: UnixStream, shared: Arc<Mutex<Shared>>) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = Vec::new();
        match reader.by_ref().read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let req = match decode_request(line.trim_ascii_end()) {
            Ok(r) => r,
            Err(answer) => {
                let _ = writer.write_all(&encode(&answer));
                continue;
            }
        };
        let mut sh = shared.lock().expect("lock");
        let data = match req.cmd {
            AgentCommand::Status => serde_json::to_value(&sh.status).expect("status json"),
            // Like the daemon: the status now, then events.
            AgentCommand::Subscribe => {
                if let Ok(w) = writer.try_clone() {
                    sh.subscribers.push(w);
                }
                serde_json::to_value(&sh.status).expect("status json")
            }
            AgentCommand::Log => json!("generation 43: build ok\nactivate ok\nverify ok\n"),
            // Like the daemon: a cycle's report (this fake runs none).
            other => {
                sh.commands.push(other);
                json!({"outcome": "up_to_date"})
            }
        };
        // Answer under the lock so that no event overtakes it out of order.
        let _ = writer.write_all(&encode(&Response::ok(req.id, data)));
    }
}
