//! The real `tiffin-tray` under Xvfb on a private D-Bus session: a test StatusNotifierWatcher
//! receives its item and reads icon, title (the tooltip) and the dbusmenu layout; menu entries
//! are clicked with `com.canonical.dbusmenu.Event(id, "clicked", …)`; a test notification server
//! records what is sent and answers with ActionInvoked. The agent side is a scripted agent on a
//! real socket speaking the real protocol (tests/support_tray).

use crate::support_tray;

use crate::desktop_available;
use serde_json::Value;
use std::time::{Duration, Instant};
use support_tray::{wait_for, Desktop, StubAgent};
use tiffin::ipc::Command;
use tiffin::status::{
    unix_now, AgentStatus, CheckResult, LastCheck, LastUpdate, Outcome, Phase, Policy, Progress,
    RollbackInfo, RollbackState,
};
use tiffin::tray::view::{self, IconKind};

const REGISTER: Duration = Duration::from_secs(30);
const CHANGE: Duration = Duration::from_secs(10);

/// One "now" per test process: statuses built at different moments must describe the same past
/// events with the same times, as the agent does.
fn start_time() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(unix_now)
}

fn up_to_date(generation: u64) -> AgentStatus {
    let now = start_time();
    AgentStatus {
        host: "laptop".into(),
        applied_generation: Some(generation),
        applied_at: Some(now - 600),
        last_check: Some(LastCheck {
            at: now - 120,
            result: CheckResult::UpToDate,
            message: None,
        }),
        last_update: Some(LastUpdate {
            at: now - 600,
            generation,
            outcome: Outcome::Updated,
            failed_step: None,
            message: None,
        }),
        rollback: RollbackState {
            previous_available: true,
            last: None,
        },
        policy: Policy::Notify,
        server_reachable: Some(true),
        admin_group: "wheel".into(),
        ..AgentStatus::default()
    }
}

fn with_available(mut s: AgentStatus, generation: u64) -> AgentStatus {
    s.available_generation = Some(generation);
    s.last_check = Some(LastCheck {
        at: unix_now(),
        result: CheckResult::UpdateAvailable,
        message: None,
    });
    s
}

fn wait_for_registration(d: &mut Desktop) {
    wait_for(
        REGISTER,
        "the tray's StatusNotifierItem to register",
        || {
            let items = d.call(serde_json::json!({"cmd": "items"}))?;
            Ok(items
                .as_array()
                .is_some_and(|a| !a.is_empty())
                .then_some(()))
        },
    );
}

fn wait_for_notification(d: &mut Desktop, summary: &str) -> Value {
    wait_for(CHANGE, &format!("notification {summary:?}"), || {
        let all = d.notifications()?;
        match all.iter().find(|n| n["summary"] == summary) {
            Some(n) => Ok(Some(n.clone())),
            None => Err(format!("notifications: {all:?}")),
        }
    })
}

fn wait_for_command(agent: &StubAgent, cmd: Command, count: usize) {
    wait_for(CHANGE, &format!("{count} × {cmd:?} at the agent"), || {
        let seen = agent.commands();
        let n = seen.iter().filter(|c| **c == cmd).count();
        if n >= count {
            Ok(Some(()))
        } else {
            Err(format!("agent got {seen:?}"))
        }
    });
}

