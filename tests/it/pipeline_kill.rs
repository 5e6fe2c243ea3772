//! The agent SIGKILLed inside each step (download, build, activate, verify), then started again:
//! the machine ends on the old or the new system, never between; the state says what happened;
//! no endless retry. The fake NixOS's scripts wait on marker files so that the test can kill
//! `tiffin agent --once` at the right moment.
//!
//! The tests that kill the agent inside the download, the build, the activation or the commit
//! keep the fake NixOS (`Machine::fake`, assets/fake-nixos): real Nix has no point at which such
//! a step can be held and the agent killed there on cue. The ones that kill it while verifying
//! (a health check of the test's own holds it) or installing files run on real Nix.

use crate::pipeline_support;

use pipeline_support::{wait_for, Machine};
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::process::Child;
use tiffin::agent::daemon::status_cell::StatusCell;
use tiffin::agent::Pipeline;
use tiffin::status::AgentStatus;

fn kill(child: &mut Child) {
    child.kill().expect("SIGKILL the agent");
    child.wait().expect("reap the agent");
}

/// Running, profile and boot default agree: the machine is on one system, not between two.
fn assert_on_one_system(m: &Machine) -> std::path::PathBuf {
    let cur = m.current();
    assert_eq!(m.profile(), cur, "profile and running system differ");
    assert_eq!(
        m.boot_default(),
        cur,
        "boot default and running system differ"
    );
    cur
}

