//! A private "system bus" for the agent's D-Bus tests: a `dbus-daemon` of its own (named to the
//! agent through `DBUS_SYSTEM_BUS_ADDRESS`) with python-dbusmock's templates on it (`upower`,
//! `networkmanager`, `logind`), and `dbus-send` to change their properties as the real services
//! would (each change is a `PropertiesChanged` signal).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

/// Why these tests cannot run here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    for tool in ["dbus-daemon", "dbus-send"] {
        if Command::new(tool).arg("--help").output().is_err() {
            return Some(format!(
                "`{tool}` is not installed (packaging/deps.sh test)"
            ));
        }
    }
    let ok = Command::new(PYTHON)
        .args(["-c", "import dbusmock"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| format!("{PYTHON} cannot import dbusmock (python3-dbusmock)"))
}

/// A child killed and reaped on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bus and the mocks on it; all stopped on drop (mocks first).
pub struct SystemBus {
    pub address: String,
    mocks: Vec<Proc>,
    _daemon: Proc,
}

impl SystemBus {
    pub fn start() -> Self {
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let out = daemon.stdout.take().expect("stdout");
        let daemon = Proc(daemon);
        let mut address = String::new();
        BufReader::new(out)
            .read_line(&mut address)
            .expect("bus address");
        Self {
            address: address.trim().to_string(),
            mocks: Vec::new(),
            _daemon: daemon,
        }
    }

    /// Starts dbusmock's `template` with `parameters` (JSON) and waits until `name` is owned.
    pub fn mock(&mut self, template: &str, parameters: &str, name: &str) {
        let child = Command::new(PYTHON)
            .args([
                "-m",
                "dbusmock",
                "--system",
                "--template",
                template,
                "-p",
                parameters,
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbusmock");
        self.mocks.push(Proc(child));
        let start = Instant::now();
        while !self.has_owner(name) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "dbusmock's {template} did not take {name}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn has_owner(&self, name: &str) -> bool {
        self.send(&[
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            &format!("string:{name}"),
        ])
        .is_ok_and(|out| out.contains("boolean true"))
    }

    /// `dbus-send --system ARGS…` on this bus; its output, or why it failed.
    pub fn send(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("dbus-send")
            .arg("--system")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Sets a property as the service would, with its `PropertiesChanged` signal.
    pub fn set(&self, dest: &str, path: &str, iface: &str, prop: &str, variant: &str) {
        self.send(&[
            "--print-reply",
            &format!("--dest={dest}"),
            path,
            "org.freedesktop.DBus.Properties.Set",
            &format!("string:{iface}"),
            &format!("string:{prop}"),
            &format!("variant:{variant}"),
        ])
        .unwrap_or_else(|e| panic!("setting {iface}.{prop}: {e}"));
    }

    /// Adds a property the template does not have (dbusmock's `AddProperty`).
    pub fn add_property(&self, dest: &str, path: &str, iface: &str, prop: &str, variant: &str) {
        self.send(&[
            "--print-reply",
            &format!("--dest={dest}"),
            path,
            "org.freedesktop.DBus.Mock.AddProperty",
            &format!("string:{iface}"),
            &format!("string:{prop}"),
            &format!("variant:{variant}"),
        ])
        .unwrap_or_else(|e| panic!("adding {iface}.{prop}: {e}"));
    }

    /// UPower's `OnBattery`.
    pub fn set_on_battery(&self, on: bool) {
        self.set(
            "org.freedesktop.UPower",
            "/org/freedesktop/UPower",
            "org.freedesktop.UPower",
            "OnBattery",
            &format!("boolean:{on}"),
        );
    }

    /// NetworkManager's `Metered` (NMMetered: 1 yes, 2 no, 3 guessed yes, 4 guessed no).
    pub fn set_metered(&self, value: u32) {
        self.set(
            "org.freedesktop.NetworkManager",
            "/org/freedesktop/NetworkManager",
            "org.freedesktop.NetworkManager",
            "Metered",
            &format!("uint32:{value}"),
        );
    }
}