/// Answers a notification with `key` until the agent has received `count` × `cmd`.
///
/// notify-rust listens for ActionInvoked only after Notify has returned, so an answer sent the
/// instant the notification is recorded can go unheard (a person is never that fast); it is sent
/// again until it is heard. The tray handles one answer per notification, so a repeat after the
/// first that was heard changes nothing.
fn invoke_until_command(
    d: &mut Desktop,
    id: u64,
    key: &str,
    agent: &StubAgent,
    cmd: Command,
    count: usize,
) {
    let heard = |agent: &StubAgent| agent.commands().iter().filter(|c| **c == cmd).count() >= count;
    let start = Instant::now();
    while start.elapsed() < CHANGE {
        d.invoke_action(id, key).expect("ActionInvoked");
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_millis(500) {
            if heard(agent) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!(
        "answering notification {id} with {key:?} never reached the agent: {:?}",
        agent.commands()
    );
}

fn summaries(d: &mut Desktop) -> Vec<String> {
    d.notifications()
        .unwrap_or_default()
        .iter()
        .map(|n| n["summary"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn without_an_agent_the_item_registers_and_shows_agent_unreachable() {
    if !desktop_available("tray_dbus") {
        return;
    }
    let mut d = Desktop::start();
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    let item = wait_for(CHANGE, "the unreachable title", || {
        let item = d.item()?;
        Ok(item["Title"]
            .as_str()
            .is_some_and(|t| t.starts_with("tiffin: Agent not reachable"))
            .then_some(item))
    });
    assert_eq!(item["Status"], "Active");
    assert!(item["Menu"].as_str().unwrap_or_default().starts_with('/'));
    d.wait_for_icon(CHANGE, IconKind::AgentUnreachable);

    let menu = d.menu().expect("layout");
    let entry = |label: &str| {
        menu.iter()
            .find(|e| e.label == label)
            .unwrap_or_else(|| panic!("no {label:?} in {menu:?}"))
            .clone()
    };
    assert_eq!(menu[0].label, "Agent not reachable");
    assert!(!menu[0].enabled, "status lines are not clickable");
    for label in [
        view::LABEL_UPDATE_NOW,
        view::LABEL_CHECK_NOW,
        view::LABEL_ROLL_BACK,
        view::LABEL_SHOW_LOG,
    ] {
        assert!(
            !entry(label).enabled,
            "{label} must be disabled without an agent"
        );
    }
    assert!(entry(view::LABEL_QUIT).enabled);
    assert_eq!(entry(view::LABEL_START_AT_LOGIN).toggle_state, 0);
    assert!(
        summaries(&mut d).is_empty(),
        "a short outage is not notified"
    );
}

#[test]
fn start_at_login_click_writes_and_removes_the_autostart_entry() {
    if !desktop_available("tray_dbus") {
        return;
    }
    let mut d = Desktop::start();
    let entry = d.config_home().join("autostart/tiffin-tray.desktop");
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    d.wait_for_line(CHANGE, view::LABEL_START_AT_LOGIN);
    assert!(!entry.exists());

    d.click(view::LABEL_START_AT_LOGIN).expect("click");
    wait_for(CHANGE, "the autostart entry", || {
        Ok(entry.exists().then_some(()))
    });
    let text = std::fs::read_to_string(&entry).expect("read the entry");
    assert!(text.lines().any(|l| l == "Exec=tiffin-tray"), "{text}");
    wait_for(CHANGE, "the check mark", || {
        let m = d.menu()?;
        Ok(m.iter()
            .any(|e| e.label == view::LABEL_START_AT_LOGIN && e.toggle_state == 1)
            .then_some(()))
    });

    d.click(view::LABEL_START_AT_LOGIN).expect("click");
    wait_for(CHANGE, "the entry to go", || {
        Ok((!entry.exists()).then_some(()))
    });
    wait_for(CHANGE, "the check mark to clear", || {
        let m = d.menu()?;
        Ok(m.iter()
            .any(|e| e.label == view::LABEL_START_AT_LOGIN && e.toggle_state == 0)
            .then_some(()))
    });
}

#[test]
fn update_available_is_shown_and_notified_and_both_update_buttons_reach_the_agent() {
    if !desktop_available("tray_dbus") {
        return;
    }
    let mut d = Desktop::start();
    let agent = StubAgent::start(&d.socket(), up_to_date(42));
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    let menu = d.wait_for_line(CHANGE, "Up to date");
    assert!(
        menu.iter()
            .any(|l| l == "Generation 42, applied 10 min ago"),
        "{menu:?}"
    );
    assert!(menu.iter().any(|l| l == "Last check 2 min ago"), "{menu:?}");
    d.wait_for_icon(CHANGE, IconKind::UpToDate);
    assert!(
        summaries(&mut d).is_empty(),
        "nothing to say at first contact: {:?}",
        summaries(&mut d)
    );

    // The server has generation 43 and the policy waits for the user.
    agent.set_status(with_available(up_to_date(42), 43));
    d.wait_for_line(CHANGE, "Update available: generation 43");
    d.wait_for_icon(CHANGE, IconKind::UpdateAvailable);
    let note = wait_for_notification(&mut d, "Update available: generation 43");
    assert_eq!(note["app_name"], "tiffin");
    // "Update now" first, then the "Later" choices before the deadline.
    let actions = note["actions"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        actions[..2],
        [
            serde_json::json!("update-now"),
            serde_json::json!("Update now")
        ]
    );
    assert!(
        actions.contains(&serde_json::json!("later-hour")),
        "{actions:?}"
    );
    assert!(d.item().expect("item")["Title"]
        .as_str()
        .unwrap_or_default()
        .contains("Update available"));

    // One click on "Update now" in the menu.
    d.click(view::LABEL_UPDATE_NOW).expect("click");
    wait_for_command(&agent, Command::Update, 1);

    // The agent runs the cycle: the menu follows it and disables "Update now" meanwhile.
    let mut s = with_available(up_to_date(42), 43);
    s.phase = Phase::Downloading;
    s.progress = Some(Progress {
        done_files: 1,
        total_files: 4,
        done_bytes: 50,
        total_bytes: 100,
    });
    agent.set_status(s);
    d.wait_for_line(
        CHANGE,
        "Updating to generation 43: downloading 1 of 4 files (50%)",
    );
    d.wait_for_icon(CHANGE, IconKind::Updating(None));
    let busy = d.menu().expect("menu");
    assert!(busy
        .iter()
        .any(|e| e.label == view::LABEL_UPDATE_NOW && !e.enabled));
    let mut done = up_to_date(43);
    done.applied_at = Some(unix_now());
    done.last_update = Some(LastUpdate {
        at: unix_now(),
        generation: 43,
        outcome: Outcome::Updated,
        failed_step: None,
        message: None,
    });
    agent.set_status(done);
    let menu = d.wait_for_line(CHANGE, "Up to date");
    assert!(
        menu.iter().any(|l| l == "Generation 43, applied just now"),
        "{menu:?}"
    );
    d.wait_for_icon(CHANGE, IconKind::UpToDate);
    wait_for_notification(&mut d, "Updated to generation 43");
    assert_eq!(
        summaries(&mut d),
        vec![
            "Update available: generation 43",
            "Updated to generation 43"
        ],
        "one notification per event"
    );

    // A newer generation: this time the notification's button starts the update.
    agent.set_status(with_available(agent.status(), 44));
    let note = wait_for_notification(&mut d, "Update available: generation 44");
    let id = note["id"].as_u64().expect("notification id");
    invoke_until_command(&mut d, id, "update-now", &agent, Command::Update, 2);
}

#[test]
fn a_rolled_back_update_shows_icon_line_and_notification_with_the_reason() {
    if !desktop_available("tray_dbus") {
        return;
    }
    let mut d = Desktop::start();
    let agent = StubAgent::start(&d.socket(), with_available(up_to_date(42), 43));
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    d.wait_for_line(CHANGE, "Update available: generation 43");

    let mut verifying = with_available(up_to_date(42), 43);
    verifying.phase = Phase::Verifying;
    agent.set_status(verifying);
    d.wait_for_icon(CHANGE, IconKind::Updating(None));

    let at = unix_now();
    let mut rolled = with_available(up_to_date(42), 43);
    rolled.last_update = Some(LastUpdate {
        at,
        generation: 43,
        outcome: Outcome::RolledBack,
        failed_step: Some(tiffin::status::Step::Verify),
        message: Some("lost contact with the server".into()),
    });
    rolled.rollback.last = Some(RollbackInfo {
        at,
        generation: 43,
        from_system: "/nix/store/b-nixos-43".into(),
        to_system: "/nix/store/a-nixos-42".into(),
        reason: "lost contact with the server".into(),
    });
    agent.set_status(rolled);
    d.wait_for_icon(CHANGE, IconKind::RolledBack);
    let menu = d.labels().expect("menu");
    let line = menu
        .iter()
        .find(|l| l.starts_with("Rolled back at "))
        .unwrap_or_else(|| panic!("no rolled-back line in {menu:?}"));
    assert!(line.ends_with(": lost contact with the server"), "{line}");
    let note = wait_for_notification(&mut d, "Generation 43 was rolled back");
    assert_eq!(note["body"], "lost contact with the server");
    // The pending update was announced at first contact; the rollback once, and nothing else.
    assert_eq!(
        summaries(&mut d),
        vec![
            "Update available: generation 43",
            "Generation 43 was rolled back"
        ]
    );
}

#[test]
fn agent_stopped_shows_unreachable_and_agent_back_recovers_without_restart() {
    if !desktop_available("tray_dbus") {
        return;
    }
    let mut d = Desktop::start();
    let agent = StubAgent::start(&d.socket(), up_to_date(42));
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    d.wait_for_line(CHANGE, "Up to date");

    let stopped = Instant::now();
    agent.stop();
    d.wait_for_line(CHANGE, "Agent not reachable");
    let seen_down = stopped.elapsed();
    d.wait_for_icon(CHANGE, IconKind::AgentUnreachable);
    assert!(!d
        .menu()
        .expect("menu")
        .iter()
        .any(|e| e.label == view::LABEL_UPDATE_NOW && e.enabled));

    let back = Instant::now();
    // The restarted agent has checked again since.
    let mut again = up_to_date(42);
    again.last_check = Some(LastCheck {
        at: unix_now(),
        result: CheckResult::UpToDate,
        message: None,
    });
    let _agent = StubAgent::start(&d.socket(), again);
    let menu = d.wait_for_line(CHANGE, "Last check just now");
    let seen_up = back.elapsed();
    assert_eq!(menu[0], "Up to date");
    d.wait_for_icon(CHANGE, IconKind::UpToDate);
    eprintln!("agent down seen after {seen_down:?}; agent back seen after {seen_up:?}");
    assert!(
        summaries(&mut d).is_empty(),
        "a short outage and a reconnect say nothing: {:?}",
        summaries(&mut d)
    );
}

#[test]
fn roll_back_asks_first_and_only_the_confirmation_rolls_back() {
    if !desktop_available("tray_dbus") {
        return;
    }
    // The tray decides "allowed" from the user's groups; as root it always is.
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipping: the rollback entry is enabled for root or the admin group only");
        return;
    }
    let mut d = Desktop::start();
    let agent = StubAgent::start(&d.socket(), up_to_date(42));
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    wait_for(CHANGE, "an enabled rollback entry", || {
        let m = d.menu()?;
        if m.iter()
            .any(|e| e.label == view::LABEL_ROLL_BACK && e.enabled)
        {
            Ok(Some(()))
        } else {
            Err(format!("menu: {m:?}"))
        }
    });

    d.click(view::LABEL_ROLL_BACK).expect("click");
    let ask = wait_for_notification(&mut d, "Roll back to the previous system?");
    assert_eq!(
        ask["actions"],
        serde_json::json!(["roll-back", "Roll back", "cancel", "Cancel"])
    );
    assert!(
        !agent.commands().contains(&Command::Rollback),
        "asked first"
    );

    // Cancel does nothing.
    d.invoke_action(ask["id"].as_u64().expect("id"), "cancel")
        .expect("invoke");
    d.click(view::LABEL_ROLL_BACK).expect("click again");
    let again = wait_for(CHANGE, "a second question", || {
        let all = d.notifications()?;
        Ok(all
            .iter()
            .filter(|n| n["summary"] == "Roll back to the previous system?")
            .nth(1)
            .cloned())
    });
    assert!(
        !agent.commands().contains(&Command::Rollback),
        "cancel rolled back"
    );
    let again = again["id"].as_u64().expect("id");
    invoke_until_command(&mut d, again, "roll-back", &agent, Command::Rollback, 1);
    assert_eq!(
        agent.commands(),
        vec![Command::Rollback],
        "one rollback for one answer"
    );
}

#[test]
fn show_last_log_writes_the_agent_log_and_opens_it() {
    if !desktop_available("tray_dbus") {
        return;
    }
    let mut d = Desktop::start();
    // A stand-in for the desktop's viewer: copies what it is asked to open (whole, by rename).
    let opened = d.dir.path().join("opened.txt");
    let opener = d.dir.path().join("bin/xdg-open");
    std::fs::write(
        &opener,
        format!(
            "#!/bin/sh\ncp \"$1\" '{0}.tmp' && mv '{0}.tmp' '{0}'\n",
            opened.display()
        ),
    )
    .expect("write xdg-open");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let _agent = StubAgent::start(&d.socket(), up_to_date(42));
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    wait_for(CHANGE, "an enabled log entry", || {
        let m = d.menu()?;
        Ok(m.iter()
            .any(|e| e.label == view::LABEL_SHOW_LOG && e.enabled)
            .then_some(()))
    });
    d.click(view::LABEL_SHOW_LOG).expect("click");
    let text = wait_for(CHANGE, "the opened log", || {
        Ok(std::fs::read_to_string(&opened).ok())
    });
    assert_eq!(text, "generation 43: build ok\nactivate ok\nverify ok\n");
}

#[test]
fn check_for_updates_click_asks_the_agent_to_check() {
    if !desktop_available("tray_dbus") {
        return;
    }
    let mut d = Desktop::start();
    let agent = StubAgent::start(&d.socket(), up_to_date(42));
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    d.wait_for_line(CHANGE, "Up to date");
    d.click(view::LABEL_CHECK_NOW).expect("click");
    wait_for_command(&agent, Command::Check, 1);

    // While the agent checks, a second check cannot be asked for.
    let mut checking = up_to_date(42);
    checking.phase = Phase::Checking;
    agent.set_status(checking);
    d.wait_for_line(CHANGE, "Checking for updates…");
    assert!(d
        .menu()
        .expect("menu")
        .iter()
        .any(|e| e.label == view::LABEL_CHECK_NOW && !e.enabled));
    assert_eq!(agent.commands(), vec![Command::Check]);
}

#[test]
fn a_failed_update_shows_the_failed_icon_and_notifies_step_and_message() {
    if !desktop_available("tray_dbus") {
        return;
    }
    let mut d = Desktop::start();
    let mut building = with_available(up_to_date(42), 43);
    building.phase = Phase::Building;
    let agent = StubAgent::start(&d.socket(), building);
    let _tray = d.start_tray();
    wait_for_registration(&mut d);
    d.wait_for_icon(CHANGE, IconKind::Updating(None));

    let mut failed = with_available(up_to_date(42), 43);
    failed.last_update = Some(LastUpdate {
        at: unix_now(),
        generation: 43,
        outcome: Outcome::Failed,
        failed_step: Some(tiffin::status::Step::Build),
        message: Some("nix-build exited with status 1".into()),
    });
    agent.set_status(failed);
    d.wait_for_icon(CHANGE, IconKind::Failed);
    let menu = d.wait_for_line(CHANGE, "Update to generation 43 failed at build");
    assert!(
        menu.iter().any(|l| l == "nix-build exited with status 1"),
        "{menu:?}"
    );
    let note = wait_for_notification(&mut d, "Update to generation 43 failed");
    assert_eq!(
        note["body"],
        "Failed at build: nix-build exited with status 1"
    );
    assert_eq!(summaries(&mut d).len(), 1, "{:?}", summaries(&mut d));
}
