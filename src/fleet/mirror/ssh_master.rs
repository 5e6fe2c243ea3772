//! One `ssh` master connection per rsync+ssh:// mirror and publish run (`ssh -M -N` on a
//! control socket in a private temporary directory): every `ssh` command and `rsync` of the
//! push rides on it instead of making an SSH connection of its own. Started here rather than
//! through the runner because it has to outlive each command; stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long the master may take to log in.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Master {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Master {
    /// Logs in with `ssh_args` to `dest`; the error holds what ssh said.
    pub fn start(ssh_args: &[String], dest: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("tiffin-mirror-ssh-")
            .tempdir()
            .map_err(|e| format!("cannot make a directory for the ssh control socket: {e}"))?;
        let socket = dir.path().join("control");
        let log = dir.path().join("ssh.log");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new("ssh")
            .args(ssh_args)
            .args(["-M", "-N", "-o", "ControlPersist=no", "-o"])
            .arg(format!("ControlPath={}", socket.display()))
            .arg(dest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        let mut master = Master {
            child,
            socket,
            _dir: dir,
        };
        let start = Instant::now();
        while !master.socket.exists() {
            let ended = master.child.try_wait().ok().flatten();
            if ended.is_some() || start.elapsed() > LOGIN_TIMEOUT {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let how = match ended {
                    Some(status) => format!("ssh to {dest} ended ({status})"),
                    None => format!("ssh to {dest} did not log in within {LOGIN_TIMEOUT:?}"),
                };
                return Err(format!("{how}: {}", said.trim()));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(master)
    }

    /// The control socket the other commands name (`-o ControlPath=…`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
