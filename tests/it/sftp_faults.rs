//! The agent's fetch when things go wrong on a real sshd: the server dies mid-download, a
//! published file is corrupted, the server refuses a read, or the chroot's manifest was
//! tampered with. In every case the previous tree stays and nothing lands outside staging.

use crate::support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::publication::{set_owner_mode, write_config_tree, write_manifest};
use support::sshd::Sshd;
use tiffin::agent::pipeline::fetch::{sync, FetchDirs, SyncOutcome};
use tiffin::hash;
use tiffin::manifest::{tree_hash, Entry, Manifest};
use tiffin::source;
use tiffin::status::Progress;

fn quiet() -> impl FnMut(Progress) {
    |_| {}
}

/// A server with generation 1 of `alpha` fetched into a fresh state dir, and the source tree
/// to derive generation 2 from.
struct Fixture {
    srv: Sshd,
    src: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        let srv = Sshd::start(&["alpha"])?;
        let src = tempfile::tempdir().unwrap();
        write_config_tree(src.path(), 12, 300, 1);
        srv.publish("alpha", 1, src.path());
        let state = tempfile::tempdir().unwrap();
        let f = Fixture { srv, src, state };
        let out = f.sync().unwrap();
        assert!(matches!(out, SyncOutcome::Fetched { .. }), "{out:?}");
        Some(f)
    }

    fn sync(&self) -> Result<SyncOutcome, tiffin::agent::pipeline::fetch::FetchError> {
        self.sync_with(&mut quiet())
    }

    fn sync_with(
        &self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SyncOutcome, tiffin::agent::pipeline::fetch::FetchError> {
        let cfg = self
            .srv
            .agent_config("alpha", self.srv.port(), self.state.path());
        let mut s = source::open(&cfg)?;
        sync(s.as_mut(), self.state.path(), "alpha", progress)
    }

    fn gen_dir(&self, generation: u64) -> PathBuf {
        self.srv
            .host("alpha")
            .dir
            .join(format!("gens/{generation}"))
    }

    /// Generation 1 is still the applied tree, with its content, and no staging is left.
    fn assert_generation_1_intact(&self) {
        let local = FetchDirs::new(self.state.path())
            .local_tree()
            .unwrap()
            .expect("a tree");
        assert_eq!(local.generation, 1);
        for e in local.manifest.files() {
            let (h, _) = hash::sha256_file(&self.state.path().join("tree").join(&e.path)).unwrap();
            assert_eq!(Some(&h), e.sha256.as_ref(), "{}", e.path);
        }
        let trees: Vec<String> = fs::read_dir(self.state.path().join("trees"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n == "2")
            .collect();
        assert!(trees.is_empty(), "left in trees/: {trees:?}");
    }

    fn store_objects(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.state.path().join("store"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

#[test]
fn sshd_killed_mid_download_keeps_the_previous_tree_and_the_next_run_completes() {
    let Some(f) = Fixture::new() else { return };
    // Generation 2: every module changes and a large file arrives.
    write_config_tree(f.src.path(), 12, 300, 2);
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(f.src.path().join("modules/big.bin"), &big).unwrap();
    let m2 = f.srv.publish("alpha", 2, f.src.path());
    let changed = m2.files().count() as u64 - 1; // configuration.nix is unchanged

    let mut killed = false;
    let err = f
        .sync_with(&mut |p: Progress| {
            if p.done_files == 1 && !killed {
                killed = true;
                f.srv.kill();
            }
        })
        .expect_err("the server died during the download");
    eprintln!("{err}");
    assert!(killed);
    let msg = err.to_string();
    assert!(err.is_unreachable(), "{msg}");
    assert!(
        msg.contains("connection lost") && msg.contains("gens/2/tree/"),
        "{msg}"
    );
    f.assert_generation_1_intact();

    f.srv.restart();
    match f.sync().unwrap() {
        SyncOutcome::Fetched {
            local,
            downloaded_files,
            ..
        } => {
            assert_eq!(local.generation, 2);
            // The file that arrived before the cut is not fetched again.
            assert_eq!(downloaded_files, changed - 1);
            assert_eq!(fs::read(local.tree.join("modules/big.bin")).unwrap(), big);
        }
        other => panic!("expected a fetch, got {other:?}"),
    }
}

#[test]
fn a_file_corrupted_on_the_server_is_a_hash_mismatch_and_nothing_is_applied() {
    let Some(f) = Fixture::new() else { return };
    fs::write(f.src.path().join("common/m0003.nix"), "{ x = 1; }\n").unwrap();
    f.srv.publish("alpha", 2, f.src.path());
    let before = f.store_objects();
    fs::write(f.gen_dir(2).join("tree/common/m0003.nix"), "{ x = 2; }\n").unwrap();

    let msg = f.sync().expect_err("corrupted").to_string();
    assert!(
        msg.contains("common/m0003.nix") && msg.contains("sha256"),
        "{msg}"
    );
    assert!(msg.contains("nothing applied"), "{msg}");
    f.assert_generation_1_intact();
    assert_eq!(f.store_objects(), before);
}

#[test]
fn a_read_the_server_refuses_is_a_clear_permission_error() {
    let Some(f) = Fixture::new() else { return };
    fs::write(f.src.path().join("common/m0003.nix"), "{ x = 1; }\n").unwrap();
    f.srv.publish("alpha", 2, f.src.path());
    // A file the host's group cannot read (a publisher's mistake).
    let file = f.gen_dir(2).join("tree/common/m0003.nix");
    set_owner_mode(&file, 0o600, 0);
    let msg = f.sync().expect_err("unreadable file").to_string();
    assert!(
        msg.contains("permission denied") && msg.contains("gens/2/tree/common/m0003.nix"),
        "{msg}"
    );
    f.assert_generation_1_intact();

    // A generation directory of the wrong group: even the manifest is out of reach.
    set_owner_mode(&file, 0o640, f.srv.host("alpha").gid);
    set_owner_mode(&f.gen_dir(2), 0o750, 0);
    let msg = f.sync().expect_err("unreadable generation").to_string();
    assert!(
        msg.contains("permission denied") && msg.contains("gens/2/manifest.json"),
        "{msg}"
    );
    f.assert_generation_1_intact();
}

/// Replaces generation 2's manifest with `entries` (tree_hash recomputed, so only the entries
/// themselves are wrong) and expects the sync to fail with `why`, before anything is written
/// outside staging.
fn assert_tampered_manifest_refused(
    f: &Fixture,
    entries: Vec<Entry>,
    why: &str,
    canaries: &[&Path],
) {
    let gen2 = f.gen_dir(2);
    let original = fs::read(gen2.join("manifest.json")).unwrap();
    let mut m = Manifest::parse(&original, "gen 2").unwrap();
    m.entries = entries;
    m.tree_hash = tree_hash(&m.entries);
    write_manifest(&gen2, &m, f.srv.host("alpha").gid);
    let before = f.store_objects();

    let msg = f.sync().expect_err(why).to_string();
    assert!(msg.contains(why), "expected {why:?} in: {msg}");
    f.assert_generation_1_intact();
    assert_eq!(f.store_objects(), before, "{why}: the store changed");
    for c in canaries {
        assert!(!c.exists(), "{why}: {} was written", c.display());
    }
    fs::write(gen2.join("manifest.json"), original).unwrap();
}

#[test]
fn hostile_manifests_are_rejected_before_anything_is_written_outside_staging() {
    let Some(f) = Fixture::new() else { return };
    fs::write(f.src.path().join("common/m0003.nix"), "{ x = 1; }\n").unwrap();
    let m2 = f.srv.publish("alpha", 2, f.src.path());
    let payload = b"evil\n";
    let (sha, size) = (hash::sha256_bytes(payload), payload.len() as u64);
    let with = |extra: Vec<Entry>| {
        let mut v = m2.entries.clone();
        v.extend(extra);
        tiffin::manifest::sort_entries(&mut v);
        v
    };
    let escaped = f.state.path().join("escaped");
    let absolute = f.srv.root.join("absolute-escape");

    // `..` climbing out of the tree.
    assert_tampered_manifest_refused(
        &f,
        with(vec![Entry::file("../../escaped", 0o644, size, sha.clone())]),
        "\"..\" component",
        &[&escaped],
    );
    // An absolute path.
    let abs = absolute.display().to_string();
    assert_tampered_manifest_refused(
        &f,
        with(vec![Entry::file(abs, 0o644, size, sha.clone())]),
        "absolute path",
        &[&absolute],
    );
    // A huge size (a disk-filling promise).
    assert_tampered_manifest_refused(
        &f,
        with(vec![Entry::file("huge.bin", 0o644, 1 << 40, sha.clone())]),
        "more than the",
        &[],
    );
    // Duplicate entries.
    let dup = m2.entry("common/m0003.nix").unwrap().clone();
    assert_tampered_manifest_refused(&f, with(vec![dup]), "appears more than once", &[]);

    // A size smaller than the file on the server: the download stops at the promised size.
    let mut lying = m2.entries.clone();
    for e in lying.iter_mut().filter(|e| e.path == "common/m0003.nix") {
        e.size = Some(4);
    }
    assert_tampered_manifest_refused(&f, lying, "more than the 4 bytes expected", &[]);

    // A path through a symlink placed in the tree: `inbox -> /logs`, the one place the host
    // itself writes. Publishing never leaves a symlink, so it is refused even though the
    // content would match its hash.
    let logs = f.srv.host("alpha").dir.join("logs");
    fs::write(logs.join("evil.nix"), payload).unwrap();
    let link = f.gen_dir(2).join("tree/inbox");
    std::os::unix::fs::symlink("/logs", &link).unwrap();
    let inbox = f.state.path().join("tree/inbox");
    assert_tampered_manifest_refused(
        &f,
        with(vec![
            Entry::dir("inbox", 0o755),
            Entry::file("inbox/evil.nix", 0o644, size, sha.clone()),
        ]),
        "through a symlink",
        &[&inbox],
    );
    fs::remove_file(&link).unwrap();

    // Untampered, the same generation goes through.
    let out = f.sync().unwrap();
    assert!(
        matches!(out, SyncOutcome::Fetched { ref local, .. } if local.generation == 2),
        "{out:?}"
    );
    let mode = fs::metadata(f.state.path().join("tree/common/m0003.nix"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, m2.entry("common/m0003.nix").unwrap().mode);
}

#[test]
fn a_server_that_stops_answering_times_out_as_unreachable() {
    let Some(f) = Fixture::new() else { return };
    let h = f.srv.host("alpha");
    let cfg = f.srv.agent_config("alpha", f.srv.port(), f.state.path());
    let target = |io_timeout| source::SftpTarget {
        user: h.user.clone(),
        host: "127.0.0.1".into(),
        port: f.srv.port(),
        path: "/".into(),
        identity: cfg.identity.clone(),
        known_hosts: cfg.known_hosts.clone(),
        connect_timeout: std::time::Duration::from_secs(5),
        io_timeout,
        limits: source::TRANSFER_LIMITS,
    };
    // Mid-session: the server freezes after login, the change check waits no longer than asked.
    let mut s = source::SftpSource::connect(target(std::time::Duration::from_secs(1))).unwrap();
    f.srv.pause();
    let start = std::time::Instant::now();
    let e = tiffin::source::Source::current_generation(&mut s).expect_err("no answer");
    eprintln!("{e}");
    assert!(e.is_unreachable(), "{e}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    drop(s);
    // At login: the kernel accepts the TCP connection, sshd never sends its banner.
    let e = source::SftpSource::connect(target(std::time::Duration::from_secs(1)))
        .err()
        .expect("no banner");
    eprintln!("{e}");
    assert!(
        e.is_unreachable() && e.to_string().contains("handshake"),
        "{e}"
    );
    f.srv.resume();
    f.assert_generation_1_intact();
}

/// A session through a relay in front of the fixture's sshd, with the agent's timeouts but
/// `limits`.
fn relayed_session(
    f: &Fixture,
    limits: source::TransferLimits,
) -> (support::relay::Relay, source::SftpSource) {
    let relay = support::relay::Relay::start(f.srv.port());
    let cfg = f.srv.agent_config("alpha", f.srv.port(), f.state.path());
    let s = source::SftpSource::connect(source::SftpTarget {
        user: f.srv.host("alpha").user.clone(),
        host: "127.0.0.1".into(),
        port: relay.port,
        path: "/".into(),
        identity: cfg.identity.clone(),
        known_hosts: f.srv.known_hosts_for(relay.port),
        connect_timeout: source::CONNECT_TIMEOUT,
        io_timeout: source::IO_TIMEOUT,
        limits,
    })
    .expect("connect through the relay");
    (relay, s)
}

/// Asks for `current` again and again (as a fetch checks one path after another) while the
/// relay trickles the server's bytes one per `interval`: each answer comes well within
/// libssh2's own timeout (`IO_TIMEOUT`), so only the watchdog ends this. Returns the error,
/// when it came, and how many answers came before it.
fn keep_asking(
    relay: &support::relay::Relay,
    s: &mut source::SftpSource,
    interval: std::time::Duration,
) -> (source::SourceError, std::time::Duration, usize) {
    relay.trickle(Some(interval));
    let start = std::time::Instant::now();
    let mut answers = 0;
    loop {
        match tiffin::source::Source::current_generation(s) {
            Ok(_) => answers += 1,
            Err(e) => return (e, start.elapsed(), answers),
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "still answering after {answers} answers"
        );
    }
}

#[test]
fn a_server_that_trickles_bytes_is_cut_at_the_minimum_rate() {
    let Some(f) = Fixture::new() else { return };
    let limits = source::TransferLimits {
        deadline: std::time::Duration::from_secs(600),
        min_bytes: 4096,
        window: std::time::Duration::from_secs(1),
    };
    let (relay, mut s) = relayed_session(&f, limits);
    // One byte per 100 ms: an answer of a few dozen bytes takes seconds, not 30.
    let (e, took, answers) = keep_asking(&relay, &mut s, std::time::Duration::from_millis(100));
    eprintln!("cut after {took:?} and {answers} answers: {e}");
    assert!(e.is_unreachable(), "{e}");
    assert!(
        e.to_string()
            .contains("less than the minimum of 4096 bytes per 1s"),
        "{e}"
    );
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    // The session is gone: the next request fails at once, with the same reason.
    let start = std::time::Instant::now();
    let again = tiffin::source::Source::current_generation(&mut s).expect_err("cut");
    assert!(
        again.to_string().contains("less than the minimum"),
        "{again}"
    );
    assert!(start.elapsed() < std::time::Duration::from_millis(500));
    drop(s);
    relay.trickle(None);
    f.assert_generation_1_intact();
}

#[test]
fn a_server_that_keeps_every_request_just_alive_is_cut_at_the_session_deadline() {
    let Some(f) = Fixture::new() else { return };
    // No rate check: only the time spent waiting for the server, over all requests.
    let limits = source::TransferLimits {
        deadline: std::time::Duration::from_secs(3),
        min_bytes: 0,
        window: std::time::Duration::from_secs(1),
    };
    let (relay, mut s) = relayed_session(&f, limits);
    let (e, took, answers) = keep_asking(&relay, &mut s, std::time::Duration::from_millis(10));
    eprintln!("cut after {took:?} and {answers} answers: {e}");
    assert!(
        e.is_unreachable() && e.to_string().contains("more than the 3s allowed"),
        "{e}"
    );
    assert!(
        answers > 0,
        "each answer alone is quick: only their sum is cut"
    );
    assert!(took < std::time::Duration::from_secs(6), "{took:?}");
    drop(s);
    relay.trickle(None);
    f.assert_generation_1_intact();
}
