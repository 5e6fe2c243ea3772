//! `fleet publish` on a real filesystem, through the library API: shared modules, no-change
//! republish, atomic switch under a concurrent reader, bad input, pruning, dry runs and builds.

use crate::fleet_support as support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use support::*;
use tiffin::fleet::{publish, BuildMode, HostReport, HostResult, PublishOptions};

fn results(reports: &[HostReport]) -> Vec<(String, HostResult)> {
    reports
        .iter()
        .map(|r| (r.host.clone(), r.result.clone()))
        .collect()
}

fn published(g: u64, prev: Option<u64>) -> HostResult {
    HostResult::Published {
        generation: g,
        previous: prev,
    }
}

/// hosts a and b link all of common/; c links only common/base.nix.
fn three_host_fleet() -> TestFleet {
    let f = TestFleet::new();
    f.write_config(&[("a", ""), ("b", ""), ("c", "")], "");
    f.write("common/base.nix", "{ services.openssh.enable = true; }\n");
    f.write(
        "common/desktop/gnome.nix",
        "{ services.xserver.enable = true; }\n",
    );
    for h in ["a", "b"] {
        f.write(
            &format!("hosts/{h}/configuration.nix"),
            &format!("{{ imports = [ ./common/base.nix ./common/desktop/gnome.nix ]; networking.hostName = \"{h}\"; }}\n"),
        );
        f.link(&format!("hosts/{h}/common"), "../../common");
    }
    f.write(
        "hosts/c/configuration.nix",
        "{ imports = [ ./base.nix ]; networking.hostName = \"c\"; }\n",
    );
    f.write("hosts/c/files/etc/motd", "server c\n");
    f.link("hosts/c/base.nix", "../../common/base.nix");
    f
}

/// mtimes of everything in a host's publication, by path.
fn mtimes(dir: &Path) -> Vec<(String, i64, i64)> {
    let mut v: Vec<(String, i64, i64)> = list_tree(dir)
        .unwrap()
        .into_iter()
        .map(|rel| {
            let m = fs::symlink_metadata(dir.join(&rel)).unwrap();
            (
                rel,
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
                m.ctime_nsec() + m.ctime() * 1_000_000_000,
            )
        })
        .collect();
    let top = fs::metadata(dir).unwrap();
    v.push((".".into(), top.mtime(), top.mtime_nsec()));
    v
}

#[test]
fn three_hosts_sharing_common_get_resolved_trees_and_only_includers_republish() {
    let f = three_host_fleet();
    let opts = PublishOptions::default();
    let r = publish(&f.repo(), &f.config(), &opts).unwrap();
    assert_eq!(r.failed(), 0, "{:?}", r.hosts);
    for h in ["a", "b", "c"] {
        assert_eq!(f.current(h), Some(1), "host {h}");
        verify_generation(&f.host_pub(h).join("gens/1")).unwrap();
    }
    // The symlinks are resolved into real files with the shared content.
    let a_base = f.host_pub("a").join("gens/1/tree/common/base.nix");
    assert!(fs::symlink_metadata(&a_base).unwrap().is_file());
    assert_eq!(
        fs::read(&a_base).unwrap(),
        fs::read(f.repo().join("common/base.nix")).unwrap()
    );
    let c_base = f.host_pub("c").join("gens/1/tree/base.nix");
    assert!(fs::symlink_metadata(&c_base).unwrap().is_file());
    assert!(!f.host_pub("c").join("gens/1/tree/common").exists());

    // Second publish: nothing written at all.
    let before: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|h| mtimes(&f.host_pub(h)))
        .collect();
    let r = publish(&f.repo(), &f.config(), &opts).unwrap();
    assert!(
        r.hosts
            .iter()
            .all(|h| h.result == HostResult::Unchanged { generation: 1 }),
        "{:?}",
        results(&r.hosts)
    );
    let after: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|h| mtimes(&f.host_pub(h)))
        .collect();
    assert_eq!(
        before, after,
        "a republish without changes touched the chroot"
    );

    // A module only a and b include.
    f.write(
        "common/desktop/gnome.nix",
        "{ services.xserver.enable = false; }\n",
    );
    let r = publish(&f.repo(), &f.config(), &opts).unwrap();
    assert_eq!(
        results(&r.hosts),
        vec![
            ("a".into(), published(2, Some(1))),
            ("b".into(), published(2, Some(1))),
            ("c".into(), HostResult::Unchanged { generation: 1 }),
        ]
    );
    let m = verify_generation(&f.host_pub("a").join("gens/2")).unwrap();
    assert_eq!(m.generation, 2);
    assert_eq!(
        fs::read_to_string(
            f.host_pub("b")
                .join("current/tree/common/desktop/gnome.nix")
        )
        .unwrap(),
        "{ services.xserver.enable = false; }\n"
    );
    // The module every host includes.
    f.write("common/base.nix", "{ services.openssh.enable = false; }\n");
    let r = publish(&f.repo(), &f.config(), &opts).unwrap();
    assert_eq!(
        results(&r.hosts),
        vec![
            ("a".into(), published(3, Some(2))),
            ("b".into(), published(3, Some(2))),
            ("c".into(), published(2, Some(1))),
        ]
    );
}

