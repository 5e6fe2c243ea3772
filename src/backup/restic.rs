//! restic's command lines and its JSON. restic is a real dependency (Debian's and NixOS's
//! `restic`), run through the [`Runner`] with a deadline and in its own process group; it reaches
//! the host's own `backup/` over the same sshd as the agent, with the machine's key and the
//! pinned known_hosts (`-o sftp.command=…`).

use super::record::Snapshot;
use crate::runner::{CmdOutput, Runner};
use crate::source::SourceUrl;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the repository is and how restic gets there.
#[derive(Clone, Debug)]
pub struct Restic {
    pub program: String,
    /// `sftp:USER@HOST:/backup` or a local path.
    pub repository: String,
    /// `ssh … -s sftp`, for an sftp repository.
    pub sftp_command: Option<String>,
    pub password_file: PathBuf,
    pub cache_dir: PathBuf,
}

/// The directory of the repository inside the host's chroot.
pub const REPOSITORY_DIR: &str = "/backup";

impl Restic {
    /// The repository in the host's own chroot, reached like `source`.
    pub fn for_source(
        program: &str,
        source: &SourceUrl,
        identity: &Path,
        known_hosts: &Path,
        password_file: PathBuf,
        cache_dir: PathBuf,
    ) -> Self {
        let (repository, sftp_command) = match source {
            SourceUrl::File(dir) => (
                dir.join(REPOSITORY_DIR.trim_start_matches('/'))
                    .display()
                    .to_string(),
                None,
            ),
            SourceUrl::Sftp { user, host, port } => {
                // With sftp.command restic only uses the path; the host is for people reading it.
                let shown = if host.contains(':') { "server" } else { host };
                (
                    format!("sftp:{user}@{shown}:{REPOSITORY_DIR}"),
                    Some(sftp_command(user, host, *port, identity, known_hosts)),
                )
            }
            // Refused as agent.toml loads (`[backup]` needs an sftp:// or file:// source): a web
            // server is read-only. Named as it is, restic refuses it too.
            SourceUrl::Http(url) => (url.to_string(), None),
        };
        Self {
            program: program.to_string(),
            repository,
            sftp_command,
            password_file,
            cache_dir,
        }
    }

    /// The options every restic command gets, before the subcommand.
    pub fn global_args(&self) -> Vec<String> {
        let mut a = vec![
            "--repo".to_string(),
            self.repository.clone(),
            "--password-file".into(),
            self.password_file.display().to_string(),
            "--cache-dir".into(),
            self.cache_dir.display().to_string(),
        ];
        if let Some(c) = &self.sftp_command {
            a.push("--option".into());
            a.push(format!("sftp.command={c}"));
        }
        a
    }

    /// Runs `restic <global> <args>` through `runner` with `timeout`.
    pub fn run(&self, runner: &Runner, args: &[String], timeout: Duration) -> CmdOutput {
        let mut all = self.global_args();
        all.extend(args.iter().cloned());
        runner
            .run(&self.program, &all, Some(timeout))
            .unwrap_or_else(|e| CmdOutput {
                command: self.program.clone(),
                code: None,
                stdout: String::new(),
                stderr: e.to_string(),
                timed_out: false,
                duration: Duration::ZERO,
            })
    }

    /// The whole command line, as a person would type it (for docs and messages).
    pub fn shell_line(&self, args: &[&str]) -> String {
        std::iter::once(self.program.clone())
            .chain(self.global_args())
            .chain(args.iter().map(|s| s.to_string()))
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// ssh as restic's transport: only the machine's key, only the pinned server key, no config
/// file of anyone's, and a dead connection noticed within half a minute.
fn sftp_command(user: &str, host: &str, port: u16, identity: &Path, known_hosts: &Path) -> String {
    format!(
        "ssh -F /dev/null -i {id} -o IdentitiesOnly=yes -o UserKnownHostsFile={kh} \
         -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes \
         -o ConnectTimeout=15 -o ServerAliveInterval=10 -o ServerAliveCountMax=3 \
         -p {port} {user}@{host} -s sftp",
        id = identity.display(),
        kh = known_hosts.display(),
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// restic's `backup --json` summary line (the fields tiffin keeps).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Summary {
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
    #[serde(default)]
    pub files_unmodified: u64,
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
    #[serde(default)]
    pub snapshot_id: Option<String>,
}

/// The summary among `backup --json`'s lines, if restic got that far.
pub fn parse_summary(stdout: &str) -> Option<Summary> {
    stdout.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l.trim()).ok()?;
        (v.get("message_type")?.as_str()? == "summary")
            .then(|| serde_json::from_value(v).ok())
            .flatten()
    })
}

/// `snapshots --json`: a JSON array.
pub fn parse_snapshots(stdout: &str) -> Result<Vec<Snapshot>, String> {
    serde_json::from_str(stdout.trim())
        .map_err(|e| format!("restic's snapshot list is not what tiffin reads: {e}"))
}

/// restic's own words on a failure: its `Fatal:` line and what follows, else the tail of its
/// output.
pub fn failure_message(out: &CmdOutput) -> String {
    if out.timed_out {
        return format!("restic timed out after {:?}", out.duration);
    }
    let err = out.stderr.trim();
    let fatal = err
        .find("Fatal:")
        .map(|i| err[i..].lines().take(3).collect::<Vec<_>>().join(" "));
    match fatal {
        Some(f) => f,
        None => out.describe_failure(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_gives_files_and_bytes_added() {
        let out = "{\"message_type\":\"status\",\"percent_done\":0.5}\n\
            {\"message_type\":\"summary\",\"files_new\":2,\"files_changed\":1,\"files_unmodified\":7,\
            \"dirs_new\":0,\"data_added\":1234,\"total_files_processed\":10,\
            \"total_bytes_processed\":99999,\"total_duration\":1.5,\"snapshot_id\":\"abcd\"}\n";
        let s = parse_summary(out).unwrap();
        assert_eq!((s.files_new, s.files_changed, s.data_added), (2, 1, 1234));
        assert_eq!(s.snapshot_id.as_deref(), Some("abcd"));
        assert!(parse_summary("{\"message_type\":\"status\"}\nnot json\n").is_none());
    }

    #[test]
    fn an_sftp_repository_uses_the_machines_key_and_the_pinned_server_key_only() {
        let r = Restic::for_source(
            "restic",
            &SourceUrl::Sftp {
                user: "laptop".into(),
                host: "fleet.example.org".into(),
                port: 2222,
            },
            Path::new("/etc/tiffin/id_ed25519"),
            Path::new("/etc/tiffin/known_hosts"),
            "/var/lib/tiffin/backup/password".into(),
            "/var/lib/tiffin/backup/cache".into(),
        );
        assert_eq!(r.repository, "sftp:laptop@fleet.example.org:/backup");
        let c = r.sftp_command.unwrap();
        for part in [
            "-i /etc/tiffin/id_ed25519",
            "UserKnownHostsFile=/etc/tiffin/known_hosts",
            "StrictHostKeyChecking=yes",
            "-F /dev/null",
            "-p 2222 laptop@fleet.example.org -s sftp",
        ] {
            assert!(c.contains(part), "{part} missing from {c}");
        }
    }
}
