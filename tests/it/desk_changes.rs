//! What an update brings, on the admin's side: `fleet publish -m` (default the repository's last
//! commit subject) puts the note in the signed manifest, `--build` adds the closure diff against
//! the previous expected system (the fleet tests' fake Nix answers `store diff-closures` with
//! canned text: a new package and a kernel change), and `fleet status` shows the published note.
//! desk_changes_real_nix.rs runs the summary on real Nix's `nix store diff-closures`.

use crate::fleet_support::{fake_nix, verify_generation, TestFleet};
use std::process::Command;
use tiffin::fleet::{publish, BuildMode, PublishOptions};

const TIFFIN: &str = env!("CARGO_BIN_EXE_tiffin");

#[test]
fn publish_carries_the_note_and_the_change_summary_and_fleet_status_shows_the_note() {
    let f = TestFleet::new();
    f.write_config(
        &[("plain", "")],
        &format!(
            "[build]\nnix = \"{0}\"\nnix_build = \"{0}\"\ncache = false\n",
            fake_nix().display()
        ),
    );
    f.write(
        "hosts/plain/configuration.nix",
        "{ networking.hostName = \"plain\"; }\n",
    );
    let opts = |note: &str| PublishOptions {
        build: Some(BuildMode::Build),
        note: Some(note.into()),
        ..PublishOptions::default()
    };
    publish(&f.repo(), &f.config(), &opts("First")).expect("publish 1");
    let m1 = verify_generation(&f.host_pub("plain").join("gens/1")).expect("gen 1");
    assert_eq!(m1.note.as_deref(), Some("First"));
    assert_eq!(m1.changes, None, "nothing to compare the first build with");

    f.write("hosts/plain/printer.nix", "{ }\n");
    publish(&f.repo(), &f.config(), &opts("Adds the office printer")).expect("publish 2");
    let m2 = verify_generation(&f.host_pub("plain").join("gens/2")).expect("gen 2");
    assert_eq!(m2.note.as_deref(), Some("Adds the office printer"));
    let c = m2.changes.expect("a change summary");
    assert_eq!(c.lines, ["hello 2.12.1 (new)", "linux 6.6.1 → 6.6.2"]);
    assert!(c.restart_needed, "the kernel changes");

    let out = Command::new(TIFFIN)
        .args(["fleet", "--fleet"])
        .arg(f.repo())
        .arg("status")
        .env("NO_COLOR", "1")
        .output()
        .expect("fleet status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("“Adds the office printer”"), "{text}");
}

#[test]
fn the_cli_default_note_is_the_last_commit_subject_and_m_overrides_it() {
    let f = TestFleet::new();
    f.write_config(&[("plain", "")], "");
    f.write("hosts/plain/configuration.nix", "{ }\n");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(f.repo())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(git(&["init", "-q"]), "git init");
    assert!(git(&["add", "-A"]) && git(&["commit", "-qm", "Adds the office printer"]));
    let run = |extra: &[&str]| {
        let out = Command::new(TIFFIN)
            .args(["fleet", "--fleet"])
            .arg(f.repo())
            .arg("publish")
            .args(extra)
            .output()
            .expect("publish");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[]);
    let m = verify_generation(&f.host_pub("plain").join("gens/1")).expect("gen 1");
    assert_eq!(m.note.as_deref(), Some("Adds the office printer"));
    f.write("hosts/plain/more.nix", "{ }\n");
    run(&["-m", "Second\nline dropped"]);
    let m = verify_generation(&f.host_pub("plain").join("gens/2")).expect("gen 2");
    assert_eq!(m.note.as_deref(), Some("Second"));
}
