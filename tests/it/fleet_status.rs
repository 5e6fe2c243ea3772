//! `tiffin fleet status|diff|logs` against synthetic report sets: real files in a temp chroot,
//! written with the agent's `Report`/`Seen` types, read by the library and by the real binary.

use crate::fleet_status_support;

use fleet_status_support::{set_arrival, system, Fleet, ReportSpec, SeenSpec};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tiffin::fleet::status::{fleet_status, render_table, HostState, HostStatus, Style};
use tiffin::status::{unix_now, Outcome};

/// 2025-11-25T10:00:00Z: library tests run "now" at a fixed time.
const NOW: u64 = 1_764_064_800;
const MIN: u64 = 60;

fn row<'a>(rows: &'a [HostStatus], host: &str) -> &'a HostStatus {
    rows.iter()
        .find(|h| h.host == host)
        .unwrap_or_else(|| panic!("no row for {host}: {rows:#?}"))
}

fn tiffin(fleet: &Fleet, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .arg("fleet")
        .arg("--fleet")
        .arg(&fleet.dir)
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run tiffin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One host in each state, plus a chroot directory fleet.toml does not list.
fn fleet_with_every_state(now: u64) -> Fleet {
    let f = Fleet::new(&[
        "current",
        "pending",
        "updating",
        "failing",
        "rolledback",
        "restart",
        "gone",
        "newbie",
    ]);
    for h in [
        "current",
        "pending",
        "updating",
        "failing",
        "rolledback",
        "restart",
        "gone",
        "newbie",
    ] {
        f.publish(h, 5, now - 120 * MIN, Some(&system(5)));
    }
    // up to date: updated to the published g5, seen since.
    f.report(
        "current",
        ReportSpec::new(5, Outcome::Updated, now - 100 * MIN),
    );
    f.seen("current", SeenSpec::running(5, now - 2 * MIN));
    // update pending: runs g4, g5 published after its last check.
    f.report(
        "pending",
        ReportSpec::new(4, Outcome::Updated, now - 300 * MIN),
    );
    f.seen("pending", SeenSpec::running(4, now - 3 * MIN));
    // updating: the agent said it started applying g5.
    f.seen(
        "updating",
        SeenSpec {
            updating_to: Some(5),
            ..SeenSpec::running(4, now - MIN)
        },
    );
    // failing: g5's build failed.
    f.report(
        "failing",
        ReportSpec::new(5, Outcome::Failed, now - 10 * MIN),
    );
    f.seen("failing", SeenSpec::running(4, now - 10 * MIN));
    // rolled back: g5 cut it off and was rolled back.
    f.report(
        "rolledback",
        ReportSpec::new(5, Outcome::RolledBack, now - 20 * MIN),
    );
    f.seen("rolledback", SeenSpec::running(4, now - 20 * MIN));
    // restart needed: runs g5, the kernel changed.
    f.report(
        "restart",
        ReportSpec::new(5, Outcome::Updated, now - 30 * MIN),
    );
    f.seen(
        "restart",
        SeenSpec {
            reboot_needed: Some(true),
            ..SeenSpec::running(5, now - 5 * MIN)
        },
    );
    // not seen: interval 10 min, last contact 40 min ago (more than 3 intervals).
    f.seen("gone", SeenSpec::running(5, now - 40 * MIN));
    // never seen: "newbie" has a publication and nothing in logs/.
    // Not in fleet.toml any more, but its chroot is still there.
    f.publish("retired", 2, now - 9000 * MIN, None);
    f.seen("retired", SeenSpec::running(2, now - MIN));
    f
}

#[test]
fn every_state_is_recognised_and_rows_sort_by_urgency() {
    let f = fleet_with_every_state(NOW);
    let st = fleet_status(&f.config(), NOW);
    let expect = [
        ("failing", HostState::Failing),
        ("rolledback", HostState::RolledBack),
        ("gone", HostState::NotSeen),
        ("newbie", HostState::NeverSeen),
        ("restart", HostState::RestartNeeded),
        ("updating", HostState::Updating),
        ("pending", HostState::UpdatePending),
        ("current", HostState::UpToDate),
        ("retired", HostState::UpToDate),
    ];
    let got: Vec<(&str, HostState)> = st
        .hosts
        .iter()
        .map(|h| (h.host.as_str(), h.state))
        .collect();
    assert_eq!(got, expect);

    let current = row(&st.hosts, "current");
    assert_eq!(
        (current.published_generation, current.running_generation),
        (Some(5), Some(5))
    );
    assert_eq!(current.system_matches, Some(true));
    assert_eq!(current.last_seen_age_secs, Some(2 * MIN));
    assert_eq!(current.last_report_age_secs, Some(100 * MIN));
    assert_eq!(current.publish_age_secs, Some(120 * MIN));
    assert!(current.in_fleet_toml);

    let failing = row(&st.hosts, "failing");
    let last = failing.last_report.as_ref().expect("its report");
    assert_eq!((last.generation, last.outcome), (5, Outcome::Failed));
    assert_eq!(last.failed_step, Some(tiffin::status::Step::Build));
    assert_eq!(failing.system_matches, Some(false));

    assert_eq!(row(&st.hosts, "updating").updating_to, Some(5));
    assert_eq!(row(&st.hosts, "updating").pending_generation, None);
    assert_eq!(row(&st.hosts, "pending").pending_generation, Some(5));
    assert!(row(&st.hosts, "restart").reboot_needed);
    assert_eq!(row(&st.hosts, "gone").interval_secs, 600);
    assert_eq!(row(&st.hosts, "newbie").last_seen, None);
    assert!(!row(&st.hosts, "retired").in_fleet_toml);

    let table = render_table(&st, Style { colour: false });
    assert!(
        !table.contains('\x1b'),
        "plain text has no escapes:\n{table}"
    );
    for needle in [
        "1 failing",
        "2 up to date",
        "not in fleet.toml",
        "failed at build: error: builder",
        "rolled back at verify",
        "no contact for more than 3 × 10m",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
    let failing_line = table
        .lines()
        .position(|l| l.starts_with("failing "))
        .unwrap();
    let current_line = table
        .lines()
        .position(|l| l.starts_with("current "))
        .unwrap();
    assert!(failing_line < current_line, "{table}");

    let coloured = render_table(&st, Style { colour: true });
    println!("{coloured}");
    assert!(coloured.contains("\x1b[1;31m✗ failing"), "{coloured}");
    assert!(coloured.contains("\x1b[32m✓ current"), "{coloured}");
}

#[test]
fn a_report_for_an_older_generation_never_makes_a_host_up_to_date() {
    let f = Fleet::new(&["web", "db"]);
    // web: its newest report is a success — for g4, while g5 is published.
    f.publish("web", 5, NOW - 60 * MIN, None);
    f.report("web", ReportSpec::new(4, Outcome::Updated, NOW - 30 * MIN));
    f.report("web", ReportSpec::new(4, Outcome::UpToDate, NOW - 5 * MIN));
    f.seen("web", SeenSpec::running(4, NOW - 5 * MIN));
    // db: no seen.json at all, only an older generation's success.
    f.publish("db", 5, NOW - 60 * MIN, None);
    f.report("db", ReportSpec::new(4, Outcome::UpToDate, NOW - MIN));
    let st = fleet_status(&f.config(), NOW);
    for h in ["web", "db"] {
        let r = row(&st.hosts, h);
        assert_eq!(r.state, HostState::UpdatePending, "{h}: {r:#?}");
        assert_eq!(r.running_generation, Some(4), "{h}");
        assert_eq!(r.pending_generation, Some(5), "{h}");
    }
}

#[test]
fn a_host_updating_while_the_admin_republishes_shows_updating_with_the_newer_one_pending() {
    let f = Fleet::new(&["web"]);
    f.publish("web", 6, NOW - 2 * MIN, None);
    f.seen(
        "web",
        SeenSpec {
            updating_to: Some(5),
            ..SeenSpec::running(4, NOW - 4 * MIN)
        },
    );
    let st = fleet_status(&f.config(), NOW);
    let r = row(&st.hosts, "web");
    assert_eq!(r.state, HostState::Updating);
    assert_eq!(
        (r.running_generation, r.updating_to, r.pending_generation),
        (Some(4), Some(5), Some(6))
    );
    let table = render_table(&st, Style { colour: false });
    assert!(table.contains("updating to g5; g6 pending"), "{table}");

    // Its g5 cycle ends (report after the seen.json that announced it): no longer updating,
    // runs g5, and g6 is still pending.
    f.report("web", ReportSpec::new(5, Outcome::Updated, NOW - MIN));
    let r = fleet_status(&f.config(), NOW).hosts.remove(0);
    assert_eq!(r.state, HostState::UpdatePending, "{r:#?}");
    assert_eq!((r.running_generation, r.updating_to), (Some(5), None));
    assert_eq!(r.running_system.as_deref(), Some(system(5).as_str()));
}

#[test]
fn a_late_report_is_placed_by_its_own_time_and_generation_not_by_its_arrival() {
    let f = Fleet::new(&["web", "db"]);
    // web: g5 failed at 09:00, then succeeded at 09:30; the failure sat in the outbox and
    // arrived last (newest mtime). It must not make web look failing.
    f.publish("web", 5, NOW - 120 * MIN, Some(&system(5)));
    let ok = f.report("web", ReportSpec::new(5, Outcome::Updated, NOW - 30 * MIN));
    let late = f.report("web", ReportSpec::new(5, Outcome::Failed, NOW - 60 * MIN));
    set_arrival(&ok, NOW - 29 * MIN);
    set_arrival(&late, NOW - MIN);
    f.seen("web", SeenSpec::running(5, NOW - 29 * MIN));
    // db: a late failure of an *older* generation arrives after the newer one succeeded.
    f.publish("db", 5, NOW - 120 * MIN, None);
    let ok = f.report("db", ReportSpec::new(5, Outcome::Updated, NOW - 30 * MIN));
    let late = f.report("db", ReportSpec::new(4, Outcome::Failed, NOW - 90 * MIN));
    set_arrival(&ok, NOW - 29 * MIN);
    set_arrival(&late, NOW - MIN);
    f.seen("db", SeenSpec::running(5, NOW - 29 * MIN));

    let st = fleet_status(&f.config(), NOW);
    for h in ["web", "db"] {
        let r = row(&st.hosts, h);
        assert_eq!(r.state, HostState::UpToDate, "{h}: {r:#?}");
        let last = r.last_report.as_ref().unwrap();
        assert_eq!(
            (last.generation, last.outcome),
            (5, Outcome::Updated),
            "{h}"
        );
        assert_eq!(r.last_report_age_secs, Some(30 * MIN), "{h}");
    }

    // And the other way round: a success that arrives late but happened before the failure
    // does not hide the failure.
    let f = Fleet::new(&["app"]);
    f.publish("app", 5, NOW - 120 * MIN, None);
    let fail = f.report("app", ReportSpec::new(5, Outcome::Failed, NOW - 10 * MIN));
    let ok_old = f.report("app", ReportSpec::new(4, Outcome::Updated, NOW - 100 * MIN));
    set_arrival(&fail, NOW - 9 * MIN);
    set_arrival(&ok_old, NOW - MIN);
    f.seen("app", SeenSpec::running(4, NOW - 9 * MIN));
    let r = fleet_status(&f.config(), NOW).hosts.remove(0);
    assert_eq!(r.state, HostState::Failing, "{r:#?}");
}

#[test]
fn a_failure_is_superseded_by_a_newer_publication_and_cleared_by_a_later_success() {
    let f = Fleet::new(&["web"]);
    f.publish("web", 5, NOW - 120 * MIN, None);
    f.report("web", ReportSpec::new(5, Outcome::Failed, NOW - 60 * MIN));
    f.seen("web", SeenSpec::running(4, NOW - 5 * MIN));
    assert_eq!(
        fleet_status(&f.config(), NOW).hosts[0].state,
        HostState::Failing
    );
    // The admin publishes a fix: the old failure is history, g6 is pending.
    f.publish("web", 6, NOW - 30 * MIN, None);
    let r = fleet_status(&f.config(), NOW).hosts.remove(0);
    assert_eq!(r.state, HostState::UpdatePending);
    assert!(
        render_table(&fleet_status(&f.config(), NOW), Style { colour: false })
            .contains("g5 failed"),
        "the last report is still shown"
    );
    // g6 applied: up to date.
    f.report("web", ReportSpec::new(6, Outcome::Updated, NOW - 4 * MIN));
    f.seen("web", SeenSpec::running(6, NOW - 4 * MIN));
    assert_eq!(
        fleet_status(&f.config(), NOW).hosts[0].state,
        HostState::UpToDate
    );
}

#[test]
fn an_interrupted_cycle_counts_as_failing_and_a_long_silence_beats_everything_else() {
    let f = Fleet::new(&["web", "stuck"]);
    f.publish("web", 3, NOW - 60 * MIN, None);
    f.report(
        "web",
        ReportSpec::new(3, Outcome::Interrupted, NOW - 5 * MIN),
    );
    f.seen("web", SeenSpec::running(2, NOW - 5 * MIN));
    // "stuck" said it started updating two hours ago and went quiet: not seen, not updating.
    f.publish("stuck", 3, NOW - 200 * MIN, None);
    f.seen(
        "stuck",
        SeenSpec {
            updating_to: Some(3),
            ..SeenSpec::running(2, NOW - 120 * MIN)
        },
    );
    let st = fleet_status(&f.config(), NOW);
    assert_eq!(row(&st.hosts, "web").state, HostState::Failing);
    let stuck = row(&st.hosts, "stuck");
    assert_eq!(stuck.state, HostState::NotSeen);
    assert_eq!(stuck.last_seen_age_secs, Some(120 * MIN));
}

#[test]
fn an_agent_that_does_not_say_its_interval_is_judged_by_the_default_of_15_minutes() {
    let f = Fleet::new(&["old", "older"]);
    for (h, ago) in [("old", 40 * MIN), ("older", 50 * MIN)] {
        f.publish(h, 1, NOW - 100 * MIN, None);
        f.seen(
            h,
            SeenSpec {
                interval_secs: None,
                ..SeenSpec::running(1, NOW - ago)
            },
        );
    }
    let st = fleet_status(&f.config(), NOW);
    assert_eq!(row(&st.hosts, "old").state, HostState::UpToDate);
    assert_eq!(row(&st.hosts, "older").state, HostState::NotSeen);
    assert_eq!(row(&st.hosts, "older").interval_secs, 900);
}

#[test]
fn a_running_system_other_than_the_expected_one_is_flagged() {
    let f = Fleet::new(&["web"]);
    f.publish(
        "web",
        5,
        NOW - 60 * MIN,
        Some("/nix/store/expected-nixos-system"),
    );
    f.seen("web", SeenSpec::running(5, NOW - MIN));
    let st = fleet_status(&f.config(), NOW);
    assert_eq!(st.hosts[0].system_matches, Some(false));
    let table = render_table(&st, Style { colour: false });
    assert!(
        table.contains("differs") && table.contains("running system is not the expected one"),
        "{table}"
    );
}

#[test]
fn host_written_files_are_not_followed_through_symlinks_nor_trusted_when_broken() {
    let f = Fleet::new(&["evil", "broken"]);
    f.publish("evil", 1, NOW - 60 * MIN, None);
    let secret = f.tmp.path().join("admin-secret.json");
    std::fs::write(&secret, r#"{"host":"x","last_seen":"2025-11-25T09:59:00Z","applied_generation":1,"running_system":null,"booted_system":null,"agent_version":"1"}"#).unwrap();
    std::os::unix::fs::symlink(&secret, f.logs("evil").join("seen.json")).unwrap();
    f.publish("broken", 1, NOW - 60 * MIN, None);
    std::fs::write(f.logs("broken").join("seen.json"), "{ not json").unwrap();
    let st = fleet_status(&f.config(), NOW);
    for h in ["evil", "broken"] {
        let r = row(&st.hosts, h);
        assert_eq!(r.state, HostState::NeverSeen, "{h}: {r:#?}");
        assert!(
            r.problems.iter().any(|p| p.contains("seen.json")),
            "{h}: {:?}",
            r.problems
        );
    }
}

#[test]
fn status_json_has_the_documented_fields_and_the_table_is_plain_when_piped() {
    let now = unix_now();
    let f = fleet_with_every_state(now);
    let (code, out, err) = tiffin(&f, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["stale_after_intervals"], 3);
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 9);
    assert_eq!(hosts[0]["host"], "failing");
    assert_eq!(hosts[0]["state"], "failing");
    assert_eq!(hosts[0]["last_report"]["outcome"], "failed");
    let states: Vec<&str> = hosts.iter().map(|h| h["state"].as_str().unwrap()).collect();
    for s in [
        "failing",
        "rolled_back",
        "not_seen",
        "never_seen",
        "restart_needed",
        "updating",
        "update_pending",
        "up_to_date",
    ] {
        assert!(states.contains(&s), "{s} in {states:?}");
    }
    for field in [
        "host",
        "in_fleet_toml",
        "state",
        "published_generation",
        "published_at",
        "publish_age_secs",
        "running_generation",
        "updating_to",
        "pending_generation",
        "expected_system",
        "running_system",
        "system_matches",
        "reboot_needed",
        "last_seen",
        "last_seen_age_secs",
        "interval_secs",
        "report_count",
        "last_report",
        "last_report_age_secs",
        "problems",
    ] {
        assert!(
            hosts[0].get(field).is_some(),
            "field {field} missing: {}",
            hosts[0]
        );
    }

    let (code, table, err) = tiffin(&f, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(!table.contains('\x1b'), "piped output is plain:\n{table}");
    assert!(
        table.lines().nth(2).unwrap().starts_with("failing"),
        "{table}"
    );
}

/// Reads the child's stdout lines on a thread, so that the test can wait with a deadline.
fn line_reader(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits until a line satisfies `want`; panics with what was seen when the deadline passes.
fn wait_for(rx: &mpsc::Receiver<String>, deadline: Instant, want: impl Fn(&str) -> bool) -> String {
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no matching output before the deadline; got:\n{}",
                seen.join("\n")
            ),
        }
    }
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state_of(line: &str, host: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["host"] == host)
        .and_then(|h| h["state"].as_str().map(str::to_string))
}

#[test]
fn watch_redraws_within_a_second_of_a_new_report_and_of_a_new_publication() {
    let now = unix_now();
    let f = Fleet::new(&["web", "db"]);
    f.publish("web", 5, now - 60, Some(&system(5)));
    f.seen("web", SeenSpec::running(4, now - 30));
    f.publish("db", 2, now - 60, None);
    f.seen("db", SeenSpec::running(2, now - 30));
    let child = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .arg("fleet")
        .arg("--fleet")
        .arg(&f.dir)
        .args(["status", "--watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tiffin fleet status --watch");
    let mut child = KillOnDrop(child);
    let rx = line_reader(child.0.stdout.take().unwrap());
    let first = wait_for(&rx, Instant::now() + Duration::from_secs(30), |_| true);
    assert_eq!(state_of(&first, "web").as_deref(), Some("update_pending"));

    // web's agent uploads a report and seen.json for g5.
    f.report("web", ReportSpec::new(5, Outcome::Updated, unix_now()));
    f.seen("web", SeenSpec::running(5, unix_now()));
    let written = Instant::now();
    wait_for(&rx, written + Duration::from_secs(1), |l| {
        state_of(l, "web").as_deref() == Some("up_to_date")
    });

    // The admin publishes g3 for db: `current` is replaced.
    f.publish("db", 3, unix_now(), None);
    let published = Instant::now();
    wait_for(&rx, published + Duration::from_secs(1), |l| {
        state_of(l, "db").as_deref() == Some("update_pending")
    });

    // A host whose logs/ did not exist when the watch started is picked up too.
    // (No pause: the watch adds its watches before it reads, so nothing falls in between.)
    std::fs::create_dir_all(f.host_dir("db").join("logs")).unwrap();
    f.report("db", ReportSpec::new(3, Outcome::Failed, unix_now()));
    let failed = Instant::now();
    wait_for(&rx, failed + Duration::from_secs(1), |l| {
        state_of(l, "db").as_deref() == Some("failing")
    });
}

#[test]
fn watch_draws_the_table_again_when_a_report_arrives() {
    let now = unix_now();
    let f = Fleet::new(&["web"]);
    f.publish("web", 5, now - 60, None);
    f.seen("web", SeenSpec::running(4, now - 30));
    let child = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .arg("fleet")
        .arg("--fleet")
        .arg(&f.dir)
        .args(["status", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tiffin fleet status --watch");
    let mut child = KillOnDrop(child);
    let rx = line_reader(child.0.stdout.take().unwrap());
    wait_for(&rx, Instant::now() + Duration::from_secs(30), |l| {
        l.starts_with("web ") && l.contains("update pending")
    });
    f.report("web", ReportSpec::new(5, Outcome::RolledBack, unix_now()));
    let written = Instant::now();
    let line = wait_for(&rx, written + Duration::from_secs(1), |l| {
        l.starts_with("web ") && l.contains("rolled back")
    });
    assert!(line.contains("health check"), "{line}");
}

#[test]
fn logs_lists_the_latest_reports_by_their_own_time_and_prints_the_newest_log() {
    let now = unix_now();
    let f = Fleet::new(&["web"]);
    f.publish("web", 4, now - 600, None);
    for (g, outcome, ago) in [
        (1, Outcome::Updated, 5000),
        (2, Outcome::Updated, 4000),
        (3, Outcome::RolledBack, 3000),
        (4, Outcome::Updated, 100),
    ] {
        let mut spec = ReportSpec::new(g, outcome, now - ago);
        spec.log_text = format!("line one of g{g}\nbuilding g{g}\n");
        let p = f.report("web", spec);
        // Arrival order scrambled: g4's report came first.
        set_arrival(&p, now - ago / 2 - g * 1000);
    }
    let (code, out, err) = tiffin(&f, &["logs", "web", "--last", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("the last 2 of 4 reports"), "{out}");
    assert!(lines[1].starts_with("FINISHED"), "{out}");
    assert!(
        lines[2].contains("g3") && lines[2].contains("rolled_back") && lines[2].contains("verify"),
        "{out}"
    );
    assert!(
        lines[3].contains("g4") && lines[3].contains("updated"),
        "{out}"
    );
    assert!(!out.contains(" g2 "), "{out}");
    assert!(
        out.contains("building g4") && !out.contains("building g3"),
        "{out}"
    );

    let (code, _, err) = tiffin(&f, &["logs", "nosuchhost"]);
    assert_eq!(code, 1);
    assert!(err.contains("no host \"nosuchhost\""), "{err}");
}

#[test]
fn a_report_with_terminal_escapes_is_printed_inert_by_fleet_logs() {
    let now = unix_now();
    let f = Fleet::new(&["web"]);
    f.publish("web", 1, now - 600, None);
    // The host retitles the admin's terminal and clears it, in its message, step and log.
    const ATTACK: &str = "\u{1b}]0;owned\u{7}\u{1b}[2J";
    let mut spec = ReportSpec::new(1, Outcome::Failed, now - 100);
    spec.message = Some("boom \u{1b}]0;owned\u{7}\u{1b}[2J gone\u{9b}31m");
    spec.failed_step = Some("build\u{1b}[2J");
    spec.log_text = format!("line one\n{ATTACK}second\r line\ttabbed\n");
    f.report("web", spec);
    let (code, out, err) = tiffin(&f, &["logs", "web"]);
    assert_eq!(code, 0, "{err}");
    let raw: Vec<char> = out
        .chars()
        .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
        .collect();
    assert!(
        raw.is_empty(),
        "control characters reached the terminal: {raw:?}\n{out:?}"
    );
    // Inert, but still readable: the text is there, its escapes shown as U+FFFD.
    assert!(
        out.contains("boom \u{FFFD}]0;owned\u{FFFD}\u{FFFD}[2J gone"),
        "{out:?}"
    );
    assert!(
        out.contains("\u{FFFD}]0;owned\u{FFFD}\u{FFFD}[2Jsecond\u{FFFD} line\ttabbed\n"),
        "{out:?}"
    );
    assert!(out.contains("line one\n"), "{out:?}");
}

/// A stand-in program that prints how it was called.
fn fake_tool(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\necho \"{name} $*\"\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn diff_runs_nvd_when_present_else_nix_store_diff_closures_on_running_and_expected() {
    let now = unix_now();
    let f = Fleet::new(&["web"]);
    f.publish("web", 5, now - 600, Some(&system(5)));
    f.seen("web", SeenSpec::running(4, now - 60));
    let with_nvd = f.tmp.path().join("with-nvd");
    let without = f.tmp.path().join("without-nvd");
    std::fs::create_dir_all(&with_nvd).unwrap();
    std::fs::create_dir_all(&without).unwrap();
    fake_tool(&with_nvd, "nvd");
    let nix = fake_tool(&without, "fake-nix");
    // The nix command comes from fleet.toml's [build] table, like the builds'.
    let toml = f.dir.join("fleet.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "\n[build]\nnix = {:?}\n",
        nix.display().to_string()
    ));
    std::fs::write(&toml, text).unwrap();

    let run = |path: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["fleet", "--fleet"])
            .arg(&f.dir)
            .args(["diff", "web"])
            .env("PATH", path)
            .output()
            .unwrap()
    };
    let out = run(&with_nvd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("nvd diff {} {}", system(4), system(5))),
        "{text}"
    );
    let out = run(&without);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "fake-nix --extra-experimental-features nix-command store diff-closures {} {}",
            system(4),
            system(5)
        )),
        "{text}"
    );
}

#[test]
fn diff_says_which_system_is_unknown() {
    let now = unix_now();
    let f = Fleet::new(&["unbuilt", "silent", "same"]);
    f.publish("unbuilt", 5, now - 600, None);
    f.seen("unbuilt", SeenSpec::running(4, now - 60));
    f.publish("silent", 5, now - 600, Some(&system(5)));
    f.publish("same", 5, now - 600, Some(&system(5)));
    f.seen("same", SeenSpec::running(5, now - 60));

    let (code, _, err) = tiffin(&f, &["diff", "unbuilt"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("g5 was published without an expected system") && err.contains("--build"),
        "{err}"
    );
    let (code, _, err) = tiffin(&f, &["diff", "silent"]);
    assert_eq!(code, 1);
    assert!(err.contains("its running system is unknown"), "{err}");
    let (code, out, err) = tiffin(&f, &["diff", "same"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("runs the expected system"), "{out}");
}