#[test]
fn reader_following_current_always_sees_a_tree_matching_its_manifest() {
    let f = TestFleet::new();
    f.write_config(&[("r", "")], "keep_generations = 3");
    f.write("common/base.nix", "{ }\n");
    f.link("hosts/r/common", "../../common");
    for i in 0..40 {
        f.write(
            &format!("hosts/r/mod{}/file{i}.nix", i % 5),
            &format!("{{ n = {i}; }}\n"),
        );
    }
    let config = f.config();
    let opts = PublishOptions::default();
    publish(&f.repo(), &config, &opts).unwrap();
    let done = AtomicBool::new(false);
    let pub_dir = f.host_pub("r");
    let (verified, vanished, seen) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut verified = 0u32;
            let mut vanished = 0u32;
            let mut seen = BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                let link = fs::read_link(pub_dir.join("current")).expect("current always exists");
                let n: u64 = link
                    .strip_prefix("gens")
                    .expect("current -> gens/N")
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .expect("N is a number");
                match verify_generation(&pub_dir.join(&link)) {
                    Ok(m) => {
                        assert_eq!(
                            m.generation, n,
                            "manifest of gens/{n} names another generation"
                        );
                        verified += 1;
                        seen.insert(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        // Only a generation pruned behind the reader may vanish: at least
                        // keep_generations newer ones must be live by now.
                        let now = fs::read_link(pub_dir.join("current")).unwrap();
                        let now: u64 = now
                            .strip_prefix("gens")
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!(
                            now >= n + 3,
                            "gens/{n} vanished while current is only {now}: {e}"
                        );
                        vanished += 1;
                    }
                    Err(e) => panic!("reader saw a tree that does not match its manifest: {e}"),
                }
            }
            (verified, vanished, seen)
        });
        for round in 0..50 {
            // Change content, add and remove files, so trees really differ.
            f.write(
                &format!("hosts/r/mod{}/file{}.nix", round % 5, round % 40),
                &format!("{{ round = {round}; }}\n"),
            );
            let extra = f.repo().join(format!("hosts/r/extra{}.nix", round % 3));
            if extra.exists() {
                fs::remove_file(&extra).unwrap();
            } else {
                fs::write(&extra, format!("# {round}\n")).unwrap();
            }
            let r = publish(&f.repo(), &config, &opts).unwrap();
            assert!(
                matches!(r.hosts[0].result, HostResult::Published { .. }),
                "{:?}",
                r.hosts[0]
            );
        }
        done.store(true, Ordering::SeqCst);
        reader.join().expect("reader thread")
    });
    eprintln!(
        "reader verified {verified} trees of {} generations; {vanished} pruned under it",
        seen.len()
    );
    assert!(
        verified > 0 && seen.len() >= 2,
        "the reader verified too little: {verified} trees, {seen:?}"
    );
    assert_eq!(f.current("r"), Some(51));
    // Pruned to keep_generations, nothing half-written left behind.
    assert_eq!(f.gens_entries("r"), vec!["49", "50", "51"]);
}

