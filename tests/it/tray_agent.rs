//! End to end with the real agent: `tiffin agent --config …` running the real pipeline against
//! the fake NixOS (tests/fake-nixos) on a `file://` publication laid out per docs/publication.md
//! (tests/daemon_support), and the real `tiffin-tray` under Xvfb on a private D-Bus session with
//! the test StatusNotifierWatcher and notification server (tests/support_tray).

use crate::daemon_support;
use crate::support_tray;

use crate::desktop_available;
use daemon_support::{files, require_root, Agent, AgentOptions};
use serde_json::Value;
use std::time::{Duration, Instant};
use support_tray::{wait_for, Desktop};
use tiffin::tray::view::{self, IconKind};

/// An agent cycle on a loaded machine takes a while; the tray itself reacts in milliseconds.
const CYCLE: Duration = Duration::from_secs(60);

fn wait_for_notification(d: &mut Desktop, summary: &str) -> Value {
    wait_for(CYCLE, &format!("notification {summary:?}"), || {
        let all = d.notifications()?;
        match all.iter().find(|n| n["summary"] == summary) {
            Some(n) => Ok(Some(n.clone())),
            None => Err(format!("notifications: {all:?}")),
        }
    })
}

/// An agent that checks every 2 s, so a publication is seen by itself; `policy` is `auto` or
/// `notify`.
fn agent_with_policy(policy: &str) -> Agent {
    let mut agent = Agent::prepare(AgentOptions {
        interval: "2s",
        ..AgentOptions::default()
    });
    // Top-level keys go before the `[system]` table.
    let text = std::fs::read_to_string(&agent.config).expect("read agent.toml");
    std::fs::write(&agent.config, format!("policy = \"{policy}\"\n{text}"))
        .expect("write agent.toml");
    agent.spawn();
    agent
}

fn notify_agent() -> Agent {
    agent_with_policy("notify")
}

fn start_tray(d: &mut Desktop, agent: &Agent) -> support_tray::Proc {
    let tray = d.start_tray_on(&agent.socket);
    wait_for(CYCLE, "the tray's item", || {
        let items = d.call(serde_json::json!({"cmd": "items"}))?;
        Ok(items
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(()))
    });
    tray
}

