//! The serving benchmark's harness (benches/serve_checks.rs, row 8 of `make bench`) measures
//! something: a few checks each way against its real sshd and nginx give every row server CPU
//! time above zero, bytes per check in the range of what each protocol sends, and the answers
//! an agent's no-change check expects. The numbers themselves are the bench's, not a test's.

#[path = "../../benches/common/mod.rs"]
mod common;
#[path = "../../benches/serve_checks/measure.rs"]
#[allow(dead_code)]
mod serve_checks;

use crate::support;

/// The bytes a check can put on the wire, both ways together: an SSH login with its key
/// exchange is kilobytes, a TLS handshake with a certificate over a kilobyte, a request and a
/// 304 a few hundred bytes.
fn plausible_bytes(row: &serve_checks::Row) -> (f64, f64) {
    match (row.server, row.how.starts_with("HTTPS, fresh")) {
        ("sshd", _) => (1500.0, 20_000.0),
        (_, true) => (800.0, 5000.0),
        _ => (150.0, 1000.0),
    }
}

#[test]
fn every_row_has_server_cpu_bytes_and_the_expected_answers() {
    let checks = 4;
    let Some(r) = serve_checks::measure(checks) else {
        return;
    };
    assert_eq!(r.rows.len(), 5, "sshd and four ways into nginx");
    for row in &r.rows {
        let what = format!("{}: {}", row.server, row.how);
        assert_eq!(row.checks, checks, "{what}");
        assert_eq!(row.failed, 0, "{what}: {}", row.answers);
        assert!(row.cpu_s > 0.0, "{what}: no server CPU time measured");
        let (lo, hi) = plausible_bytes(row);
        let b = row.bytes_per_check();
        assert!(
            (lo..=hi).contains(&b),
            "{what}: {b} bytes per check, expected {lo}–{hi} ({} up, {} down in all)",
            row.wire.up,
            row.wire.down
        );
        let expected = if row.server == "sshd" {
            format!("current → gens/1 × {checks}")
        } else {
            format!("304 × {checks}")
        };
        assert_eq!(row.answers, expected, "{what}");
    }
}
