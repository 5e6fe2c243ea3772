//! The command tree is complete and every command documents its options.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run tiffin");
    assert!(out.status.success(), "tiffin {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn top_level_help_shows_every_command_of_the_design() {
    let h = help(&[]);
    for cmd in [
        "fleet init",
        "fleet publish",
        "fleet build",
        "fleet status",
        "fleet diff",
        "fleet sshd-config",
        "agent",
        "status|check|update|rollback|log|watch",
        "demo",
    ] {
        assert!(h.contains(cmd), "`{cmd}` missing from tiffin --help:\n{h}");
    }
}

#[test]
fn every_subcommand_help_explains_its_options() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["fleet", "publish"],
            &[
                "--build",
                "--dry-build",
                "--dry-run",
                "--prune",
                "--unsigned",
                "--fleet",
            ],
        ),
        (&["fleet", "build"], &["--dry-run"]),
        (&["fleet", "status"], &["--json", "--watch"]),
        (&["fleet", "logs"], &["--last"]),
        (&["agent"], &["--config", "--once", "--check-config"]),
        (&["status"], &["--json", "--socket", "TIFFIN_SOCKET"]),
        (&["rollback"], &["--yes"]),
        (&["demo"], &["--dir", "--no-tray", "--script"]),
    ];
    for (args, opts) in cases {
        let h = help(args);
        for o in *opts {
            assert!(
                h.contains(o),
                "`{o}` missing from tiffin {args:?} --help:\n{h}"
            );
        }
    }
}

#[test]
fn agent_check_config_reports_the_line_of_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "host = \"a\"\nsource = \"file:///srv\"\npolicy = \"sometimes\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(["agent", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent.toml:3:"), "{err}");
    std::fs::write(&cfg, "host = \"a\"\nsource = \"file:///srv\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(["agent", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn agent_check_config_names_what_is_wrong_with_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    for (source, why) in [
        ("sftp://@x", "empty user name"),
        ("sftp://a@:22/", "no host"),
        ("sftp://a@h:70000/", "bad port"),
        ("sftp://a@h:22/srv/a", "path \"/srv/a\""),
        ("gopher://h/", "expected sftp://USER@HOST:PORT/"),
        // A web server without `trusted_key`: an untrusted transport (SECURITY.md).
        ("http://h/", "untrusted transport"),
    ] {
        std::fs::write(&cfg, format!("host = \"a\"\nsource = \"{source}\"\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["agent", "--check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{source}: {err}");
        assert!(
            err.contains("agent.toml") && err.contains("source") && err.contains(why),
            "{source}: {err}"
        );
    }
    // An IPv6 literal is a host like any other.
    std::fs::write(&cfg, "host = \"a\"\nsource = \"sftp://u@[::1]:2222/\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(["agent", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("source sftp://u@[::1]:2222/"), "{said}");
}
