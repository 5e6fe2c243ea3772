//! Every step is visible in the agent's status as it happens (docs/agent.md), with download
//! progress: the fake NixOS holds each step until the test has looked (the only test here that
//! keeps the fake); the persisted state is the real-Nix machine's.

use crate::pipeline_support;

use pipeline_support::{wait_for, Machine};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use tiffin::agent::daemon::status_cell::StatusCell;
use tiffin::agent::Pipeline;
use tiffin::cycle::CycleRequest;
use tiffin::status::{AgentStatus, CheckResult, Outcome, Phase};

#[test]
fn status_shows_each_phase_with_download_progress_as_it_happens() {
    // The fake NixOS (`Machine::fake`): each step is held until the test has looked at it.
    let mut m = Machine::fake();
    m.write_config(
        &format!(
            r#"health_checks = ["echo $$ > {r}/paused-verify; while [ -e {r}/pause-verify ]; do sleep 0.05; done; rm -f {r}/paused-verify"]"#,
            r = m.root.display()
        ),
        "",
    );
    m.write("configuration.nix", "{ ... }: { watched = true; }\n");
    let last = "the last file\n";
    m.write("zz-last", last);
    let g = m.publish();
    let fifo = m.publication.join(format!("gens/{g}/tree/zz-last"));
    fs::remove_file(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    for step in ["build", "activate", "verify", "boot"] {
        m.pause(step);
    }

    let status = StatusCell::new(AgentStatus::default());
    let mut p = Pipeline::new(m.config(), status.clone()).unwrap();
    let cycle = std::thread::spawn(move || p.run_cycle(CycleRequest::Scheduled));

    let mut writer = wait_for("the download to reach the FIFO", || {
        fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .ok()
    });
    let s = status.get();
    assert_eq!(s.phase, Phase::Downloading);
    let progress = s.progress.expect("download progress");
    assert!(
        progress.total_files >= 3 && progress.done_files == progress.total_files - 1,
        "{progress:?}"
    );
    writer.write_all(last.as_bytes()).unwrap();
    drop(writer);

    for (step, phase) in [
        ("build", Phase::Building),
        ("activate", Phase::Activating),
        ("verify", Phase::Verifying),
        ("boot", Phase::Committing),
    ] {
        m.wait_paused(step);
        assert_eq!(status.get().phase, phase, "while the fake {step} waits");
        if step == "build" {
            // The server already knows this machine is updating (fleet status shows it).
            let seen = m.seen();
            assert_eq!(seen["updating_to"], serde_json::json!(g), "{seen}");
        }
        m.resume(step);
    }
    let r = cycle.join().unwrap();
    assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
    let s = status.get();
    assert_eq!(s.phase, Phase::Idle);
    assert_eq!(s.progress, None);
    assert_eq!(s.applied_generation, Some(g));
    assert_eq!(m.seen()["updating_to"], serde_json::Value::Null);
    assert_eq!(
        s.last_update.as_ref().map(|u| u.outcome),
        Some(Outcome::Updated)
    );
    assert_eq!(
        s.last_check.as_ref().map(|c| c.result),
        Some(CheckResult::UpdateAvailable)
    );
    assert_eq!(s.server_reachable, Some(true));
    assert_eq!(s.current_system.as_deref(), m.current().to_str());
    assert!(s.rollback.previous_available);
    assert!(!s.reboot_needed);
}

#[test]
fn a_new_pipeline_shows_the_persisted_state_at_once() {
    let mut m = Machine::new();
    m.knob("cutNetwork");
    let g = m.publish();
    assert_eq!(m.run_once().0, 3);
    let status = StatusCell::new(AgentStatus::default());
    let _p = Pipeline::new(m.config(), status.clone()).unwrap();
    let s = status.get();
    assert_eq!(s.host, pipeline_support::HOST);
    assert_eq!(s.phase, Phase::Idle);
    let u = s.last_update.expect("last update");
    assert_eq!((u.generation, u.outcome), (g, Outcome::RolledBack));
    assert_eq!(u.failed_step, Some(tiffin::status::Step::Verify));
    let rb = s.rollback.last.expect("last rollback");
    assert_eq!(rb.to_system, m.initial_system.to_str().unwrap());
    assert!(
        rb.reason.contains("cannot reach the server"),
        "{}",
        rb.reason
    );
    assert_eq!(s.admin_group, "wheel");
}
