//! Fault injection: the link between the agent and the server drops at random points. A relay
//! between `tiffin agent --once` and a real chrooted sshd cuts every connection of a cycle after
//! a random number of bytes (handshake, login, the change check, the download, verification's
//! reconnect, the report upload), over 50 cycles, while the admin publishes now and then.
//!
//! Afterwards the machine runs one system (the profile's), never a half state; every tree the
//! agent built was exactly a published generation; and every report its history names reached
//! the server's `logs/` (the queue delivered what a cut stopped).
//!
//! The seed is printed; `TIFFIN_FAULT_SEED=<seed>` replays a run.

use crate::faults_support;
use crate::support;

use faults_support::{Rng, SshMachine};
use std::collections::{BTreeMap, BTreeSet};
use support::publication::module_text;
use support::relay::Relay;

const CYCLES: usize = 50;

/// Changes a few modules (and sometimes a plain file under files/) of the host's tree.
fn edit_tree(m: &SshMachine, rng: &mut Rng, round: u64) {
    for _ in 0..rng.range(1, 4) {
        let i = rng.range(0, 12);
        m.write(
            &format!("modules/m{i:02}.nix"),
            &module_text(i, 600, round * 100 + i),
        );
    }
    if rng.chance(30) {
        m.write("files/etc/motd", &format!("round {round}\n"));
    }
}

#[test]
fn fifty_cycles_with_the_link_cut_at_random_points_leave_one_system_and_lose_no_report() {
    let Some(mut m) = SshMachine::new() else {
        return;
    };
    let mut rng = Rng::from_env("faults_connection");
    let relay = Relay::start(m.srv.port());
    m.write_config(relay.port, "verify_timeout = \"1s\"");
    edit_tree(&m, &mut rng, 0);
    for i in 0..12 {
        m.write(&format!("modules/m{i:02}.nix"), &module_text(i, 600, i));
    }
    m.publish();

    let mut written = BTreeSet::new();
    let mut exits: BTreeMap<i32, usize> = BTreeMap::new();
    for cycle in 1..=CYCLES {
        if rng.chance(25) {
            edit_tree(&m, &mut rng, cycle as u64);
            m.publish();
        }
        // Cuts land early (key exchange, login, the change check), anywhere in a download or
        // an upload, or only on the later connections of a cycle (verification's reconnect, a
        // fresh connection for the report); some cycles run undisturbed.
        let (spared, cut) = match rng.range(0, 5) {
            0 => (0, None),
            1 => (0, Some(rng.range(0, 4_000))),
            2 => (1, Some(rng.range(0, 6_000))),
            _ => (0, Some(rng.range(0, 40_000))),
        };
        relay.cut_after_sparing(spared, cut);
        let (code, out) = m.run_once();
        let when = format!("cycle {cycle} (cut after {cut:?} bytes, sparing {spared})");
        assert!(
            matches!(code, 0 | 1 | 3),
            "{when}: exit {code}, which is not an outcome: {out}"
        );
        *exits.entry(code).or_default() += 1;
        m.assert_consistent(&when);
        m.assert_local_tree_matches_its_manifest(&when);
        written.extend(m.reports_in_history());
        // A report is either on the server or still queued, never dropped on the way.
        let (delivered, queued) = (m.delivered(), m.queued());
        let lost: Vec<&String> = written
            .iter()
            .filter(|r| !delivered.contains(*r) && !queued.contains(*r))
            .collect();
        assert!(lost.is_empty(), "{when}: reports lost: {lost:?}\n{out}");
    }

    // The link heals and the admin publishes once more: the queue empties and the newest
    // generation is applied.
    relay.cut_after(None);
    m.write_config(relay.port, "");
    edit_tree(&m, &mut rng, 1000);
    let last = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    m.assert_consistent("after the last cycle");
    m.assert_local_tree_matches_its_manifest("after the last cycle");
    assert_eq!(m.state_json()["applied_generation"].as_u64(), Some(last));
    written.extend(m.reports_in_history());
    assert!(m.queued().is_empty(), "still queued: {:?}", m.queued());
    let delivered = m.delivered();
    let lost: Vec<&String> = written.iter().filter(|r| !delivered.contains(*r)).collect();
    assert!(lost.is_empty(), "reports never delivered: {lost:?}");
    // Every report that arrived is whole: it parses, with its log next to it.
    for name in delivered
        .iter()
        .filter(|n| n.ends_with(".json") && *n != "seen.json")
    {
        let p = m.host_dir().join("logs").join(name);
        let r: tiffin::publication::report::Report =
            serde_json::from_slice(&std::fs::read(&p).expect("read a report"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            delivered.contains(&r.log),
            "{name}: its log {} is missing",
            r.log
        );
    }
    // Uploads cut halfway left `logs/.<name>.tmp`; each was finished by the later upload of
    // the same name, so none stays.
    let partial: Vec<String> = faults_support::names_in(&m.host_dir().join("logs"))
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        partial.is_empty(),
        "partial uploads left on the server: {partial:?}"
    );
    let built = m.assert_every_built_tree_was_published();
    assert!(
        built > 0,
        "no tree built by this machine was found in the store"
    );
    eprintln!(
        "faults_connection: {CYCLES} cycles, {} connections cut, exits {exits:?}, {} generations \
         published, {built} trees built, {} reports delivered",
        relay.cuts(),
        m.published.len(),
        written.len()
    );
    assert!(relay.cuts() > 0, "no connection was ever cut");
}
