//! Backups with real restic into the host's own `backup/` through the real sshd chroot
//! (docs/backup.md): only the change is added the second time, snapshots are listed, the
//! documented restore gives the files back byte for byte; a run cut off mid-transfer is a failed
//! run that leaves the repository sound; and one host's key never reaches another's `backup/`.

use crate::support;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::publication::write_config_tree;
use support::relay::Relay;
use support::sshd::Sshd;
use tiffin::agent::daemon::backup::send_report;
use tiffin::backup::{Backup, BackupOutcome};
use tiffin::config::AgentConfig;
use tiffin::fleet::status::{fleet_status, render_table, Style};
use tiffin::runner::Runner;

/// Why restic cannot run here, if it cannot.
pub(crate) fn missing_restic() -> Option<String> {
    let ok = Command::new("restic")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "restic is missing (packaging/deps.sh installs it)".to_string())
}

/// A server with `hosts`, each published once (so `fleet publish` made their `backup/`).
pub(crate) fn server(hosts: &[&str]) -> Option<Sshd> {
    if !support::prerequisite("the backup tests", missing_restic()) {
        return None;
    }
    let srv = Sshd::start(hosts)?;
    let src = tempfile::tempdir().unwrap();
    write_config_tree(src.path(), 2, 100, 1);
    for h in hosts {
        srv.publish(h, 1, src.path());
    }
    Some(srv)
}

/// `host`'s agent.toml with a `[backup]` of `data`, reaching the server through `port`.
pub fn backup_config(srv: &Sshd, host: &str, port: u16, state: &Path, data: &Path) -> AgentConfig {
    let mut c = srv.agent_config(host, port, state);
    let table = format!(
        "paths = [{:?}]\nexclude = [\"*.tmp\"]\nschedule = \"daily\"\nkeep = {{ last = 10, daily = 7, weekly = 4 }}\n",
        data.display().to_string()
    );
    c.backup = Some(toml::from_str(&table).expect("a valid [backup]"));
    c
}

fn random_file(path: &Path, bytes: usize) {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .unwrap();
    fs::File::create(path).unwrap().write_all(&buf).unwrap();
}

/// Every regular file under `dir`, relative, with its bytes.
fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

const BIG: usize = 4 << 20;
const CHANGE: usize = 300 << 10;

#[test]
fn real_restic_through_the_chroot_adds_only_the_change_lists_snapshots_and_restores_byte_for_byte()
{
    let Some(srv) = server(&["alpha"]) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    fs::create_dir(data.path().join("docs")).unwrap();
    random_file(&data.path().join("docs/big.bin"), BIG);
    fs::write(data.path().join("notes.txt"), "first\n").unwrap();
    fs::write(data.path().join("scratch.tmp"), "excluded\n").unwrap();
    let cfg = backup_config(&srv, "alpha", srv.port(), state.path(), data.path());
    let backup = Backup::from_config(&cfg).unwrap();
    let runner = Runner::new();

    let first = backup.run(&runner);
    assert_eq!(
        first.outcome,
        BackupOutcome::Ok,
        "{first:?}\n{}",
        runner.log()
    );
    assert_eq!(first.files_new, 2, "{first:?}");
    assert!(first.bytes_added >= BIG as u64, "{first:?}");
    // The password was made at the first run, 0600, in the agent's state.
    let pw = state.path().join("backup/password");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&pw).unwrap().mode() & 0o777, 0o600);
    // The repository is in the host's own backup/ on the server, owned by its user.
    let repo = srv.host("alpha").dir.join("backup");
    assert!(
        repo.join("config").is_file(),
        "no repository in {}",
        repo.display()
    );
    let user_uid = nix::unistd::User::from_name(&srv.host("alpha").user)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(fs::metadata(repo.join("config")).unwrap().uid(), user_uid);

    fs::write(data.path().join("notes.txt"), "second\n").unwrap();
    random_file(&data.path().join("docs/new.bin"), CHANGE);
    let second = backup.run(&Runner::new());
    assert_eq!(second.outcome, BackupOutcome::Ok, "{second:?}");
    assert_eq!(
        (
            second.files_new,
            second.files_changed,
            second.files_unmodified
        ),
        (1, 1, 1),
        "{second:?}"
    );
    eprintln!(
        "bytes added: first {} (data {BIG}), second {} (change {CHANGE})",
        first.bytes_added, second.bytes_added
    );
    assert!(
        second.bytes_added >= CHANGE as u64 && second.bytes_added < CHANGE as u64 + (256 << 10),
        "the second run added {} bytes for a change of {CHANGE}",
        second.bytes_added
    );

    let snaps = backup.snapshots(&Runner::new()).unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps.iter().all(|s| s.hostname == "alpha"), "{snaps:?}");
    let id = second.snapshot.clone().unwrap();
    assert!(snaps[1].id.starts_with(&id), "{snaps:?} {id}");

    // The documented restore, as a shell command line, run as it is printed.
    let target = tempfile::tempdir().unwrap();
    let line = backup.restore_line("latest", &target.path().display().to_string());
    let out = Command::new("sh").args(["-c", &line]).output().unwrap();
    assert!(
        out.status.success(),
        "{line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = target.path().join(data.path().strip_prefix("/").unwrap());
    let mut want = files_of(data.path());
    want.retain(|(p, _)| p != Path::new("scratch.tmp"));
    assert_eq!(
        files_of(&restored),
        want,
        "the restore differs from the files"
    );
}

