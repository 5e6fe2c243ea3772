//! The `rsync+ssh://` mirror: the `rsync` program over `ssh` (the publisher's key, the pinned
//! known_hosts file, no other), through the runner. A missing generation is sent with
//! `--link-dest` to the newest generation both sides hold (unchanged files become hard links on
//! the mirror, only changed ones travel) and `-H` (the cache's hard links stay links), owners
//! by name (rsync as root on both sides); the switch of `current` and pruning are the same
//! `remote` commands the sftp:// mirror runs, through `ssh`.

use super::job::{HostJob, HostPushed};
use super::remote::{self, q};
use super::ssh_master::Master;
use crate::config::mirrors::SshMirror;
use crate::publication::layout::{parse_current_target, CURRENT, GENS};
use crate::runner::Runner;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one rsync or ssh command may run.
const TIMEOUT: Duration = Duration::from_secs(3600);

pub struct RsyncPusher {
    m: SshMirror,
    identity: PathBuf,
    known_hosts: PathBuf,
    root: String,
    runner: Runner,
    /// The connection every command rides on.
    master: Master,
}

impl RsyncPusher {
    /// Logs in (the master connection); an unknown host key or a refused key fails here.
    pub fn new(m: &SshMirror, identity: &Path, known_hosts: &Path) -> Result<Self, String> {
        let args = login_args(identity, known_hosts, m.port);
        let master = Master::start(&args, &dest(m))?;
        Ok(Self {
            m: m.clone(),
            identity: identity.to_path_buf(),
            known_hosts: known_hosts.to_path_buf(),
            root: m.root.display().to_string(),
            runner: Runner::new(),
            master,
        })
    }

    /// `ssh` through the master connection (and, should it be gone, with only the configured
    /// key and host key, never asking anything).
    fn ssh_args(&self) -> Vec<String> {
        let mut a = login_args(&self.identity, &self.known_hosts, self.m.port);
        a.extend([
            "-o".into(),
            format!("ControlPath={}", self.master.socket().display()),
            "-o".into(),
            "ControlMaster=no".into(),
        ]);
        a
    }

    fn dest(&self) -> String {
        dest(&self.m)
    }

    /// Runs `command` on the mirror through ssh; its stdout.
    fn run(&self, command: &str) -> Result<String, String> {
        let mut args = self.ssh_args();
        args.push(self.dest());
        args.push("--".into());
        args.push(command.to_string());
        let out = self
            .runner
            .run("ssh", &args, Some(TIMEOUT))
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        if !out.success() {
            return Err(out.describe_failure());
        }
        Ok(out.stdout)
    }

    pub fn push_host(&mut self, job: &HostJob) -> Result<HostPushed, String> {
        let hd = format!("{}/{}", self.root, job.host);
        self.run(&remote::skeleton(
            &hd,
            &self.root,
            job.logs_owner.as_deref(),
        ))?;
        let listing = self.run(&format!(
            "ls -1 {g} && (readlink {c} || true)",
            g = q(&format!("{hd}/{GENS}")),
            c = q(&format!("{hd}/{CURRENT}"))
        ))?;
        // `ls` shows no dot names: the lines are generation numbers, then `gens/<N>`.
        let mut have: BTreeSet<u64> = listing.lines().filter_map(|l| l.parse().ok()).collect();
        let now = listing
            .lines()
            .find(|l| l.starts_with("gens/"))
            .and_then(parse_current_target);
        let mut pushed = HostPushed {
            generation: job.live,
            ..Default::default()
        };
        for (g, base) in super::plan::missing(&job.generations, &have) {
            self.push_generation(job, &hd, g, base, &mut pushed)?;
            have.insert(g);
        }
        // The live manifest again: sent (to a temporary name, renamed) only when its size or
        // mtime differs, i.e. `publish` signed it anew in place.
        let manifest = job
            .publication
            .generation_dir(job.live)
            .join("manifest.json");
        let remote_manifest = format!("{hd}/{GENS}/{}/manifest.json", job.live);
        self.rsync_file(&manifest, &remote_manifest, &mut pushed)?;
        let txt = job.publication.dir.join("current.txt");
        if now != Some(job.live) || txt.exists() {
            self.run(&remote::switch_current(&hd, job.live, None))?;
            if txt.exists() {
                self.rsync_file(&txt, &format!("{hd}/current.txt"), &mut pushed)?;
            }
            pushed.changed |= now != Some(job.live);
        }
        let gone: Vec<u64> = have
            .iter()
            .filter(|g| !job.generations.contains(g))
            .copied()
            .collect();
        if !gone.is_empty() {
            self.run(&remote::prune(&format!("{hd}/{GENS}"), &gone))?;
            pushed.changed = true;
        }
        Ok(pushed)
    }

