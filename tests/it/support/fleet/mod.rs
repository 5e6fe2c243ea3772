//! Shared by the fleet tests: a fleet repository and chroot root in a temp dir, tree checks, and
//! throw-away system users.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use tiffin::config::FleetConfig;
use tiffin::hash;
use tiffin::manifest::{EntryKind, Manifest, MANIFEST_FILE};

pub const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop";

/// A fleet repository (`repo/`) and a chroot root (`chroot/`) in one temp dir.
pub struct TestFleet {
    pub tmp: tempfile::TempDir,
    /// As root, every host needs a system user of its own: made here, removed on drop.
    users: std::cell::RefCell<std::collections::BTreeMap<String, TestUser>>,
}

impl TestFleet {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("tiffin-fleet-test-")
            .tempdir()
            .expect("temp dir");
        fs::create_dir_all(tmp.path().join("repo")).expect("mkdir repo");
        Self {
            tmp,
            users: Default::default(),
        }
    }
    pub fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }
    pub fn chroot(&self) -> PathBuf {
        self.tmp.path().join("chroot")
    }
    pub fn host_pub(&self, host: &str) -> PathBuf {
        self.chroot().join(host)
    }

    /// The system user of a host that `extra` gives none: as root a fresh user (created once per
    /// host), otherwise the default (the host's name, which need not exist off root).
    fn user_for(&self, host: &str) -> Option<String> {
        if !is_root() {
            return None;
        }
        let mut users = self.users.borrow_mut();
        let u = users
            .entry(host.to_string())
            .or_insert_with(|| TestUser::create("tfh"));
        Some(u.name.clone())
    }

    /// Writes fleet.toml: the given hosts (each with `extra` lines; without a `user =` there, a
    /// user as [`Self::user_for`] gives), and `top` lines at the top.
    pub fn write_config(&self, hosts: &[(&str, &str)], top: &str) {
        let mut s = format!(
            "chroot = \"{}\"\nserver = \"fleet.test\"\n{top}\n",
            self.chroot().display()
        );
        for (h, extra) in hosts {
            s.push_str(&format!("[hosts.{h}]\nkey = \"{KEY}\"\n"));
            if !extra.contains("user =") {
                if let Some(u) = self.user_for(h) {
                    s.push_str(&format!("user = \"{u}\"\n"));
                }
            }
            s.push_str(extra);
            s.push('\n');
        }
        fs::write(self.repo().join("fleet.toml"), s).expect("write fleet.toml");
        if !top.contains("signing_key") {
            self.ensure_signing_key();
        }
    }

    /// The fleet's signing key where `fleet init` and `fleet keygen` put it (publications are
    /// signed by default); made once. Tests of a fleet without one remove `keys/`.
    pub fn ensure_signing_key(&self) {
        let path = self.repo().join(tiffin::config::fleet::DEFAULT_SIGNING_KEY);
        if !path.exists() {
            tiffin::sign::SecretKey::generate()
                .expect("a key")
                .save(&path, "test fleet", false)
                .expect("save the test fleet's key");
        }
    }

    /// The fleet's public signing key file (agents' `trusted_key`).
    pub fn public_key_path(&self) -> PathBuf {
        tiffin::sign::public_path_for(&self.repo().join(tiffin::config::fleet::DEFAULT_SIGNING_KEY))
    }

    pub fn config(&self) -> FleetConfig {
        FleetConfig::load(&self.repo()).expect("fleet.toml parses")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.repo().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, text).expect("write");
    }

    pub fn link(&self, rel: &str, target: &str) {
        let p = self.repo().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        symlink(target, &p).expect("symlink");
    }

    /// The generation `current` points at.
    pub fn current(&self, host: &str) -> Option<u64> {
        let t = fs::read_link(self.host_pub(host).join("current")).ok()?;
        t.strip_prefix("gens").ok()?.to_str()?.parse().ok()
    }

    /// Generation directories present (complete or not), by name.
    pub fn gens_entries(&self, host: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.host_pub(host).join("gens"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The name of the user running the tests.
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("the current user has a name")
}

/// Checks that a generation directory holds exactly the tree its manifest describes, every file
/// with the hash the manifest names. Returns the manifest; Err on the first difference (an
/// `io::ErrorKind::NotFound` error when the generation vanished while reading).
pub fn verify_generation(gen_dir: &Path) -> std::io::Result<Manifest> {
    let mpath = gen_dir.join(MANIFEST_FILE);
    let bytes = fs::read(&mpath)?;
    let m = Manifest::parse(&bytes, &mpath.display().to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let tree = gen_dir.join("tree");
    for e in &m.entries {
        let p = tree.join(&e.path);
        let meta = fs::symlink_metadata(&p)?;
        match e.kind {
            EntryKind::Dir if meta.is_dir() => {}
            EntryKind::File if meta.is_file() => {
                let (sha, size) = hash::sha256_file(&p)?;
                if Some(sha) != e.sha256 || Some(size) != e.size {
                    return Err(std::io::Error::other(format!(
                        "{}: content differs from the manifest",
                        p.display()
                    )));
                }
            }
            _ => {
                return Err(std::io::Error::other(format!(
                    "{}: wrong kind (manifest says {:?})",
                    p.display(),
                    e.kind
                )))
            }
        }
    }
    let on_disk = list_tree(&tree)?;
    let listed: BTreeSet<String> = m.entries.iter().map(|e| e.path.clone()).collect();
    if on_disk != listed {
        return Err(std::io::Error::other(format!(
            "{}: entries differ from the manifest: extra {:?}, missing {:?}",
            tree.display(),
            on_disk.difference(&listed).collect::<Vec<_>>(),
            listed.difference(&on_disk).collect::<Vec<_>>()
        )));
    }
    Ok(m)
}

/// Every path under `root`, relative, `/`-separated.
pub fn list_tree(root: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type()?.is_dir() {
                stack.push((e.path(), r.clone()));
            }
            out.insert(r);
        }
    }
    Ok(out)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Root is needed: fail under CI, skip (with the reason printed) elsewhere. True: go on.
pub fn require_root(what: &str) -> bool {
    use crate::support::{needs_root, prerequisite};
    prerequisite(what, needs_root("system users and chroot ownership"))
}

/// A system user (and its own group) with a random-suffixed name, removed on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// A system group with a random-suffixed name, removed on drop.
pub struct TestGroup {
    pub name: String,
}

impl TestGroup {
    pub fn create(prefix: &str) -> Self {
        let name = format!("{prefix}{}", unique_suffix());
        let created = (0..50).any(|_| {
            let ok = Command::new("groupadd")
                .args(["--system", &name])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            ok
        });
        assert!(created, "groupadd {name}");
        Self { name }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            match Command::new("groupdel").arg(&self.name).status() {
                Ok(s) if s.success() => break,
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }
}

fn unique_suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().rotate_left(16);
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let c = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{n:08x}{c}")
}

impl TestUser {
    /// A user whose primary group is `group` (not a group of its own): what the sshd contract
    /// must not have, since the group may read the host's publication.
    pub fn create_in_group(prefix: &str, group: &TestGroup) -> Self {
        Self::create_with(prefix, &["--gid", &group.name])
    }

    pub fn create(prefix: &str) -> Self {
        Self::create_with(prefix, &["--user-group"])
    }

    fn create_with(prefix: &str, group_args: &[&str]) -> Self {
        let suffix = unique_suffix();
        let name = format!("{prefix}{suffix}");
        // Other tests (and other suites) add users at the same time: /etc/passwd may be locked.
        let mut last = String::new();
        let created = (0..50).any(|_| {
            let out = Command::new("useradd")
                .args(group_args)
                .args([
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    &name,
                ])
                .output()
                .expect("run useradd");
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            out.status.success()
        });
        assert!(created, "useradd {name}: {last}");
        let u = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .expect("the new user exists");
        Self {
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            match Command::new("userdel").arg(&self.name).status() {
                Ok(s) if s.success() => break,
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        // userdel removes the user's own group too; this is for systems where it does not.
        if nix::unistd::Group::from_name(&self.name)
            .ok()
            .flatten()
            .is_some()
        {
            let _ = Command::new("groupdel").arg(&self.name).status();
        }
    }
}

/// The fake `nix`/`nix-build` script.
pub fn fake_nix() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fleet/fake-nix")
}
