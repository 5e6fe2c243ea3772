//! A second sshd whose publication the test copies by hand (the agent-side failover tests).
//! A second real sshd serving a copy of a [`Sshd`]'s chroots: the same users, keys and sshd
//! contract, its own chroot root (`/srv/tiffin-test/<tag>-mirror/chroot/`) and port. The test
//! makes the mirror's copy of a host's publication with `cp -a` ([`MirrorSshd::copy_from`]).

use super::sshd::Sshd;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MirrorSshd {
    pub root: PathBuf,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

fn root_dir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    std::os::unix::fs::chown(p, Some(0), Some(0)).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

impl MirrorSshd {
    /// Starts the mirror of `primary` on a free loopback port.
    pub fn start(primary: &Sshd) -> MirrorSshd {
        let root = PathBuf::from(format!("{}-mirror", primary.root.display()));
        root_dir(&root, 0o755);
        root_dir(&root.join("etc"), 0o700);
        root_dir(&root.join("chroot"), 0o755);
        let key = "etc/ssh_host_ed25519_key";
        fs::copy(primary.root.join(key), root.join(key)).expect("copy the host key");
        fs::set_permissions(root.join(key), fs::Permissions::from_mode(0o600)).unwrap();
        let text = fs::read_to_string(primary.root.join("etc/sshd_config")).expect("sshd_config");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let text = text
            .replace(
                &format!("Port {}\n", primary.port()),
                &format!("Port {port}\n"),
            )
            .replace(
                &format!("{}/", primary.root.display()),
                &format!("{}/", root.display()),
            );
        let config = root.join("etc/sshd_config");
        fs::write(&config, text).unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        let mut m = MirrorSshd {
            root,
            port,
            config,
            child: None,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("sshd.log"))
            .unwrap();
        self.child = Some(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("run sshd"),
        );
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("SSH-2.0-") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the mirror sshd did not start: {}", self.log_text());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host`'s directory in the mirror's chroot root.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.root.join("chroot").join(host)
    }

    /// Replaces the mirror's copy of `host`'s publication with the primary's (`cp -a`).
    pub fn copy_from(&self, primary: &Sshd, host: &str) {
        let to = self.host_dir(host);
        if to.exists() {
            fs::remove_dir_all(&to).unwrap();
        }
        let st = Command::new("cp")
            .arg("-a")
            .arg(&primary.host(host).dir)
            .arg(&to)
            .status()
            .expect("cp -a");
        assert!(st.success(), "cp -a of {host}'s publication");
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(self.root.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for MirrorSshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}
