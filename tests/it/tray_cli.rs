//! The tray's command line: `tiffin-tray --autostart on|off` writes and removes the XDG autostart
//! entry in `$XDG_CONFIG_HOME/autostart`, the packaged entry is a valid desktop file, and without
//! a display the tray says so instead of crashing.

use std::path::Path;
use std::process::Command;

fn tray(config_home: &Path, arg: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tiffin-tray"))
        .args(["--autostart", arg])
        .env("XDG_CONFIG_HOME", config_home)
        .output()
        .expect("run tiffin-tray")
}

#[test]
fn autostart_on_writes_the_entry_and_off_removes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let entry = dir.path().join("autostart/tiffin-tray.desktop");

    let on = tray(dir.path(), "on");
    assert!(on.status.success(), "{on:?}");
    let text = std::fs::read_to_string(&entry).expect("entry written");
    assert_eq!(text, tiffin::tray::autostart::DESKTOP_ENTRY);
    assert!(String::from_utf8_lossy(&on.stdout).contains(&entry.display().to_string()));

    // Twice is fine.
    assert!(tray(dir.path(), "on").status.success());

    let off = tray(dir.path(), "off");
    assert!(off.status.success(), "{off:?}");
    assert!(!entry.exists());
    assert!(
        tray(dir.path(), "off").status.success(),
        "off when already off"
    );
}

#[test]
fn autostart_rejects_other_words() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = tray(dir.path(), "maybe");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("maybe"));
}

#[test]
fn autostart_into_an_unwritable_place_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A file where the autostart directory should be.
    std::fs::write(dir.path().join("autostart"), "").expect("write");
    let out = tray(dir.path(), "on");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("autostart/tiffin-tray.desktop"), "{err}");
}

#[test]
fn packaged_desktop_entry_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/xdg/tiffin-tray.desktop");
    let validate = Command::new("desktop-file-validate").arg(&file).output();
    match validate {
        Ok(out) => assert!(
            out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("error"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => {
            let why = format!("desktop-file-validate: {e} (desktop-file-utils)");
            crate::support::prerequisite("desktop entry", Some(why));
        }
    }
}

#[test]
fn without_a_display_the_tray_says_so_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin-tray"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("TIFFIN_SOCKET", dir.path().join("none.sock"))
        .output()
        .expect("run tiffin-tray");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no graphical session"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
