//! Fault injection: a full disk, on either side. Real sshd, the fake NixOS, and small tmpfs
//! filesystems filled to the brim (mounting needs root: outside CI these tests skip with the
//! reason, under CI=true they fail).
//!
//! - The server's `logs/` is full when the agent uploads its report: the cycle's outcome stands,
//!   the report stays in the agent's queue, and the first contact after space is freed delivers
//!   it unchanged.
//! - The agent's state directory fills up while a new generation is staged: the error names the
//!   problem and the place, the previous tree and the running system are untouched, nothing is
//!   built; after space is freed the next run applies the generation without downloading the
//!   files it already verified.

use crate::faults_support;
use crate::support;

use faults_support::{SshMachine, Tmpfs};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use support::publication::module_text;

const PAGE: u64 = 4096;

#[test]
fn a_report_upload_into_a_full_server_disk_stays_queued_and_is_delivered_after_space_is_freed() {
    let Some(mut m) = SshMachine::new() else {
        return;
    };
    m.write("modules/a.nix", &module_text(1, 500, 1));
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");

    let logs = m.host_dir().join("logs");
    let meta = fs::metadata(&logs).expect("logs/");
    let Some(disk) = Tmpfs::mount(
        &logs,
        &format!("size=64k,mode=0700,uid={},gid={}", meta.uid(), meta.gid()),
    ) else {
        return;
    };
    let filler = logs.join("filler");
    disk.fill(&filler, 0);
    assert_eq!(disk.free(), 0, "the server's logs/ is full");

    m.write("modules/a.nix", &module_text(1, 500, 2));
    let g2 = m.publish();
    let (code, out) = m.run_once();
    // The update itself does not depend on the server's disk.
    assert_eq!(code, 0, "{out}");
    assert_eq!(m.state_json()["applied_generation"].as_u64(), Some(g2));
    let report = format!("-g{g2}-updated.json");
    let queued: Vec<String> = m
        .queued()
        .into_iter()
        .filter(|n| n.ends_with(&report))
        .collect();
    assert_eq!(queued.len(), 1, "queued: {:?}\n{out}", m.queued());
    let name = queued[0].clone();
    let log_name = name.replace(".json", ".log.gz");
    assert!(m.queued().contains(&log_name), "{:?}", m.queued());
    assert!(!m.delivered().contains(&name), "{:?}", m.delivered());
    let outbox = m.state.join("outbox");
    let queued_report = fs::read(outbox.join(&name)).expect("queued report");
    let queued_log = fs::read(outbox.join(&log_name)).expect("queued log");

    eprintln!("the agent with the server's disk full: {out}");
    // The server answered: it is not called unreachable, and its refusal is named.
    assert!(
        out.contains("the server refused the data") && !out.contains("unreachable"),
        "{out}"
    );
    let partial: Vec<String> = faults_support::names_in(&logs)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(partial.is_empty(), "a refused upload left {partial:?}");
    // Still full: another contact delivers nothing and loses nothing.
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(m.queued().contains(&name), "{out}");

    fs::remove_file(&filler).expect("free the server's disk");
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(m.queued().is_empty(), "still queued: {:?}", m.queued());
    assert_eq!(
        fs::read(logs.join(&name)).expect("delivered"),
        queued_report
    );
    assert_eq!(
        fs::read(logs.join(&log_name)).expect("delivered"),
        queued_log
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&queued_log[..])
        .read_to_string(&mut text)
        .expect("the log is gzip'd text");
    assert!(text.contains("outcome: updated"), "{text}");
    // No upload temporary is left taking the server's space.
    let leftovers: Vec<String> = faults_support::names_in(&logs)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "left in logs/: {leftovers:?}");
}

