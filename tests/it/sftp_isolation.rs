//! What a host's key can and cannot do on the real server (chroot, internal-sftp, modes of the
//! sshd contract), and the agent's pinning of the server's host key.

use crate::support;

use ssh2::{ErrorCode, FileStat, OpenFlags, OpenType, Session, Sftp};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use support::publication::write_config_tree;
use support::sshd::Sshd;
use tiffin::agent::pipeline::fetch::FetchDirs;
use tiffin::source::{self, SourceError};

const SFTP_NO_SUCH_FILE: i32 = 2;
const SFTP_PERMISSION_DENIED: i32 = 3;

/// Logs in as `host`'s user with its key, straight through ssh2 (no tiffin code involved).
fn login(srv: &Sshd, host: &str) -> (Session, Sftp) {
    let tcp = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    let mut s = Session::new().unwrap();
    s.set_tcp_stream(tcp);
    s.handshake().unwrap();
    let h = srv.host(host);
    s.userauth_pubkey_file(&h.user, None, &h.identity, None)
        .unwrap_or_else(|e| panic!("login as {}: {e}\n{}", h.user, srv.log_text()));
    let sftp = s.sftp().unwrap();
    (s, sftp)
}

fn sftp_code<T>(r: Result<T, ssh2::Error>, what: &str) -> i32 {
    match r {
        Ok(_) => panic!("{what}: allowed, but must be refused"),
        Err(e) => match e.code() {
            ErrorCode::SFTP(c) => c,
            other => panic!("{what}: {other:?} {e}"),
        },
    }
}

fn assert_denied<T>(r: Result<T, ssh2::Error>, what: &str) {
    assert_eq!(sftp_code(r, what), SFTP_PERMISSION_DENIED, "{what}");
}

/// Another host's files do not exist for this one: every path to them stays in its chroot.
fn assert_invisible<T>(r: Result<T, ssh2::Error>, what: &str) {
    let c = sftp_code(r, what);
    assert!(
        c == SFTP_NO_SUCH_FILE || c == SFTP_PERMISSION_DENIED,
        "{what}: SFTP code {c}"
    );
}

#[test]
fn a_host_key_reaches_only_its_own_chroot_and_writes_only_its_logs() {
    let Some(srv) = Sshd::start(&["alpha", "beta"]) else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    write_config_tree(src.path(), 5, 200, 1);
    srv.publish("alpha", 1, src.path());
    srv.publish("beta", 1, src.path());
    let (_s, sftp) = login(&srv, "alpha");

    // What alpha sees is its own publication, nothing else.
    let mut names: Vec<String> = sftp
        .readdir(Path::new("/"))
        .unwrap()
        .into_iter()
        .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    assert_eq!(names, ["backup", "current", "current.txt", "gens", "logs"]);
    let mut buf = String::new();
    sftp.open(Path::new("/gens/1/tree/configuration.nix"))
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    assert!(buf.contains("imports"));
    // The agent's symlink check (REALPATH) sees a missing file as missing, like a read would:
    // a generation pruned under a download is then retried, not mistaken for tampering.
    assert_eq!(
        sftp_code(
            sftp.realpath(Path::new("/gens/9/tree/x.nix")),
            "realpath of a missing file"
        ),
        SFTP_NO_SUCH_FILE
    );

    // Beta's publication, by every path that would lead there without the chroot.
    let beta_dir = srv.host("beta").dir.clone();
    for base in [
        "/../beta".to_string(),
        "../beta".to_string(),
        beta_dir.display().to_string(),
    ] {
        assert_invisible(sftp.readdir(Path::new(&base)), &format!("list {base}"));
        assert_invisible(
            sftp.readlink(Path::new(&format!("{base}/current"))),
            &format!("readlink {base}/current"),
        );
        assert_invisible(
            sftp.open(Path::new(&format!("{base}/gens/1/manifest.json"))),
            &format!("read {base}/gens/1/manifest.json"),
        );
        assert_invisible(
            sftp.open_mode(
                Path::new(&format!("{base}/logs/planted.json")),
                OpenFlags::WRITE | OpenFlags::TRUNCATE,
                0o600,
                OpenType::File,
            ),
            &format!("write {base}/logs/planted.json"),
        );
    }
    assert_eq!(fs::read_dir(beta_dir.join("logs")).unwrap().count(), 0);

    // Its own tree, manifest and `current` are read-only.
    let write = |p: &str| {
        sftp.open_mode(
            Path::new(p),
            OpenFlags::WRITE | OpenFlags::TRUNCATE,
            0o644,
            OpenType::File,
        )
    };
    assert_denied(
        write("/gens/1/tree/configuration.nix"),
        "overwrite a tree file",
    );
    assert_denied(write("/gens/1/tree/new.nix"), "create a tree file");
    assert_denied(write("/gens/1/manifest.json"), "overwrite the manifest");
    assert_denied(write("/planted"), "create a file at the chroot root");
    assert_denied(
        sftp.mkdir(Path::new("/gens/2"), 0o755),
        "create a generation",
    );
    assert_denied(sftp.unlink(Path::new("/current")), "remove current");
    assert_denied(
        sftp.rename(Path::new("/current"), Path::new("/logs/current"), None),
        "move current away",
    );
    // OpenSSH swaps the SYMLINK arguments; with two new names in / it is refused either way.
    assert_denied(
        sftp.symlink(Path::new("/current2"), Path::new("/current3")),
        "make another link",
    );
    assert_denied(
        sftp.unlink(Path::new("/gens/1/tree/configuration.nix")),
        "remove a tree file",
    );
    assert_denied(
        sftp.setstat(
            Path::new("/gens/1/tree/configuration.nix"),
            FileStat {
                size: None,
                uid: None,
                gid: None,
                perm: Some(0o666),
                atime: None,
                mtime: None,
            },
        ),
        "chmod a tree file",
    );
    assert_eq!(
        fs::read_link(srv.host("alpha").dir.join("current")).unwrap(),
        Path::new("gens/1")
    );

    // logs/ is the one place it writes.
    let mut f = write("/logs/report.json").unwrap();
    f.write_all(b"{}").unwrap();
    f.close().unwrap();
    let written = srv.host("alpha").dir.join("logs/report.json");
    assert_eq!(fs::read(written).unwrap(), b"{}");
}

