//! The person at the machine, end to end with the real agent (policy `notify`, `deadline = 2h`)
//! and the real `tiffin-tray` under Xvfb: the admin's note in the menu and the notification;
//! "Later" from the menu postpones within the deadline; `tiffin postpone` past the deadline is
//! refused with the deadline in the message; a postponed update is not announced again before
//! its time, and is once its time has come.

use crate::daemon_support::{files, require_root, Agent, AgentOptions, TIFFIN};
use crate::desktop_available;
use crate::support_tray::{wait_for, Desktop, Proc};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use tiffin::status::unix_now;

const CYCLE: Duration = Duration::from_secs(60);
const NOTE: &str = "Adds the office printer";

/// A `notify` agent checking every 2 s, whose generation 1 carries [`NOTE`].
fn notify_agent_with_note() -> Agent {
    let mut agent = Agent::prepare(AgentOptions {
        interval: "2s",
        ..AgentOptions::default()
    });
    agent.publication.publish(1, &files(3, 100, "g1"));
    agent.publication.set_note(1, NOTE);
    let text = std::fs::read_to_string(&agent.config).expect("read agent.toml");
    std::fs::write(
        &agent.config,
        format!("policy = \"notify\"\ndeadline = \"2h\"\n{text}"),
    )
    .expect("write agent.toml");
    agent.spawn();
    agent
}

fn start_tray(d: &mut Desktop, agent: &Agent) -> Proc {
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

fn announcements(d: &mut Desktop) -> Vec<Value> {
    d.notifications()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["summary"] == "Update available: generation 1")
        .collect()
}

