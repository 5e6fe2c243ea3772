//! Fault injection: `tiffin fleet publish` SIGKILLed at random points, while an agent syncs from
//! the same chroot over a real sshd.
//!
//! After every kill `current` names a complete generation whose tree matches its manifest, never
//! a `gens/.incoming-*`; every generation directory present is complete; generation numbers only
//! grow. The agent syncing all along only ever gets whole generations (a tree that matches its
//! manifest, one content per generation number). A publish run to its end afterwards succeeds and
//! removes what the killed runs left behind.
//!
//! The seed is printed; `TIFFIN_FAULT_SEED=<seed>` replays a run.

use crate::faults_support;
use crate::support;

use faults_support::{read_manifest, tree_differences, Rng, SshMachine, HOST};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::publication::module_text;
use tiffin::agent::pipeline::fetch::{sync, FetchError, SyncOutcome};
use tiffin::source::{self, SourceError};

const FILES: u64 = 400;

fn publish_command(m: &SshMachine) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tiffin"));
    c.args(["fleet", "publish", "--fleet"])
        .arg(&m.fleet)
        .arg(HOST)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Changes `count` modules of the host's tree (a new generation with that many new files).
fn edit(m: &SshMachine, rng: &mut Rng, count: u64) {
    let round = rng.next_u64();
    for _ in 0..count {
        let i = rng.range(0, FILES);
        m.write(
            &format!("modules/m{i:03}.nix"),
            &module_text(i, 4000, round ^ i),
        );
    }
}

/// The generation `current` names, after checking that it is a complete generation.
fn check_publication(host_dir: &Path, when: &str) -> Option<u64> {
    let link = host_dir.join("current");
    let target = match fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{when}: current: {e}"),
    };
    let t = target.to_string_lossy().into_owned();
    assert!(!t.contains(".incoming"), "{when}: current -> {t}");
    let g: u64 = t
        .strip_prefix("gens/")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{when}: current -> {t}"));
    // Every generation present (the live one included) is whole.
    for e in fs::read_dir(host_dir.join("gens"))
        .expect("gens/")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let m = read_manifest(&e.path());
        assert_eq!(m.generation.to_string(), name, "{when}: gens/{name}");
        let d = tree_differences(&e.path().join("tree"), &m, false);
        assert!(d.is_empty(), "{when}: gens/{name} is not whole: {d:?}");
    }
    assert!(host_dir.join(format!("gens/{g}")).is_dir(), "{when}");
    Some(g)
}

/// What the syncing agent saw.
#[derive(Default)]
struct AgentLog {
    /// Generation → tree hash of every tree it fetched.
    fetched: BTreeMap<u64, String>,
    syncs: usize,
    /// Generations pruned under it (tried again at the next sync).
    pruned: usize,
    problems: Vec<String>,
}

/// Records one sync: a fetched tree must match its manifest, and a generation number must
/// always come with the same content.
fn record(log: &Mutex<AgentLog>, r: Result<SyncOutcome, FetchError>) {
    let mut l = log.lock().expect("agent log");
    l.syncs += 1;
    match r {
        Ok(SyncOutcome::Fetched { local, .. }) => {
            let d = tree_differences(&local.tree, &local.manifest, false);
            if !d.is_empty() {
                l.problems
                    .push(format!("g{}: tree differs: {d:?}", local.generation));
            }
            let h = local.manifest.tree_hash.clone();
            if let Some(old) = l.fetched.insert(local.generation, h.clone()) {
                if old != h {
                    l.problems
                        .push(format!("g{} fetched with two contents", local.generation));
                }
            }
        }
        Ok(_) => {}
        // Pruned by two quick publishes while it read it: not a partial tree.
        Err(FetchError::Source(SourceError::NotFound { .. })) => l.pruned += 1,
        Err(e) => l.problems.push(e.to_string()),
    }
}

