//! Subscribers across an agent restart: `tiffin watch` reconnects and prints the current status;
//! the agent stops cleanly on SIGTERM (exit 0, socket removed).

use crate::daemon_support;
use daemon_support::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn watch_reconnects_after_an_agent_restart_and_prints_the_current_status() {
    if !require_root("watch across restart") {
        return;
    }
    let mut agent = Agent::start(AgentOptions::default());
    let mut watch = std::process::Command::new(TIFFIN)
        .args(["watch", "--socket"])
        .arg(&agent.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = BufReader::new(watch.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in stdout.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("watch printed nothing while waiting for {what}"))
    };
    let first = next("the first status");
    assert!(first.contains("idle applied=1"), "{first}");

    let status = agent.stop();
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    assert!(!agent.socket.exists(), "socket left behind");

    // Generation 2 is published while the agent is down; the restarted agent applies it at its
    // first check, and the watcher, reconnected, shows it.
    agent.publication.publish(2, &files(4, 100, "g2"));
    agent.spawn();
    loop {
        let l = next("a status with generation 2 after the restart");
        if l.contains("applied=2") {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let mut err = String::new();
    if let Some(mut e) = watch.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(err.contains("reconnecting"), "{err}");
}
