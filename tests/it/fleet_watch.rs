//! Stale and drifted hosts in `fleet status`, and `tiffin fleet watch`: its alert command on
//! transitions and its Prometheus metrics, parsed by the reference parser. Synthetic chroots
//! (real files written with the agent's `Seen`/`Report` types); the real binary for the watcher.

use crate::fleet_status_support;
use crate::support::{self, prometheus};

use fleet_status_support::{system, Fleet, ReportSpec, SeenSpec};
use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiffin::fleet::status::{fleet_status, render_table, HostState, HostStatus, Style};
use tiffin::publication::report::{rfc3339, Seen};
use tiffin::status::{unix_now, Outcome};

fn row<'a>(rows: &'a [HostStatus], host: &str) -> &'a HostStatus {
    rows.iter()
        .find(|h| h.host == host)
        .unwrap_or_else(|| panic!("no row for {host}: {rows:#?}"))
}

/// seen.json as a current agent writes it: running `running`, tiffin having left `left`.
fn seen(host: &str, at: u64, running: &str, left: &str, rolled_back_to: Option<&str>) -> Seen {
    Seen {
        host: host.into(),
        last_seen: rfc3339(at),
        applied_generation: Some(1),
        running_system: Some(running.into()),
        booted_system: Some(running.into()),
        agent_version: tiffin::VERSION.into(),
        interval_secs: Some(60),
        updating_to: None,
        reboot_needed: Some(false),
        tiffin_system: Some(left.into()),
        rolled_back_to: rolled_back_to.map(str::to_string),
    }
}

/// stale (4 intervals without contact), fresh (2), drifted (switched by hand), back (runs what
/// tiffin's rollback went to), fine.
fn fleet(now: u64) -> Fleet {
    let f = Fleet::new(&["stale", "fresh", "drifted", "back", "fine"]);
    for h in ["stale", "fresh", "drifted", "back", "fine"] {
        f.publish(h, 1, now - 3600, None);
    }
    let mut s = SeenSpec::running(1, now - 4 * 60 - 5);
    s.interval_secs = Some(60);
    f.seen("stale", s.clone());
    s.at = now - 2 * 60;
    f.seen("fresh", s);
    f.seen_raw(&seen(
        "drifted",
        now - 10,
        "/nix/store/hand-made-system",
        &system(1),
        None,
    ));
    f.seen_raw(&seen(
        "back",
        now - 10,
        &system(0),
        &system(1),
        Some(&system(0)),
    ));
    f.seen_raw(&seen("fine", now - 10, &system(1), &system(1), None));
    f
}

#[test]
fn a_host_silent_for_three_intervals_is_stale_and_one_switched_by_hand_is_drifted() {
    let now = unix_now();
    let f = fleet(now);
    let status = fleet_status(&f.config(), now);
    let rows = &status.hosts;
    assert_eq!(row(rows, "stale").state, HostState::NotSeen);
    assert_eq!(row(rows, "fresh").state, HostState::UpToDate);
    assert_eq!(row(rows, "drifted").state, HostState::Drifted);
    assert_eq!(
        row(rows, "back").state,
        HostState::UpToDate,
        "a rollback tiffin made is no drift"
    );
    assert_eq!(row(rows, "fine").state, HostState::UpToDate);
    let table = render_table(&status, Style { colour: false });
    let line = |h: &str| {
        table
            .lines()
            .find(|l| l.starts_with(h))
            .unwrap_or_else(|| panic!("{h}: {table}"))
            .to_string()
    };
    assert!(
        line("stale").contains("stale: no contact for more than 3 × 1m"),
        "{table}"
    );
    assert!(
        line("drifted ").contains("drifted") && line("drifted ").contains("hand-made-system"),
        "{table}"
    );
    // A success report newer than seen.json: tiffin put that system there, no drift.
    f.report("drifted", ReportSpec::new(1, Outcome::Updated, now - 5));
    let status = fleet_status(&f.config(), now);
    assert_eq!(row(&status.hosts, "drifted").state, HostState::UpToDate);
}

