//! `Type=notify`: the agent tells systemd it is ready once it serves, and that it stops on
//! SIGTERM; it exits 0 and removes its socket.

use crate::daemon_support;
use daemon_support::*;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[test]
fn agent_notifies_ready_and_stopping_and_exits_zero_on_sigterm() {
    if !require_root("systemd notify") {
        return;
    }
    let mut agent = Agent::prepare(AgentOptions::default());
    let notify_path = agent.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    agent
        .env
        .push(("NOTIFY_SOCKET".into(), notify_path.to_str().unwrap().into()));
    agent.spawn();

    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("no READY=1 from the agent");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means served: the socket answers.
    assert!(agent.try_status().is_some());

    let status = agent.stop();
    let n = notify.recv(&mut buf).expect("no STOPPING=1 from the agent");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    assert!(!agent.socket.exists());
    assert!(agent.stderr().contains("stopped"));
}
