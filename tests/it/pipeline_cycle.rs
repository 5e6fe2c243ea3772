//! The agent's rebuild pipeline, end to end: the real `tiffin agent --once` (or the library's
//! `Pipeline`) against the NixOS stand-in on real Nix (real store paths, a real `nix-env`
//! profile; only activation is simulated) and a `file://` publication.

use crate::pipeline_support;

use pipeline_support::{Machine, HOST};
use std::fs;
use tiffin::agent::daemon::status_cell::StatusCell;
use tiffin::agent::Pipeline;
use tiffin::cycle::CycleRequest;
use tiffin::status::{AgentStatus, Outcome, Phase};

#[test]
fn happy_path_one_cycle_puts_profile_current_link_and_boot_default_on_the_new_system() {
    let mut m = Machine::new();
    m.write(
        "configuration.nix",
        "{ ... }: { services.openssh.enable = true; }\n",
    );
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let new = m.current();
    assert_ne!(new, m.initial_system, "the new system must be running");
    assert_eq!(m.profile(), new);
    assert_eq!(m.boot_default(), new);
    // Activation ran as a transient unit, and before the profile was set.
    let calls = m.calls();
    let activate = calls
        .find(&format!("systemd-run unit=tiffin-activate-{g} "))
        .expect("activation through systemd-run");
    let set = calls.rfind("nix-env -p").unwrap();
    assert!(activate < set, "{calls}");

    let (report, log) = m.report(g, "updated");
    assert_eq!(report["host"], HOST);
    assert_eq!(report["generation"], g);
    assert_eq!(report["outcome"], "updated");
    assert_eq!(report["system_before"], m.initial_system.to_str().unwrap());
    assert_eq!(report["system_after"], new.to_str().unwrap());
    assert_eq!(report["reboot_needed"], false);
    assert_eq!(report["agent_version"], tiffin::VERSION);
    for step in ["fetch", "build", "activate", "verify", "commit"] {
        assert!(report["durations"][step].is_number(), "{step}: {report}");
    }
    assert!(log.contains("switch-to-configuration test"), "{log}");
    assert!(log.contains("switch-to-configuration boot"), "{log}");
    let seen = m.seen();
    assert_eq!(seen["applied_generation"], g);
    assert_eq!(seen["running_system"], new.to_str().unwrap());

    let state = m.state_json();
    assert_eq!(state["applied_generation"], g);
    assert_eq!(state["previous_system"], m.initial_system.to_str().unwrap());
    assert!(state.get("journal").is_none(), "{state}");

    // A second cycle finds nothing new: no build, no new report.
    let builds = m.count_calls("nix build");
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("up_to_date"), "{out}");
    assert_eq!(m.count_calls("nix build"), builds);
    assert_eq!(m.reports().len(), 1, "{:?}", m.reports());
}

#[test]
fn build_failure_activates_nothing_and_reports_failed_at_build_with_the_log() {
    let mut m = Machine::new();
    m.knob("failBuild");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    assert_eq!(m.current(), m.initial_system);
    assert_eq!(m.profile(), m.initial_system);
    assert!(
        !m.calls().contains("switch-to-configuration"),
        "{}",
        m.calls()
    );
    let (report, log) = m.report(g, "failed");
    assert_eq!(report["failed_step"], "build");
    assert!(
        log.contains("standin.failBuild") || log.contains("FAIL_BUILD"),
        "the log carries the build's output: {log}"
    );
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("exited with 1"),
        "{report}"
    );
}

#[test]
fn no_space_left_with_exit_code_zero_is_a_failure() {
    let mut m = Machine::new();
    m.knob("noSpace");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    let (report, _) = m.report(g, "failed");
    assert_eq!(report["failed_step"], "build");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{report}"
    );
    assert_eq!(m.current(), m.initial_system);
    assert_eq!(m.profile_history(), vec![m.initial_system.clone()]);
}

#[test]
fn no_space_left_while_committing_rolls_back_and_the_profile_points_back() {
    let mut m = Machine::new();
    m.knob("noSpaceBoot");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    let (report, _) = m.report(g, "rolled_back");
    assert_eq!(report["failed_step"], "commit");
    assert_eq!(m.current(), m.initial_system);
    assert_eq!(m.profile(), m.initial_system);
    assert_eq!(m.boot_default(), m.initial_system);
}

