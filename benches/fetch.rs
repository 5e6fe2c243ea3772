//! Bytes on the wire and wall time of the agent's fetch against a real chrooted sshd, beside
//! OpenSSH's `sftp` doing what a plain SFTP poller (bento) does: `ls -l` of one file to check,
//! `get -R` of the tree to update. Everything goes through the same counting loopback relay.
//!
//! Needs root and sshd (see tests/support/sshd.rs). Run: `cargo bench --bench fetch`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::time::{Duration, Instant};
use support::publication::{module_text, write_config_tree};
use support::relay::{Relay, Wire};
use support::sshd::Sshd;
use tiffin::agent::fetch::{sync, SyncOutcome};
use tiffin::runner::Runner;
use tiffin::source;

const FILES: usize = 300;
const FILE_SIZE: usize = 7000;
const RUNS: usize = 5;

struct Row {
    what: String,
    wire: Wire,
    times: Vec<Duration>,
}

impl Row {
    fn median_ms(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort();
        t[t.len() / 2].as_secs_f64() * 1000.0
    }
}

/// Runs `setup` then `op` RUNS times; only `op` is timed and counted. Keeps the bytes of the
/// last run (they hardly vary).
fn measure(
    relay: &Relay,
    what: &str,
    mut setup: impl FnMut(usize),
    mut op: impl FnMut(usize),
) -> Row {
    let mut times = Vec::new();
    let mut wire = Wire::default();
    for i in 0..RUNS {
        setup(i);
        relay.settle();
        relay.reset();
        let start = Instant::now();
        op(i);
        times.push(start.elapsed());
        wire = relay.settle();
    }
    Row {
        what: what.to_string(),
        wire,
        times,
    }
}

fn openssh_sftp(srv: &Sshd, relay: &Relay, batch: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let batch_file = dir.path().join("batch");
    fs::write(&batch_file, batch).expect("write the sftp batch file");
    let h = srv.host("alpha");
    let kh = srv.known_hosts_for(relay.port);
    let port = relay.port.to_string();
    let mut args: Vec<String> = vec![
        "-q".into(),
        "-b".into(),
        batch_file.display().to_string(),
        "-i".into(),
        h.identity.display().to_string(),
        "-P".into(),
        port,
    ];
    for o in [
        "IdentitiesOnly=yes".to_string(),
        "BatchMode=yes".into(),
        "StrictHostKeyChecking=yes".into(),
        format!("UserKnownHostsFile={}", kh.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
    ] {
        args.push("-o".into());
        args.push(o);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("{}@127.0.0.1", h.user));
    let out = Runner::new()
        .run_in(
            "sftp",
            &args,
            Some(dir.path()),
            Some(Duration::from_secs(120)),
        )
        .expect("run sftp");
    assert!(out.success(), "{}", out.describe_failure());
}

fn main() {
    let Some(srv) = Sshd::start(&["alpha"]) else {
        return;
    };
    let src = tempfile::tempdir().expect("temp dir");
    write_config_tree(src.path(), FILES, FILE_SIZE, 1);
    let m = srv.publish("alpha", 1, src.path());
    let relay = Relay::start(srv.port());
    let state = tempfile::tempdir().expect("temp dir");
    let cfg = srv.agent_config("alpha", relay.port, state.path());
    let mut generation = 1;
    let mut rows = Vec::new();

    let full = measure(
        &relay,
        "tiffin first fetch (whole tree)",
        |_| {
            let _ = fs::remove_dir_all(state.path());
            fs::create_dir_all(state.path()).expect("state dir");
        },
        |_| {
            let mut s = source::open(&cfg).expect("connect");
            let out = sync(s.as_mut(), state.path(), "alpha", &mut |_| {}).expect("sync");
            assert!(matches!(out, SyncOutcome::Fetched { .. }));
        },
    );
    let check = measure(
        &relay,
        "tiffin no-change check",
        |_| {},
        |_| {
            let mut s = source::open(&cfg).expect("connect");
            let out = sync(s.as_mut(), state.path(), "alpha", &mut |_| {}).expect("sync");
            assert!(matches!(out, SyncOutcome::Unchanged(_)));
        },
    );
    // Each run publishes a generation with one more module changed than the last had.
    let mut publish_next = |i: usize| {
        let path = format!("common/m{:04}.nix", 3 * (i + 1));
        fs::write(src.path().join(&path), module_text(i as u64, FILE_SIZE, 99))
            .expect("change a module");
        generation += 1;
        srv.publish("alpha", generation, src.path());
    };
    let update = measure(&relay, "tiffin one-file update", &mut publish_next, |_| {
        let mut s = source::open(&cfg).expect("connect");
        match sync(s.as_mut(), state.path(), "alpha", &mut |_| {}).expect("sync") {
            SyncOutcome::Fetched {
                downloaded_files, ..
            } => assert_eq!(downloaded_files, 1),
            other => panic!("expected a fetch, got {other:?}"),
        }
    });
    let ls = measure(
        &relay,
        "OpenSSH sftp: ls -l of one file",
        |_| {},
        |_| {
            openssh_sftp(&srv, &relay, "ls -l current/manifest.json\n", &[]);
        },
    );
    let get = measure(
        &relay,
        "OpenSSH sftp: get -R of the tree",
        |_| {},
        |i| {
            openssh_sftp(&srv, &relay, &format!("get -R gens/1/tree t{i}\n"), &[]);
        },
    );
    let get_c = measure(
        &relay,
        "OpenSSH sftp -C: get -R of the tree",
        |_| {},
        |i| {
            openssh_sftp(&srv, &relay, &format!("get -R gens/1/tree t{i}\n"), &["-C"]);
        },
    );
    let negotiated = {
        let h = srv.host("alpha");
        source::SftpSource::connect(source::SftpTarget {
            user: h.user.clone(),
            host: "127.0.0.1".into(),
            port: srv.port(),
            path: "/".into(),
            identity: cfg.identity.clone(),
            known_hosts: srv.known_hosts_for(srv.port()),
            connect_timeout: source::CONNECT_TIMEOUT,
            io_timeout: source::IO_TIMEOUT,
        })
        .expect("connect")
        .negotiated()
    };
    let (check_total, update_total, get_total) =
        (check.wire.total(), update.wire.total(), get.wire.total());
    rows.extend([full, check, update, ls, get, get_c]);

    println!(
        "\nfetch over SFTP: {FILES} files, {} bytes in the tree; median of {RUNS} runs, bytes counted at the TCP level through a loopback relay",
        m.total_bytes()
    );
    println!("tiffin negotiated: {negotiated}");
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10}",
        "operation", "up B", "down B", "total B", "wall ms"
    );
    for r in &rows {
        println!(
            "{:<40} {:>10} {:>10} {:>10} {:>10.1}",
            r.what,
            r.wire.up,
            r.wire.down,
            r.wire.total(),
            r.median_ms()
        );
    }
    let ratio = 100.0 * update_total as f64 / get_total as f64;
    println!(
        "goal: no-change check <= 4096 B on the wire: {check_total} B ({})",
        if check_total <= 4096 { "met" } else { "MISSED" }
    );
    println!(
        "goal: one-file update <= 2 % of the full get -R: {ratio:.2} % ({})",
        if ratio <= 2.0 { "met" } else { "MISSED" }
    );
}
