//! The `tiffin fleet` commands through the real binary: init, publish, build, sshd-config, and
//! their exit codes and messages.

use crate::fleet_support as support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use support::*;

fn tiffin(args: &[&str], fleet: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(args)
        .arg("--fleet")
        .arg(fleet)
        .output()
        .expect("run tiffin")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn init_makes_a_fleet_that_publishes_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("myfleet");
    let o = tiffin(&["fleet", "init", repo.to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let link = fs::read_link(repo.join("hosts/example/common")).unwrap();
    assert_eq!(link, Path::new("../../common"));
    assert!(fs::read_to_string(repo.join("common/tiffin.nix"))
        .unwrap()
        .contains("services.tiffin.agent"));
    assert!(repo.join(".gitignore").is_file());

    let before = fs::read(repo.join("fleet.toml")).unwrap();
    let o = tiffin(&["fleet", "init"], &repo);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("fleet.toml: already exists"), "{err}");
    assert_eq!(fs::read(repo.join("fleet.toml")).unwrap(), before);

    // Point it at a chroot in the temp dir and at an existing user, then publish it.
    let chroot = tmp.path().join("chroot");
    let toml = String::from_utf8(before)
        .unwrap()
        .replace("\"/srv/tiffin\"", &format!("\"{}\"", chroot.display()))
        .replace(
            "# user = \"example\"",
            &format!("user = \"{}\"", current_user()),
        );
    fs::write(repo.join("fleet.toml"), toml).unwrap();
    let o = tiffin(&["fleet", "publish"], &repo);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("example") && l.contains("published (first)")),
        "{out}"
    );
    assert!(
        err.contains("example: published generation 1"),
        "plain progress lines off a TTY: {err}"
    );
    let shared = chroot.join("example/current/tree/common/tiffin.nix");
    assert!(fs::symlink_metadata(&shared).unwrap().is_file());
    let o = tiffin(&["fleet", "publish"], &repo);
    let (out, _) = text(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("example") && l.contains("unchanged")),
        "{out}"
    );
}

