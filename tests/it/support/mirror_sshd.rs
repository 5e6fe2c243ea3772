//! A second real sshd on loopback playing a mirror (the NixOS server module's mirror role): the
//! same host users and Match blocks as the primary [`super::sshd::Sshd`], chroots under its own
//! root, and root allowed in with the publisher's key only (what `fleet publish` pushes with).
//! Everything it creates goes on drop; the host users stay the primary's.

use super::random_suffix;
use super::sshd::Sshd;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};
use tiffin::config::mirrors::MirrorConfig;
use tiffin::demo::sshd as demo_sshd;
use tiffin::runner::Runner;

pub struct MirrorSshd {
    pub port: u16,
    /// `/srv/tiffin-test/<random>-mirror`.
    pub root: PathBuf,
    /// The mirror's chroot root (what its `[[mirrors]] url` names).
    pub chroot: PathBuf,
    /// The publisher's private key, authorised for root here.
    pub identity: PathBuf,
    host_key_pub: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

fn root_dir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    std::os::unix::fs::chown(p, Some(0), Some(0)).expect("chown");
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

impl MirrorSshd {
    /// Starts the mirror for the primary's hosts `hosts`.
    pub fn start(primary: &Sshd, hosts: &[&str]) -> MirrorSshd {
        let runner = Runner::new();
        let root = primary.root.with_file_name(format!(
            "{}-mirror-{}",
            random_suffix(2),
            random_suffix(2)
        ));
        root_dir(&root, 0o755);
        let etc = root.join("etc");
        root_dir(&etc, 0o700);
        let chroot = root.join("chroot");
        root_dir(&chroot, 0o755);
        let identity = etc.join("id_publisher");
        demo_sshd::keygen(&runner, &identity, "publisher").expect("publisher key");
        let host_key = etc.join("ssh_host_ed25519_key");
        demo_sshd::keygen(&runner, &host_key, "tiffin-test-mirror").expect("host key");
        let root_keys = etc.join("root_authorized_keys");
        let key = demo_sshd::public_key(&identity.with_extension("pub")).expect("public key");
        fs::write(&root_keys, format!("{key}\n")).expect("root's authorized keys");
        fs::set_permissions(&root_keys, fs::Permissions::from_mode(0o600)).expect("chmod");
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(primary.gid()))
            .ok()
            .flatten()
            .expect("the primary's group")
            .name;
        let mut config = primary.fleet().config.clone();
        config.chroot = chroot.clone();
        let mut m = MirrorSshd {
            port: 0,
            root: root.clone(),
            chroot,
            identity,
            host_key_pub: host_key.with_extension("pub"),
            config: etc.join("sshd_config"),
            log: root.join("sshd.log"),
            child: Mutex::new(None),
        };
        for _ in 0..5 {
            m.port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let mut c = demo_sshd::global_config(m.port, &host_key, &root.join("sshd.pid"), &group)
                .replace("PermitRootLogin no", "PermitRootLogin prohibit-password")
                .replace(
                    &format!("AllowGroups {group}"),
                    &format!("AllowGroups {group} root"),
                );
            for h in hosts {
                c.push('\n');
                c.push_str(&tiffin::fleet::sshd::match_block(
                    &config,
                    h,
                    &primary.host(h).user,
                ));
            }
            c.push_str(&format!(
                "Match User root\n    AuthorizedKeysFile {}\n",
                root_keys.display()
            ));
            fs::write(&m.config, c).expect("sshd_config");
            if m.spawn() {
                return m;
            }
        }
        panic!("the mirror's sshd did not start:\n{}", m.log_text());
    }

    fn spawn(&self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd");
        *self.child.lock().unwrap() = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(Ok(Some(_))) = self
                .child
                .lock()
                .ok()
                .and_then(|mut c| c.as_mut().map(|c| c.try_wait()))
            {
                self.child.lock().unwrap().take();
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

    /// Kills sshd and its sessions: the mirror is down.
    pub fn kill(&self) {
        let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = child.id() as i32;
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        let family = demo_sshd::descendants(pid);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        for p in family {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = child.wait();
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("the mirror's sshd did not restart:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A known_hosts file pinning the mirror's key for `127.0.0.1:port` (its own or a relay's).
    pub fn known_hosts_for(&self, port: u16) -> PathBuf {
        let p = self.root.join(format!("etc/known_hosts-{port}"));
        let key = demo_sshd::public_key(&self.host_key_pub).expect("host key");
        fs::write(&p, format!("[127.0.0.1]:{port} {key}\n")).expect("known_hosts");
        p
    }

    /// The `[[mirrors]]` entry that pushes here through `port` (its own or a relay's).
    pub fn entry(&self, scheme: &str, port: u16) -> MirrorConfig {
        MirrorConfig {
            url: format!("{scheme}://root@127.0.0.1:{port}{}", self.chroot.display()),
            identity: Some(self.identity.clone()),
            known_hosts: Some(self.known_hosts_for(port)),
        }
    }

    /// `<chroot>/<host>` on the mirror's disk.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.chroot.join(host)
    }

    /// The generation the mirror's `current` names for `host`.
    pub fn current(&self, host: &str) -> Option<u64> {
        let t = fs::read_link(self.host_dir(host).join("current")).ok()?;
        tiffin::publication::parse_current_target(t.to_str()?)
    }
}

impl Drop for MirrorSshd {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
    }
}
