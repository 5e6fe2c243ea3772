//! The HTTP trigger of the real agent: rapid requests start one cycle; only loopback Host
//! headers are served.

use crate::daemon_support;
use daemon_support::*;

fn update_cycles(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("cycle started") && l.contains("Cycle(Update)"))
        .count()
}

#[test]
fn twenty_rapid_requests_start_exactly_one_cycle_and_a_foreign_host_is_refused() {
    if !require_root("http trigger") {
        return;
    }
    let port = free_port();
    let agent = Agent::start(AgentOptions {
        http_trigger: format!("127.0.0.1:{port}"),
        ..Default::default()
    });
    agent.publication.publish(2, &files(10, 1000, "g2"));
    assert_eq!(update_cycles(&agent.stderr()), 0);

    let hosts = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".to_string(),
    ];
    let mut pages = Vec::new();
    for i in 0..20 {
        let (code, body) = http_get(port, "GET", "/", &hosts[i % hosts.len()]);
        assert_eq!(code, 200, "{body}");
        pages.push(body);
    }
    assert!(pages[0].contains("Update started."), "{}", pages[0]);
    assert!(pages[0].contains("<h1>testhost</h1>"), "{}", pages[0]);
    assert_eq!(
        pages
            .iter()
            .filter(|p| p.contains("Update started."))
            .count(),
        1
    );
    // The one cycle applies generation 2; nothing else starts.
    wait_for(30, "generation 2 to be applied", || {
        agent.try_status().is_some_and(|s| {
            s.applied_generation == Some(2) && s.phase == tiffin::status::Phase::Idle
        })
    });
    let log = agent.stderr();
    assert_eq!(update_cycles(&log), 1, "{log}");
    let (_, body) = http_get(port, "GET", "/", "localhost");
    assert!(body.contains("applied generation</th><td>2"), "{body}");

    // DNS rebinding: a page on evil.example resolving to 127.0.0.1 gets nothing.
    let (code, body) = http_get(port, "GET", "/", "evil.example");
    assert_eq!(code, 421, "{body}");
    let (code, _) = http_get(port, "GET", "/", &format!("evil.example:{port}"));
    assert_eq!(code, 421);
    let (code, _) = http_get(port, "GET", "/favicon.ico", "localhost");
    assert_eq!(code, 404);
    let (code, _) = http_get(port, "POST", "/", "localhost");
    assert_eq!(code, 405);
    assert_eq!(update_cycles(&agent.stderr()), 1);
}

/// How many cycles the agent logged as finished.
fn cycles_finished(log: &str) -> usize {
    log.lines().filter(|l| l.contains("cycle finished")).count()
}

