//! The tray and the real agent's backups (docs/backup.md): the last backup's age in the menu,
//! and "Back up now" running real restic into the host's repository (a `file://` publication's
//! `backup/` here; the sftp path is `backup_restic`), listed afterwards by `tiffin backup
//! snapshots`, with its report in `logs/`.

use crate::daemon_support;
use crate::desktop_available;
use crate::support_tray;
use daemon_support::{require_root, Agent, AgentOptions, TIFFIN};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::time::Duration;
use support_tray::{wait_for, Desktop};
use tiffin::tray::view;

const WITHIN: Duration = Duration::from_secs(60);

#[test]
fn the_tray_shows_the_last_backups_age_and_back_up_now_makes_a_real_snapshot() {
    if !require_root("tray_backup") || !desktop_available("tray_backup") {
        return;
    }
    if !crate::support::prerequisite(
        "tray_backup",
        (!std::process::Command::new("restic")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()))
        .then(|| "restic is missing (packaging/deps.sh installs it)".to_string()),
    ) {
        return;
    }
    let mut agent = Agent::prepare(AgentOptions::default());
    let data = agent.dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("thesis.txt"), "chapter one\n").unwrap();
    let text = fs::read_to_string(&agent.config).unwrap();
    fs::write(
        &agent.config,
        format!(
            "{text}\n[backup]\npaths = [{:?}]\nschedule = \"daily\"\njitter = \"0s\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    // The agent remembers a backup made 3 h ago: the next one is not due for a day.
    let now = tiffin::status::unix_now();
    let then = now - 3 * 3600;
    let state = agent.dir.path().join("state");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state.join("backup"))
        .unwrap();
    fs::write(
        state.join("backup/last.json"),
        format!(
            "{{\"last\":{{\"started\":{},\"finished\":{then},\"outcome\":\"ok\"}},\"last_success\":{then}}}\n",
            then - 60
        ),
    )
    .unwrap();
    // The server side's logs/ (`fleet publish` makes it; this publication is laid out by hand).
    fs::create_dir_all(agent.publication.root.join("logs")).unwrap();
    agent.spawn();

    let mut d = Desktop::start();
    let _tray = d.start_tray_on(&agent.socket);
    let menu = d.wait_for_line(WITHIN, "Last backup: 3 h ago");
    assert!(
        menu.iter().any(|l| l == view::LABEL_BACK_UP_NOW),
        "{menu:?}"
    );

    d.click(view::LABEL_BACK_UP_NOW).expect("click Back up now");
    let menu = d.wait_for_line(WITHIN, "Last backup: just now");
    eprintln!("{menu:?}");
    let entry = wait_for(WITHIN, "an enabled Back up now", || {
        let m = d.menu()?;
        Ok(m.into_iter()
            .find(|e| e.label == view::LABEL_BACK_UP_NOW && e.enabled))
    });
    assert!(entry.enabled);

    // The snapshot is real: `tiffin backup snapshots` lists it through the agent.
    let out = std::process::Command::new(TIFFIN)
        .args(["backup", "--socket"])
        .arg(&agent.socket)
        .arg("snapshots")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listed.contains("1 snapshot(s)") && listed.contains(&data.display().to_string()),
        "{listed}"
    );
    // `tiffin backup` (status) says the same.
    let out = std::process::Command::new(TIFFIN)
        .args(["backup", "--socket"])
        .arg(&agent.socket)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("last backup: just now: ok, 1 new"),
        "{said}"
    );
    // Its report is in logs/, named for the host.
    let logs = agent.publication.root.join("logs");
    let reports: Vec<String> = fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("testhost-backup-"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report = fs::read_to_string(logs.join(&reports[0])).unwrap();
    assert!(report.contains("\"outcome\": \"ok\""), "{report}");
}