#[test]
fn bad_hosts_fail_with_the_path_named_and_leave_others_published() {
    let f = TestFleet::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "x").unwrap();
    f.write_config(
        &[
            ("good", ""),
            ("escape", ""),
            ("looping", ""),
            ("missing", ""),
            ("fifo", ""),
        ],
        "",
    );
    f.write("hosts/good/configuration.nix", "{ }\n");
    f.write("hosts/escape/configuration.nix", "{ }\n");
    f.link("hosts/escape/stolen", outside.path().to_str().unwrap());
    f.write("hosts/looping/configuration.nix", "{ }\n");
    f.link("hosts/looping/files/up", "..");
    f.write("hosts/fifo/configuration.nix", "{ }\n");
    nix::unistd::mkfifo(
        &f.repo().join("hosts/fifo/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let r = publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    let by: std::collections::BTreeMap<_, _> = r
        .hosts
        .iter()
        .map(|h| (h.host.as_str(), &h.result))
        .collect();
    assert_eq!(by["good"], &published(1, None));
    let expect = [
        ("escape", "hosts/escape/stolen", "outside"),
        ("looping", "hosts/looping/files/up", "loop"),
        ("missing", "hosts/missing", "does not exist"),
        ("fifo", "hosts/fifo/pipe", "fifo"),
    ];
    for (host, path, what) in expect {
        match by[host] {
            HostResult::Failed { error } => {
                assert!(
                    error.contains(path) && error.contains(what),
                    "host {host}: {error}"
                );
            }
            other => panic!("host {host} should have failed, got {other:?}"),
        }
        assert_eq!(f.current(host), None, "host {host} got a generation");
        assert!(
            f.gens_entries(host).is_empty(),
            "host {host}: {:?}",
            f.gens_entries(host)
        );
    }
    assert_eq!(r.failed(), 4);
}

#[test]
fn unreadable_file_fails_its_host_only() {
    // Root reads everything, so as root the publish runs as a throw-away unprivileged user.
    let f = TestFleet::new();
    let user = if is_root() {
        Some(TestUser::create("tfr"))
    } else {
        None
    };
    f.write_config(&[("good", ""), ("locked", "")], "");
    f.write("hosts/good/configuration.nix", "{ }\n");
    f.write("hosts/locked/configuration.nix", "{ }\n");
    f.write("hosts/locked/files/etc/secret", "s3cret\n");
    let secret = f.repo().join("hosts/locked/files/etc/secret");
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tiffin"));
    // Unsigned: the unprivileged user may not read the (root's) signing key.
    cmd.args(["fleet", "publish", "--unsigned", "--fleet"])
        .arg(f.repo());
    if let Some(u) = &user {
        use std::os::unix::process::CommandExt;
        // The unprivileged user must reach the repo and own the chroot root.
        fs::set_permissions(
            f.tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        fs::create_dir(f.chroot()).unwrap();
        nix::unistd::chown(&f.chroot(), Some(u.uid.into()), Some(u.gid.into())).unwrap();
        // std clears the supplementary groups when root sets a uid.
        cmd.uid(u.uid).gid(u.gid);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("hosts/locked/files/etc/secret") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(stderr.contains("not running as root"), "{stderr}");
    assert_eq!(f.current("good"), Some(1), "{stdout}\n{stderr}");
    assert_eq!(f.current("locked"), None);
    assert!(f.gens_entries("locked").is_empty());
}

#[test]
fn generations_are_pruned_to_keep_and_numbers_only_grow() {
    let f = TestFleet::new();
    f.write_config(&[("h", "")], "keep_generations = 2");
    let opts = PublishOptions::default();
    for i in 1..=5u64 {
        f.write("hosts/h/configuration.nix", &format!("{{ n = {i}; }}\n"));
        let r = publish(&f.repo(), &f.config(), &opts).unwrap();
        assert_eq!(r.hosts[0].result, published(i, (i > 1).then(|| i - 1)));
    }
    assert_eq!(f.gens_entries("h"), vec!["4", "5"]);
    // Even when `current` goes back to an older content, the number grows.
    f.write("hosts/h/configuration.nix", "{ n = 1; }\n");
    let r = publish(&f.repo(), &f.config(), &opts).unwrap();
    assert_eq!(r.hosts[0].result, published(6, Some(5)));
}

#[test]
fn dry_run_reports_and_writes_nothing() {
    let f = TestFleet::new();
    f.write_config(&[("h", "")], "");
    f.write("hosts/h/configuration.nix", "{ }\n");
    let dry = PublishOptions {
        dry_run: true,
        ..PublishOptions::default()
    };
    let r = publish(&f.repo(), &f.config(), &dry).unwrap();
    assert_eq!(
        r.hosts[0].result,
        HostResult::WouldPublish { generation: 1 }
    );
    assert!(!f.chroot().exists(), "a dry run created the chroot root");
    publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    f.write("hosts/h/configuration.nix", "{ x = 1; }\n");
    let before = mtimes(&f.host_pub("h"));
    let r = publish(&f.repo(), &f.config(), &dry).unwrap();
    assert_eq!(
        r.hosts[0].result,
        HostResult::WouldPublish { generation: 2 }
    );
    assert_eq!(before, mtimes(&f.host_pub("h")));
}

#[test]
fn host_removed_from_fleet_toml_is_reported_and_deleted_only_with_prune() {
    let f = TestFleet::new();
    f.write_config(&[("stay", ""), ("gone", "")], "");
    f.write("hosts/stay/configuration.nix", "{ }\n");
    f.write("hosts/gone/configuration.nix", "{ }\n");
    publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    fs::create_dir(f.chroot().join("stranger")).unwrap();
    f.write_config(&[("stay", "")], "");
    let r = publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    assert_eq!(r.orphans.len(), 1, "{:?}", r.orphans);
    assert_eq!(r.orphans[0].host, "gone");
    assert!(!r.orphans[0].removed);
    assert!(f.host_pub("gone").join("gens/1/manifest.json").exists());
    let prune = PublishOptions {
        prune: true,
        ..PublishOptions::default()
    };
    let r = publish(&f.repo(), &f.config(), &prune).unwrap();
    assert!(r.orphans[0].removed);
    assert!(!f.host_pub("gone").exists());
    // Only publications are ever deleted.
    assert!(f.chroot().join("stranger").is_dir());
    assert_eq!(f.current("stay"), Some(1));
}

fn build_fleet(log: &Path) -> TestFleet {
    let f = TestFleet::new();
    let nix = fake_nix();
    f.write_config(
        &[
            ("flaky", "attr = \"flaky-attr\""),
            ("plain", ""),
            ("broken", ""),
        ],
        &format!(
            "[build]\nnix = \"{0}\"\nnix_build = \"{0}\"\ncache = false  # the fake nix cannot export\n",
            nix.display()
        ),
    );
    f.write("common/base.nix", "{ }\n");
    f.write("hosts/flaky/flake.nix", "{ outputs = { self }: { }; }\n");
    f.link("hosts/flaky/common", "../../common");
    f.write(
        "hosts/plain/configuration.nix",
        "{ networking.hostName = \"plain\"; }\n",
    );
    f.link("hosts/plain/common", "../../common");
    f.write("hosts/broken/configuration.nix", "{ }\n");
    f.write("hosts/broken/BROKEN", "");
    std::env::set_var("FAKE_NIX_LOG", log);
    f
}

#[test]
fn build_puts_the_system_path_in_the_manifest_and_a_failed_build_is_not_published() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("nix.log");
    let f = build_fleet(&log);
    let opts = PublishOptions {
        build: Some(BuildMode::Build),
        ..PublishOptions::default()
    };
    let r = publish(&f.repo(), &f.config(), &opts).unwrap();
    let by: std::collections::BTreeMap<_, _> =
        r.hosts.iter().map(|h| (h.host.as_str(), h)).collect();
    assert_eq!(by["flaky"].result, published(1, None));
    assert_eq!(by["plain"].result, published(1, None));
    match &by["broken"].result {
        HostResult::Failed { error } => assert!(error.contains("BROKEN"), "{error}"),
        other => panic!("broken host: {other:?}"),
    }
    assert_eq!(f.current("broken"), None);
    assert!(f.gens_entries("broken").is_empty());

    let m = verify_generation(&f.host_pub("flaky").join("gens/1")).unwrap();
    let sys = m.expected_system.expect("expected_system set");
    assert!(
        sys.starts_with("/nix/store/") && sys.ends_with("-nixos-system-flaky-attr"),
        "{sys}"
    );
    let m = verify_generation(&f.host_pub("plain").join("gens/1")).unwrap();
    assert!(m
        .expected_system
        .expect("expected_system")
        .ends_with("-nixos-system-plain"));
    let calls = fs::read_to_string(&log).unwrap();
    assert!(
        calls
            .lines()
            .any(|l| l.contains("build --no-link --json path:")
                && l.contains("#nixosConfigurations.flaky-attr.config.system.build.toplevel")),
        "{calls}"
    );
    assert!(
        calls
            .lines()
            .any(|l| l.contains("<nixpkgs/nixos> -A system -I nixos-config=")
                && l.contains("/configuration.nix --no-out-link")),
        "{calls}"
    );

    // Same tree, same system: nothing new.
    let r = publish(&f.repo(), &f.config(), &opts).unwrap();
    let again: Vec<_> = results(&r.hosts)
        .into_iter()
        .filter(|(h, _)| h != "broken")
        .collect();
    assert_eq!(
        again,
        vec![
            ("flaky".into(), HostResult::Unchanged { generation: 1 }),
            ("plain".into(), HostResult::Unchanged { generation: 1 }),
        ]
    );
    // A dry build evaluates only and records no system path.
    f.write("common/base.nix", "{ x = 1; }\n");
    let dry = PublishOptions {
        build: Some(BuildMode::DryRun),
        hosts: vec!["plain".into()],
        ..PublishOptions::default()
    };
    let before = fs::read_to_string(&log).unwrap().lines().count();
    let r = publish(&f.repo(), &f.config(), &dry).unwrap();
    assert_eq!(r.hosts[0].result, published(2, Some(1)));
    let m = verify_generation(&f.host_pub("plain").join("gens/2")).unwrap();
    assert_eq!(m.expected_system, None);
    let calls = fs::read_to_string(&log).unwrap();
    assert!(
        calls.lines().skip(before).all(|l| l.ends_with("--dry-run")),
        "{calls}"
    );
}

/// A tmpfs mounted for one test, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_write_that_fails_midway_leaves_current_and_gens_as_they_were() {
    // A full disk is a failure in the middle of writing a generation. Mounting needs root.
    if !require_root("full-disk test") {
        return;
    }
    let f = TestFleet::new();
    fs::create_dir(f.chroot()).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs"])
        .arg(f.chroot())
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _disk = SmallDisk(f.chroot());
    f.write_config(&[("grows", ""), ("small", "")], "");
    f.write("hosts/grows/configuration.nix", "{ }\n");
    f.write("hosts/small/configuration.nix", "{ }\n");
    let r = publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    assert_eq!(r.failed(), 0, "{:?}", r.hosts);
    // Many files, so that some are written before the disk is full.
    for i in 0..20 {
        f.write(
            &format!("hosts/grows/files/blob{i:02}"),
            &"x".repeat(40 * 1024),
        );
    }
    // Alone: a host publishing next to it at that moment would find the disk full too.
    let only_grows = PublishOptions {
        hosts: vec!["grows".into()],
        ..PublishOptions::default()
    };
    let r = publish(&f.repo(), &f.config(), &only_grows).unwrap();
    match &r.hosts[0].result {
        HostResult::Failed { error } => {
            assert!(
                error.contains("No space left on device") && error.contains("blob"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.current("grows"), Some(1));
    assert_eq!(
        f.gens_entries("grows"),
        vec!["1"],
        "the incoming generation was not removed"
    );
    verify_generation(&f.host_pub("grows").join("gens/1")).unwrap();
    // The failed attempt gave its space back: the other host publishes. Alone again, since
    // `grows` would fill the disk anew while `small` writes.
    f.write("hosts/small/configuration.nix", "{ y = 2; }\n");
    let only_small = PublishOptions {
        hosts: vec!["small".into()],
        ..PublishOptions::default()
    };
    let r = publish(&f.repo(), &f.config(), &only_small).unwrap();
    assert_eq!(r.hosts[0].result, published(2, Some(1)));
}
