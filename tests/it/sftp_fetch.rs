//! The agent's fetch against a real chrooted sshd: first sync, the no-change check, the delta
//! of a one-file change measured on the wire, and uploads queued while the server was down.

use crate::support;

use std::fs;
use support::publication::write_config_tree;
use support::relay::Relay;
use support::sshd::Sshd;
use tiffin::agent::pipeline::fetch::{sync, FetchDirs, SyncOutcome};
use tiffin::agent::pipeline::outbox::Outbox;
use tiffin::source;
use tiffin::status::Progress;

fn quiet() -> impl FnMut(Progress) {
    |_| {}
}

#[test]
fn first_sync_fetches_the_tree_and_the_next_check_transfers_nothing_more() {
    let Some(srv) = Sshd::start(&["alpha"]) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let cfg = srv.agent_config("alpha", srv.port(), state.path());
    let mut s = source::open(&cfg).unwrap_or_else(|e| panic!("{e}\n{}", srv.log_text()));
    assert!(matches!(
        sync(s.as_mut(), state.path(), "alpha", &mut quiet()).unwrap(),
        SyncOutcome::NothingPublished
    ));
    drop(s);

    let src = tempfile::tempdir().unwrap();
    write_config_tree(src.path(), 20, 500, 1);
    let m = srv.publish("alpha", 1, src.path());

    let mut s = source::open(&cfg).unwrap_or_else(|e| panic!("{e}\n{}", srv.log_text()));
    let out = sync(s.as_mut(), state.path(), "alpha", &mut quiet()).unwrap();
    let SyncOutcome::Fetched {
        local,
        downloaded_files,
        ..
    } = out
    else {
        panic!("expected a fetch, got {out:?}")
    };
    assert_eq!(downloaded_files, m.files().count() as u64);
    assert_eq!(local.manifest.tree_hash, m.tree_hash);
    for e in m.files() {
        assert_eq!(
            fs::read(state.path().join("tree").join(&e.path)).unwrap(),
            fs::read(src.path().join(&e.path)).unwrap(),
            "{}",
            e.path
        );
    }
    drop(s);

    let mut s = source::open(&cfg).unwrap();
    assert!(matches!(
        sync(s.as_mut(), state.path(), "alpha", &mut quiet()).unwrap(),
        SyncOutcome::Unchanged(l) if l.generation == 1
    ));
}

#[test]
fn one_changed_file_of_300_transfers_that_file_and_the_manifest_not_the_tree() {
    let Some(srv) = Sshd::start(&["alpha"]) else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    write_config_tree(src.path(), 300, 7000, 1);
    let m1 = srv.publish("alpha", 1, src.path());
    let relay = Relay::start(srv.port());
    let state = tempfile::tempdir().unwrap();
    let cfg = srv.agent_config("alpha", relay.port, state.path());

    let mut s = source::open(&cfg).unwrap();
    sync(s.as_mut(), state.path(), "alpha", &mut quiet()).unwrap();
    drop(s);
    let full = relay.settle();

    let changed = "common/m0150.nix";
    let new_text = support::publication::module_text(150, 7000, 2);
    fs::write(src.path().join(changed), &new_text).unwrap();
    let m2 = srv.publish("alpha", 2, src.path());
    relay.reset();
    let mut s = source::open(&cfg).unwrap();
    let out = sync(s.as_mut(), state.path(), "alpha", &mut quiet()).unwrap();
    drop(s);
    let delta = relay.settle();
    eprintln!("full sync {full:?}, one-file update {delta:?}");

    let SyncOutcome::Fetched {
        downloaded_files,
        downloaded_bytes,
        local,
    } = out
    else {
        panic!("expected a fetch, got {out:?}")
    };
    assert_eq!(
        (downloaded_files, downloaded_bytes),
        (1, new_text.len() as u64)
    );
    assert_eq!(local.generation, 2);
    assert_eq!(
        fs::read_to_string(state.path().join("tree").join(changed)).unwrap(),
        new_text
    );
    let tree_bytes = m1.total_bytes();
    assert!(tree_bytes > 2_000_000, "the tree is {tree_bytes} bytes");
    // The first sync carried the whole tree; the update only the manifest and one file (both
    // compressed on the wire), so it is a small fraction of the tree.
    assert!(full.down > tree_bytes / 3, "full sync moved only {full:?}");
    assert!(
        delta.down < tree_bytes / 50,
        "one-file update moved {delta:?}, the tree is {tree_bytes} bytes"
    );
    assert!(m2.tree_hash != m1.tree_hash);
}