struct Watcher(Child);
impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fleet_watch_alerts_each_transition_once_and_serves_metrics_a_prometheus_parser_reads() {
    if !support::prerequisite("fleet_watch", prometheus::missing()) {
        return;
    }
    let now = unix_now();
    let f = fleet(now);
    f.report("fine", ReportSpec::new(1, Outcome::Updated, now - 20));
    let alerts = f.tmp.path().join("alerts.jsonl");
    let port = prometheus::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _w = Watcher(
        Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["fleet", "--fleet"])
            .arg(&f.dir)
            .args(["watch", "--metrics", &addr, "--alert-command"])
            .arg(format!("cat >> '{}'", alerts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let events = |n: usize| {
        wait_until("alerts", 10, || {
            let t = fs::read_to_string(&alerts).unwrap_or_default();
            let v: Vec<serde_json::Value> = t
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (v.len() >= n).then_some(v)
        })
    };
    let first = events(2);
    let pairs: Vec<(String, String)> = first
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().into(),
                e["host"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        pairs.contains(&("stale".into(), "stale".into())),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&("drifted".into(), "drifted".into())),
        "{pairs:?}"
    );
    let drifted = first.iter().find(|e| e["event"] == "drifted").unwrap();
    assert!(
        drifted["message"]
            .as_str()
            .unwrap()
            .contains("runs /nix/store/hand-made-system"),
        "{drifted}"
    );

    // A transition: "fine" rolls back g2; one event, with the step and the message.
    f.publish("fine", 2, now, None);
    f.report("fine", ReportSpec::new(2, Outcome::RolledBack, unix_now()));
    let v = events(3);
    let e = &v[2];
    assert_eq!(
        (e["event"].as_str(), e["host"].as_str()),
        (Some("rolled_back"), Some("fine")),
        "{v:?}"
    );
    assert_eq!(e["step"], "verify");
    assert_eq!(e["generation"], 2);
    assert!(
        e["message"].as_str().unwrap().contains("health check"),
        "{e}"
    );

    let page = wait_until("the metrics listener", 10, || {
        prometheus::get(&addr, "/metrics")
            .ok()
            .filter(|(s, b)| s.contains("200") && b.contains("rolled_back"))
    });
    let m = prometheus::parse(&page.1);
    let v = |name: &str, labels: &[(&str, &str)]| {
        prometheus::value(&m, name, labels)
            .unwrap_or_else(|| panic!("{name} {labels:?}\n{}", page.1))
    };
    assert_eq!(
        v(
            "tiffin_fleet_host_state",
            &[("host", "drifted"), ("state", "drifted")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "tiffin_fleet_host_state",
            &[("host", "drifted"), ("state", "up_to_date")]
        ),
        0.0
    );
    assert_eq!(
        v(
            "tiffin_fleet_host_state",
            &[("host", "fine"), ("state", "rolled_back")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "tiffin_fleet_host_published_generation",
            &[("host", "fine")]
        ),
        2.0
    );
    assert_eq!(
        v("tiffin_fleet_host_running_generation", &[("host", "fine")]),
        1.0
    );
    assert!(
        v(
            "tiffin_fleet_host_last_seen_timestamp_seconds",
            &[("host", "fresh")]
        ) > 0.0
    );
    assert!(
        v(
            "tiffin_fleet_host_last_update_timestamp_seconds",
            &[("host", "fine")]
        ) > 0.0
    );
    assert_eq!(
        v(
            "tiffin_fleet_host_last_update_outcome",
            &[("host", "fine"), ("outcome", "rolled_back")]
        ),
        1.0
    );
    assert_eq!(v("tiffin_fleet_quarantined_releases", &[]), 0.0);
    assert!(m.contains_key("tiffin_fleet_watch_last_look_timestamp_seconds"));
    // Nothing else changed: no event twice.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(events(3).len(), 3);
    // Idle means idle: nothing the watcher does itself (its rollout lock, its own state) wakes it
    // into another look. Over 3 s the look's time changes at most once (a minute turning).
    let mut looks = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (_, body) = prometheus::get(&addr, "/metrics").unwrap();
        looks.insert(
            prometheus::value(
                &prometheus::parse(&body),
                "tiffin_fleet_watch_last_look_timestamp_seconds",
                &[],
            )
            .unwrap() as u64,
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        looks.len() <= 2,
        "the watcher keeps waking itself: {looks:?}"
    );
    let (status, _) = prometheus::get(&addr, "/other").unwrap();
    assert!(status.contains("404"), "{status}");
}
