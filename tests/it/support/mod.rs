//! Shared support for integration tests and benchmarks: a real chrooted OpenSSH sshd
//! ([`sshd::Sshd`]), publications made by the library's `tiffin fleet publish` from a fleet
//! repository ([`publication`]), and a loopback relay that counts the bytes on the wire
//! ([`relay::Relay`]).
//!
//! Use it with `mod support;` from a test file (or `#[path = "../tests/support/mod.rs"]` from a
//! bench). Not every user needs every part.
#![allow(dead_code)]

pub mod mirror_copy_sshd;
pub mod mirror_sshd;
pub mod nginx;
pub mod prometheus;
pub mod publication;
pub mod relay;
pub mod s3;
pub mod sshd;

use std::io::Read;

/// A short random hex string for unique names (users, groups, directories).
pub fn random_suffix(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    hex::encode(buf)
}

/// True when tests must not skip: a missing prerequisite is then a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The one prerequisite check of the integration tests. `missing` is `None` when the machine can
/// run `test`, else why it cannot. True: go on. A missing prerequisite skips the test here (the
/// reason printed) and fails it under `CI=true`, where nothing may skip.
pub fn prerequisite(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    assert!(!in_ci(), "{test}: {why}; CI=true forbids skipping");
    eprintln!("{test}: skipped: {why}");
    false
}

/// Root, or why not (for [`prerequisite`]).
pub fn needs_root(what: &str) -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| format!("needs root ({what})"))
}
