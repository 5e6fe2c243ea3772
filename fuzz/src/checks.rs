//! The properties the fuzz targets check, in one place: `fuzz/fuzz_targets/*.rs` run them on what
//! libFuzzer generates, and `tests/fuzz_corpus.rs` (part of `make test`) runs them on every file
//! of `fuzz/corpus/<target>/`. Each check panics when an input breaks a property. Input that is
//! refused is fine, as long as the refusal names where the input came from.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tiffin::agent::daemon::http::{escape, is_loopback_host};
use tiffin::config::fleet::{check_nix_attr, check_ssh_public_key, check_unix_name};
use tiffin::config::{AgentConfig, FleetConfig};
use tiffin::fleet::status::{
    assess, render_table, FleetStatus, HostRecords, HostState, Style, STALE_INTERVALS,
};
use tiffin::ipc::codec::{decode_request, encode};
use tiffin::ipc::protocol::MAX_LINE;
use tiffin::ipc::{Response, PROTOCOL_VERSION};
use tiffin::manifest::{apply_diff, tree_hash, Manifest, ManifestDiff};
use tiffin::publication::report::{
    parse_report, parse_seen, parse_time, report_base, rfc3339, Report, ReportName,
};
use tiffin::source::SourceUrl;

/// A property check: panics when the input breaks a property.
pub type Check = fn(&[u8]);

/// Every target: its name (the directory under `fuzz/corpus/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("manifest", manifest),
    ("fleet_toml", fleet_toml),
    ("agent_toml", agent_toml),
    ("socket_request", socket_request),
    ("report", report),
    ("http_host", http_host),
];

/// What the parsers are told the input is called; every error must name it.
const ORIGIN: &str = "fuzz-input";

/// `Manifest::parse` (what the agent and `fleet status` read): a manifest it accepts is valid
/// and survives its canonical serialisation unchanged.
pub fn manifest(data: &[u8]) {
    match Manifest::parse(data, ORIGIN) {
        Ok(m) => valid_manifest_holds_together(&m),
        Err(e) => assert_names_origin(&e.to_string()),
    }
    // Generated manifests nearly always fail on `tree_hash` alone: recompute it to reach the
    // other rules, and check that `validate` and `parse` agree on the result.
    if let Ok(mut m) = serde_json::from_slice::<Manifest>(data) {
        m.tree_hash = tree_hash(&m.entries);
        let validated = m.validate(ORIGIN);
        let reparsed = Manifest::parse(&m.to_bytes(), ORIGIN);
        assert_eq!(
            validated.is_ok(),
            reparsed.is_ok(),
            "validate and parse disagree: {validated:?} / {reparsed:?}"
        );
        if validated.is_ok() {
            valid_manifest_holds_together(&m);
        }
    }
}

fn valid_manifest_holds_together(m: &Manifest) {
    let bytes = m.to_bytes();
    let again = Manifest::parse(&bytes, ORIGIN)
        .unwrap_or_else(|e| panic!("the canonical bytes of a valid manifest are refused: {e}"));
    assert_eq!(&again, m, "a manifest changed through to_bytes and parse");
    assert_eq!(again.to_bytes(), bytes, "to_bytes is not canonical");
    assert_eq!(tree_hash(&m.entries), m.tree_hash);
    for e in &m.entries {
        assert_eq!(
            m.entry(&e.path),
            Some(e),
            "entry() does not find {:?}",
            e.path
        );
    }
    // The agent applies diffs to the entries it has: from any prefix, it must reach the whole.
    let half = &m.entries[..m.entries.len() / 2];
    let diff = ManifestDiff::between(half, &m.entries);
    assert_eq!(
        apply_diff(half, &diff),
        m.entries,
        "apply_diff(between) is not the target"
    );
    assert!(ManifestDiff::of(m, m).is_empty());
}

/// `FleetConfig::parse`: an accepted fleet.toml gives every host a usable user, key, attribute
/// and directory, and no two hosts share a user (they would share a chroot).
pub fn fleet_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let c = match FleetConfig::parse(&text, ORIGIN) {
        Ok(c) => c,
        Err(e) => return assert_names_origin(&e.to_string()),
    };
    assert!(c.chroot.is_absolute(), "chroot {:?} accepted", c.chroot);
    assert!(c.keep_generations >= 1);
    let mut users = BTreeSet::new();
    for (name, h) in &c.hosts {
        assert!(check_unix_name(name).is_ok(), "host name {name:?} accepted");
        let user = h.user_or_default(name);
        assert!(check_unix_name(user).is_ok(), "user {user:?} accepted");
        assert!(users.insert(user), "user {user:?} accepted twice");
        assert!(check_nix_attr(h.attr_or_default(name)).is_ok());
        assert!(
            check_ssh_public_key(&h.key).is_ok(),
            "key {:?} accepted",
            h.key
        );
        assert_plain_relative(&h.dir_or_default(name));
    }
}