#[test]
fn activation_that_cuts_the_machine_off_is_rolled_back_and_that_generation_is_not_retried() {
    let mut m = Machine::new();
    m.knob("cutNetwork");
    let bad = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    assert_eq!(
        m.current(),
        m.initial_system,
        "the previous system is active again"
    );
    // The profile never pointed at the failed system, so it never became the boot default.
    assert_eq!(m.profile_history(), vec![m.initial_system.clone()]);
    assert_eq!(m.boot_default(), m.initial_system);
    let (report, log) = m.report(bad, "rolled_back");
    assert_eq!(report["failed_step"], "verify");
    let msg = report["message"].as_str().unwrap();
    assert!(
        msg.contains("verify failed") && msg.contains("cannot reach the server"),
        "{msg}"
    );
    assert!(log.contains("rolling back"), "{log}");
    let failed_system = report["system_before"].as_str().unwrap().to_string();
    assert_eq!(failed_system, m.initial_system.to_str().unwrap());
    let state = m.state_json();
    assert_eq!(state["last_rollback"]["generation"], bad);
    assert_eq!(
        state["last_rollback"]["to_system"],
        m.initial_system.to_str().unwrap()
    );
    assert!(
        state["do_not_retry"][bad.to_string()].is_object(),
        "{state}"
    );

    // The next cycle does not retry it.
    let builds = m.count_calls("nix build");
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("not retried"), "{out}");
    assert_eq!(m.count_calls("nix build"), builds);
    assert_eq!(m.current(), m.initial_system);

    // A newer generation is applied normally.
    m.unknob("cutNetwork");
    m.write("configuration.nix", "{ ... }: { fixed = true; }\n");
    let good = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_ne!(m.current(), m.initial_system);
    assert_eq!(m.profile(), m.current());
    m.report(good, "updated");
    assert!(m.state_json()["do_not_retry"]
        .get(bad.to_string())
        .is_none());
}

#[test]
fn failed_activation_re_activates_the_previous_system() {
    let mut m = Machine::new();
    m.knob("failActivate");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    assert_eq!(m.current(), m.initial_system);
    assert_eq!(m.profile(), m.initial_system);
    let (report, log) = m.report(g, "rolled_back");
    assert_eq!(report["failed_step"], "activate");
    assert!(log.contains("-broken.service"), "{log}");
    assert!(m
        .calls()
        .contains(&format!("systemd-run unit=tiffin-rollback-{g}")));
}

