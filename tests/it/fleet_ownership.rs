//! Ownership and modes of a publication (docs/publication.md, the sshd contract), checked by stat with
//! real system users. Needs root: fails under CI=true without it, skips elsewhere.

use crate::fleet_support as support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use support::*;
use tiffin::fleet::{publish, HostResult, PublishOptions};
use tiffin::manifest::EntryKind;

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
fn chroot_tree_and_logs_have_the_owners_and_modes_sshd_needs() {
    if !require_root("ownership test") {
        return;
    }
    let alpha = TestUser::create("tfa");
    let beta = TestUser::create("tfb");
    let f = TestFleet::new();
    f.write_config(
        &[
            ("alpha", &format!("user = \"{}\"", alpha.name)),
            ("beta", &format!("user = \"{}\"", beta.name)),
        ],
        "",
    );
    f.write("common/base.nix", "{ }\n");
    for h in ["alpha", "beta"] {
        f.write(&format!("hosts/{h}/configuration.nix"), "{ }\n");
        f.link(&format!("hosts/{h}/common"), "../../common");
        f.write(&format!("hosts/{h}/files/etc/ssh/key"), "private\n");
        f.write(
            &format!("hosts/{h}/files/usr/local/bin/hello"),
            "#!/bin/sh\necho hi\n",
        );
        let repo = f.repo();
        fs::set_permissions(
            repo.join(format!("hosts/{h}/files/etc/ssh/key")),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        fs::set_permissions(
            repo.join(format!("hosts/{h}/files/usr/local/bin/hello")),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let r = publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    assert_eq!(r.failed(), 0, "{:?}", r.hosts);
    // Publish once more with a change, so that the second generation holds hard-linked files too.
    f.write("hosts/alpha/configuration.nix", "{ x = 1; }\n");
    let r = publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    assert_eq!(
        r.hosts[0].result,
        HostResult::Published {
            generation: 2,
            previous: Some(1)
        }
    );

    for (host, user, gen) in [("alpha", &alpha, 2u64), ("beta", &beta, 1)] {
        let dir = f.host_pub(host);
        assert_eq!(owner_mode(&dir), (0, 0, 0o755), "{host}: chroot");
        assert_eq!(owner_mode(&dir.join("gens")), (0, 0, 0o755), "{host}: gens");
        assert_eq!(
            owner_mode(&dir.join("logs")),
            (user.uid, user.gid, 0o700),
            "{host}: logs"
        );
        assert_eq!(
            owner_mode(&dir.join("backup")),
            (user.uid, user.gid, 0o700),
            "{host}: backup"
        );
        assert_eq!(
            fs::read_link(dir.join("current")).unwrap(),
            Path::new("gens").join(gen.to_string())
        );
        // The same for HTTP readers, readable like the generation.
        assert_eq!(
            fs::read_to_string(dir.join("current.txt")).unwrap(),
            format!("gens/{gen}\n")
        );
        assert_eq!(
            owner_mode(&dir.join("current.txt")),
            (0, user.gid, 0o640),
            "{host}: current.txt"
        );
        let g = dir.join("gens").join(gen.to_string());
        assert_eq!(
            owner_mode(&g),
            (0, user.gid, 0o750),
            "{host}: generation dir"
        );
        assert_eq!(
            owner_mode(&g.join("manifest.json")),
            (0, user.gid, 0o640),
            "{host}: manifest"
        );
        assert_eq!(
            owner_mode(&g.join("tree")),
            (0, user.gid, 0o750),
            "{host}: tree"
        );
        let m = verify_generation(&g).unwrap();
        for e in &m.entries {
            let want = match e.kind {
                EntryKind::Dir => 0o750,
                EntryKind::File => 0o640,
            };
            assert_eq!(
                owner_mode(&g.join("tree").join(&e.path)),
                (0, user.gid, want),
                "{host}: {}",
                e.path
            );
        }
        // The manifest keeps the source modes for the agent to apply.
        assert_eq!(m.entry("files/etc/ssh/key").unwrap().mode, 0o600);
        assert_eq!(m.entry("files/usr/local/bin/hello").unwrap().mode, 0o755);
    }
    // Nothing of one host is readable by the other host's user (group differs, no world bits).
    let alpha_key = f.host_pub("alpha").join("gens/2/tree/files/etc/ssh/key");
    assert_ne!(owner_mode(&alpha_key).1, beta.gid);
    // The unchanged file was shared with generation 1, not copied.
    let old = fs::metadata(f.host_pub("alpha").join("gens/1/tree/files/etc/ssh/key")).unwrap();
    assert_eq!(old.ino(), fs::metadata(&alpha_key).unwrap().ino());
}

#[test]
fn missing_user_as_root_fails_that_host_with_the_commands_to_create_it() {
    if !require_root("missing-user test") {
        return;
    }
    let present = TestUser::create("tfp");
    let f = TestFleet::new();
    let ghost = format!("tfghost{}", std::process::id());
    f.write_config(
        &[
            ("ghosthost", &format!("user = \"{ghost}\"")),
            ("present", &format!("user = \"{}\"", present.name)),
        ],
        "",
    );
    f.write("hosts/ghosthost/configuration.nix", "{ }\n");
    f.write("hosts/present/configuration.nix", "{ }\n");
    let r = publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    match &r.hosts[0].result {
        HostResult::Failed { error } => {
            assert!(
                error.contains(&format!("system user \"{ghost}\"")),
                "{error}"
            );
            assert!(error.contains("groupadd --system tiffin"), "{error}");
            assert!(
                error.contains(&format!("--password '*' {ghost}"))
                    && error.contains("useradd --system"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!f.host_pub("ghosthost").exists());
    assert_eq!(f.current("present"), Some(1));
}

#[test]
fn hosts_sharing_a_primary_group_are_refused() {
    if !require_root("shared primary group test") {
        return;
    }
    // Two host users whose primary group is one shared group (each could read the other's
    // publication), and a third with a group of its own.
    let shared = TestGroup::create("tfg");
    let alpha = TestUser::create_in_group("tfa", &shared);
    let beta = TestUser::create_in_group("tfb", &shared);
    let gamma = TestUser::create("tfc");
    let f = TestFleet::new();
    f.write_config(
        &[
            ("alpha", &format!("user = \"{}\"", alpha.name)),
            ("beta", &format!("user = \"{}\"", beta.name)),
            ("gamma", &format!("user = \"{}\"", gamma.name)),
        ],
        "",
    );
    for h in ["alpha", "beta", "gamma"] {
        f.write(&format!("hosts/{h}/configuration.nix"), "{ }\n");
    }
    let r = publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    for (h, me, other) in [("alpha", &alpha, &beta), ("beta", &beta, &alpha)] {
        let HostResult::Failed { error } = &r.hosts.iter().find(|x| x.host == h).unwrap().result
        else {
            panic!("{h} was published: {:?}", r.hosts)
        };
        let needles = [
            format!("host {h}"),
            me.name.clone(),
            shared.name.clone(),
            other.name.clone(),
            "primary group of its own".into(),
            "--user-group".into(),
        ];
        for needle in &needles {
            assert!(error.contains(needle), "{needle:?} missing from: {error}");
        }
        assert_eq!(f.current(h), None, "nothing published for {h}");
    }
    let gamma_result = &r.hosts.iter().find(|x| x.host == "gamma").unwrap().result;
    assert!(
        matches!(gamma_result, HostResult::Published { generation: 1, .. }),
        "{gamma_result:?}"
    );
    // Publishing only beta: still refused (the check covers every host of fleet.toml).
    let only_beta = PublishOptions {
        hosts: vec!["beta".into()],
        ..PublishOptions::default()
    };
    let r = publish(&f.repo(), &f.config(), &only_beta).unwrap();
    assert!(r.hosts[0].failed(), "{:?}", r.hosts);
}