#[test]
fn a_cross_site_request_from_a_web_page_gets_403_and_starts_no_cycle() {
    if !require_root("http trigger") {
        return;
    }
    let port = free_port();
    let agent = Agent::start(AgentOptions {
        http_trigger: format!("127.0.0.1:{port}"),
        ..Default::default()
    });
    agent.publication.publish(2, &files(3, 100, "g2"));
    let host = format!("127.0.0.1:{port}");
    // What a browser sends for <img src="http://127.0.0.1:9999/">, a link on another site, a
    // page on another port of localhost, a form posted from elsewhere, a sandboxed frame.
    for headers in [
        &[
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Dest", "image"),
        ][..],
        &[("Sec-Fetch-Site", "same-site")],
        &[("Origin", "https://evil.example")],
        &[("Origin", "http://localhost:8080")],
        &[("Origin", "null")],
    ] {
        let (code, body) = http_request(port, "GET", "/", &host, headers);
        assert_eq!(code, 403, "{headers:?}: {body}");
        assert!(!body.contains("Update started"), "{body}");
    }
    // Nothing started: a second after, no update cycle was ever logged.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(update_cycles(&agent.stderr()), 0, "{}", agent.stderr());
    assert_eq!(agent.try_status().unwrap().applied_generation, Some(1));

    // A bookmark or a typed address (Sec-Fetch-Site: none) works as before.
    let (code, body) = http_request(
        port,
        "GET",
        "/",
        &host,
        &[("Sec-Fetch-Site", "none"), ("Sec-Fetch-User", "?1")],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Update started."), "{body}");
    wait_for(30, "generation 2 to be applied", || {
        agent
            .try_status()
            .is_some_and(|s| s.applied_generation == Some(2))
    });
}

#[test]
fn a_non_loopback_http_trigger_is_a_config_error() {
    if !require_root("http trigger") {
        return;
    }
    let port = free_port();
    let agent = Agent::prepare(AgentOptions {
        http_trigger: format!("0.0.0.0:{port}"),
        ..Default::default()
    });
    let out = std::process::Command::new(TIFFIN)
        .args(["agent", "--check-config", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let (_, err) = output_text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("http_trigger") && err.contains("loopback") && err.contains("0.0.0.0"),
        "{err}"
    );
    // The daemon itself refuses to start on it, and nothing listens on the port.
    let out = std::process::Command::new(TIFFIN)
        .args(["agent", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok());
}

#[test]
fn a_squatted_trigger_port_leaves_the_agent_running_and_it_binds_once_free() {
    if !require_root("http trigger") {
        return;
    }
    let port = free_port();
    // Another process listens on the trigger's port before the agent starts.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut agent = Agent::prepare(AgentOptions {
        http_trigger: format!("127.0.0.1:{port}"),
        ..Default::default()
    });
    agent
        .env
        .push(("TIFFIN_TEST_HTTP_RETRY".into(), "300ms".into()));
    agent.spawn();

    // The agent runs (its socket answers), and says why the trigger is missing.
    let s = agent.try_status().unwrap();
    let why = s
        .http_trigger_error
        .expect("the status names the trigger's problem");
    assert!(
        why.contains(&format!("127.0.0.1:{port}")) && why.contains("cannot listen"),
        "{why}"
    );
    assert!(
        agent.stderr().contains("cannot listen"),
        "{}",
        agent.stderr()
    );
    let status_cli = std::process::Command::new(TIFFIN)
        .args(["status", "--socket"])
        .arg(&agent.socket)
        .output()
        .unwrap();
    let (out, _) = output_text(&status_cli);
    assert!(
        out.contains("http trigger") && out.contains("cannot listen"),
        "{out}"
    );
    // A few retries later it is still up, still without the trigger.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(agent.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert!(agent.try_status().unwrap().http_trigger_error.is_some());

    // The squatter leaves: the agent binds the port at its next try and serves the trigger.
    drop(squatter);
    wait_for(10, "the trigger to be bound", || {
        agent
            .try_status()
            .is_some_and(|s| s.http_trigger_error.is_none())
    });
    agent.publication.publish(2, &files(3, 100, "g2"));
    let (code, body) = http_get(port, "GET", "/", "localhost");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Update started."), "{body}");
    assert!(
        agent.stderr().contains("listening now"),
        "{}",
        agent.stderr()
    );
}

/// Runs the agent as systemd does for a socket unit: the listening socket as descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_FDNAMES=http-trigger`, `LISTEN_PID` the agent's own pid (`sh` sets
/// it to its pid, then execs the agent in its place).
fn agent_command_with_socket(
    agent: &Agent,
    listener: &std::net::TcpListener,
) -> std::process::Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut c = std::process::Command::new("/bin/sh");
    c.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http-trigger exec \"$0\" agent --config \"$1\"",
        TIFFIN,
    ])
    .arg(&agent.config);
    unsafe {
        c.pre_exec(move || {
            if fd == 3 {
                nix::fcntl::fcntl(
                    3,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            } else {
                nix::unistd::dup2(fd, 3)?;
            }
            Ok(())
        });
    }
    c
}

/// The descriptor flags of `fd` in process `pid` (`/proc/PID/fdinfo`), octal.
fn fd_flags(pid: u32, fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim();
    u32::from_str_radix(flags, 8).unwrap()
}

#[test]
fn an_inherited_listen_fd_is_used_so_no_user_can_squat_the_port() {
    if !require_root("http trigger") {
        return;
    }
    // The test plays systemd: it holds the port for the whole test, across an agent restart.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let squatter_user = TestUser::new("tfsq", &[]);
    let mut agent = Agent::prepare(AgentOptions {
        http_trigger: format!("127.0.0.1:{port}"),
        ..Default::default()
    });
    for round in 1..=2 {
        agent.spawn_via(agent_command_with_socket(&agent, &listener));
        let log = agent.stderr();
        assert!(log.contains("using the socket systemd passed"), "{log}");
        assert!(agent.try_status().unwrap().http_trigger_error.is_none());
        // Commands the agent runs do not inherit it.
        const O_CLOEXEC: u32 = 0o2000000;
        assert_ne!(
            fd_flags(agent.pid(), 3) & O_CLOEXEC,
            0,
            "descriptor 3 leaks into commands"
        );
        let (code, body) = http_get(port, "GET", "/", "localhost");
        assert_eq!(code, 200, "round {round}: {body}");
        assert!(body.contains("<h1>testhost</h1>"), "{body}");

        // The agent stops (an upgrade, a crash): a local user still cannot take the port.
        assert!(agent.stop().success());
        let squat = HeldConnections::open(
            "daemon_http_trigger::daemon_http_trigger_helper",
            &squatter_user,
            Target::Listen(port),
            1,
        );
        assert_eq!(
            squat.ok, 0,
            "user {} bound the trigger's port",
            squatter_user.name
        );
    }
}