fn summaries(d: &mut Desktop) -> Vec<String> {
    d.notifications()
        .unwrap_or_default()
        .iter()
        .map(|n| n["summary"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn tray_follows_the_real_agent_through_publish_notify_update_and_restart() {
    if !require_root("tray_agent") || !desktop_available("tray_agent") {
        return;
    }
    let mut agent = notify_agent();
    let mut d = Desktop::start();
    let _tray = d.start_tray_on(&agent.socket);
    wait_for(CYCLE, "the tray's item", || {
        let items = d.call(serde_json::json!({"cmd": "items"}))?;
        Ok(items
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(()))
    });

    // Generation 1 is published and, under `notify`, waits for the user.
    d.wait_for_line(CYCLE, "Update available: generation 1");
    d.wait_for_icon(CYCLE, IconKind::UpdateAvailable);
    let first = wait_for_notification(&mut d, "Update available: generation 1");
    // "Update now" first, then the "Later" choices before the deadline.
    let actions = first["actions"].as_array().cloned().unwrap_or_default();
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

    // "Update now" in the menu: the agent runs the cycle and the menu reaches "Up to date".
    d.click(view::LABEL_UPDATE_NOW).expect("click Update now");
    let menu = d.wait_for_line(CYCLE, "Up to date");
    assert!(
        menu.iter().any(|l| l.starts_with("Generation 1, applied")),
        "{menu:?}"
    );
    d.wait_for_icon(CYCLE, IconKind::UpToDate);
    assert_eq!(
        agent.try_status().and_then(|s| s.applied_generation),
        Some(1)
    );

    // The admin publishes generation 2: the agent's next check finds it, the tray says so.
    agent.publication.publish(2, &files(4, 100, "g2"));
    d.wait_for_line(CYCLE, "Update available: generation 2");
    d.wait_for_icon(CYCLE, IconKind::UpdateAvailable);
    let note = wait_for_notification(&mut d, "Update available: generation 2");
    let id = note["id"].as_u64().expect("notification id");

    // The notification's "Update now" starts the update too. (notify-rust starts listening for
    // the answer after Notify returns; a person is never that fast, a test is, so it answers
    // again until the update is under way.)
    let start = Instant::now();
    loop {
        d.invoke_action(id, "update-now").expect("ActionInvoked");
        std::thread::sleep(Duration::from_millis(500));
        if agent.try_status().and_then(|s| s.applied_generation) == Some(2) {
            break;
        }
        assert!(
            start.elapsed() < CYCLE,
            "the notification's action did not update"
        );
    }
    let menu = d.wait_for_line(CYCLE, "Up to date");
    assert!(
        menu.iter().any(|l| l.starts_with("Generation 2, applied")),
        "{menu:?}"
    );
    let sent = summaries(&mut d);
    assert_eq!(
        sent.iter()
            .filter(|s| s.starts_with("Update available"))
            .count(),
        2,
        "one per generation: {sent:?}"
    );

    // The agent stops: the tray says so; it comes back: the tray recovers without a restart.
    let stopped = Instant::now();
    agent.stop();
    d.wait_for_line(CYCLE, "Agent not reachable");
    eprintln!("agent stop seen after {:?}", stopped.elapsed());
    d.wait_for_icon(CYCLE, IconKind::AgentUnreachable);
    agent.spawn();
    let menu = d.wait_for_line(CYCLE, "Up to date");
    assert!(
        menu.iter().any(|l| l.starts_with("Generation 2")),
        "{menu:?}"
    );
    d.wait_for_icon(CYCLE, IconKind::UpToDate);
}

#[test]
fn show_last_log_opens_the_real_agents_log() {
    if !require_root("tray_agent") || !desktop_available("tray_agent") {
        return;
    }
    let agent = notify_agent();
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
    let _tray = d.start_tray_on(&agent.socket);
    wait_for(CYCLE, "an enabled log entry", || {
        let m = d.menu()?;
        Ok(m.iter()
            .any(|e| e.label == view::LABEL_SHOW_LOG && e.enabled)
            .then_some(()))
    });
    d.click(view::LABEL_SHOW_LOG).expect("click");
    let text = wait_for(CYCLE, "the opened log", || {
        Ok(std::fs::read_to_string(&opened).ok())
    });
    let mut c = agent.client();
    let want = c.log().expect("log");
    match want.as_deref() {
        // The agent's log of its last cycle, as the agent gives it. The agent checks every 2 s,
        // so the cycle may be a later one than the tray fetched: compare the first lines.
        Some(log) => {
            assert!(!text.trim().is_empty());
            assert_eq!(text.lines().next(), log.lines().next(), "{text}");
        }
        None => assert!(text.contains("no log yet"), "{text}"),
    }
}

#[test]
fn an_update_that_cuts_the_machine_off_shows_the_rollback_with_its_reason() {
    if !require_root("tray_agent") || !desktop_available("tray_agent") {
        return;
    }
    // `auto`: generation 1 is applied at the agent's first check, before the tray starts.
    let agent = agent_with_policy("auto");
    wait_for(CYCLE, "generation 1 applied", || {
        Ok(agent
            .try_status()
            .and_then(|s| s.applied_generation)
            .filter(|g| *g == 1)
            .map(|_| ()))
    });
    let mut d = Desktop::start();
    let _tray = start_tray(&mut d, &agent);
    d.wait_for_line(CYCLE, "Up to date");

    // Generation 2 cuts the machine off the server when activated (the fake NixOS's CUT_NETWORK):
    // verification fails and the agent rolls back.
    agent
        .publication
        .publish(2, &[("CUT_NETWORK".to_string(), Vec::new())]);
    d.wait_for_icon(CYCLE, IconKind::RolledBack);
    let note = wait_for_notification(&mut d, "Generation 2 was rolled back");
    let reason = note["body"].as_str().unwrap_or_default().to_string();
    assert!(!reason.is_empty(), "the notification gives the reason");
    let status = agent.try_status().expect("status");
    let last = status
        .rollback
        .last
        .expect("the agent records the rollback");
    assert_eq!(reason, last.reason);
    let menu = d.labels().expect("menu");
    let line = menu
        .iter()
        .find(|l| l.starts_with("Rolled back at "))
        .unwrap_or_else(|| panic!("no rolled-back line in {menu:?}"));
    // The menu line may be clipped; the title (the tooltip) has the whole reason.
    assert!(
        format!(
            "{}{reason}",
            &line[..line.find(": ").map(|i| i + 2).unwrap_or(0)]
        )
        .starts_with(line.trim_end_matches('…')),
        "{line}"
    );
    let title = d.item().expect("item")["Title"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(title.contains(&reason), "{title}");
    eprintln!("the tray shows {line:?}");
    assert!(
        menu.iter().any(|l| l.starts_with("Generation 1")),
        "still on generation 1: {menu:?}"
    );
    let sent = summaries(&mut d);
    assert_eq!(
        sent.iter().filter(|s| s.contains("rolled back")).count(),
        1,
        "one notification for one rollback: {sent:?}"
    );
}
