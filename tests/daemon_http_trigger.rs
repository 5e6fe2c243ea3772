//! The HTTP trigger of the real agent: rapid requests start one cycle; only loopback Host
//! headers are served.

mod daemon_support;
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