#[test]
fn a_state_dir_that_fills_up_during_staging_fails_clearly_keeps_the_old_tree_and_recovers() {
    let Some(mut m) = SshMachine::new() else {
        return;
    };
    fs::create_dir_all(&m.state).expect("mkdir state");
    let Some(disk) = Tmpfs::mount(&m.state, "size=8m,mode=0700") else {
        return;
    };
    // Many small files: the manifest promises a few KiB, the disk spends a page on each, so the
    // free-space check before the download passes and the disk fills while staging.
    const FILES: u64 = 60;
    for i in 0..FILES {
        m.write(
            &format!("modules/m{i:02}.nix"),
            &format!("{{ x = {i}; }}\n"),
        );
    }
    let g1 = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let system_g1 = m.current_system();
    let builds_before = fs::read_to_string(m.root.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("nix build"))
        .count();

    for i in 0..FILES {
        m.write(
            &format!("modules/m{i:02}.nix"),
            &format!("{{ y = {i}; }}\n"),
        );
    }
    let g2 = m.publish();
    // Room for the downloads (one page per object) and half of the staged copies.
    let filler = m.state.join("filler");
    disk.fill(&filler, (FILES + FILES / 2) * PAGE);
    let (code, out) = m.run_once();
    eprintln!("the agent with a full state dir: {out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(
        out.contains(&format!(
            "staging the new tree: {}/trees/.staging-{g2}/",
            m.state.display()
        )),
        "the error says what failed and names the staging directory: {out}"
    );
    // Nothing changed on the machine: the old tree, the old system, no build.
    let tree = fs::read_link(m.state.join("tree")).expect("tree link");
    assert_eq!(tree, std::path::Path::new(&format!("trees/{g1}")));
    m.assert_local_tree_matches_its_manifest("after the full disk");
    assert!(!m.state.join(format!("trees/.staging-{g2}")).exists());
    assert!(!m.state.join(format!("trees/{g2}")).exists());
    assert_eq!(m.current_system(), system_g1);
    m.assert_consistent("after the full disk");
    let builds_after = fs::read_to_string(m.root.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("nix build"))
        .count();
    assert_eq!(builds_after, builds_before, "nothing was built");

    fs::remove_file(&filler).expect("free the state dir");
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(m.state_json()["applied_generation"].as_u64(), Some(g2));
    m.assert_local_tree_matches_its_manifest("after space was freed");
    m.assert_consistent("after space was freed");
    assert_ne!(m.current_system(), system_g1);
    // The objects verified before the disk filled up were kept: nothing is downloaded again.
    let logs = m.host_dir().join("logs");
    let report = faults_support::names_in(&logs)
        .into_iter()
        .find(|n| n.ends_with(&format!("-g{g2}-updated.log.gz")))
        .expect("the update's log was delivered");
    let mut text = String::new();
    flate2::read::GzDecoder::new(fs::File::open(logs.join(report)).expect("open the log"))
        .read_to_string(&mut text)
        .expect("gzip'd text");
    assert!(
        text.contains(&format!(
            "fetch: generation {g2} (0 files, 0 bytes downloaded)"
        )),
        "{text}"
    );
    drop(disk);
}

#[test]
fn a_state_dir_full_before_the_cycle_starts_changes_nothing_and_the_next_run_recovers() {
    let Some(mut m) = SshMachine::new() else {
        return;
    };
    fs::create_dir_all(&m.state).expect("mkdir state");
    let Some(disk) = Tmpfs::mount(&m.state, "size=2m,mode=0700") else {
        return;
    };
    m.write("modules/a.nix", "{ a = 1; }\n");
    let g1 = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let system_g1 = m.current_system();
    m.write("modules/a.nix", "{ a = 2; }\n");
    let g2 = m.publish();
    let filler = m.state.join("filler");
    disk.fill(&filler, 0);
    let (code, out) = m.run_once();
    eprintln!("the agent with a state dir full from the start: {out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    // What and where, said once: "saving the agent's state: <state>/state.json: No space …".
    let state_json = m.state.join("state.json").display().to_string();
    assert!(
        out.contains(&format!(
            "saving the agent's state: {state_json}: No space left"
        )),
        "{out}"
    );
    let tree = fs::read_link(m.state.join("tree")).expect("tree link");
    assert_eq!(tree, std::path::Path::new(&format!("trees/{g1}")));
    m.assert_local_tree_matches_its_manifest("with a full state dir");
    assert_eq!(m.current_system(), system_g1);
    assert_eq!(m.profile_system(), system_g1);

    fs::remove_file(&filler).expect("free the state dir");
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(m.state_json()["applied_generation"].as_u64(), Some(g2));
    m.assert_consistent("after space was freed");
    m.assert_local_tree_matches_its_manifest("after space was freed");
    drop(disk);
}
