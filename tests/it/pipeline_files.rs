//! files/ (docs/agent.md#files): installed outside the store with owner and mode, paths validated,
//! removed only when tiffin installed them, and a file tiffin did not install left alone. On the
//! NixOS stand-in and real Nix, but for the one test that holds activation at its start.

use crate::pipeline_support;

use pipeline_support::Machine;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};
use tiffin::agent::daemon::status_cell::StatusCell;
use tiffin::agent::Pipeline;
use tiffin::status::{AgentStatus, Outcome};

fn mode_of(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_secret_lands_with_mode_0600_root_root_outside_the_store() {
    if !pipeline_support::have_root("a_secret_lands_with_mode_0600_root_root_outside_the_store") {
        return;
    }
    let mut m = Machine::new();
    // A secret no store path holds yet, to look for in the store afterwards.
    let hunter2 = crate::real_nix::unique_marker("secret");
    m.write("files/etc/secret", &format!("{hunter2}\n"));
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
    assert_eq!(fs::read_to_string(&secret).unwrap(), format!("{hunter2}\n"));
    assert_eq!(mode_of(&secret), 0o600);
    let meta = fs::metadata(&secret).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let svc = fs::metadata(m.files_root.join("etc/svc.conf")).unwrap();
    assert_eq!(
        (svc.uid(), svc.gid(), svc.mode() & 0o7777),
        (nobody.uid.as_raw(), 65534, 0o640)
    );
    // No rule: no group or other access, whatever the repository's mode.
    assert_eq!(mode_of(&m.files_root.join("etc/motd")), 0o600);
    // The system did not change (files/ is not part of it): nothing was activated.
    assert_eq!(m.count_calls("switch-to-configuration"), 0, "{}", m.calls());
    // Nix never saw it: no store path holds the secret (on the fake: the trees its `nix build`
    // copied into its store).
    let store = if m.real {
        std::path::PathBuf::from("/nix/store")
    } else {
        m.root.join("store")
    };
    let stored = std::process::Command::new("grep")
        .args(["-rl", "-F", "--", &hunter2])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        stored.stdout.is_empty(),
        "the secret is in the store: {stored:?}"
    );
    if !m.real {
        assert!(m.root.join("store").read_dir().unwrap().count() >= 2);
    }
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
    m.knob("cutNetwork");
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

/// `(mode, uid, gid)` of a path, not following a symlink.
fn owner_mode(p: &std::path::Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn a_file_without_a_rule_is_0600_in_0700_directories_and_only_a_rule_widens_it() {
    if !pipeline_support::have_root(
        "a_file_without_a_rule_is_0600_in_0700_directories_and_only_a_rule_widens_it",
    ) {
        return;
    }
    let mut m = Machine::new();
    for (rel, mode) in [
        ("files/opt/tool/conf", 0o644),
        ("files/opt/tool/run", 0o755),
        ("files/srv/www/index.html", 0o644),
    ] {
        m.write(rel, "x\n");
        fs::set_permissions(m.repo.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    m.write("files.toml", "[\"srv/www/index.html\"]\nmode = \"0644\"\n");
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let r = &m.files_root;
    assert_eq!(owner_mode(&r.join("opt/tool/conf")), (0o600, 0, 0));
    assert_eq!(owner_mode(&r.join("opt/tool/run")), (0o700, 0, 0));
    assert_eq!(owner_mode(&r.join("opt")), (0o700, 0, 0));
    assert_eq!(owner_mode(&r.join("opt/tool")), (0o700, 0, 0));
    // The rule makes the file readable by all, and so the directories made for it.
    assert_eq!(owner_mode(&r.join("srv/www/index.html")), (0o644, 0, 0));
    assert_eq!(owner_mode(&r.join("srv")), (0o755, 0, 0));
    assert_eq!(owner_mode(&r.join("srv/www")), (0o755, 0, 0));
}

#[test]
fn a_fifo_where_a_file_is_expected_is_refused_without_hanging() {
    if !pipeline_support::have_root("a_fifo_where_a_file_is_expected_is_refused_without_hanging") {
        return;
    }
    let mut m = Machine::new();
    fs::create_dir_all(m.files_root.join("etc")).unwrap();
    let fifo = m.files_root.join("etc/app.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    m.write("files/etc/app.conf", "conf\n");
    let g = m.publish();
    let mut agent = m.spawn_once();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = agent.kill();
            let _ = agent.wait();
            panic!("the agent hangs on the FIFO {}", fifo.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let (r, _) = m.report(g, "failed");
    assert_eq!(r["failed_step"], "files");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("etc/app.conf") && msg.contains("FIFO"),
        "{msg}"
    );
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(m.current(), m.initial_system);
}

#[test]
fn a_parent_writable_by_another_user_or_group_is_refused_naming_it() {
    if !pipeline_support::have_root(
        "a_parent_writable_by_another_user_or_group_is_refused_naming_it",
    ) {
        return;
    }
    let mut m = Machine::new();
    let srv = m.files_root.join("srv");
    fs::create_dir_all(&srv).unwrap();
    m.write("files/srv/app/secret", "s\n");
    let cases: [(u32, u32, u32, &str); 3] = [
        (0, 0, 0o777, "writable by everyone"),
        (0, 65534, 0o775, "writable by group 65534"),
        (65534, 0, 0o755, "owned by uid 65534"),
    ];
    for (uid, gid, mode, why) in cases {
        std::os::unix::fs::chown(&srv, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&srv, fs::Permissions::from_mode(mode)).unwrap();
        let g = m.publish();
        let (code, out) = m.run_once();
        assert_eq!(code, 1, "{out}");
        let (r, _) = m.report(g, "failed");
        assert_eq!(r["failed_step"], "files");
        let msg = r["message"].as_str().unwrap();
        assert!(
            msg.contains(&srv.display().to_string()) && msg.contains(why),
            "{why}: {msg}"
        );
        assert!(!srv.join("app").exists());
    }
    // Root's, not writable by others: installed.
    std::os::unix::fs::chown(&srv, Some(0), Some(0)).unwrap();
    fs::set_permissions(&srv, fs::Permissions::from_mode(0o755)).unwrap();
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read_to_string(srv.join("app/secret")).unwrap(), "s\n");
}

#[test]
fn files_are_in_place_before_the_new_system_is_activated() {
    if !pipeline_support::have_root("files_are_in_place_before_the_new_system_is_activated") {
        return;
    }
    // The fake NixOS (`Machine::fake`): the test looks at the files while activation is held at
    // its start, a point real Nix's stand-in cannot stop at.
    let mut m = Machine::fake();
    m.write(
        "configuration.nix",
        "{ ... }: { services.app.enable = true; }\n",
    );
    m.write("files/etc/app/secret", "new secret\n");
    m.publish();
    m.pause("activate");
    let mut agent = m.spawn_once();
    m.wait_paused("activate");
    // switch-to-configuration is about to start the services: the secret they read is there.
    let secret = m.files_root.join("etc/app/secret");
    let seen = fs::read_to_string(&secret);
    m.resume("activate");
    let status = agent.wait().unwrap();
    assert_eq!(seen.ok().as_deref(), Some("new secret\n"));
    assert_eq!(status.code(), Some(0));
    assert_eq!(fs::read_to_string(&secret).unwrap(), "new secret\n");
}

#[test]
fn a_manual_rollback_restores_the_files_of_the_generation_it_returns_to() {
    if !pipeline_support::have_root(
        "a_manual_rollback_restores_the_files_of_the_generation_it_returns_to",
    ) {
        return;
    }
    let mut m = Machine::new();
    m.write("configuration.nix", "{ ... }: { g = 1; }\n");
    m.write("files/etc/secret", "old secret\n");
    m.write("files/etc/only-in-1", "one\n");
    m.write(
        "files.toml",
        "[\"etc/secret\"]\nmode = \"0640\"\nowner = \"nobody\"\ngroup = \"65534\"\n",
    );
    m.publish();
    assert_eq!(m.run_once().0, 0);
    let secret = m.files_root.join("etc/secret");
    let old = (fs::read(&secret).unwrap(), owner_mode(&secret));
    let record_1 = fs::read_to_string(m.state.join("installed-files.json")).unwrap();

    m.write("configuration.nix", "{ ... }: { g = 2; }\n");
    m.write("files/etc/secret", "new secret\n");
    m.remove("files/etc/only-in-1");
    m.write("files/etc/only-in-2", "two\n");
    m.write("files.toml", "");
    m.publish();
    assert_eq!(m.run_once().0, 0);
    assert_eq!(fs::read(&secret).unwrap(), b"new secret\n");
    assert_eq!(owner_mode(&secret), (0o600, 0, 0));

    let _standin = m.in_process();
    let mut p = Pipeline::new(m.config(), StatusCell::new(AgentStatus::default())).unwrap();
    let r = p.rollback("the user asked");
    assert_eq!(r.outcome, Outcome::RolledBack, "{r:?}");
    assert_eq!((fs::read(&secret).unwrap(), owner_mode(&secret)), old);
    assert_eq!(
        fs::read_to_string(m.files_root.join("etc/only-in-1")).unwrap(),
        "one\n"
    );
    assert!(!m.files_root.join("etc/only-in-2").exists());
    assert_eq!(
        fs::read_to_string(m.state.join("installed-files.json")).unwrap(),
        record_1
    );
}