/// `(outcome, failed_step)` of every attempt in the state's history.
fn history(m: &Machine) -> Vec<(String, String)> {
    m.state_json()["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap_or("").to_string(),
                a["failed_step"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn journal_step(m: &Machine) -> Option<String> {
    m.state_json()["journal"]["step"]
        .as_str()
        .map(str::to_string)
}

fn pair(o: &str, s: &str) -> (String, String) {
    (o.to_string(), s.to_string())
}

#[test]
fn killed_while_downloading_keeps_the_old_tree_then_resumes_and_applies() {
    let mut m = Machine::fake();
    m.write("configuration.nix", "{ ... }: { big = true; }\n");
    m.write("zz-big", "the last file to be downloaded\n");
    let g = m.publish();
    // The last file is a FIFO on the server: reading it blocks until the test writes.
    let fifo = m.publication.join(format!("gens/{g}/tree/zz-big"));
    fs::remove_file(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut agent = m.spawn_once();
    // Opening the write end without blocking succeeds only once the agent has it open.
    let _writer = wait_for("the agent to read the FIFO", || {
        fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .ok()
    });
    assert_eq!(journal_step(&m).as_deref(), Some("fetch"));
    kill(&mut agent);
    assert!(
        !m.state.join("tree").exists(),
        "a partial download is never swapped in"
    );
    assert_eq!(assert_on_one_system(&m), m.initial_system);

    fs::remove_file(&fifo).unwrap();
    fs::write(&fifo, "the last file to be downloaded\n").unwrap();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_ne!(assert_on_one_system(&m), m.initial_system);
    assert_eq!(
        history(&m),
        vec![pair("interrupted", "fetch"), pair("updated", "")]
    );
    m.report(g, "updated");
}

#[test]
fn killed_while_building_stays_on_the_old_system_then_applies_at_the_next_start() {
    let mut m = Machine::fake();
    m.write("configuration.nix", "{ ... }: { b = 1; }\n");
    let g = m.publish();
    m.pause("build");
    let mut agent = m.spawn_once();
    m.wait_paused("build");
    kill(&mut agent);
    m.resume("build");
    m.wait_exited("build");
    assert_eq!(journal_step(&m).as_deref(), Some("build"));
    assert_eq!(assert_on_one_system(&m), m.initial_system);

    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_ne!(assert_on_one_system(&m), m.initial_system);
    assert_eq!(
        history(&m),
        vec![pair("interrupted", "build"), pair("updated", "")]
    );
    let (r, _) = m.report(g, "interrupted");
    assert_eq!(r["failed_step"], "build");
    m.report(g, "updated");
}

#[test]
fn killed_twice_while_building_gives_up_on_that_generation_and_takes_a_newer_one() {
    let mut m = Machine::fake();
    m.write("configuration.nix", "{ ... }: { oom = true; }\n");
    let g = m.publish();
    for _ in 0..2 {
        let _ = fs::remove_file(m.root.join("exited-build"));
        m.pause("build");
        let mut agent = m.spawn_once();
        m.wait_paused("build");
        kill(&mut agent);
        m.resume("build");
        m.wait_exited("build");
    }
    assert_eq!(m.count_calls("nix build"), 2);
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not retried"), "{out}");
    let (code, _) = m.run_once();
    assert_eq!(code, 1);
    assert_eq!(
        m.count_calls("nix build"),
        2,
        "no third build: no endless retry"
    );
    assert_eq!(assert_on_one_system(&m), m.initial_system);
    let state = m.state_json();
    assert_eq!(
        state["do_not_retry"][g.to_string()]["outcome"],
        "interrupted"
    );
    assert_eq!(
        history(&m),
        vec![pair("interrupted", "build"), pair("interrupted", "build")]
    );

    m.write("configuration.nix", "{ ... }: { oom = false; }\n");
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_ne!(assert_on_one_system(&m), m.initial_system);
}

#[test]
fn killed_while_activating_a_switch_that_completed_is_verified_and_committed_at_restart() {
    let mut m = Machine::fake();
    m.write("configuration.nix", "{ ... }: { a = 1; }\n");
    let g = m.publish();
    m.pause("activate");
    let mut agent = m.spawn_once();
    m.wait_paused("activate");
    kill(&mut agent);
    // The transient unit outlives the agent and finishes the switch.
    m.resume("activate");
    m.wait_exited("activate");
    let new = m.current();
    assert_ne!(new, m.initial_system);
    assert_eq!(m.profile(), m.initial_system, "not committed yet");
    assert_eq!(journal_step(&m).as_deref(), Some("activate"));

    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(assert_on_one_system(&m), new);
    assert_eq!(history(&m), vec![pair("updated", "")]);
    m.report(g, "updated");
}

#[test]
fn killed_while_activating_before_the_switch_returns_to_the_old_system_and_retries() {
    let mut m = Machine::fake();
    m.write("configuration.nix", "{ ... }: { a = 2; }\n");
    m.publish();
    m.pause("activate");
    let mut agent = m.spawn_once();
    let activation = m.wait_paused("activate");
    kill(&mut agent);
    // The activation dies too, before switching anything.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activation),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    m.wait_gone(activation);
    m.resume("activate");
    assert_eq!(m.current(), m.initial_system);

    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let reactivated = format!(
        "switch-to-configuration test {}",
        m.initial_system.display()
    );
    assert!(m.calls().contains(&reactivated), "{}", m.calls());
    assert_ne!(assert_on_one_system(&m), m.initial_system);
    assert_eq!(
        history(&m),
        vec![pair("interrupted", "activate"), pair("updated", "")]
    );
}

#[test]
fn killed_while_verifying_re_verifies_and_commits_at_restart() {
    let probe = |root: &std::path::Path| {
        format!(
            r#"health_checks = ["echo $$ > {r}/paused-verify; while [ -e {r}/pause-verify ]; do sleep 0.05; done"]"#,
            r = root.display()
        )
    };
    let mut m = Machine::new();
    m.write_config(&probe(&m.root), "");
    m.write("configuration.nix", "{ ... }: { v = 1; }\n");
    let g = m.publish();
    m.pause("verify");
    let mut agent = m.spawn_once();
    m.wait_paused("verify");
    kill(&mut agent);
    m.resume("verify");
    assert_eq!(journal_step(&m).as_deref(), Some("verify"));
    let new = m.current();
    assert_ne!(new, m.initial_system);

    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(assert_on_one_system(&m), new);
    m.report(g, "updated");
}

#[test]
fn killed_while_verifying_a_system_that_cut_the_network_rolls_back_at_restart() {
    let mut m = Machine::new();
    // Long enough that the agent is surely killed while it still retries to reach the server.
    m.write_config("verify_timeout = \"60s\"", "");
    m.knob("cutNetwork");
    let g = m.publish();
    let mut agent = m.spawn_once();
    wait_for("the agent to be verifying", || {
        fs::read(m.state.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|s| s["journal"]["step"] == "verify")
    });
    kill(&mut agent);
    assert_ne!(m.current(), m.initial_system, "the bad system runs");
    assert!(!m.publication.exists(), "and the machine is cut off");

    m.write_config("", "");
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    assert_eq!(assert_on_one_system(&m), m.initial_system);
    assert_eq!(m.profile_history(), vec![m.initial_system.clone()]);
    let (r, _) = m.report(g, "rolled_back");
    assert_eq!(r["failed_step"], "verify");
    // And it is not tried again.
    let builds = m.count_calls("nix build");
    assert_eq!(m.run_once().0, 3);
    assert_eq!(m.count_calls("nix build"), builds);
}

#[test]
fn killed_while_committing_finishes_the_commit_at_restart() {
    let mut m = Machine::fake();
    m.write("configuration.nix", "{ ... }: { c = 1; }\n");
    let g = m.publish();
    m.pause("boot");
    let mut agent = m.spawn_once();
    let boot = m.wait_paused("boot");
    kill(&mut agent);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(boot),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    m.wait_gone(boot);
    m.resume("boot");
    let new = m.current();
    assert_eq!(m.profile(), new, "the profile was set");
    assert_eq!(m.boot_default(), m.initial_system, "the boot entry was not");
    assert_eq!(journal_step(&m).as_deref(), Some("commit"));

    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(assert_on_one_system(&m), new);
    m.report(g, "updated");
}

#[test]
fn a_verification_that_keeps_killing_the_agent_is_rolled_back_after_two_tries() {
    let mut m = Machine::new();
    m.write_config(
        &format!(
            r#"health_checks = ["echo $$ > {r}/paused-verify; while [ -e {r}/pause-verify ]; do sleep 0.05; done"]"#,
            r = m.root.display()
        ),
        "",
    );
    m.write("configuration.nix", "{ ... }: { kills = true; }\n");
    let g = m.publish();
    m.pause("verify");
    for _ in 0..2 {
        let _ = fs::remove_file(m.root.join("paused-verify"));
        let mut agent = m.spawn_once();
        let check = m.wait_paused("verify");
        kill(&mut agent);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(check),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        m.wait_gone(check);
        assert_eq!(journal_step(&m).as_deref(), Some("verify"));
    }
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    assert_eq!(assert_on_one_system(&m), m.initial_system);
    let (r, _) = m.report(g, "rolled_back");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("interrupted 2 times during verify"),
        "{r}"
    );
    assert_eq!(m.count_calls("nix build"), 1);
}

// ---- files/ and a crash: the old secret comes back ------------------------------------------

const OLD_SECRET: &[u8] = b"old secret \x00\xff\n";
const NEW_SECRET: &str = "new secret\n";

/// A machine on generation 1 with `etc/secret` (`nobody:65534 0640`, binary content); the host's
/// tree then changes the system and the secret (`root:root 0600`), with `extra` more files.
/// `fake`: on the fake NixOS (a test that holds a Nix step), else the default machine.
fn machine_with_a_changed_secret(fake: bool, extra: &[(String, String)]) -> (Machine, u64) {
    let mut m = if fake {
        Machine::fake()
    } else {
        Machine::new()
    };
    m.write("configuration.nix", "{ ... }: { s = 1; }\n");
    fs::create_dir_all(m.repo.join("files/etc")).unwrap();
    fs::write(m.repo.join("files/etc/secret"), OLD_SECRET).unwrap();
    m.write(
        "files.toml",
        "[\"etc/secret\"]\nmode = \"0640\"\nowner = \"nobody\"\ngroup = \"65534\"\n",
    );
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(old_secret(&m), secret_now(&m));

    m.write("configuration.nix", "{ ... }: { s = 2; }\n");
    m.write("files/etc/secret", NEW_SECRET);
    m.write("files.toml", "");
    for (rel, content) in extra {
        m.write(rel, content);
    }
    let g = m.publish();
    (m, g)
}

fn old_secret(_: &Machine) -> (Vec<u8>, u32, u32, u32) {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    (OLD_SECRET.to_vec(), 0o640, nobody.uid.as_raw(), 65534)
}

fn secret_now(m: &Machine) -> (Vec<u8>, u32, u32, u32) {
    let p = m.files_root.join("etc/secret");
    let meta = fs::symlink_metadata(&p).unwrap();
    (
        fs::read(&p).unwrap(),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid(),
    )
}

/// The agent starting again: it resolves the journal the killed one left (and nothing more).
fn restart(m: &Machine) {
    let _standin = m.in_process();
    let _p = Pipeline::new(m.config(), StatusCell::new(AgentStatus::default())).unwrap();
    assert_eq!(journal_step(m), None, "the journal is resolved");
}

#[test]
fn killed_while_installing_files_the_old_secret_is_back_after_restart() {
    if !pipeline_support::have_root(
        "killed_while_installing_files_the_old_secret_is_back_after_restart",
    ) {
        return;
    }
    // Many files after the secret, so that the agent is surely still installing when killed.
    let fillers: Vec<(String, String)> = (0..400)
        .map(|n| (format!("files/var/filler/{n:04}"), format!("{n}\n")))
        .collect();
    let (m, g) = machine_with_a_changed_secret(false, &fillers);
    let secret = m.files_root.join("etc/secret");
    let before = m.current();
    let activations = m.count_calls("switch-to-configuration");
    let mut agent = m.spawn_once();
    // Polled often: the rest of the files step is short on a fast disk.
    let start = std::time::Instant::now();
    while fs::read(&secret).ok().as_deref() != Some(NEW_SECRET.as_bytes()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the new secret was never installed"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    kill(&mut agent);
    assert_eq!(journal_step(&m).as_deref(), Some("files"));
    assert!(
        !m.files_root.join("var/filler/0399").exists(),
        "killed before the files step ended"
    );
    assert_eq!(
        m.count_calls("switch-to-configuration"),
        activations,
        "nothing was activated yet: {}",
        m.calls()
    );

    restart(&m);
    assert_eq!(secret_now(&m), old_secret(&m));
    assert!(!m.files_root.join("var").exists(), "{}", m.calls());
    assert_eq!(assert_on_one_system(&m), before);
    let (r, _) = m.report(g, "interrupted");
    assert_eq!(r["failed_step"], "files");
}

#[test]
fn killed_while_activating_the_old_secret_is_back_after_restart() {
    if !pipeline_support::have_root("killed_while_activating_the_old_secret_is_back_after_restart")
    {
        return;
    }
    let (m, g) = machine_with_a_changed_secret(true, &[]);
    let before = m.current();
    m.pause("activate");
    let mut agent = m.spawn_once();
    let activation = m.wait_paused("activate");
    // Files go in place before activation.
    assert_eq!(secret_now(&m).0, NEW_SECRET.as_bytes());
    kill(&mut agent);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activation),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    m.wait_gone(activation);
    m.resume("activate");
    assert_eq!(journal_step(&m).as_deref(), Some("activate"));

    restart(&m);
    assert_eq!(secret_now(&m), old_secret(&m));
    assert_eq!(assert_on_one_system(&m), before);
    let (r, _) = m.report(g, "interrupted");
    assert_eq!(r["failed_step"], "activate");
}

#[test]
fn killed_while_verifying_a_bad_system_the_old_secret_is_back_after_restart() {
    if !pipeline_support::have_root(
        "killed_while_verifying_a_bad_system_the_old_secret_is_back_after_restart",
    ) {
        return;
    }
    let cut =
        pipeline_support::knob_file(pipeline_support::default_is_real(), "cutNetwork", "true");
    let (m, g) = machine_with_a_changed_secret(false, &[cut]);
    let before = m.current();
    m.write_config("verify_timeout = \"60s\"", "");
    let mut agent = m.spawn_once();
    wait_for("the agent to be verifying", || {
        (journal_step(&m).as_deref() == Some("verify")).then_some(())
    });
    kill(&mut agent);
    assert_eq!(secret_now(&m).0, NEW_SECRET.as_bytes());

    m.write_config("", "");
    restart(&m);
    assert_eq!(secret_now(&m), old_secret(&m));
    assert_eq!(assert_on_one_system(&m), before);
    let (r, _) = m.report(g, "rolled_back");
    assert_eq!(r["failed_step"], "verify");
}
