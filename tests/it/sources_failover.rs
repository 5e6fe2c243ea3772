//! Ordered sources (agent.toml `sources`) on real servers: a primary sshd and a mirror sshd (a
//! second sshd on its own chroot root, the same users; its copy of the publication made with
//! `cp -a`). The primary killed: the next cycle fetches from the mirror, its reports wait in the
//! outbox for `report_to` (the primary) and are delivered when it returns. A mirror left behind
//! while the primary publishes twice is skipped as stale and never downgrades the machine.
//!
//! Needs root and `/usr/sbin/sshd` (fails under `CI=true` without them, skips otherwise).

use crate::pipeline_sshd::{SshMachine, HOST};
use crate::support::mirror_copy_sshd::MirrorSshd;
use crate::support::nginx::{self, Nginx, NginxOptions};
use std::fs;
use std::process::Command;

/// Rewrites the machine's agent.toml to read `sources = [primary, mirror]` with both servers'
/// host keys pinned.
fn use_sources(m: &SshMachine, mirror: &MirrorSshd, third: Option<&str>) {
    let user = &m.srv.host(HOST).user;
    let primary = format!("sftp://{user}@127.0.0.1:{}/", m.srv.port());
    let second = format!("sftp://{user}@127.0.0.1:{}/", mirror.port());
    let known = m.srv.root.join("etc/known_hosts-both");
    let both = format!(
        "{}{}",
        fs::read_to_string(m.srv.known_hosts_for(m.srv.port())).unwrap(),
        fs::read_to_string(m.srv.known_hosts_for(mirror.port())).unwrap()
    );
    fs::write(&known, both).unwrap();
    let text = fs::read_to_string(&m.config_path).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("source = ") || l.starts_with("sources = ") {
                match third {
                    None => format!("sources = [{primary:?}, {second:?}]\n"),
                    Some(t) => format!("sources = [{primary:?}, {second:?}, {t:?}]\n"),
                }
            } else if l.starts_with("known_hosts = ") {
                format!("known_hosts = {:?}\n", known.display().to_string())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&m.config_path, text).unwrap();
}

fn applied(m: &SshMachine) -> u64 {
    m.state_json()["applied_generation"]
        .as_u64()
        .expect("a generation is applied")
}

/// Reports of generation `g` in a `logs/` directory.
fn reports_of(logs: &std::path::Path, g: u64) -> Vec<String> {
    fs::read_dir(logs)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(&format!("-g{g}-")) && n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn with_the_primary_down_the_mirror_serves_reports_wait_and_a_lagging_mirror_is_skipped() {
    let Some(m) = SshMachine::new() else { return };
    let mirror = MirrorSshd::start(&m.srv);
    m.write("notes.txt", b"one\n");
    let g1 = m.publish();
    mirror.copy_from(&m.srv, HOST);
    use_sources(&m, &mirror, None);
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(applied(&m), g1);
    assert_eq!(reports_of(&m.srv.host(HOST).dir.join("logs"), g1).len(), 1);

    // The mirror gets generation 2 (a new system), then the primary goes down.
    m.write(
        "configuration.nix",
        b"{ ... }: { services.openssh.enable = true; }\n",
    );
    let g2 = m.publish();
    mirror.copy_from(&m.srv, HOST);
    m.srv.kill();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}\n{}", mirror.log_text());
    assert_eq!(applied(&m), g2, "fetched from the mirror: {out}");
    assert!(
        out.contains("skipped: sftp://"),
        "the primary was passed over: {out}"
    );
    // Reports go to report_to (the primary): queued, not left on the mirror.
    assert!(!m.queued().is_empty(), "the report waits in the outbox");
    assert!(reports_of(&mirror.host_dir(HOST).join("logs"), g2).is_empty());
    assert!(reports_of(&m.srv.host(HOST).dir.join("logs"), g2).is_empty());

    // The primary returns: the next cycle delivers them.
    m.srv.restart();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    // (The tree change leaves the system as it is: the outcome is "up_to_date".)
    let delivered = reports_of(&m.srv.host(HOST).dir.join("logs"), g2);
    assert_eq!(
        delivered.len(),
        1,
        "delivered to the primary: {delivered:?}"
    );
    assert!(m.queued().is_empty(), "{:?}", m.queued());

    // The mirror stops being updated; the primary publishes twice and the machine takes it.
    m.write("notes.txt", b"three\n");
    let g3 = m.publish();
    m.write("notes.txt", b"four\n");
    let g4 = m.publish();
    assert_eq!(g4, g3 + 1);
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(applied(&m), g4);

    // Primary down, mirror two generations behind: skipped, nothing applied, no downgrade.
    m.srv.kill();
    let (_, out) = m.run_once();
    let stale = format!(
        "skipped sftp://{}@127.0.0.1:{}/: serves generation {g2}, this machine has seen {g4}",
        m.srv.host(HOST).user,
        mirror.port()
    );
    assert!(out.contains(&stale), "{out}");
    assert_eq!(
        applied(&m),
        g4,
        "the lagging mirror must not downgrade: {out}"
    );
    assert_eq!(m.state_json()["highest_seen_generation"], g4);
    assert_eq!(
        fs::read(m.state.join("tree/notes.txt")).unwrap(),
        b"four\n",
        "the fetched tree stays the newest"
    );

    // nginx serves a third, up-to-date copy (HTTP, signed): with the primary still down and the
    // mirror still behind, the cycle skips the mirror and takes generation 5 from nginx.
    if !crate::support::prerequisite("the nginx part", nginx::missing()) {
        return;
    }
    m.write("notes.txt", b"five\n");
    let g5 = m.publish();
    let web = tempfile::Builder::new()
        .prefix("tiffin-failover-web-")
        .tempdir()
        .unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&m.srv.host(HOST).dir)
        .arg(web.path().join(HOST))
        .status()
        .unwrap();
    assert!(st.success());
    nginx::open_to_workers(web.path());
    let group = m.srv.host(HOST).user.clone();
    let n = Nginx::start(&NginxOptions {
        root: web.path(),
        user: "nobody",
        group: &group,
        tls: None,
        extra: "",
    });
    use_sources(&m, &mirror, Some(&n.url(&format!("/{HOST}/"))));
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}\n{}", n.error_log());
    assert!(out.contains(&stale), "{out}");
    assert_eq!(applied(&m), g5, "from nginx: {out}");
    assert!(
        !m.queued().is_empty(),
        "reports wait for the primary (nginx is read-only)"
    );
}
