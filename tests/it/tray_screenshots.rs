//! Screenshots of the real tray in a real panel (trayer, an XEmbed system tray) under Xvfb, menu
//! open, following the real agent (daemon + pipeline on the fake NixOS) through its states;
//! written to assets/screenshots/ for the README.
//! Run with `make screenshots` (`cargo test --test tray_screenshots -- --ignored`).

use crate::daemon_support;
use crate::support_tray;

use daemon_support::{files, Agent, AgentOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support_tray::{Desktop, Proc};
use tiffin::status::{AgentStatus, Phase};

const SCREEN_W: u32 = 800;
const SCREEN: &str = "800x480x24";
const PANEL_H: u32 = 28;
const CYCLE: Duration = Duration::from_secs(60);

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn run(d: &Desktop, program: &str, args: &[&str]) {
    let mut cmd = Command::new(program);
    d.session_env(&mut cmd);
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_status(agent: &Agent, what: &str, ok: impl Fn(&AgentStatus) -> bool) {
    let start = Instant::now();
    loop {
        if agent.try_status().is_some_and(|s| ok(&s)) {
            return;
        }
        assert!(
            start.elapsed() < CYCLE,
            "waited for {what}: {:?}",
            agent.try_status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks the agent for an update on a thread (the answer comes when the cycle ends).
fn update(agent: &Agent) -> std::thread::JoinHandle<()> {
    let mut c = agent.client();
    std::thread::spawn(move || {
        let _ = c.update();
    })
}

/// Starts a fresh tray, opens its menu with a click, takes the screen, closes the menu, keeps
/// the corner with the panel's icon and the menu. (A fresh tray per picture: in an XEmbed tray
/// a menu that was shown before keeps its first position, and a menu grown since then runs
/// past the screen's edge.)
fn shoot(d: &Desktop, socket: &Path, out_dir: &Path, name: &str) -> PathBuf {
    let _tray = d.start_tray_on(socket);
    // Let the tray start and draw the agent's status.
    std::thread::sleep(Duration::from_millis(2500));
    // The icon is the rightmost thing in the panel.
    let x = (SCREEN_W - PANEL_H / 2).to_string();
    let y = (PANEL_H / 2).to_string();
    run(d, "xdotool", &["mousemove", &x, &y, "click", "1"]);
    std::thread::sleep(Duration::from_millis(800));
    let full = d.dir.path().join(format!("{name}-full.png"));
    run(d, "import", &["-window", "root", &full.to_string_lossy()]);
    run(d, "xdotool", &["key", "Escape"]);
    let png = out_dir.join(format!("tray-{name}.png"));
    let crop = format!("540x480+{}+0", SCREEN_W - 540);
    let out = Command::new("convert")
        .args([
            &full.to_string_lossy(),
            "-crop",
            &crop,
            "+repage",
            &png.to_string_lossy(),
        ])
        .output()
        .expect("convert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(len > 1000, "{} is nearly empty", png.display());
    println!("wrote {}", png.display());
    png
}

#[test]
#[ignore = "writes assets/screenshots; run with `make screenshots`"]
fn screenshots_of_the_tray_menu_in_a_panel() {
    if !daemon_support::require_root("screenshots") {
        return;
    }
    let missing: Vec<_> = [
        "Xvfb",
        "dbus-daemon",
        "trayer",
        "xdotool",
        "import",
        "convert",
        "dbus-send",
    ]
    .into_iter()
    .filter(|t| !have(t))
    .collect();
    if let Some(why) = crate::system_bus::missing_prerequisite() {
        crate::support::prerequisite("screenshots", Some(why));
        return;
    }
    if !missing.is_empty() {
        let why = format!("missing {missing:?} (packaging/deps.sh test)");
        crate::support::prerequisite("screenshots", Some(why));
        return;
    }
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/screenshots");
    std::fs::create_dir_all(&out_dir).expect("mkdir assets/screenshots");

    // No StatusNotifierWatcher on this bus: the tray falls back to an XEmbed icon in trayer.
    let d = Desktop::start_without_watcher(SCREEN);
    let mut trayer = Command::new("trayer");
    d.session_env(&mut trayer);
    let _panel = Proc(
        trayer
            .args([
                "--edge",
                "top",
                "--align",
                "right",
                "--widthtype",
                "percent",
                "--width",
                "100",
                "--height",
                &PANEL_H.to_string(),
                "--transparent",
                "true",
                "--alpha",
                "0",
                "--tint",
                "0x303438",
                "--SetDockType",
                "true",
                "--expand",
                "false",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start trayer"),
    );
    std::thread::sleep(Duration::from_secs(1));

    // UPower on a private system bus, on mains power for now.
    let mut bus = crate::system_bus::SystemBus::start();
    bus.mock(
        "upower",
        r#"{"OnBattery": false}"#,
        "org.freedesktop.UPower",
    );
    bus.mock("networkmanager", "{}", "org.freedesktop.NetworkManager");

    // The real agent, policy `notify`, checking every 2 s; generation 1 with the admin's note
    // and a change summary.
    let mut agent = Agent::prepare(AgentOptions {
        interval: "2s",
        ..AgentOptions::default()
    });
    agent.publication.set_note(1, "Adds the office printer");
    agent.publication.set_changes(
        1,
        tiffin::manifest::Changes {
            lines: vec![
                "cups 2.4.7 (new)".into(),
                "hplip 3.23.12 (new)".into(),
                "firefox 120.0 → 121.0".into(),
                "linux 6.6.1 → 6.6.2".into(),
            ],
            more: 3,
            restart_needed: true,
        },
    );
    agent
        .env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone()));
    let text = std::fs::read_to_string(&agent.config).expect("read agent.toml");
    // Top-level keys go before the `[system]` table.
    std::fs::write(&agent.config, format!("policy = \"notify\"\n{text}")).expect("agent.toml");
    agent.spawn();

    // Generation 1 is published and waits for the user.
    wait_status(&agent, "generation 1 available", |s| {
        s.available_generation == Some(1) && s.phase == Phase::Idle
    });
    shoot(&d, &agent.socket, &out_dir, "update-available");

    update(&agent).join().expect("update");
    wait_status(&agent, "generation 1 applied", |s| {
        s.applied_generation == Some(1)
    });
    shoot(&d, &agent.socket, &out_dir, "up-to-date");

    // On battery: the next automatic run waits and says why; back on mains it goes ahead.
    bus.set_on_battery(true);
    wait_status(&agent, "waiting on battery", |s| {
        !s.waiting_for.is_empty() && s.phase == Phase::Idle
    });
    shoot(&d, &agent.socket, &out_dir, "waiting-on-battery");
    bus.set_on_battery(false);

    // Generation 2, held at the fake build while the picture is taken.
    let pause = agent.dir.path().join("nixos/pause-build");
    std::fs::write(&pause, "").expect("pause the fake build");
    agent.publication.publish(2, &files(40, 2000, "g2"));
    wait_status(&agent, "generation 2 available", |s| {
        s.available_generation == Some(2) && s.phase == Phase::Idle
    });
    let cycle = update(&agent);
    wait_status(&agent, "the build", |s| s.phase == Phase::Building);
    shoot(&d, &agent.socket, &out_dir, "updating");
    std::fs::remove_file(&pause).expect("resume the build");
    cycle.join().expect("update");

    // Generation 3 cuts the machine off the server when activated: the agent rolls back.
    agent
        .publication
        .publish(3, &[("CUT_NETWORK".to_string(), Vec::new())]);
    wait_status(&agent, "generation 3 available", |s| {
        s.available_generation == Some(3) && s.phase == Phase::Idle
    });
    update(&agent).join().expect("update");
    wait_status(&agent, "the rollback", |s| s.rollback.last.is_some());
    shoot(&d, &agent.socket, &out_dir, "rolled-back");

    agent.stop();
    shoot(&d, &agent.socket, &out_dir, "agent-unreachable");
}
