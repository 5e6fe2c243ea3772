//! The fuzz corpora as regression tests: every file under `fuzz/corpus/<target>/` goes through
//! the same check as its fuzz target (`fuzz/src/checks.rs`, included here), on stable, in
//! `make test`. Long fuzzing runs are `make fuzz`, outside the tests.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs every file of one target's corpus; fails naming each file that panics or breaks a
/// property, and when the corpus is missing or empty (a lost corpus must not pass quietly).
fn replay(target: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check for target {target}"));
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the corpus of fuzz target {target})",
            dir.display()
        )
    });
    let mut files = 0;
    let mut failures = Vec::new();
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files += 1;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("{}: {why}", path.display()));
        }
    }
    assert!(files > 0, "{}: the corpus is empty", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {files} corpus files of {target} fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fuzz_target_has_a_corpus_replayed_here() {
    let dirs: Vec<String> = std::fs::read_dir(corpus_dir(""))
        .expect("fuzz/corpus")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for (target, _) in checks::TARGETS {
        assert!(dirs.iter().any(|d| d == target), "no corpus for {target}");
    }
    for d in &dirs {
        assert!(
            checks::TARGETS.iter().any(|(t, _)| t == d),
            "fuzz/corpus/{d} belongs to no check in fuzz/src/checks.rs"
        );
    }
}

#[test]
fn manifest_corpus_parses_or_is_refused_with_its_origin_and_round_trips() {
    replay("manifest");
}

#[test]
fn fleet_toml_corpus_accepts_only_usable_hosts() {
    replay("fleet_toml");
}

#[test]
fn agent_toml_corpus_accepts_only_startable_configs() {
    replay("agent_toml");
}

#[test]
fn socket_request_corpus_round_trips_or_gets_a_one_line_error_answer() {
    replay("socket_request");
}

#[test]
fn report_corpus_reads_and_draws_a_plain_table() {
    replay("report");
}

#[test]
fn http_host_corpus_matches_the_loopback_model() {
    replay("http_host");
}