#[test]
fn a_server_with_another_host_key_is_refused_with_both_fingerprints_before_login() {
    let Some(srv) = Sshd::start(&["alpha", "beta"]) else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    write_config_tree(src.path(), 5, 200, 1);
    srv.publish("alpha", 1, src.path());
    let state = tempfile::tempdir().unwrap();
    let mut cfg = srv.agent_config("alpha", srv.port(), state.path());
    let (wrong, pinned) = srv.wrong_known_hosts();
    cfg.known_hosts = wrong;

    let e = source::open(&cfg)
        .err()
        .expect("a changed host key is refused");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, SourceError::HostKey { .. }), "{msg}");
    let actual = srv.host_key_fingerprint();
    assert!(
        msg.contains(&actual),
        "server key {actual} not named: {msg}"
    );
    assert!(
        msg.contains(&pinned),
        "pinned key {pinned} not named: {msg}"
    );
    assert!(actual != pinned);
    assert!(FetchDirs::new(state.path()).local_tree().unwrap().is_none());
    assert!(!state.path().join("tree").exists());

    // An unknown server (no entry at all) is refused the same way.
    let empty = srv.root.join("etc/known_hosts-empty");
    fs::write(&empty, "").unwrap();
    cfg.known_hosts = empty;
    let msg = source::open(&cfg)
        .err()
        .expect("an unknown host is refused")
        .to_string();
    assert!(msg.contains(&actual) && msg.contains("no entry"), "{msg}");

    // Another host's key for this host's user: an authentication error, not a hang or a crash.
    let mut other_key = srv.agent_config("alpha", srv.port(), state.path());
    other_key.identity = srv.host("beta").identity.clone();
    let e = source::open(&other_key)
        .err()
        .expect("beta's key does not open alpha");
    assert!(matches!(e, SourceError::Auth { .. }), "{e}");
    assert!(e.to_string().contains("refused the key"), "{e}");
    // A missing identity file says so.
    other_key.identity = srv.root.join("etc/no-such-key");
    let e = source::open(&other_key).err().expect("no key, no login");
    assert!(
        matches!(e, SourceError::Auth { .. }) && e.to_string().contains("no-such-key"),
        "{e}"
    );

    // The refusal came before authentication: sshd never saw the agent's key accepted. With
    // the right file it does, which shows the log would tell.
    let user = &srv.host("alpha").user;
    let accepted = format!("Accepted publickey for {user}");
    assert!(!srv.log_text().contains(&accepted), "{}", srv.log_text());
    let cfg = srv.agent_config("alpha", srv.port(), state.path());
    let s = source::open(&cfg).unwrap();
    drop(s);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(srv.log_text().contains(&accepted), "{}", srv.log_text());
}

/// Runs `cat path` as `user` with all of its groups (primary and supplementary, as a login
/// gets them); true when it could read the file.
fn can_read_as(user: &str, path: &Path) -> bool {
    let u = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {user}"));
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={}", u.uid),
            &format!("--regid={}", u.gid),
            "--init-groups",
            "cat",
        ])
        .arg(path)
        .output()
        .expect("run setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("Permission denied"),
        "setpriv cat {} as {user}: {err}",
        path.display()
    );
    out.status.success()
}

#[test]
fn one_host_cannot_read_another_hosts_publication_through_group_access() {
    let Some(srv) = Sshd::start(&["alpha", "beta"]) else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    write_config_tree(src.path(), 3, 100, 1);
    srv.publish("alpha", 1, src.path());
    srv.publish("beta", 1, src.path());
    let (alpha, beta) = (srv.host("alpha"), srv.host("beta"));
    // Each user has a primary group of its own, and both are in the shared group sshd allows.
    assert_ne!(alpha.gid, beta.gid);
    assert_ne!(alpha.gid, srv.gid());

    // Both log in through the real sshd (the shared group is still what sshd matches).
    login(&srv, "alpha");
    login(&srv, "beta");
    for (me, other) in [(alpha, beta), (beta, alpha)] {
        let mine = me.dir.join("gens/1/manifest.json");
        let theirs = other.dir.join("gens/1/manifest.json");
        let their_file = other.dir.join("gens/1/tree/configuration.nix");
        assert_eq!(
            fs::metadata(&theirs)
                .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
                .unwrap(),
            other.gid,
            "the publication's group is its host user's own"
        );
        assert!(can_read_as(&me.user, &mine), "{} reads its own", me.user);
        assert!(
            !can_read_as(&me.user, &theirs) && !can_read_as(&me.user, &their_file),
            "{} read {}'s publication through a group",
            me.user,
            other.host
        );
    }
}