#[test]
fn daemon_http_trigger_helper() {
    hold_connections_if_asked();
}

#[test]
fn the_http_trigger_never_overrides_do_not_retry_only_an_admin_does() {
    if !require_root("http trigger") {
        return;
    }
    let sock_group = TestGroup::new("tfs");
    let member = TestUser::new("tfm", &[&sock_group]);
    let port = free_port();
    let agent = Agent::start(AgentOptions {
        http_trigger: format!("127.0.0.1:{port}"),
        socket_group: sock_group.name.clone(),
        ..Default::default()
    });
    let builds = || {
        std::fs::read_to_string(agent.dir.path().join("nixos/calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("nix build") || l.starts_with("nix-build"))
            .count()
    };
    // Generation 2 fails to build: marked "do not retry".
    agent
        .publication
        .publish(2, &[("FAIL_BUILD".to_string(), Vec::new())]);
    let socket = agent.socket.to_str().unwrap().to_string();
    let member_update = || {
        let o = tiffin_as(
            member.uid,
            member.gid,
            member.login_groups(),
            &["update", "--socket", &socket],
        )
        .output()
        .unwrap();
        output_text(&o)
    };
    let (out, err) = member_update();
    let after_first = builds();
    assert!(after_first >= 1, "{out}{err}");
    assert!(
        agent.dir.path().join("state/state.json").exists()
            && std::fs::read_to_string(agent.dir.path().join("state/state.json"))
                .unwrap()
                .contains("do_not_retry"),
        "{out}{err}"
    );

    // The trigger's update runs a cycle that leaves generation 2 alone.
    let finished = cycles_finished(&agent.stderr());
    let (code, body) = http_get(port, "GET", "/", "localhost");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Update started."), "{body}");
    wait_for(30, "the trigger's cycle to finish", || {
        cycles_finished(&agent.stderr()) > finished
    });
    assert_eq!(builds(), after_first, "the trigger retried a failed build");
    assert!(agent.stderr().contains("not retried"), "{}", agent.stderr());

    // Nor does a member's update on the socket.
    let (out, err) = member_update();
    assert!(format!("{out}{err}").contains("not retried"), "{out}{err}");
    assert_eq!(builds(), after_first, "a member retried a failed build");

    // An admin's (root's) update does.
    let mut c = agent.client();
    let _ = c.update();
    assert_eq!(
        builds(),
        after_first + 1,
        "the admin's update did not retry"
    );
}

#[test]
fn one_uid_cannot_take_every_http_connection() {
    if !require_root("http trigger") {
        return;
    }
    let hog = TestUser::new("tfh", &[]);
    let port = free_port();
    let agent = Agent::start(AgentOptions {
        http_trigger: format!("127.0.0.1:{port}"),
        ..Default::default()
    });
    // A local user opens more connections than the trigger serves at once, and holds them.
    let held = HeldConnections::open(
        "daemon_http_trigger::daemon_http_trigger_helper",
        &hog,
        Target::Tcp(port),
        tiffin::agent::daemon::http::MAX_CONNECTIONS + 8,
    );
    assert_eq!(held.ok, tiffin::agent::daemon::http::MAX_CONNECTIONS + 8);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Everyone else is still served.
    for _ in 0..3 {
        let (code, body) = http_get(port, "GET", "/", "localhost");
        assert_eq!(code, 200, "another user's request went unserved: {body}");
    }
    drop(held);
    drop(agent);
}

#[test]
fn a_non_loopback_socket_passed_by_systemd_is_refused() {
    if !require_root("http trigger") {
        return;
    }
    // A socket unit edited to ListenStream=0.0.0.0:PORT: the agent does not serve it.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut agent = Agent::prepare(AgentOptions {
        http_trigger: format!("127.0.0.1:{port}"),
        ..Default::default()
    });
    agent.spawn_via(agent_command_with_socket(&agent, &listener));
    let log = agent.stderr();
    assert!(log.contains("not on a loopback address; refused"), "{log}");
    assert!(!log.contains("using the socket systemd passed"), "{log}");
    // Its own bind of 127.0.0.1:PORT collides with the wildcard socket: no trigger, said so.
    let why = agent.try_status().unwrap().http_trigger_error;
    assert!(why.is_some_and(|w| w.contains("cannot listen")));
}