#[test]
fn a_backup_cut_off_mid_transfer_fails_leaves_a_sound_repository_and_the_next_run_succeeds() {
    let Some(srv) = server(&["alpha"]) else {
        return;
    };
    let relay = Relay::start(srv.port());
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    random_file(&data.path().join("small.bin"), 64 << 10);
    let cfg = backup_config(&srv, "alpha", relay.port, state.path(), data.path());
    let backup = Backup::from_config(&cfg).unwrap();
    let first = backup.run(&Runner::new());
    assert_eq!(first.outcome, BackupOutcome::Ok, "{first:?}");
    send_report(&cfg, &first);

    // 8 MiB of new data; each connection is cut after 2 MiB, in the middle of the upload.
    random_file(&data.path().join("large.bin"), 8 << 20);
    relay.cut_after(Some(2 << 20));
    let cut = backup.run(&Runner::new());
    assert!(relay.cuts() >= 1, "the connection was not cut");
    assert_eq!(cut.outcome, BackupOutcome::Failed, "{cut:?}");
    let message = cut.message.clone().unwrap_or_default();
    eprintln!("the cut run's message: {message}");
    assert!(!message.is_empty(), "{cut:?}");

    relay.cut_after(None);
    // The failed run's report reaches logs/ and `fleet status` shows it.
    send_report(&cfg, &cut);
    let row = backup_row(&srv, "alpha");
    assert_eq!(row.last_outcome, BackupOutcome::Failed, "{row:?}");
    assert!(row.size_bytes > 0 && !row.stale, "{row:?}");
    assert!(row.last_snapshot_age_secs.is_some(), "{row:?}");
    let runner = Runner::new();
    backup
        .check(&runner)
        .unwrap_or_else(|e| panic!("restic check after the cut: {e}\n{}", runner.log()));
    let next = backup.run(&Runner::new());
    assert_eq!(next.outcome, BackupOutcome::Ok, "{next:?}");
    assert_eq!(backup.snapshots(&Runner::new()).unwrap().len(), 2);
    backup.check(&Runner::new()).unwrap();
    send_report(&cfg, &next);
    let row = backup_row(&srv, "alpha");
    assert_eq!(row.last_outcome, BackupOutcome::Ok, "{row:?}");
    assert_eq!(
        row.last_snapshot_age_secs.map(|a| a < 600),
        Some(true),
        "{row:?}"
    );
}

/// `fleet status`'s backup view of `host`, as the admin sees it on the server.
fn backup_row(srv: &Sshd, host: &str) -> tiffin::fleet::status::BackupView {
    let status = fleet_status(&srv.fleet().config, tiffin::status::unix_now());
    let h = status.hosts.iter().find(|h| h.host == host).unwrap();
    let table = render_table(&status, Style { colour: false });
    assert!(table.contains("BACKUPS"), "{table}");
    h.backup
        .clone()
        .unwrap_or_else(|| panic!("no backup view: {table}"))
}

/// Runs OpenSSH's `sftp` as `host` with `batch` (one command a line; a leading `-` lets a
/// command fail without ending the batch); its combined output.
fn sftp_as(srv: &Sshd, host: &str, batch: &str) -> String {
    let h = srv.host(host);
    let mut child = Command::new("sftp")
        .args(["-b", "-", "-F", "/dev/null", "-i"])
        .arg(&h.identity)
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            srv.known_hosts_for(srv.port()).display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-P",
        ])
        .arg(srv.port().to_string())
        .arg(format!("{}@127.0.0.1", h.user))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sftp");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn one_hosts_key_neither_reads_nor_writes_another_hosts_backup_with_openssh_sftp() {
    let Some(srv) = server(&["alpha", "beta"]) else {
        return;
    };
    let beta_backup = srv.host("beta").dir.join("backup");
    fs::write(beta_backup.join("config"), "beta's repository\n").unwrap();
    let local = tempfile::tempdir().unwrap();
    let planted = local.path().join("planted");
    fs::write(&planted, "from alpha\n").unwrap();
    let got = local.path().join("got");
    let mut batch = String::new();
    for base in [
        "/../beta/backup".to_string(),
        "../beta/backup".to_string(),
        beta_backup.display().to_string(),
    ] {
        batch.push_str(&format!(
            "-get {base}/config {got}\n-put {planted} {base}/planted\n-ls {base}\n",
            got = got.display(),
            planted = planted.display()
        ));
    }
    // Its own backup/ takes a file: the refusals above are about the other host, not sftp.
    batch.push_str(&format!(
        "put {} /backup/mine\nls /backup\n",
        planted.display()
    ));
    let out = sftp_as(&srv, "alpha", &batch);
    eprintln!("{out}");
    assert!(!got.exists(), "alpha read beta's backup:\n{out}");
    let mut names: Vec<String> = fs::read_dir(&beta_backup)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config"], "alpha wrote into beta's backup:\n{out}");
    assert_eq!(
        fs::read(srv.host("alpha").dir.join("backup/mine")).unwrap(),
        b"from alpha\n",
        "{out}"
    );
}