/// A host's source directory must name something inside the repository, not the repository.
fn assert_plain_relative(dir: &Path) {
    assert!(
        dir.components().next().is_some()
            && dir.components().all(|c| matches!(c, Component::Normal(_))),
        "host dir {dir:?} accepted"
    );
}

/// `AgentConfig::parse`: an accepted agent.toml has what the agent needs to start, and its
/// durations can be added to the clock without overflowing.
pub fn agent_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let c = match AgentConfig::parse(&text, ORIGIN) {
        Ok(c) => c,
        Err(e) => return assert_names_origin(&e.to_string()),
    };
    assert!(!c.host.is_empty(), "empty host accepted");
    // The source was parsed as the file loaded, and reads back as itself.
    let again = SourceUrl::parse(&c.source.to_string());
    assert_eq!(
        again.ok().as_ref(),
        Some(&c.source),
        "source does not read back"
    );
    assert!(!c.interval.is_zero() && !c.verify_timeout.is_zero());
    // The trigger serves only this machine: a loopback address or nothing.
    assert!(
        c.http_trigger.is_empty()
            || c.http_trigger
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback()),
        "http_trigger {:?} accepted",
        c.http_trigger
    );
    // The scheduler adds interval + jitter to the wall clock, verification adds verify_timeout,
    // the notify policy adds deadline to the Unix time and prints it.
    let now = SystemTime::now();
    let wait = c.interval.checked_add(c.jitter);
    assert!(
        wait.and_then(|w| now.checked_add(w)).is_some(),
        "interval {:?} + jitter {:?} overflow the clock",
        c.interval,
        c.jitter
    );
    assert!(
        now.checked_add(c.verify_timeout).is_some(),
        "verify_timeout {:?} overflows the clock",
        c.verify_timeout
    );
    // humantime prints no time past the year 9999 (`rfc3339` would panic).
    let due = unix_secs(now).checked_add(c.deadline.as_secs());
    assert!(
        due.is_some_and(|d| d < LAST_PRINTABLE_TIME),
        "deadline {:?} is past what a report can print",
        c.deadline
    );
    assert_eq!(
        rfc3339(due.unwrap_or(0)).len(),
        "2026-01-01T00:00:00Z".len()
    );
}

/// The first second of the year 10000.
const LAST_PRINTABLE_TIME: u64 = 253_402_300_800;

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `decode_request` (every line a socket client sends): an accepted request survives
/// re-encoding; a refused one gets an error answer that is one line, with the request's id
/// when it could be read.
pub fn socket_request(data: &[u8]) {
    match decode_request(data) {
        Ok(req) => {
            assert_eq!(req.v, PROTOCOL_VERSION);
            let line = one_line(encode(&req));
            let again = decode_request(&line).expect("an encoded request decodes");
            assert_eq!(again, req);
        }
        Err(answer) => {
            assert!(!answer.ok && answer.data.is_none(), "{answer:?}");
            let error = answer
                .error
                .as_ref()
                .expect("an error answer carries an error");
            assert!(!error.message.is_empty());
            let line = one_line(encode(&answer));
            let back: Response = serde_json::from_slice(&line).expect("the answer decodes");
            assert_eq!(back, answer);
            let id = (data.len() <= MAX_LINE)
                .then(|| serde_json::from_slice::<serde_json::Value>(data).ok())
                .flatten()
                .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
                .unwrap_or(0);
            assert_eq!(answer.id, id, "the answer does not carry the request's id");
        }
    }
}

/// Checks that an encoded envelope is exactly one line; returns it without its newline.
fn one_line(mut encoded: Vec<u8>) -> Vec<u8> {
    assert_eq!(encoded.pop(), Some(b'\n'), "no newline at the end");
    assert!(
        !encoded.contains(&b'\n'),
        "an envelope spans more than one line"
    );
    encoded
}

