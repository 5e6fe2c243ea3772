//! The socket's peer checks with real uids: the agent runs as root, clients run as users
//! created for the test, and the agent decides from SO_PEERCRED and the group database.

use crate::daemon_support;
use daemon_support::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn outsiders_are_refused_members_update_and_only_admins_and_root_roll_back() {
    if !require_root("peer access") {
        return;
    }
    let sock_group = TestGroup::new("tfs");
    let admin_group = TestGroup::new("tfa");
    let member = TestUser::new("tfm", &[&sock_group]);
    let admin = TestUser::new("tfad", &[&sock_group, &admin_group]);
    let outsider = TestUser::new("tfo", &[]);
    let agent = Agent::start(AgentOptions {
        socket_group: sock_group.name.clone(),
        admin_group: admin_group.name.clone(),
        ..Default::default()
    });
    let socket = agent.socket.to_str().unwrap().to_string();

    let meta = std::fs::metadata(&agent.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, sock_group.gid));

    let run = |u: &TestUser, groups: Vec<u32>, args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--socket", &socket]);
        let o = tiffin_as(u.uid, u.gid, groups, &full).output().unwrap();
        let (out, err) = output_text(&o);
        println!("{} {args:?} -> {:?}\n{out}{err}", u.name, o.status.code());
        (o.status.code(), out, err)
    };

    // Not in the socket group: the socket's mode keeps it out entirely.
    let (code, _, err) = run(&outsider, outsider.login_groups(), &["update"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot connect"), "{err}");

    // A process that holds the socket group without its user being a member (setgroups by
    // some other means) gets in, may read the status, but is forbidden to update: the agent
    // asks the group database about the peer's uid, not the process.
    let mut sneaky_groups = outsider.login_groups();
    sneaky_groups.push(sock_group.gid);
    let (code, out, _) = run(&outsider, sneaky_groups.clone(), &["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("testhost"), "{out}");
    let (code, _, err) = run(&outsider, sneaky_groups, &["update"]);
    assert_eq!(code, Some(1));
    assert!(err.to_lowercase().contains("forbidden"), "{err}");

    // A member updates (generation 2 is published meanwhile) but may not roll back.
    agent.publication.publish(2, &files(5, 200, "g2"));
    let (code, out, err) = run(&member, member.login_groups(), &["update"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("updated (generation 2)"), "{out}");
    let (code, _, err) = run(&member, member.login_groups(), &["rollback", "--yes"]);
    assert_eq!(code, Some(1));
    assert!(err.to_lowercase().contains("forbidden"), "{err}");
    assert!(err.contains(&admin_group.name), "{err}");

    // The admin group gets through to the pipeline, which re-activates the system the machine
    // ran before generation 1: the rollback it asked for succeeded (exit 0).
    let (code, out, err) = run(&admin, admin.login_groups(), &["rollback", "--yes"]);
    assert!(!err.to_lowercase().contains("forbidden"), "admin: {err}");
    assert_eq!(code, Some(0), "admin: {out}{err}");
    assert!(out.contains("rolled back"), "admin: {out}{err}");
    // Root gets through too; after that rollback there is nothing left to roll back to, and the
    // pipeline (not the socket) says so.
    let o = std::process::Command::new(TIFFIN)
        .args(["rollback", "--yes", "--socket", &socket])
        .output()
        .unwrap();
    let (out, err) = output_text(&o);
    assert!(!err.to_lowercase().contains("forbidden"), "root: {err}");
    assert!(
        out.contains("rollback failed") && out.contains("no previous system"),
        "root: {out}{err}"
    );

    // Without a terminal and without --yes, rollback refuses to ask.
    let (code, _, err) = run(&admin, admin.login_groups(), &["rollback"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--yes"), "{err}");
}

#[test]
fn a_missing_socket_group_is_a_startup_error_naming_it() {
    if !require_root("missing socket group") {
        return;
    }
    let mut agent = Agent::prepare(AgentOptions {
        socket_group: format!("nosuchgroup{}", suffix()),
        ..Default::default()
    });
    let out = std::process::Command::new(TIFFIN)
        .args(["agent", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let (_, err) = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nosuchgroup") && err.contains("socket_group"),
        "{err}"
    );
    agent.child = None;
}
