//! What no publication may hold, whatever symlink reaches it: the signing key, `keys/`, the
//! repository's `.git` and fleet.toml's `never_publish` entries. The host is refused with an
//! error naming the link; the other hosts are published.

use crate::fleet_support as support;

use std::fs;
use support::*;
use tiffin::fleet::{publish, HostResult, PublishOptions};
use tiffin::sign::SecretKey;

#[test]
fn a_host_reaching_the_signing_key_keys_git_or_never_publish_is_refused_naming_the_link() {
    let f = TestFleet::new();
    let hosts = [
        "key",
        "keysdir",
        "git",
        "listed",
        "listedfile",
        "otherkey",
        "inplace",
        "fine",
    ];
    let cfg: Vec<(&str, &str)> = hosts.iter().map(|h| (*h, "")).collect();
    f.write_config(&cfg, "never_publish = [\"secrets\", \"notes/admin.txt\"]\n");
    // `write_config` made the fleet's key already (signed by default); a fresh one replaces it.
    SecretKey::generate()
        .unwrap()
        .save(&f.repo().join("keys/fleet-signing.key"), "test", true)
        .unwrap();
    f.write(".git/config", "[core]\n");
    f.write("secrets/db/password", "hunter2\n");
    f.write("notes/admin.txt", "root password: x\n");
    f.write("notes/public.txt", "hello\n");
    f.write(
        "other/second.key",
        "not the signing key, but under no rule\n",
    );
    for h in hosts {
        f.write(&format!("hosts/{h}/configuration.nix"), "{ }\n");
    }
    f.link("hosts/key/k", "../../keys/fleet-signing.key");
    f.link("hosts/keysdir/all", "../../keys");
    f.link("hosts/git/repo", "../../.git");
    f.link("hosts/listed/s", "../../secrets");
    f.link("hosts/listedfile/notes", "../../notes");
    // A link to a directory that holds a link to the key: the first link on the way is named.
    f.link("other/to-key", "../keys/fleet-signing.key");
    f.link("hosts/otherkey/other", "../../other");
    f.write("hosts/inplace/README", "x\n");
    f.link("hosts/fine/public.txt", "../../notes/public.txt");

    let r = publish(&f.repo(), &f.config(), &PublishOptions::default()).unwrap();
    let expect = [
        ("key", "hosts/key/k", "the signing key"),
        ("keysdir", "hosts/keysdir/all", "keys/"),
        ("git", "hosts/git/repo", ".git"),
        (
            "listed",
            "hosts/listed/s",
            "never_publish entry \"secrets\"",
        ),
        (
            "listedfile",
            "hosts/listedfile/notes",
            "never_publish entry \"notes/admin.txt\"",
        ),
        ("otherkey", "hosts/otherkey/other", "the signing key"),
    ];
    for (host, link, what) in expect {
        let h = r.hosts.iter().find(|h| h.host == host).unwrap();
        match &h.result {
            HostResult::Failed { error } => {
                let named = f.repo().join(link).display().to_string();
                assert!(
                    error.contains(&format!("{named}: reaches")) && error.contains(what),
                    "host {host}: {error}"
                );
                assert!(error.contains("never published"), "{error}");
            }
            other => panic!("host {host} was not refused: {other:?}"),
        }
        assert_eq!(f.current(host), None, "host {host}");
    }
    for host in ["inplace", "fine"] {
        let h = r.hosts.iter().find(|h| h.host == host).unwrap();
        assert!(!h.failed(), "host {host}: {:?}", h.result);
    }
    // Nothing of what is never published is in any publication.
    for needle in ["hunter2", "root password", "[core]"] {
        let hits = std::process::Command::new("grep")
            .args(["-r", "-l", "-F", needle])
            .arg(f.chroot())
            .output()
            .unwrap();
        assert!(hits.stdout.is_empty(), "{needle} published: {hits:?}");
    }
    let key = fs::read(f.repo().join("keys/fleet-signing.key")).unwrap();
    assert!(!key.is_empty());
}

#[test]
fn never_publish_must_name_paths_inside_the_repository() {
    for bad in ["/etc/shadow", "../x", "a/../../b"] {
        let text = format!("chroot = \"/srv/x\"\nnever_publish = [{bad:?}]\n");
        let e = tiffin::config::FleetConfig::parse(&text, "fleet.toml").unwrap_err();
        assert!(
            e.to_string().contains("fleet.toml:2:") && e.to_string().contains("never_publish"),
            "{e}"
        );
    }
}