fn postpone(agent: &Agent, duration: &str) -> (bool, String, String) {
    let out = Command::new(TIFFIN)
        .args(["postpone", duration, "--socket"])
        .arg(&agent.socket)
        .output()
        .expect("run tiffin postpone");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_note_shows_later_postpones_within_the_deadline_and_the_reminder_waits_for_its_time() {
    if !require_root("tray_desk") || !desktop_available("tray_desk") {
        return;
    }
    let agent = notify_agent_with_note();
    let mut d = Desktop::start();
    let _tray = start_tray(&mut d, &agent);

    // The note, in the menu and in the one announcement, with when it applies itself.
    let menu = d.wait_for_line(CYCLE, &format!("“{NOTE}”"));
    assert!(
        menu.iter().any(|l| l.starts_with("Applies itself today at")
            || l.starts_with("Applies itself tomorrow at")),
        "{menu:?}"
    );
    let first = wait_for(CYCLE, "the announcement", || {
        Ok(announcements(&mut d).into_iter().next())
    });
    let body = first["body"].as_str().unwrap_or_default();
    assert!(body.starts_with(NOTE), "{body}");
    let actions = first["actions"].to_string();
    assert!(actions.contains("later-hour"), "{actions}");

    // "Later: in 1 hour" from the menu: the agent keeps it, the menu says until when.
    d.click("Later: in 1 hour").expect("click Later");
    let postponed = wait_for(CYCLE, "the postponement in the agent's status", || {
        Ok(agent.try_status().and_then(|s| s.postponed))
    });
    assert_eq!(postponed.generation, 1);
    assert!(
        postponed.until.abs_diff(unix_now() + 3600) < 60,
        "{postponed:?}"
    );
    d.wait_for_line(
        CYCLE,
        &format!(
            "Postponed until {}",
            tiffin::timefmt::clock(postponed.until, &tiffin::timefmt::local_zone())
        ),
    );

    // Past the deadline (2 h): refused, naming the deadline.
    let deadline = agent
        .try_status()
        .and_then(|s| s.deadline)
        .expect("deadline");
    let (ok, _, err) = postpone(&agent, "3h");
    assert!(!ok, "postponing past the deadline was accepted");
    let shown = tiffin::timefmt::date_time(deadline, &tiffin::timefmt::local_zone());
    assert!(err.contains(&shown) && err.contains("deadline"), "{err}");

    // A short postponement: no announcement before its time (whole seconds, as the agent keeps
    // it), one once it has come.
    let (ok, out, err) = postpone(&agent, "6s");
    assert!(ok, "{out}{err}");
    let until = agent
        .try_status()
        .and_then(|s| s.postponed)
        .expect("postponed")
        .until;
    let before = announcements(&mut d).len();
    loop {
        // The count first, then the clock: a reminder counted here was sent before `now`.
        let n = announcements(&mut d).len();
        if unix_now() >= until {
            break;
        }
        assert_eq!(n, before, "announced again before the postponed time");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(
        Duration::from_secs(20),
        "the reminder at the postponed time",
        || {
            let n = announcements(&mut d).len();
            if n > before {
                Ok(Some(()))
            } else {
                Err(format!("{n} announcements"))
            }
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(announcements(&mut d).len(), before + 1, "reminded once");
}

/// "Restart now" in the menu while a restart is needed asks logind (dbusmock's `logind` template
/// on a private system bus) for `Reboot(true)`; when logind refuses, the tray says so.
#[test]
fn restart_now_asks_logind_and_shows_a_refusal() {
    if !desktop_available("tray_desk")
        || !crate::support::prerequisite("tray_desk", crate::system_bus::missing_prerequisite())
    {
        return;
    }
    let mut bus = crate::system_bus::SystemBus::start();
    bus.mock("logind", "{}", "org.freedesktop.login1");
    let mut d = Desktop::start();
    let status = tiffin::status::AgentStatus {
        host: "laptop".into(),
        applied_generation: Some(7),
        reboot_needed: true,
        ..Default::default()
    };
    let _agent = crate::support_tray::StubAgent::start(&d.socket(), status);
    let _tray = d.start_tray_with(
        &d.socket(),
        &[("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())],
    );
    d.wait_for_line(CYCLE, tiffin::tray::view::LABEL_RESTART_NOW);
    d.click(tiffin::tray::view::LABEL_RESTART_NOW)
        .expect("click Restart now");
    let calls = || {
        bus.send(&[
            "--print-reply",
            "--dest=org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.DBus.Mock.GetCalls",
        ])
    };
    let reboot = wait_for(CYCLE, "logind's Reboot call", || {
        let out = calls()?;
        Ok(out.contains("\"Reboot\"").then_some(out))
    });
    let after = reboot.split("\"Reboot\"").nth(1).unwrap_or_default();
    assert!(
        after.trim_start().contains("boolean true"),
        "interactive: {reboot}"
    );

    // logind refuses (polkit said no): the tray shows logind's words.
    bus.send(&[
        "--print-reply",
        "--dest=org.freedesktop.login1",
        "/org/freedesktop/login1",
        "org.freedesktop.DBus.Mock.AddMethod",
        "string:org.freedesktop.login1.Manager",
        "string:Reboot",
        "string:b",
        "string:",
        "string:raise dbus.exceptions.DBusException('Access denied by the administrator', name='org.freedesktop.DBus.Error.AccessDenied')",
    ])
    .expect("make Reboot refuse");
    d.click(tiffin::tray::view::LABEL_RESTART_NOW)
        .expect("click Restart now");
    let refused = wait_for(CYCLE, "the refusal", || {
        let all = d.notifications()?;
        Ok(all
            .into_iter()
            .find(|n| n["summary"] == "Restart did not start"))
    });
    let body = refused["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("Access denied by the administrator") && body.contains("logind refused"),
        "{body}"
    );
}

/// The tray speaks the session's language: with `LANG=de_DE.UTF-8` the menu is German, with
/// `LANG=fr_FR.UTF-8` French (the real tray under Xvfb, a scripted agent with an update waiting).
#[test]
fn the_menu_speaks_german_and_french_from_lang() {
    if !desktop_available("tray_desk") {
        return;
    }
    let now = unix_now();
    let status = tiffin::status::AgentStatus {
        host: "laptop".into(),
        applied_generation: Some(42),
        applied_at: Some(now - 600),
        available_generation: Some(43),
        available_note: Some(NOTE.into()),
        policy: tiffin::status::Policy::Notify,
        deadline: Some(now + 30 * 3600),
        ..Default::default()
    };
    for (lang, headline, update_now, later) in [
        (
            "de_DE.UTF-8",
            "Update verfügbar: Generation 43",
            "Jetzt aktualisieren",
            "Später: in 1 Stunde",
        ),
        (
            "fr_FR.UTF-8",
            "Mise à jour disponible : génération 43",
            "Mettre à jour maintenant",
            "Plus tard : dans 1 heure",
        ),
    ] {
        let mut d = Desktop::start();
        let _agent = crate::support_tray::StubAgent::start(&d.socket(), status.clone());
        let _tray = d.start_tray_with(
            &d.socket(),
            &[
                ("LANG", lang),
                ("LANGUAGE", ""),
                ("LC_ALL", ""),
                ("LC_MESSAGES", ""),
            ],
        );
        let menu = d.wait_for_line(CYCLE, headline);
        for want in [update_now, later, &format!("“{NOTE}”")] {
            assert!(
                menu.iter().any(|l| l == want),
                "{lang}: {want:?} in {menu:?}"
            );
        }
        assert!(
            !menu
                .iter()
                .any(|l| l == tiffin::tray::view::LABEL_UPDATE_NOW),
            "{lang}: English left in {menu:?}"
        );
        let n = wait_for(CYCLE, "the announcement", || {
            Ok(d.notifications()?.into_iter().next())
        });
        assert_eq!(n["summary"], headline, "{lang}");
    }
}
