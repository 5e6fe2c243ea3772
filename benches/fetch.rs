//! Bytes on the wire, wall time and CPU time of the agent's fetch against a real chrooted sshd,
//! beside OpenSSH's `sftp` doing what a plain SFTP poller (bento) does: `ls -l` of one file to
//! check, `get -R` of the tree to update. Everything goes through the same counting loopback
//! relay. `measure` is also called by the suite (benches/suite.rs).
//!
//! Needs root and sshd (see tests/it/support/sshd.rs). Run: `cargo bench --bench fetch`.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::fs;
use std::time::{Duration, Instant};
use support::publication::{module_text, write_config_tree};
use support::relay::Relay;
use support::sshd::Sshd;
use tiffin::agent::pipeline::fetch::{sync, SyncOutcome};
use tiffin::runner::Runner;
use tiffin::source;

pub const FILES: usize = 300;
pub const FILE_SIZE: usize = 7000;
const RUNS: usize = 5;

/// One operation measured over several runs: bytes each way, wall time, and the CPU time of
/// whoever did it (the calling thread for tiffin, the child processes for OpenSSH's `sftp`).
pub struct Op {
    pub what: String,
    pub up: Vec<f64>,
    pub down: Vec<f64>,
    pub wall_ms: Vec<f64>,
    pub cpu_ms: Vec<f64>,
}

impl Op {
    pub fn total(&self) -> Vec<f64> {
        self.up.iter().zip(&self.down).map(|(u, d)| u + d).collect()
    }
}

/// Everything this benchmark measures, for its own table and the suite's.
pub struct FetchResults {
    pub files: usize,
    pub tree_bytes: u64,
    pub negotiated: String,
    pub first: Op,
    pub check: Op,
    pub update: Op,
    pub ls: Op,
    pub get: Op,
    pub get_c: Op,
}

/// Runs `setup` then `op` `runs` times; only `op` is timed and counted.
fn measure_op(
    relay: &Relay,
    what: &str,
    runs: usize,
    mut setup: impl FnMut(usize),
    mut op: impl FnMut(usize),
) -> Op {
    let mut r = Op {
        what: what.to_string(),
        up: vec![],
        down: vec![],
        wall_ms: vec![],
        cpu_ms: vec![],
    };
    for i in 0..runs {
        setup(i);
        relay.settle();
        relay.reset();
        let (cpu_thread, cpu_children) = (common::thread_cpu(), common::children_cpu());
        let start = Instant::now();
        op(i);
        let wall = start.elapsed();
        let cpu = (common::thread_cpu() - cpu_thread) + (common::children_cpu() - cpu_children);
        let wire = relay.settle();
        r.up.push(wire.up as f64);
        r.down.push(wire.down as f64);
        r.wall_ms.push(wall.as_secs_f64() * 1e3);
        r.cpu_ms.push(cpu.as_secs_f64() * 1e3);
    }
    r
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

/// Measures tiffin's fetch and OpenSSH's `sftp` side by side, `runs` times each. `None` when
/// sshd cannot run here (the reason is printed).
pub fn measure(runs: usize) -> Option<FetchResults> {
    let srv = Sshd::start(&["alpha"])?;
    let src = tempfile::tempdir().expect("temp dir");
    write_config_tree(src.path(), FILES, FILE_SIZE, 1);
    let m = srv.publish("alpha", 1, src.path());
    let relay = Relay::start(srv.port());
    let state = tempfile::tempdir().expect("temp dir");
    let cfg = srv.agent_config("alpha", relay.port, state.path());
    let mut generation = 1;

    let first = measure_op(
        &relay,
        "tiffin first fetch (whole tree)",
        runs,
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
    let check = measure_op(
        &relay,
        "tiffin no-change check",
        runs,
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
    let update = measure_op(
        &relay,
        "tiffin one-file update",
        runs,
        &mut publish_next,
        |_| {
            let mut s = source::open(&cfg).expect("connect");
            match sync(s.as_mut(), state.path(), "alpha", &mut |_| {}).expect("sync") {
                SyncOutcome::Fetched {
                    downloaded_files, ..
                } => assert_eq!(downloaded_files, 1),
                other => panic!("expected a fetch, got {other:?}"),
            }
        },
    );
    let ls = measure_op(
        &relay,
        "OpenSSH sftp: ls -l of one file",
        runs,
        |_| {},
        |_| openssh_sftp(&srv, &relay, "ls -l current/manifest.json\n", &[]),
    );
    let get = measure_op(
        &relay,
        "OpenSSH sftp: get -R of the tree",
        runs,
        |_| {},
        |i| openssh_sftp(&srv, &relay, &format!("get -R gens/1/tree t{i}\n"), &[]),
    );
    let get_c = measure_op(
        &relay,
        "OpenSSH sftp -C: get -R of the tree",
        runs,
        |_| {},
        |i| openssh_sftp(&srv, &relay, &format!("get -R gens/1/tree t{i}\n"), &["-C"]),
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
            limits: source::TRANSFER_LIMITS,
        })
        .expect("connect")
        .negotiated()
    };
    Some(FetchResults {
        files: FILES,
        tree_bytes: m.total_bytes(),
        negotiated,
        first,
        check,
        update,
        ls,
        get,
        get_c,
    })
}

#[allow(dead_code)] // the suite includes this file as a module and has its own main
fn main() {
    let Some(r) = measure(RUNS) else {
        return;
    };
    println!(
        "\nfetch over SFTP: {} files, {} bytes in the tree; median of {RUNS} runs, bytes counted at the TCP level through a loopback relay",
        r.files, r.tree_bytes
    );
    println!("tiffin negotiated: {}", r.negotiated);
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "operation", "up B", "down B", "total B", "wall ms", "CPU ms"
    );
    for op in [&r.first, &r.check, &r.update, &r.ls, &r.get, &r.get_c] {
        println!(
            "{:<40} {:>10.0} {:>10.0} {:>10.0} {:>10.1} {:>10.1}",
            op.what,
            common::spread(&op.up).median,
            common::spread(&op.down).median,
            common::spread(&op.total()).median,
            common::spread(&op.wall_ms).median,
            common::spread(&op.cpu_ms).median,
        );
    }
    let check_total = common::spread(&r.check.total()).median;
    let ratio =
        100.0 * common::spread(&r.update.total()).median / common::spread(&r.get.total()).median;
    println!(
        "goal: no-change check <= 4096 B on the wire: {check_total} B ({})",
        if check_total <= 4096.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "goal: one-file update <= 2 % of the full get -R: {ratio:.2} % ({})",
        if ratio <= 2.0 { "met" } else { "MISSED" }
    );
}
