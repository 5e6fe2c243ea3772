//! Scheduled backups wait on battery like automatic updates (docs/backup.md, "When"): the real
//! agent with `[backup]`, real restic into its own `backup/` through the real sshd chroot, and
//! python-dbusmock's `upower` (and `networkmanager`) on a private system bus. A backup due at
//! start does not run on battery; when `OnBattery` turns false it runs by itself within seconds
//! (the gate's change wakes the task: its longest sleep is a minute); `tiffin backup now` runs
//! on battery.

use crate::backup_restic::{missing_restic, server};
use crate::daemon_support::{require_root, Agent, AgentOptions, TIFFIN};
use crate::desk_power::{bus_on_battery, wait_status};
use crate::support;
use crate::system_bus;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::sshd::Sshd;
use tiffin::backup::BackupOutcome;
use tiffin::status::{AgentStatus, Waiting};

/// `Agent::prepare`'s host name: the sshd serves a chroot for it.
const HOST: &str = "testhost";

/// The restic snapshots in the host's `backup/` on the server (none before `restic init`).
fn snapshots_on_server(srv: &Sshd) -> usize {
    fs::read_dir(srv.host(HOST).dir.join("backup/snapshots")).map_or(0, |d| d.count())
}

/// The real agent (policy `notify`: on mains its check only fetches, no rebuild) reaching `srv`
/// over sftp, with a `[backup]` of `data` that has never run, on `bus`.
fn agent_with_backup(srv: &Sshd, bus: &system_bus::SystemBus, data: &Path) -> Agent {
    let mut agent = Agent::prepare(AgentOptions::default());
    let h = srv.host(HOST);
    let sftp = format!(
        "source = \"sftp://{user}@127.0.0.1:{port}/\"\nidentity = {id:?}\nknown_hosts = {kh:?}\n\
         trusted_key = {key:?}\npolicy = \"notify\"",
        user = h.user,
        port = srv.port(),
        id = h.identity.display().to_string(),
        kh = srv.known_hosts_for(srv.port()).display().to_string(),
        key = srv.fleet().public_key().display().to_string(),
    );
    let text = fs::read_to_string(&agent.config).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| match l.starts_with("source = ") {
            true => sftp.clone(),
            false => l.to_string(),
        })
        .collect();
    fs::write(
        &agent.config,
        format!(
            "{}\n\n[backup]\npaths = [{:?}]\nschedule = \"daily\"\njitter = \"0s\"\n",
            text.join("\n"),
            data.display().to_string()
        ),
    )
    .unwrap();
    agent
        .env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone()));
    // Ready once the scheduler has read UPower: the automatic update waits on battery.
    agent.spawn_until(|s| s.waiting_for == [Waiting::OnBattery]);
    agent
}

fn backup_said(agent: &Agent, args: &[&str]) -> (bool, String) {
    let out = Command::new(TIFFIN)
        .args(["backup", "--socket"])
        .arg(&agent.socket)
        .args(args)
        .output()
        .expect("tiffin backup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn last_ok(s: &AgentStatus) -> bool {
    s.backup
        .as_ref()
        .and_then(|b| b.last.as_ref())
        .is_some_and(|r| r.outcome == BackupOutcome::Ok)
}

#[test]
fn on_battery_a_due_backup_waits_runs_when_on_mains_and_backup_now_runs_regardless() {
    if !require_root("backup_power")
        || !support::prerequisite("backup_power", system_bus::missing_prerequisite())
        || !support::prerequisite("backup_power", missing_restic())
    {
        return;
    }
    let Some(srv) = server(&[HOST]) else {
        return;
    };
    let bus = bus_on_battery();
    let agent_dir = tempfile::tempdir().unwrap();
    let data = agent_dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("thesis.txt"), "chapter one\n").unwrap();
    let agent = agent_with_backup(&srv, &bus, &data);

    // 1. On battery the backup due at start does not run: several seconds, no snapshot.
    std::thread::sleep(Duration::from_secs(5));
    let s = agent.try_status().expect("status");
    let b = s.backup.clone().expect("the backup part of the status");
    assert!(
        b.last.is_none() && !b.running,
        "a scheduled backup ran on battery: {b:?}\n{}",
        agent.stderr()
    );
    assert!(
        b.next.is_some_and(|n| n <= tiffin::status::unix_now()),
        "{b:?}"
    );
    assert_eq!(snapshots_on_server(&srv), 0);
    let (ok, said) = backup_said(&agent, &[]);
    assert!(ok && said.contains("last backup: none yet"), "{said}");

    // 3. Mains power: the held-back backup runs by itself, woken by the change.
    bus.set_on_battery(false);
    let took = wait_status(
        &agent,
        Duration::from_secs(30),
        "a scheduled backup",
        last_ok,
    );
    eprintln!("backup_power: the scheduled backup ended {took:?} after OnBattery turned false");
    assert!(
        took < Duration::from_secs(20),
        "{took:?}: not woken by the change"
    );
    assert_eq!(snapshots_on_server(&srv), 1);

    // 2. On battery again, `tiffin backup now` (the socket request) runs regardless.
    bus.set_on_battery(true);
    // The agent's follower takes the signal in milliseconds.
    std::thread::sleep(Duration::from_secs(1));
    fs::write(data.join("thesis.txt"), "chapter two\n").unwrap();
    let (ok, said) = backup_said(&agent, &["now"]);
    assert!(ok, "{said}\n{}", agent.stderr());
    eprintln!("backup_power: backup now on battery: {said}");
    assert_eq!(snapshots_on_server(&srv), 2, "{said}");
    let (_, listed) = backup_said(&agent, &["snapshots"]);
    assert!(listed.contains("2 snapshot(s)"), "{listed}");
}