#[test]
fn failing_health_check_rolls_back_with_its_output_as_the_reason() {
    let mut m = Machine::with_config(
        r#"health_checks = ["true", "echo nginx is down >&2; exit 7"]"#,
        "",
    );
    m.write("configuration.nix", "{ ... }: { nginx = true; }\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    let (report, _) = m.report(g, "rolled_back");
    let msg = report["message"].as_str().unwrap();
    assert!(
        msg.contains("nginx is down") && msg.contains("exited with 7"),
        "{msg}"
    );
    assert_eq!(m.current(), m.initial_system);
}

#[test]
fn passing_health_checks_let_the_update_through() {
    let marker = tempfile::NamedTempFile::new().unwrap();
    let mut m = Machine::with_config(
        &format!(r#"health_checks = ["test -e {}"]"#, marker.path().display()),
        "",
    );
    m.write("configuration.nix", "{ ... }: { x = 1; }\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    m.report(g, "updated");
}

#[test]
fn non_flake_tree_is_built_with_nix_build() {
    let mut m = Machine::new();
    m.remove("flake.nix");
    m.write("configuration.nix", "{ ... }: { classic = true; }\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(m
        .calls()
        .contains("nix-build <nixpkgs/nixos> -A system -I nixos-config="));
    assert_eq!(m.count_calls("nix build"), 0);
    assert!(m
        .current()
        .to_string_lossy()
        .ends_with("-nixos-system-nixos"));
    m.report(g, "updated");
}

#[test]
fn same_system_as_running_is_up_to_date_and_activates_nothing() {
    let mut m = Machine::new();
    // The initial system was built from this very tree.
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(
        !m.calls().contains("switch-to-configuration"),
        "{}",
        m.calls()
    );
    let (report, _) = m.report(g, "up_to_date");
    assert_eq!(report["system_after"], m.initial_system.to_str().unwrap());
}

#[test]
fn a_new_kernel_means_reboot_needed() {
    let mut m = Machine::new();
    m.kernel("6.7");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let (report, _) = m.report(g, "updated");
    assert_eq!(report["reboot_needed"], true);
}

#[test]
fn without_systemd_run_switch_to_configuration_runs_directly() {
    let mut m = Machine::with_config("", "");
    let text = m.config_text("", "").replace(
        &format!("systemd_run = \"{}/bin/systemd-run\"", m.root.display()),
        "systemd_run = \"\"",
    );
    fs::write(&m.config_path, text).unwrap();
    m.write("configuration.nix", "{ ... }: { y = 1; }\n");
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(m.count_calls("systemd-run"), 0, "{}", m.calls());
    assert_eq!(m.count_calls("switch-to-configuration test"), 1);
}

#[test]
fn operation_boot_only_sets_the_boot_default() {
    let mut m = Machine::with_config(r#"operation = "boot""#, "");
    m.write("configuration.nix", "{ ... }: { z = 1; }\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(m.current(), m.initial_system, "nothing activated");
    assert_ne!(m.profile(), m.initial_system);
    assert_eq!(m.boot_default(), m.profile());
    assert_eq!(m.count_calls("switch-to-configuration test"), 0);
    m.report(g, "updated");
    // The next cycle does not commit it again.
    let (code, _) = m.run_once();
    assert_eq!(code, 0);
    assert_eq!(m.count_calls("nix-env"), 2, "{}", m.calls());
}

#[test]
fn policy_notify_announces_the_generation_and_applies_it_on_update() {
    let mut m = Machine::with_config("policy = \"notify\"\ndeadline = \"1h\"", "");
    m.write("configuration.nix", "{ ... }: { n = 1; }\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        m.count_calls("nix build"),
        0,
        "notify: nothing is built yet"
    );
    let state = m.state_json();
    assert_eq!(state["available"]["generation"], g);
    let deadline = state["available"]["deadline"].as_u64().unwrap();
    assert!(deadline > tiffin::status::unix_now() + 3000);

    let status = StatusCell::new(AgentStatus::default());
    let _standin = m.in_process();
    let mut p = Pipeline::new(m.config(), status.clone()).unwrap();
    let s = status.get();
    assert_eq!(s.available_generation, Some(g));
    assert_eq!(s.deadline, Some(deadline));
    // A scheduled cycle still waits; the user's update applies it.
    let r = p.run_cycle(CycleRequest::Scheduled);
    assert_eq!(r.outcome, Outcome::UpToDate);
    assert_eq!(m.current(), m.initial_system);
    let r = p.run_cycle(CycleRequest::Update);
    assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
    assert_ne!(m.current(), m.initial_system);
    let s = status.get();
    assert_eq!(s.available_generation, None);
    assert_eq!(s.applied_generation, Some(g));
    assert_eq!(s.phase, Phase::Idle);
}

#[test]
fn policy_notify_applies_anyway_once_the_deadline_has_passed() {
    let mut m = Machine::with_config("policy = \"notify\"\ndeadline = \"1s\"", "");
    m.write("configuration.nix", "{ ... }: { d = 1; }\n");
    m.publish();
    let (code, _) = m.run_once();
    assert_eq!(code, 0);
    assert_eq!(m.current(), m.initial_system);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_ne!(m.current(), m.initial_system, "{out}");
}

#[test]
fn check_request_fetches_but_never_applies() {
    let mut m = Machine::new();
    m.write("configuration.nix", "{ ... }: { c = 1; }\n");
    let g = m.publish();
    let status = StatusCell::new(AgentStatus::default());
    let mut p = Pipeline::new(m.config(), status.clone()).unwrap();
    let r = p.run_cycle(CycleRequest::Check);
    assert_eq!(r.outcome, Outcome::UpToDate);
    assert_eq!(status.get().available_generation, Some(g));
    assert!(m.state.join("tree/configuration.nix").exists(), "fetched");
    assert_eq!(m.count_calls("nix build"), 0);
}

#[test]
fn manual_rollback_returns_to_the_previous_system_and_makes_it_the_boot_default() {
    let mut m = Machine::new();
    m.write("configuration.nix", "{ ... }: { r = 1; }\n");
    let g = m.publish();
    let status = StatusCell::new(AgentStatus::default());
    let _standin = m.in_process();
    let mut p = Pipeline::new(m.config(), status.clone()).unwrap();
    assert_eq!(
        p.run_cycle(CycleRequest::Scheduled).outcome,
        Outcome::Updated
    );
    let new = m.current();
    assert!(status.get().rollback.previous_available);

    let r = p.rollback("the user asked");
    assert_eq!(r.outcome, Outcome::RolledBack, "{r:?}");
    assert_eq!(m.current(), m.initial_system);
    assert_eq!(m.profile(), m.initial_system);
    assert_eq!(m.boot_default(), m.initial_system);
    let s = status.get();
    let last = s.rollback.last.expect("last rollback in the status");
    assert_eq!(last.from_system, new.to_str().unwrap());
    assert_eq!(last.reason, "the user asked");
    assert!(!s.rollback.previous_available);
    assert!(p.last_log().unwrap().contains("rolling back"));
    m.report(g, "rolled_back");

    // The rolled-back generation is not re-applied by the next cycle.
    assert_eq!(
        p.run_cycle(CycleRequest::Scheduled).outcome,
        Outcome::RolledBack
    );
    assert_eq!(m.current(), m.initial_system);
    // A second rollback has nowhere to go.
    assert_eq!(p.rollback("again").outcome, Outcome::Failed);
}

#[test]
fn a_second_agent_on_the_same_state_directory_is_refused() {
    let m = Machine::new();
    let _p = Pipeline::new(m.config(), StatusCell::new(AgentStatus::default())).unwrap();
    let e = Pipeline::new(m.config(), StatusCell::new(AgentStatus::default()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("another tiffin agent"), "{e}");
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
}

#[test]
fn unreachable_source_fails_at_fetch_and_keeps_the_system() {
    let m = Machine::new();
    fs::remove_dir_all(&m.publication).unwrap();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("fetch"), "{out}");
    assert_eq!(m.current(), m.initial_system);
}

#[test]
fn a_corrupt_publication_fails_at_fetch_and_is_reported_once() {
    let mut m = Machine::new();
    m.write("configuration.nix", "{ ... }: { corrupt = 1; }\n");
    let g = m.publish();
    fs::write(
        m.publication
            .join(format!("gens/{g}/tree/configuration.nix")),
        "{ ... }: { corrupt = 2; }\n",
    )
    .unwrap();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    let (r, _) = m.report(g, "failed");
    assert_eq!(r["failed_step"], "fetch");
    assert!(r["message"].as_str().unwrap().contains("sha256"), "{r}");
    assert_eq!(m.count_calls("nix build"), 0);
    assert_eq!(m.run_once().0, 1);
    assert_eq!(m.reports().len(), 1, "{:?}", m.reports());
    assert_eq!(m.current(), m.initial_system);
}

#[test]
fn a_report_that_cannot_be_uploaded_is_queued_and_sent_at_the_next_contact() {
    let mut m = Machine::new();
    fs::remove_dir(m.publication.join("logs")).unwrap();
    m.write("configuration.nix", "{ ... }: { q = 1; }\n");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let queued: Vec<String> = fs::read_dir(m.state.join("outbox"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        queued
            .iter()
            .any(|n| n.ends_with(&format!("-g{g}-updated.json"))),
        "{queued:?}"
    );
    fs::create_dir(m.publication.join("logs")).unwrap();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    m.report(g, "updated");
    assert_eq!(m.seen()["applied_generation"], g);
    assert_eq!(fs::read_dir(m.state.join("outbox")).unwrap().count(), 0);
}