    fn push_generation(
        &self,
        job: &HostJob,
        hd: &str,
        g: u64,
        base: Option<u64>,
        pushed: &mut HostPushed,
    ) -> Result<(), String> {
        let inc = format!("{hd}/{GENS}/.incoming-{g}");
        let link_dest = base.map(|b| format!("../{b}"));
        self.rsync(
            &job.publication.generation_dir(g),
            &inc,
            link_dest.as_deref(),
            pushed,
        )?;
        self.run(&format!(
            "sync -f {i} && mv -T {i} {d}",
            i = q(&inc),
            d = q(&format!("{hd}/{GENS}/{g}"))
        ))?;
        pushed.changed = true;
        Ok(())
    }

    /// `rsync -aH --delete` of a directory; counts what it sent from `--stats`.
    fn rsync(
        &self,
        local: &Path,
        remote_dir: &str,
        link_dest: Option<&str>,
        pushed: &mut HostPushed,
    ) -> Result<(), String> {
        let mut args: Vec<String> = vec!["-aH".into(), "--delete".into(), "--stats".into()];
        if let Some(l) = link_dest {
            args.push(format!("--link-dest={l}"));
        }
        args.extend(self.common_args());
        args.push(format!("{}/", local.display()));
        args.push(format!("{}:{}/", self.dest(), remote_dir));
        self.rsync_run(&args, pushed)
    }

    /// One small file, written to a temporary name and renamed (rsync's own way).
    fn rsync_file(
        &self,
        local: &Path,
        remote: &str,
        pushed: &mut HostPushed,
    ) -> Result<(), String> {
        let mut args: Vec<String> = vec!["-a".into(), "--stats".into()];
        args.extend(self.common_args());
        args.push(local.display().to_string());
        args.push(format!("{}:{remote}", self.dest()));
        self.rsync_run(&args, pushed)
    }

    fn common_args(&self) -> Vec<String> {
        let ssh: Vec<String> = std::iter::once("ssh".to_string())
            .chain(self.ssh_args().iter().map(|a| q(a)))
            .collect();
        vec!["-e".into(), ssh.join(" "), "--timeout=60".into()]
    }

    fn rsync_run(&self, args: &[String], pushed: &mut HostPushed) -> Result<(), String> {
        let out = self
            .runner
            .run("rsync", args, Some(TIMEOUT))
            .map_err(|e| format!("cannot run rsync: {e}"))?;
        if !out.success() {
            return Err(out.describe_failure());
        }
        let (files, bytes) = stats(&out.stdout);
        pushed.files += files;
        pushed.bytes += bytes;
        if files > 0 {
            pushed.changed = true;
        }
        Ok(())
    }
}

/// The options of every `ssh`: only the configured key and known_hosts file, never a question.
fn login_args(identity: &Path, known_hosts: &Path, port: u16) -> Vec<String> {
    let o = |s: String| ["-o".to_string(), s];
    let mut a = vec!["-i".to_string(), identity.display().to_string()];
    for opt in [
        "IdentitiesOnly=yes".to_string(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        "BatchMode=yes".into(),
        "ConnectTimeout=15".into(),
        "ServerAliveInterval=15".into(),
    ] {
        a.extend(o(opt));
    }
    a.extend(["-p".to_string(), port.to_string()]);
    a
}

/// `user@host` (an IPv6 address in brackets).
fn dest(m: &SshMirror) -> String {
    let host = if m.host.contains(':') {
        format!("[{}]", m.host)
    } else {
        m.host.clone()
    };
    format!("{}@{host}", m.user)
}

/// Regular files and bytes sent, from rsync's `--stats`.
fn stats(out: &str) -> (usize, u64) {
    let number = |label: &str| -> u64 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| {
                let digits: String = rest
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == ',')
                    .filter(|c| *c != ',')
                    .collect();
                digits.parse().ok()
            })
            .unwrap_or(0)
    };
    (
        number("Number of regular files transferred:") as usize,
        number("Total transferred file size:"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_rsync_stats() {
        let out = "Number of files: 12 (reg: 9, dir: 3)\nNumber of regular files transferred: 2\nTotal transferred file size: 1,234 bytes\n";
        assert_eq!(super::stats(out), (2, 1234));
    }
}
