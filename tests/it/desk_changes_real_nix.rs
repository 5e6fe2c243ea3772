//! The change summary of `fleet publish --build` on real Nix and the NixOS stand-in
//! (assets/nixos-standin): the real `nix store diff-closures` between the previous generation's
//! `expected_system` and the new one, as the signed manifest carries it (packages added, removed
//! and changed, several versions of one name, and "restart needed" for a kernel change only),
//! and as `tiffin status` and `tiffin status --changes` render it. desk_changes.rs does the
//! note and the same path on the fleet tests' fake Nix.

use crate::fleet_support::{verify_generation, TestFleet};
use crate::real_nix;
use std::process::Command;
use tiffin::manifest::{Changes, Manifest};
use tiffin::status::AgentStatus;

/// `fleet publish --build` of every host, with the real Nix's settings; the new manifest of `web`.
fn publish(f: &TestFleet, generation: u64) -> Manifest {
    let o = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(["fleet", "publish", "--build", "-m", "test", "--fleet"])
        .arg(f.repo())
        .envs(real_nix::env())
        .output()
        .expect("run tiffin");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(!err.contains("no change summary"), "{out}\n{err}");
    verify_generation(&f.host_pub("web").join(format!("gens/{generation}")))
        .unwrap_or_else(|e| panic!("generation {generation}: {e}\n{out}\n{err}"))
}

#[test]
fn publish_build_summarises_the_real_closure_diff_and_a_kernel_change_needs_a_restart() {
    if !real_nix::available(
        "publish_build_summarises_the_real_closure_diff_and_a_kernel_change_needs_a_restart",
    ) {
        return;
    }
    let f = TestFleet::new();
    f.write_config(&[("web", "")], "");
    // Package paths of this test's own (`pkg-<name>-<version>`, 64 KiB each).
    let nonce = real_nix::unique_marker("changes");
    let configure = |kernel: &str, packages: &str| {
        f.write(
            "hosts/web/configuration.nix",
            &format!(
                "{{ networking.hostName = \"web\"; standin.kernel = \"{kernel}\";\n  \
                 standin.nonce = \"{nonce}\"; standin.packages = {{ {packages} }}; }}\n"
            ),
        );
    };
    // Two versions of one name (`pkg-py-3.11-1` and `pkg-py-3.12-1`: name `pkg-py`), as a
    // closure with python3 3.11 and 3.12 has.
    configure(
        "6.1",
        "a = \"1.0\"; b = \"1.0\"; \"py-3.11\" = \"1\"; \"py-3.12\" = \"1\";",
    );
    let m1 = publish(&f, 1);
    assert!(m1.expected_system.is_some());
    assert_eq!(m1.changes, None, "nothing to compare the first build with");

    configure(
        "6.1",
        "b = \"2.0\"; c = \"1.0\"; \"py-3.11\" = \"2\"; \"py-3.12\" = \"2\";",
    );
    let m2 = publish(&f, 2);
    assert_ne!(m2.expected_system, m1.expected_system);
    let c2 = m2.changes.clone().expect("a change summary");
    assert_eq!(
        c2.lines,
        [
            "pkg-a 1.0 (removed)",
            "pkg-b 1.0 → 2.0",
            "pkg-c 1.0 (new)",
            "pkg-py 3.11-1, 3.12-1 → 3.11-2, 3.12-2",
        ]
    );
    assert_eq!(c2.more, 0);
    assert!(!c2.restart_needed, "the kernel is the same");

    // What the machine's user sees of generation 2 while it waits.
    let waiting = |c: &Changes| AgentStatus {
        applied_generation: Some(1),
        available_generation: Some(2),
        available_changes: Some(c.clone()),
        ..AgentStatus::default()
    };
    assert_eq!(
        tiffin::cli::pending::changes_text(&waiting(&c2)),
        "pkg-a 1.0 (removed)\npkg-b 1.0 → 2.0\npkg-c 1.0 (new)\n\
         pkg-py 3.11-1, 3.12-1 → 3.11-2, 3.12-2\n"
    );
    let utc = jiff::tz::TimeZone::UTC;
    let rows = tiffin::cli::pending::rows(&waiting(&c2), tiffin::status::unix_now(), &utc);
    assert!(
        rows.contains(&("changes", "4 (`tiffin status --changes` lists them)".into())),
        "{rows:?}"
    );

    // Only the kernel changes: a restart is needed.
    configure(
        "6.6",
        "b = \"2.0\"; c = \"1.0\"; \"py-3.11\" = \"2\"; \"py-3.12\" = \"2\";",
    );
    let m3 = publish(&f, 3);
    let c3 = m3.changes.expect("a change summary");
    assert_eq!(c3.lines, ["linux 6.1 → 6.6"]);
    assert!(c3.restart_needed, "the kernel changes");
    assert_eq!(
        tiffin::cli::pending::changes_text(&waiting(&c3)),
        "linux 6.1 → 6.6\nrestart needed after this update (kernel, initrd or modules change)\n"
    );
    let rows = tiffin::cli::pending::rows(&waiting(&c3), tiffin::status::unix_now(), &utc);
    assert!(
        rows.contains(&(
            "changes",
            "1 (`tiffin status --changes` lists them); restart needed after this update".into()
        )),
        "{rows:?}"
    );
}
