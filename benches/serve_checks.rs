//! What one server spends on the fleet's no-change checks: 1,000 simulated agents checking
//! against a real chrooted sshd and against nginx serving the same publications, the server's
//! CPU time and the bytes on the wire per check of each.
//!
//! - sshd: each check is what an agent does at the start of a cycle: `source::open` (a fresh
//!   TCP connection, SSH handshake, public-key authentication, the sftp subsystem) and
//!   `current_generation` (one `readlink current`). The agents are a few real host users, each
//!   with its own key and chroot, taking turns. CPU: utime+stime+cutime+cstime of sshd's
//!   listener from `/proc` (every connection's processes are its children, reaped when the
//!   connection ends, so their CPU time is counted once they exit).
//! - nginx: a conditional GET of the host's `current.txt` with the `ETag` it got before,
//!   answered `304 Not Modified`, over plain HTTP and HTTPS, each on a fresh connection per
//!   check (`keepalive_timeout 0`: at a 10-minute interval no keep-alive survives) and, for
//!   scale, on a connection kept alive. CPU: see `serve_checks/nginx.rs`.
//! - Bytes: TCP payload both ways, counted by a loopback relay in front of each server.
//!
//! Two agents at a time (the machine's two cores are shared by the agents, the relay and the
//! server). Needs root, sshd, nginx-light and openssl. Prints a table, asserts nothing. Run:
//! `cargo bench --bench serve_checks`; `measure` is also called by the suite.
//! `TIFFIN_BENCH_CHECKS` (default 1000) sets the number of checks of each row.

#[path = "common/mod.rs"]
mod common;
#[path = "serve_checks/measure.rs"]
mod harness;
#[path = "../tests/it/support/mod.rs"]
mod support;

pub use harness::*;

#[allow(dead_code)]
fn main() {
    let checks = common::env_or("TIFFIN_BENCH_CHECKS", 1000);
    let Some(r) = measure(checks) else {
        println!("serve_checks: not measured (see above why)");
        return;
    };
    println!("{}", table(&r.rows));
    println!(
        "- setup {:.1} s; {PARALLEL} agents at a time; bytes are TCP payload both ways through a loopback relay.",
        r.setup_s
    );
}
