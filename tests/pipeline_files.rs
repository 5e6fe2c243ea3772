//! files/ (DESIGN §4): installed outside the store with owner and mode, paths validated,
//! removed only when tiffin installed them, and a file tiffin did not install left alone.

mod pipeline_support;

use pipeline_support::Machine;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn mode_of(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_secret_lands_with_mode_0600_root_root_outside_the_store() {
    if !pipeline_support::have_root("a_secret_lands_with_mode_0600_root_root_outside_the_store") {
        return;
    }
    let mut m = Machine::new();
    m.write("files/etc/secret", "hunter2\n");
    m.write("files/etc/motd", "welcome\n");
    fs::set_permissions(
        m.repo.join("files/etc/motd"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    m.write("files/etc/svc.conf", "svc\n");
    m.write(
        "files.toml",
        "[\"etc/secret\"]\nmode = \"0600\"\nowner = \"root\"\ngroup = \"root\"\n\n\
         [\"etc/svc.conf\"]\nmode = \"0640\"\nowner = \"nobody\"\ngroup = \"65534\"\n",
    );
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let secret = m.files_root.join("etc/secret");
    assert_eq!(fs::read_to_string(&secret).unwrap(), "hunter2\n");
    assert_eq!(mode_of(&secret), 0o600);
    let meta = fs::metadata(&secret).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let svc = fs::metadata(m.files_root.join("etc/svc.conf")).unwrap();
    assert_eq!(
        (svc.uid(), svc.gid(), svc.mode() & 0o7777),
        (nobody.uid.as_raw(), 65534, 0o640)
    );
    // No manifest mode override: the repository's mode.
    assert_eq!(mode_of(&m.files_root.join("etc/motd")), 0o644);
    // The system did not change (files/ is not part of it): nothing was activated.
    assert_eq!(m.count_calls("switch-to-configuration"), 0, "{}", m.calls());
    // Nix never saw it: the tree the fake `nix build` copied into its store has no files/.
    let stored = std::process::Command::new("grep")
        .args(["-rl", "hunter2"])
        .arg(m.root.join("store"))
        .output()
        .unwrap();
    assert!(
        stored.stdout.is_empty(),
        "the secret is in the store: {stored:?}"
    );
    assert!(m.root.join("store").read_dir().unwrap().count() >= 2);
    let (_, log) = m.report(g, "updated");
    assert!(
        log.contains("installed") && log.contains("etc/secret"),
        "{log}"
    );
    let record = fs::read_to_string(m.state.join("installed-files.json")).unwrap();
    assert!(record.contains("etc/secret"), "{record}");
}

#[test]
fn a_traversal_entry_is_refused_before_anything_is_activated() {
    if !pipeline_support::have_root("a_traversal_entry_is_refused_before_anything_is_activated") {
        return;
    }
    let mut m = Machine::new();
    m.write("files/etc/a", "a\n");
    m.write("files.toml", "[\"../../etc/shadow\"]\nmode = \"0644\"\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    let (report, _) = m.report(g, "failed");
    assert_eq!(report["failed_step"], "files");
    let msg = report["message"].as_str().unwrap();
    assert!(
        msg.contains("../../etc/shadow") && msg.contains("refused"),
        "{msg}"
    );
    assert_eq!(m.current(), m.initial_system);
    assert!(!m.files_root.join("etc/a").exists());
}

#[test]
fn a_symlinked_directory_on_the_machine_is_not_written_through() {
    if !pipeline_support::have_root("a_symlinked_directory_on_the_machine_is_not_written_through") {
        return;
    }
    let mut m = Machine::new();
    let elsewhere = m.dir.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, m.files_root.join("etc")).unwrap();
    m.write("files/etc/passwd", "evil\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    let (report, _) = m.report(g, "failed");
    let msg = report["message"].as_str().unwrap();
    assert!(msg.contains("symlink"), "{msg}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(m.current(), m.initial_system);
}

#[test]
fn a_file_removed_from_the_repo_disappears_from_the_machine() {
    if !pipeline_support::have_root("a_file_removed_from_the_repo_disappears_from_the_machine") {
        return;
    }
    let mut m = Machine::new();
    m.write("files/etc/keep", "keep\n");
    m.write("files/opt/app/conf", "conf\n");
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(m.files_root.join("opt/app/conf").exists());
    m.remove("files/opt/app/conf");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(!m.files_root.join("opt/app/conf").exists());
    // The directories tiffin created for it went with it; the others stay.
    assert!(!m.files_root.join("opt").exists());
    assert_eq!(
        fs::read_to_string(m.files_root.join("etc/keep")).unwrap(),
        "keep\n"
    );
    let (_, log) = m.report(g, "updated");
    assert!(log.contains("removed"), "{log}");
}

#[test]
fn a_file_tiffin_did_not_install_is_left_alone() {
    if !pipeline_support::have_root("a_file_tiffin_did_not_install_is_left_alone") {
        return;
    }
    let mut m = Machine::new();
    fs::create_dir_all(m.files_root.join("etc")).unwrap();
    let hosts = m.files_root.join("etc/hosts");
    fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let other = m.files_root.join("etc/fstab");
    fs::write(&other, "mine\n").unwrap();

    // Publishing a different etc/hosts is refused: it is not tiffin's.
    m.write("files/etc/hosts", "10.0.0.1 evil\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    let (report, _) = m.report(g, "failed");
    let msg = report["message"].as_str().unwrap();
    assert!(
        msg.contains("etc/hosts") && msg.contains("not installed by tiffin"),
        "{msg}"
    );
    assert_eq!(fs::read_to_string(&hosts).unwrap(), "127.0.0.1 localhost\n");
    assert_eq!(m.current(), m.initial_system);

    // The same content is taken over; removing it from the repository then removes it,
    // while the file tiffin never touched stays.
    m.write("files/etc/hosts", "127.0.0.1 localhost\n");
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    m.remove("files/etc/hosts");
    m.write("configuration.nix", "{ ... }: { other = 1; }\n");
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(!hosts.exists());
    assert_eq!(fs::read_to_string(&other).unwrap(), "mine\n");
}

#[test]
fn a_file_changed_on_the_machine_is_not_removed_with_the_repo_entry() {
    if !pipeline_support::have_root(
        "a_file_changed_on_the_machine_is_not_removed_with_the_repo_entry",
    ) {
        return;
    }
    let mut m = Machine::new();
    m.write("files/etc/tweak", "v1\n");
    m.publish();
    assert_eq!(m.run_once().0, 0);
    let p = m.files_root.join("etc/tweak");
    fs::write(&p, "edited by hand\n").unwrap();
    m.remove("files/etc/tweak");
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read_to_string(&p).unwrap(), "edited by hand\n");
}

#[test]
fn files_toml_naming_a_missing_file_or_a_bad_mode_is_an_error_naming_it() {
    if !pipeline_support::have_root(
        "files_toml_naming_a_missing_file_or_a_bad_mode_is_an_error_naming_it",
    ) {
        return;
    }
    let mut m = Machine::new();
    m.write("files/etc/a", "a\n");
    m.write("files.toml", "[\"etc/typo\"]\nmode = \"0600\"\n");
    let g = m.publish();
    assert_eq!(m.run_once().0, 1);
    let (r, _) = m.report(g, "failed");
    assert!(r["message"].as_str().unwrap().contains("etc/typo"), "{r}");

    m.write("files.toml", "[\"etc/a\"]\nmode = \"rw\"\n");
    let g = m.publish();
    assert_eq!(m.run_once().0, 1);
    let (r, _) = m.report(g, "failed");
    assert!(r["message"].as_str().unwrap().contains("\"rw\""), "{r}");
}

#[test]
fn files_of_a_generation_that_is_rolled_back_are_put_back() {
    if !pipeline_support::have_root("files_of_a_generation_that_is_rolled_back_are_put_back") {
        return;
    }
    let mut m = Machine::new();
    m.write("files/etc/motd", "v1\n");
    m.write("files/etc/gone", "installed by generation 1\n");
    m.publish();
    assert_eq!(m.run_once().0, 0);
    let record_g1 = fs::read_to_string(m.state.join("installed-files.json")).unwrap();

    m.write("files/etc/motd", "v2\n");
    m.write("files/srv/new/conf", "new\n");
    m.remove("files/etc/gone");
    m.write("CUT_NETWORK", "");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    let (_, log) = m.report(g, "rolled_back");
    assert!(
        log.contains("files: installed") && log.contains("rollback restored"),
        "{log}"
    );
    let fsroot = &m.files_root;
    assert_eq!(fs::read_to_string(fsroot.join("etc/motd")).unwrap(), "v1\n");
    assert_eq!(
        fs::read_to_string(fsroot.join("etc/gone")).unwrap(),
        "installed by generation 1\n"
    );
    assert!(
        !fsroot.join("srv").exists(),
        "new files and their directories are gone"
    );
    assert_eq!(
        fs::read_to_string(m.state.join("installed-files.json")).unwrap(),
        record_g1
    );
}

#[test]
fn a_files_only_change_is_verified_and_put_back_when_it_fails() {
    if !pipeline_support::have_root("a_files_only_change_is_verified_and_put_back_when_it_fails") {
        return;
    }
    let mut m = Machine::new();
    let motd = m.files_root.join("etc/motd");
    m.write_config(
        &format!(
            r#"health_checks = ["! grep -q locked-out {}"]"#,
            motd.display()
        ),
        "",
    );
    m.write("files/etc/motd", "welcome\n");
    m.publish();
    assert_eq!(m.run_once().0, 0);
    m.write("files/etc/motd", "locked-out\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    let (r, _) = m.report(g, "rolled_back");
    assert_eq!(r["failed_step"], "verify");
    assert_eq!(fs::read_to_string(&motd).unwrap(), "welcome\n");
    // The system never changed: nothing was activated, the profile has one generation.
    assert_eq!(m.count_calls("switch-to-configuration"), 0, "{}", m.calls());
    assert_eq!(m.profile_history(), vec![m.initial_system.clone()]);
}