#[test]
fn sshd_config_prints_a_match_block_per_host_and_the_user_commands() {
    let f = TestFleet::new();
    f.write_config(
        &[("laptop", "user = \"lap\""), ("server", "user = \"srv\"")],
        "",
    );
    let o = tiffin(&["fleet", "sshd-config"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let chroot = f.chroot();
    let block = format!(
        "Match User lap
    ChrootDirectory {}/laptop
    ForceCommand internal-sftp
    AuthorizedKeysFile /etc/ssh/tiffin/authorized_keys/%u
    AuthenticationMethods publickey
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    DisableForwarding yes
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    PermitTunnel no
    X11Forwarding no
    PermitTTY no
",
        chroot.display()
    );
    assert!(out.contains(&block), "{out}");
    let me = "srv".to_string();
    assert!(
        out.contains(&format!(
            "Match User {me}\n    ChrootDirectory {}/server\n",
            chroot.display()
        )),
        "{out}"
    );
    assert!(out.contains("groupadd --system tiffin"), "{out}");
    for (host, user) in [("laptop", "lap"), ("server", me.as_str())] {
        assert!(
            out.contains(&format!(
                "getent passwd {user} >/dev/null || useradd --system --user-group --groups tiffin --home-dir {}/{host} --no-create-home --shell /usr/sbin/nologin --password '*' {user}\n",
                chroot.display()
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("> /etc/ssh/tiffin/authorized_keys/{user}\n")),
            "{out}"
        );
    }
    assert!(out.contains(&format!("printf '%s\\n' '{KEY}'")), "{out}");
    // The host blocks are closed: what follows applies to every user again.
    let blocks_end = out.find("# ---- 2.").expect("part 2");
    assert!(out[..blocks_end].trim_end().ends_with("Match All"), "{out}");
}

/// `sshd -T` of a config: the settings sshd applies to a connection by `user`.
fn sshd_effective(config: &Path, user: &str) -> String {
    let spec = format!("user={user},host=agent.example.org,addr=127.0.0.1");
    let out = Command::new("/usr/sbin/sshd")
        .arg("-T")
        .arg("-f")
        .arg(config)
        .args(["-C", &spec])
        .output()
        .expect("run sshd -T");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_sshd_setting_appended_after_the_host_blocks_is_not_inside_them() {
    let sshd = Path::new("/usr/sbin/sshd");
    let privsep = Path::new("/run/sshd");
    let unusable = !sshd.exists() || (!privsep.is_dir() && fs::create_dir_all(privsep).is_err());
    if !crate::support::prerequisite(
        "sshd -T",
        unusable.then(|| "needs /usr/sbin/sshd and /run/sshd".to_string()),
    ) {
        return;
    }
    let f = TestFleet::new();
    f.write_config(
        &[("laptop", "user = \"lap\""), ("server", "user = \"srv\"")],
        "",
    );
    let o = tiffin(&["fleet", "sshd-config"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let blocks = &out[..out.find("# ---- 2.").expect("part 2")];
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    // What another tool or NixOS module appends after the tiffin blocks, meant for everyone.
    let appended = "X11Forwarding yes\nPermitTTY yes\n";
    let config = dir.path().join("sshd_config");
    fs::write(
        &config,
        format!(
            "Port 2222\nListenAddress 127.0.0.1\nHostKey {}\nUsePAM no\n{blocks}{appended}",
            key.display()
        ),
    )
    .unwrap();
    // It applies to everyone else (not swallowed by the last host's block)…
    let admin = sshd_effective(&config, "root");
    assert!(admin.lines().any(|l| l == "x11forwarding yes"), "{admin}");
    assert!(admin.lines().any(|l| l == "permittty yes"), "{admin}");
    assert!(
        admin.lines().any(|l| l == "chrootdirectory none"),
        "{admin}"
    );
    // …and loosens nothing for any host's user.
    for user in ["lap", "srv"] {
        let host = sshd_effective(&config, user);
        for line in [
            "x11forwarding no",
            "permittty no",
            "disableforwarding yes",
            "authenticationmethods publickey",
            "forcecommand internal-sftp",
        ] {
            assert!(
                host.lines().any(|l| l == line),
                "{user} lacks {line:?}:\n{host}"
            );
        }
    }
}

#[test]
fn invalid_fleet_toml_is_named_with_line_and_column_and_nothing_is_published() {
    let f = TestFleet::new();
    f.write_config(&[("a", "")], "");
    f.write("hosts/a/configuration.nix", "{ }\n");
    let path = f.repo().join("fleet.toml");
    let good = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        good.replace("[hosts.a]\n", "[hosts.a]\ncolour = \"red\"\n"),
    )
    .unwrap();
    let o = tiffin(&["fleet", "publish"], &f.repo());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:5:1", path.display())) && err.contains("colour"),
        "{err}"
    );
    assert!(!f.chroot().exists());

    fs::write(&path, good.replace("[hosts.a]", "[hosts.Bad_Host]")).unwrap();
    let o = tiffin(&["fleet", "publish"], &f.repo());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("fleet.toml:4:2:") && err.contains("Bad_Host"),
        "{err}"
    );
}

#[test]
fn publish_exits_1_when_a_host_fails_and_2_for_an_unknown_host() {
    let f = TestFleet::new();
    f.write_config(&[("ok", ""), ("nodir", "")], "");
    f.write("hosts/ok/configuration.nix", "{ }\n");
    let o = tiffin(&["fleet", "publish"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("nodir") && l.contains("FAILED")),
        "{out}"
    );
    assert!(
        err.contains("host nodir:") && err.contains("hosts/nodir: host directory does not exist"),
        "{err}"
    );
    assert_eq!(f.current("ok"), Some(1));

    let o = tiffin(&["fleet", "publish", "ok", "nosuch"], &f.repo());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("\"nosuch\" is not in fleet.toml"), "{err}");

    // Only the named host is looked at.
    let o = tiffin(&["fleet", "publish", "ok"], &f.repo());
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn publish_reports_a_removed_host_and_prune_deletes_it() {
    let f = TestFleet::new();
    f.write_config(&[("keep", ""), ("old", "")], "");
    f.write("hosts/keep/configuration.nix", "{ }\n");
    f.write("hosts/old/configuration.nix", "{ }\n");
    assert_eq!(
        tiffin(&["fleet", "publish"], &f.repo()).status.code(),
        Some(0)
    );
    f.write_config(&[("keep", "")], "");
    let (_, err) = text(&tiffin(&["fleet", "publish"], &f.repo()));
    assert!(
        err.contains("no longer in fleet.toml; `--prune` deletes it"),
        "{err}"
    );
    assert!(f.host_pub("old").is_dir());
    let (_, err) = text(&tiffin(&["fleet", "publish", "--prune"], &f.repo()));
    assert!(err.contains("deleted") && err.contains("old"), "{err}");
    assert!(!f.host_pub("old").exists());
}

#[test]
fn fleet_build_prints_each_system_and_fails_on_a_broken_host() {
    let f = TestFleet::new();
    let nix = fake_nix();
    f.write_config(
        &[("good", ""), ("bad", "")],
        &format!(
            "[build]\nnix = \"{0}\"\nnix_build = \"{0}\"\ncache = false  # the fake nix cannot export\n",
            nix.display()
        ),
    );
    f.write(
        "hosts/good/configuration.nix",
        "{ networking.hostName = \"good\"; }\n",
    );
    f.write("hosts/bad/configuration.nix", "{ }\n");
    f.write("hosts/bad/BROKEN", "");
    let o = tiffin(&["fleet", "build"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.lines().any(|l| l.starts_with("good")
            && l.contains("built")
            && l.contains("-nixos-system-good")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("bad") && l.contains("FAILED")),
        "{out}"
    );
    assert!(
        err.contains("host bad: build failed") && err.contains("BROKEN"),
        "{err}"
    );
    assert!(
        !f.chroot().exists(),
        "`fleet build` wrote under the chroot root"
    );

    let o = tiffin(&["fleet", "build", "good", "--dry-run"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("good") && l.contains("evaluated")),
        "{out}"
    );

    // publish --build refuses the broken host and publishes the other.
    let o = tiffin(&["fleet", "publish", "--build"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert_eq!(f.current("good"), Some(1));
    assert_eq!(f.current("bad"), None);
}
