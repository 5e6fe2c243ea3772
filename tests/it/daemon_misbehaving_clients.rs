//! One agent, 100 subscribers, and three bad clients (garbage, a 10 MB line, one that stops
//! reading): every subscriber keeps getting events and the agent's memory stays bounded.

use crate::daemon_support;
use daemon_support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tiffin::status::Outcome;

fn raw(agent: &Agent) -> UnixStream {
    let s = UnixStream::connect(&agent.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn read_json_line(r: &mut BufReader<UnixStream>) -> serde_json::Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn hundred_subscribers_keep_receiving_events_despite_garbage_huge_lines_and_a_stuck_reader() {
    if !require_root("misbehaving clients") {
        return;
    }
    let agent = Agent::start(AgentOptions::default());
    let rss_before = agent.rss_kib();

    // 100 subscribers, each in its own thread, waiting for generations 2 and 3 to be applied.
    let ready = Arc::new(Barrier::new(101));
    let subscribers: Vec<_> = (0..100)
        .map(|_| {
            let mut c = agent.client();
            let ready = ready.clone();
            std::thread::spawn(move || {
                c.subscribe().unwrap();
                ready.wait();
                let mut seen = Vec::new();
                while !seen.contains(&3) {
                    let s = c.next_status().unwrap();
                    if let Some(g) = s.applied_generation {
                        if !seen.contains(&g) {
                            seen.push(g);
                        }
                    }
                }
                seen
            })
        })
        .collect();
    ready.wait();

    // Garbage: each bad line gets an error object, and the connection stays usable.
    let mut garbage = raw(&agent);
    garbage
        .write_all(b"\x00\xff not json\n{\"id\":5,\"cmd\":\"format_disk\"}\n[1,2]\n")
        .unwrap();
    garbage
        .write_all(b"{\"id\":6,\"cmd\":\"status\"}\n")
        .unwrap();
    let mut gr = BufReader::new(garbage.try_clone().unwrap());
    for _ in 0..3 {
        let v = read_json_line(&mut gr);
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["error"]["code"], "bad_request", "{v}");
    }
    let v = read_json_line(&mut gr);
    assert_eq!(
        (v["id"].as_u64(), v["ok"].as_bool()),
        (Some(6), Some(true)),
        "{v}"
    );

    // A 10 MB line: answered with too_long, the rest of the line skipped, connection usable.
    let mut huge = raw(&agent);
    let mut hr = BufReader::new(huge.try_clone().unwrap());
    let writer = std::thread::spawn(move || {
        let mut line = vec![b'x'; 10 << 20];
        line.push(b'\n');
        huge.write_all(&line).unwrap();
        huge.write_all(b"{\"id\":7,\"cmd\":\"status\"}\n").unwrap();
        huge
    });
    let v = read_json_line(&mut hr);
    assert_eq!(v["error"]["code"], "too_long", "{v}");
    let v = read_json_line(&mut hr);
    assert_eq!(
        (v["id"].as_u64(), v["ok"].as_bool()),
        (Some(7), Some(true)),
        "{v}"
    );
    let _huge = writer.join().unwrap();

    // A client that subscribes, floods requests and never reads an answer.
    let mut stuck = raw(&agent);
    stuck
        .write_all(b"{\"id\":1,\"cmd\":\"subscribe\"}\n")
        .unwrap();
    stuck
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut flooded = 0usize;
    let request = b"{\"id\":2,\"cmd\":\"status\"}\n";
    for _ in 0..200_000 {
        if stuck.write_all(request).is_err() {
            break;
        }
        flooded += 1;
    }
    println!("stuck client wrote {flooded} requests before its writes blocked");

    // Two new generations, applied through the socket while the stuck client is stuck.
    let mut c = agent.client();
    for g in [2u64, 3] {
        agent
            .publication
            .publish(g, &files(20, 4096, &format!("g{g}")));
        let r = c.update().unwrap();
        assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
    }
    for s in subscribers {
        let seen = s.join().unwrap();
        assert!(seen.contains(&3), "{seen:?}");
    }

    // The stuck client is dropped once a write to it times out; after what the kernel
    // buffered, its stream ends.
    wait_for(60, "the agent to drop the stuck client", || {
        agent.stderr().contains("client does not read")
    });
    stuck
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut sink = Vec::new();
    let n = stuck.read_to_end(&mut sink);
    assert!(
        n.is_ok()
            || n.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "stuck client still connected: {n:?}\n{}",
        agent.stderr()
    );

    let rss_after = agent.rss_kib();
    println!(
        "agent VmRSS: {rss_before} KiB before, {rss_after} KiB after ({:+} KiB)",
        rss_after as i64 - rss_before as i64
    );
    assert!(
        rss_after < rss_before + 100 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
    // Others are still served.
    assert!(agent.try_status().is_some());
}

#[test]
fn one_uid_cannot_take_every_subscriber_slot() {
    if !require_root("misbehaving clients") {
        return;
    }
    let group = TestGroup::new("tfs");
    let hog = TestUser::new("tfh", &[&group]);
    let other = TestUser::new("tfo", &[&group]);
    let agent = Agent::start(AgentOptions {
        socket_group: group.name.clone(),
        ..Default::default()
    });
    let limits = tiffin::ipc::server::Limits::default();
    // One user subscribes more times than the agent has slots.
    let held = HeldConnections::open(
        "daemon_misbehaving_clients::daemon_misbehaving_clients_helper",
        &hog,
        Target::Socket(&agent.socket),
        limits.max_clients + 44,
    );
    assert_eq!(
        (held.ok, held.busy),
        (
            limits.max_clients_per_uid,
            limits.max_clients + 44 - limits.max_clients_per_uid
        )
    );
    // Another user still gets a slot, and so does root.
    let theirs = HeldConnections::open(
        "daemon_misbehaving_clients::daemon_misbehaving_clients_helper",
        &other,
        Target::Socket(&agent.socket),
        1,
    );
    assert_eq!((theirs.ok, theirs.busy), (1, 0), "another user was refused");
    assert!(agent.try_status().is_some());
    // Once the first user lets go, its share is free again.
    drop(held);
    wait_for(10, "the hog's slots to be given back", || {
        HeldConnections::open(
            "daemon_misbehaving_clients::daemon_misbehaving_clients_helper",
            &hog,
            Target::Socket(&agent.socket),
            1,
        )
        .ok == 1
    });
}

#[test]
fn daemon_misbehaving_clients_helper() {
    hold_connections_if_asked();
}