#[test]
fn publish_killed_at_random_points_never_exposes_a_partial_generation() {
    let Some(mut m) = SshMachine::new() else {
        return;
    };
    let mut rng = Rng::from_env("faults_publish_kill");
    for i in 0..FILES {
        m.write(&format!("modules/m{i:03}.nix"), &module_text(i, 4000, i));
    }
    m.publish();

    // Two agents sync in a loop while the admin publishes and gets killed: one over sshd, one
    // reading the chroot directly (a `file://` source), which is fast enough to sync many times
    // during each publish.
    let cfg = m.srv.agent_config(HOST, m.srv.port(), &m.state);
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(AgentLog::default()));
    let local_log = Arc::new(Mutex::new(AgentLog::default()));
    let agent = {
        let (stop, log, state) = (stop.clone(), log.clone(), m.state.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = source::open(&cfg)
                    .map_err(FetchError::from)
                    .and_then(|mut s| sync(s.as_mut(), &state, HOST, &mut |_| {}));
                record(&log, r);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let local_agent = {
        let (stop, log) = (stop.clone(), local_log.clone());
        let state = m.dir.path().join("state-file-source");
        let host_dir = m.host_dir();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mut src = tiffin::source::FileSource::new(host_dir.clone());
                record(&log, sync(&mut src, &state, HOST, &mut |_| {}));
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // How long one publish of this size takes, to spread the kills over it.
    edit(&m, &mut rng, 120);
    let t = Instant::now();
    let out = publish_command(&m).output().expect("run fleet publish");
    assert!(out.status.success(), "{out:?}");
    // Kills spread over four times that: under load a run takes longer (its syncfs waits for
    // whatever else the machine writes), and some runs must get to switch and prune.
    let span = t.elapsed().as_millis().max(20) as u64 * 4;

    let host_dir = m.host_dir();
    let mut live = check_publication(&host_dir, "before the kills").expect("published");
    let (mut rounds, mut mid_write, mut completed) = (0, 0, 0);
    // At least 20 kills; more (up to 40) until three of them landed while a generation was
    // being written and one after a run had finished, so that a loaded or an idle machine
    // both exercise the windows that matter.
    while rounds < 20 || ((mid_write < 3 || completed < 1) && rounds < 40) {
        rounds += 1;
        let count = rng.range(20, 160);
        edit(&m, &mut rng, count);
        let delay = rng.range(0, span);
        let mut child = publish_command(&m).spawn().expect("spawn fleet publish");
        let its_incoming = format!("-{}", child.id());
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().expect("wait for fleet publish");
        let when = format!("kill {rounds} after {delay} ms");
        let incoming = faults_support::names_in(&host_dir.join("gens"))
            .into_iter()
            .any(|n| n.starts_with(".incoming-") && n.ends_with(&its_incoming));
        if incoming {
            mid_write += 1;
        }
        let g = check_publication(&host_dir, &when).expect("current");
        assert!(g >= live, "{when}: current went back from {live} to {g}");
        if status.success() {
            completed += 1;
        }
        live = g;
    }

    // A publish left alone finishes and clears what the killed ones left.
    edit(&m, &mut rng, 10);
    let out = publish_command(&m).output().expect("run fleet publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = check_publication(&host_dir, "after a full publish").expect("current");
    assert!(last > live);
    let leftovers: Vec<String> = faults_support::names_in(&host_dir.join("gens"))
        .into_iter()
        .chain(faults_support::names_in(&host_dir))
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // The agent catches up with the last generation.
    let deadline = Instant::now() + Duration::from_secs(60);
    let has_last = |l: &Mutex<AgentLog>| l.lock().expect("agent log").fetched.contains_key(&last);
    while !has_last(&log) || !has_last(&local_log) {
        assert!(Instant::now() < deadline, "an agent never fetched g{last}");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    agent.join().expect("the agent thread");
    local_agent.join().expect("the file:// agent thread");
    eprintln!(
        "faults_publish_kill: {rounds} kills ({mid_write} while a generation was being written, \
         {completed} after it completed)"
    );
    for (name, log) in [("sftp", &log), ("file://", &local_log)] {
        let l = log.lock().expect("agent log");
        eprintln!(
            "faults_publish_kill: {name} agent: {} syncs, {} generations fetched, {} pruned \
             under it",
            l.syncs,
            l.fetched.len(),
            l.pruned
        );
        assert!(
            l.problems.is_empty(),
            "the {name} agent saw: {:#?}",
            l.problems
        );
        // Both fetched the last generation (waited for above); the fast one also some of those
        // published between the kills.
        if name == "file://" {
            assert!(
                l.fetched.len() >= 2,
                "the {name} agent fetched {:?}",
                l.fetched
            );
        }
    }
    assert!(
        mid_write > 0,
        "no kill landed while a generation was written"
    );
}

#[test]
fn a_publish_after_a_killed_one_removes_its_leftovers() {
    let Some(mut m) = SshMachine::new() else {
        return;
    };
    m.write("modules/a.nix", "{ a = 1; }\n");
    let g1 = m.publish();
    let host_dir = m.host_dir();
    // What a run killed at the worst moments leaves: a half-written generation, an old one
    // half-deleted, and the temporary link it was about to rename over `current`.
    fs::create_dir_all(host_dir.join(format!("gens/.incoming-{}-4242/tree", g1 + 1)))
        .expect("mkdir");
    fs::create_dir_all(host_dir.join("gens/.pruning-7-4242/tree/modules")).expect("mkdir");
    std::os::unix::fs::symlink(
        format!("gens/{}", g1 + 1),
        host_dir.join(".current.4242.tmp"),
    )
    .expect("symlink");
    m.write("modules/a.nix", "{ a = 2; }\n");
    let out = publish_command(&m).output().expect("run fleet publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        check_publication(&host_dir, "after publishing"),
        Some(g1 + 1)
    );
    let leftovers: Vec<String> = faults_support::names_in(&host_dir.join("gens"))
        .into_iter()
        .chain(faults_support::names_in(&host_dir))
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