#[test]
fn a_report_queued_while_the_server_is_down_is_delivered_at_the_next_contact() {
    let Some(srv) = Sshd::start(&["alpha"]) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let cfg = srv.agent_config("alpha", srv.port(), state.path());
    let outbox = Outbox::open(state.path()).unwrap();
    let name = "2026-11-25T10:00:00Z-g1-updated.json";
    outbox.enqueue(name, b"{\"outcome\":\"updated\"}").unwrap();

    srv.kill();
    let e = source::open(&cfg).err().expect("the server is down");
    assert!(e.is_unreachable(), "{e}");
    assert_eq!(outbox.pending(), vec![name.to_string()]);

    srv.restart();
    let mut s = source::open(&cfg).unwrap();
    assert_eq!(outbox.flush(s.as_mut()).unwrap(), 1);
    assert!(outbox.pending().is_empty());
    let delivered = srv.host("alpha").dir.join("logs").join(name);
    assert_eq!(fs::read(&delivered).unwrap(), b"{\"outcome\":\"updated\"}");

    // seen.json is replaced at every check: the second upload overwrites the first.
    s.upload_log("seen.json", b"{\"generation\":1}").unwrap();
    s.upload_log("seen.json", b"{\"generation\":2}").unwrap();
    let seen = srv.host("alpha").dir.join("logs/seen.json");
    assert_eq!(fs::read(seen).unwrap(), b"{\"generation\":2}");
    let leftovers: Vec<_> = fs::read_dir(srv.host("alpha").dir.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(FetchDirs::new(state.path()).local_tree().unwrap().is_none());
}

#[test]
fn a_republish_during_the_download_is_retried_from_the_new_manifest() {
    let Some(srv) = Sshd::start(&["alpha"]) else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    write_config_tree(src.path(), 10, 300, 1);
    srv.publish("alpha", 1, src.path());
    let state = tempfile::tempdir().unwrap();
    let cfg = srv.agent_config("alpha", srv.port(), state.path());
    sync(
        source::open(&cfg).unwrap().as_mut(),
        state.path(),
        "alpha",
        &mut quiet(),
    )
    .unwrap();

    write_config_tree(src.path(), 10, 300, 2);
    srv.publish("alpha", 2, src.path());
    // While generation 2 downloads, the admin publishes 3 and generation 2 is pruned.
    let mut republished = false;
    let mut on_progress = |p: Progress| {
        if p.done_files == 1 && !republished {
            republished = true;
            write_config_tree(src.path(), 10, 300, 3);
            srv.publish("alpha", 3, src.path());
            fs::remove_dir_all(srv.host("alpha").dir.join("gens/2")).unwrap();
        }
    };
    let mut s = source::open(&cfg).unwrap();
    let out = sync(s.as_mut(), state.path(), "alpha", &mut on_progress).unwrap();
    assert!(republished);
    match out {
        SyncOutcome::Fetched { local, .. } => {
            assert_eq!(local.generation, 3);
            let want = support::publication::module_text(4, 300, 3);
            let got = fs::read_to_string(local.tree.join("modules/m0004.nix")).unwrap();
            assert_eq!(got, want);
        }
        other => panic!("expected generation 3, got {other:?}"),
    }
}

/// An IPv6 literal host (`sftp://user@[::1]:port/`) reaches the real sshd, and its host key is
/// checked under the name `[::1]:port`. The test sshd listens on 127.0.0.1 only, so a forwarder
/// on [::1] stands in front of it (the agent's side is what is tested).
#[test]
fn an_ipv6_literal_source_reaches_the_server_and_checks_its_key() {
    let Some(srv) = Sshd::start(&["alpha"]) else {
        return;
    };
    let v6 = std::net::TcpListener::bind("[::1]:0");
    let missing = v6
        .as_ref()
        .err()
        .map(|e| format!("no IPv6 loopback address (::1): {e}"));
    if !support::prerequisite("an_ipv6_literal_source", missing) {
        return;
    }
    let v6 = v6.unwrap();
    let v6_port = v6.local_addr().unwrap().port();
    let sshd_port = srv.port();
    std::thread::spawn(move || {
        for client in v6.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", sshd_port)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    let state = tempfile::tempdir().unwrap();
    let pinned = fs::read_to_string(srv.known_hosts_for(sshd_port)).unwrap();
    let known_hosts = state.path().join("known_hosts");
    let key = pinned.split_once(' ').unwrap().1;
    fs::write(&known_hosts, format!("[::1]:{v6_port} {key}")).unwrap();
    let h = srv.host("alpha");
    let text = format!(
        "host = \"alpha\"\nsource = \"sftp://{user}@[::1]:{v6_port}/\"\nidentity = {id:?}\n\
         known_hosts = {kh:?}\nstate_dir = {st:?}\nallow_unsigned = true\n",
        user = h.user,
        id = h.identity.display().to_string(),
        kh = known_hosts.display().to_string(),
        st = state.path().display().to_string(),
    );
    let cfg = tiffin::config::AgentConfig::parse(&text, "agent.toml").unwrap();
    let mut s = source::open(&cfg).unwrap_or_else(|e| panic!("{e}\n{}", srv.log_text()));
    assert_eq!(s.describe(), format!("sftp://{}@[::1]:{v6_port}/", h.user));
    assert_eq!(s.current_generation().unwrap(), None);
    drop(s);

    // The same key pinned under another name is no pin for [::1].
    fs::write(&known_hosts, &pinned).unwrap();
    let e = source::open(&cfg)
        .err()
        .expect("a key pinned for 127.0.0.1 only");
    assert!(e.to_string().contains("[::1]"), "{e}");
}
