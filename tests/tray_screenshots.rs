//! Screenshots of the real tray in a real panel (trayer, an XEmbed system tray) under Xvfb, menu
//! open, in several states; written to assets/screenshots/ for the README.
//! Run with `make screenshots` (`cargo test --test tray_screenshots -- --ignored`).
#![cfg(feature = "tray")]

mod support_tray;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support_tray::{Desktop, Proc, StubAgent};
use tiffin::status::{
    unix_now, AgentStatus, CheckResult, LastCheck, LastUpdate, Outcome, Phase, Policy, Progress,
    RollbackInfo, RollbackState,
};

const SCREEN_W: u32 = 800;
const SCREEN: &str = "800x420x24";
const PANEL_H: u32 = 28;

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

fn base() -> AgentStatus {
    let now = unix_now();
    AgentStatus {
        host: "laptop".into(),
        applied_generation: Some(42),
        applied_at: Some(now - 600),
        last_check: Some(LastCheck {
            at: now - 120,
            result: CheckResult::UpToDate,
            message: None,
        }),
        last_update: Some(LastUpdate {
            at: now - 600,
            generation: 42,
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

fn states() -> Vec<(&'static str, Option<AgentStatus>)> {
    let now = unix_now();
    let mut available = base();
    available.available_generation = Some(43);
    available.deadline = Some(now + 20 * 3600 + 30);
    let mut updating = available.clone();
    updating.phase = Phase::Downloading;
    updating.progress = Some(Progress {
        done_files: 37,
        total_files: 120,
        done_bytes: 4_000_000,
        total_bytes: 9_000_000,
    });
    let mut rolled = available.clone();
    rolled.deadline = None;
    rolled.last_update = Some(LastUpdate {
        at: now - 300,
        generation: 43,
        outcome: Outcome::RolledBack,
        failed_step: Some("verify".into()),
        message: Some("lost contact with the server".into()),
    });
    rolled.rollback.last = Some(RollbackInfo {
        at: now - 300,
        generation: 43,
        from_system: "/nix/store/b-nixos-43".into(),
        to_system: "/nix/store/a-nixos-42".into(),
        reason: "lost contact with the server".into(),
    });
    vec![
        ("up-to-date", Some(base())),
        ("update-available", Some(available)),
        ("updating", Some(updating)),
        ("rolled-back", Some(rolled)),
        ("agent-unreachable", None),
    ]
}

#[test]
#[ignore = "writes assets/screenshots; run with `make screenshots`"]
fn screenshots_of_the_tray_menu_in_a_panel() {
    let missing: Vec<_> = [
        "Xvfb",
        "dbus-daemon",
        "trayer",
        "xdotool",
        "import",
        "convert",
    ]
    .into_iter()
    .filter(|t| !have(t))
    .collect();
    if !missing.is_empty() {
        let why = format!("missing {missing:?} (packaging/deps.sh test)");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}, and CI=true forbids skipping");
        }
        eprintln!("skipping screenshots: {why}");
        return;
    }
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/screenshots");
    std::fs::create_dir_all(&out_dir).expect("mkdir assets/screenshots");

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

    let mut agent: Option<StubAgent> = None;
    let mut tray: Option<Proc> = None;
    let mut written: Vec<PathBuf> = Vec::new();
    for (name, status) in states() {
        match (status, agent.as_ref()) {
            (Some(s), Some(a)) => a.set_status(s),
            (Some(s), None) => agent = Some(StubAgent::start(&d.socket(), s)),
            (None, _) => {
                if let Some(a) = agent.take() {
                    a.stop();
                }
            }
        }
        if tray.is_none() {
            tray = Some(d.start_tray());
        }
        std::thread::sleep(Duration::from_millis(1500));
        // The icon is the rightmost thing in the panel; a click opens its menu.
        let x = (SCREEN_W - PANEL_H / 2).to_string();
        let y = (PANEL_H / 2).to_string();
        run(&d, "xdotool", &["mousemove", &x, &y, "click", "1"]);
        std::thread::sleep(Duration::from_millis(800));
        let full = d.dir.path().join(format!("{name}-full.png"));
        run(&d, "import", &["-window", "root", &full.to_string_lossy()]);
        run(&d, "xdotool", &["key", "Escape"]);
        let png = out_dir.join(format!("tray-{name}.png"));
        let crop = format!("540x300+{}+0", SCREEN_W - 540);
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
        written.push(png);
    }
    for p in &written {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "{} is nearly empty", p.display());
        println!("wrote {}", p.display());
    }
}