/// What `fleet status` reads from a host's `logs/`: `seen.json` and the reports (both written by
/// the host, so hostile), their file names, and the table drawn from them.
pub fn report(data: &[u8]) {
    let mut records = HostRecords {
        host: "fuzzhost".into(),
        // Reports are listed by name only below; nothing is read from here.
        dir: PathBuf::from("/nonexistent/tiffin-fuzz"),
        ..Default::default()
    };
    match parse_seen(data) {
        Ok(seen) => {
            // The agent writes it pretty; fleet must read back what it wrote.
            let bytes = serde_json::to_vec_pretty(&seen).expect("a Seen serialises");
            assert_eq!(parse_seen(&bytes).expect("a written Seen reads"), seen);
            records.seen = Some(seen);
        }
        Err(e) => records.problems.push(format!("logs/seen.json: {e}")),
    }
    let report = match parse_report(data) {
        Ok(r) => {
            let bytes = serde_json::to_vec_pretty(&r).expect("a Report serialises");
            let again = parse_report(&bytes).expect("a written Report reads");
            assert_same_report(&again, &r);
            Some(r)
        }
        Err(e) => {
            records.problems.push(format!("logs/x.json: {e}"));
            None
        }
    };
    if let Ok(name) = std::str::from_utf8(data) {
        report_name_round_trips(name);
    }
    let seen_at = records.seen.as_ref().and_then(|s| parse_time(&s.last_seen));
    for published in [
        None,
        records.seen.as_ref().and_then(|s| s.applied_generation),
    ] {
        records.published = published;
        for now in [0, seen_at.unwrap_or(0), seen_at.unwrap_or(0) + 60, u64::MAX] {
            let h = assess(&records, true, now);
            if records.seen.is_some() {
                assert_ne!(h.state, HostState::NeverSeen);
            }
            if h.updating_to.is_some() {
                assert!(matches!(h.state, HostState::Updating | HostState::NotSeen));
            }
            assert!(h.interval_secs > 0);
            assert_table_is_plain(&h);
        }
    }
    // The note shows a report's step and message when the host is failing or rolled back.
    if let Some(r) = report {
        let mut h = assess(&records, true, 0);
        h.last_report_age_secs = Some(60);
        h.last_report = Some(r);
        for state in [HostState::Failing, HostState::RolledBack] {
            h.state = state;
            assert_table_is_plain(&h);
        }
    }
}

/// Durations are floats: serde_json may read one back a unit in the last place off.
fn assert_same_report(a: &Report, b: &Report) {
    let close = |x: f64, y: f64| (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs());
    assert!(
        a.durations.len() == b.durations.len()
            && a.durations
                .iter()
                .zip(&b.durations)
                .all(|((ka, va), (kb, vb))| ka == kb && close(*va, *vb)),
        "durations changed: {:?} / {:?}",
        a.durations,
        b.durations
    );
    let mut a = a.clone();
    a.durations.clone_from(&b.durations);
    assert_eq!(&a, b, "a report changed through writing and reading");
}

/// A report's name that `fleet status` places, placed again from its canonical form.
fn report_name_round_trips(name: &str) {
    let Some(n) = ReportName::parse(name) else {
        return;
    };
    assert_eq!(n.file, name);
    let canonical = format!("{}.json", report_base(n.time, n.generation, n.outcome));
    let again = ReportName::parse(&canonical)
        .unwrap_or_else(|| panic!("{canonical:?} (from {name:?}) is not a report name"));
    assert_eq!(
        (again.time, again.generation, again.outcome),
        (n.time, n.generation, n.outcome)
    );
}

/// Whatever a host wrote, the admin's table stays one line per host and carries no control
/// characters (a host must not be able to send escape sequences to the admin's terminal).
fn assert_table_is_plain(h: &tiffin::fleet::status::HostStatus) {
    let status = FleetStatus {
        generated_at: "2026-01-01T00:00:00Z".into(),
        chroot: PathBuf::from("/srv/tiffin"),
        stale_after_intervals: STALE_INTERVALS,
        hosts: vec![h.clone()],
    };
    let table = render_table(&status, Style { colour: false });
    assert_eq!(
        table.lines().count(),
        3,
        "the table is not 3 lines:\n{table}"
    );
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "control character in the table: {table:?}"
    );
    serde_json::to_string(&status).expect("fleet status --json serialises");
}

/// The HTTP trigger's `Host` check (only loopback names are served, against DNS rebinding),
/// against a model written from its documentation; and the page's HTML escaping.
pub fn http_host(data: &[u8]) {
    let host = String::from_utf8_lossy(data);
    assert_eq!(
        is_loopback_host(&host),
        loopback_model(&host),
        "is_loopback_host({host:?})"
    );
    let escaped = escape(&host);
    assert!(!escaped.contains(['<', '>', '"', '\'']), "{escaped:?}");
    let unescaped = escaped
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    assert_eq!(unescaped, host);
}

/// `localhost` (any case), `127.0.0.1` or `[::1]`, then nothing or `:` and 1 to 5 digits.
fn loopback_model(host: &str) -> bool {
    ["localhost", "127.0.0.1", "[::1]"].iter().any(|name| {
        let Some(rest) = host
            .get(..name.len())
            .filter(|h| h.eq_ignore_ascii_case(name))
            .map(|_| &host[name.len()..])
        else {
            return false;
        };
        rest.is_empty()
            || rest.strip_prefix(':').is_some_and(|port| {
                (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
            })
    })
}

fn assert_names_origin(error: &str) {
    assert!(
        error.starts_with(ORIGIN),
        "an error does not say where: {error}"
    );
}
