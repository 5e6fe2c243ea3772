//! No external command can hang the agent: a health check that leaves a sleeping process behind,
//! a build that never ends, an activation that never ends. Each is killed with its whole process
//! group at its deadline, the cycle ends (rolled back where something was activated), and no
//! process of it is left. On the NixOS stand-in and real Nix: a hanging build and activation are
//! its `standin.buildSleep` and `standin.activateSleep` knobs.

use crate::pipeline_support;

use pipeline_support::Machine;
use std::fs;
use std::time::{Duration, Instant};

/// The pids of live processes whose command line (arguments joined by spaces) contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(marker)
            })
        })
        .collect()
}

/// Whether process `pid` is still running (a zombie is not).
fn alive(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next();
    !matches!(state, None | Some('Z') | Some('X'))
}

/// The hanging steps are knobs of the stand-in on real Nix: without it (outside CI) the test
/// skips, saying so.
fn needs_the_standin(m: &Machine, test: &str) -> bool {
    let why = "needs real Nix for the stand-in's buildSleep/activateSleep knobs";
    crate::support::prerequisite(test, (!m.real).then(|| why.to_string()))
}

#[test]
fn a_health_check_that_leaves_a_sleeping_grandchild_rolls_back_within_the_timeout_and_leaves_no_process(
) {
    // `sleep 300 & exit 1`, with a duration no other process uses, to find it in /proc.
    let sleep = format!("300.{}", std::process::id());
    let verify = Duration::from_secs(3);
    let mut m = Machine::with_config(
        &format!("verify_timeout = \"3s\"\nhealth_checks = [\"sleep {sleep} & exit 1\"]"),
        "",
    );
    m.write("configuration.nix", "{ ... }: { checked = true; }\n");
    let g = m.publish();
    let start = Instant::now();
    let (code, out) = m.run_once();
    let took = start.elapsed();
    eprintln!("the cycle took {took:?} with verify_timeout = {verify:?}");
    assert_eq!(code, 3, "{out}");
    let (report, _) = m.report(g, "rolled_back");
    let msg = report["message"].as_str().unwrap();
    assert!(msg.contains("exited with 1"), "{msg}");
    assert_eq!(m.current(), m.initial_system);
    // The verification's own time (the cycle's also holds a real Nix build on a loaded machine).
    let verified = Duration::from_secs_f64(report["durations"]["verify"].as_f64().unwrap());
    assert!(
        verified < verify + Duration::from_secs(5),
        "verification took {verified:?} (the cycle {took:?}), verify_timeout is {verify:?}"
    );
    let left = processes_with(&format!("sleep {sleep}"));
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn a_build_that_hangs_is_killed_at_build_timeout_with_the_builder_nix_started() {
    let mut m = Machine::with_config("build_timeout = \"2s\"", "");
    if !needs_the_standin(
        &m,
        "a_build_that_hangs_is_killed_at_build_timeout_with_the_builder_nix_started",
    ) {
        return;
    }
    // The stand-in's builder sleeps, with a duration no other process uses. Nix starts it in a
    // session of its own: killing `nix build`'s process group alone would leave it running.
    let sleep = format!("298.{}", std::process::id());
    m.write(
        "configuration.nix",
        &format!("{{ ... }}: {{ slow = true; standin.buildSleep = \"{sleep}\"; }}\n"),
    );
    let g = m.publish();
    let start = Instant::now();
    let (code, out) = m.run_once();
    let took = start.elapsed();
    eprintln!("the cycle took {took:?} with build_timeout = 2s");
    let left = processes_with(&format!("sleep {sleep}"));
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(code, 1, "{out}");
    assert!(took < Duration::from_secs(10), "the cycle took {took:?}");
    let (report, _) = m.report(g, "failed");
    let msg = report["message"].as_str().unwrap();
    assert!(
        msg.contains("timed out") && msg.contains("build_timeout"),
        "{msg}"
    );
    assert!(
        left.is_empty(),
        "the hung build's builder is still running: {left:?}"
    );
    assert_eq!(m.current(), m.initial_system);
}

#[test]
fn an_activation_that_hangs_is_killed_at_activate_timeout_and_rolled_back() {
    let mut m = Machine::with_config("activate_timeout = \"2s\"", "");
    if !needs_the_standin(
        &m,
        "an_activation_that_hangs_is_killed_at_activate_timeout_and_rolled_back",
    ) {
        return;
    }
    // The stand-in's activation sleeps, with a duration no other process uses (the health
    // check's test uses 300.<pid>).
    let sleep = format!("299.{}", std::process::id());
    let hang = format!("{{ ... }}: {{ stuck = true; standin.activateSleep = \"{sleep}\"; }}\n");
    m.write("configuration.nix", &hang);
    let g = m.publish();
    let start = Instant::now();
    let mut agent = m.spawn_once();
    let hung = pipeline_support::wait_for("the activation to hang", || {
        processes_with(&format!("sleep {sleep}")).first().copied()
    });
    // Once the runner has killed it, the rollback's own activation may pass.
    pipeline_support::wait_for("the hung activation to be killed", || {
        (!alive(hung)).then_some(())
    });
    let killed_after = start.elapsed();
    let status = agent.wait().unwrap();
    eprintln!("the hung activation was killed after {killed_after:?} (activate_timeout = 2s)");
    assert_eq!(status.code(), Some(3));
    assert!(
        killed_after < Duration::from_secs(6),
        "killed after {killed_after:?}"
    );
    let (report, _) = m.report(g, "rolled_back");
    let msg = report["message"].as_str().unwrap();
    assert!(
        msg.contains("timed out") && msg.contains("activate_timeout"),
        "{msg}"
    );
    assert_eq!(m.current(), m.initial_system);
    assert!(
        m.calls()
            .contains(&format!("systemd-run unit=tiffin-activate-{g} ")),
        "{}",
        m.calls()
    );
}
