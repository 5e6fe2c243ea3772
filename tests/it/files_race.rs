//! files/ against a local user who races the agent: a real unprivileged user who owns a
//! directory under `files_root` swaps a parent of an installed file for a symlink to a root-only
//! directory (`renameat2(RENAME_EXCHANGE)` in a tight loop) while the agent installs. Nothing may
//! ever land outside `files_root`, and the cycles that lose the race fail cleanly and roll back.

use crate::pipeline_support;

use pipeline_support::Machine;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiffin::agent::pipeline::files;
use tiffin::manifest::{entries_of, walk_tree, Manifest};
use tiffin::runner::Runner;

const CYCLES: usize = 200;

/// A real user with a random suffix, removed on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn new() -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("tfrace{:x}{:x}", std::process::id() & 0xfff, n & 0xfffff);
        let mut last = String::new();
        for _ in 0..30 {
            let out = Command::new("useradd")
                .args(["-M", "-U", "-s", "/usr/sbin/nologin", &name])
                .output()
                .expect("run useradd");
            if out.status.success() {
                let u = nix::unistd::User::from_name(&name).unwrap().unwrap();
                return Self {
                    name,
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                };
            }
            // Another test may hold the lock on /etc/passwd.
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("useradd {name}: {last}");
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// The racing user's process: this test binary again, running [`swapper`], which drops to the
/// user before it starts swapping. Killed on drop.
struct Swapper(Child);

impl Swapper {
    fn start(user: &TestUser, dir: &Path) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "files_race::swapper",
                "--ignored",
                "--test-threads=1",
            ])
            .env("TIFFIN_RACE_DIR", dir)
            .env("TIFFIN_RACE_UID", user.uid.to_string())
            .env("TIFFIN_RACE_GID", user.gid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the swapper");
        // Running once `sub` has been seen as the symlink.
        let sub = dir.join("sub");
        let start = Instant::now();
        while !fs::symlink_metadata(&sub).is_ok_and(|m| m.file_type().is_symlink()) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the swapper never swapped {}",
                sub.display()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Self(child)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test of its own: the racing user's loop, started by the tests below as a child.
#[test]
#[ignore = "started by the race tests as the unprivileged user"]
fn swapper() {
    let Ok(dir) = std::env::var("TIFFIN_RACE_DIR") else {
        return;
    };
    let num = |k: &str| std::env::var(k).unwrap().parse::<u32>().unwrap();
    let (uid, gid) = (num("TIFFIN_RACE_UID"), num("TIFFIN_RACE_GID"));
    nix::unistd::setgroups(&[]).unwrap();
    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).unwrap();
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).unwrap();
    assert!(!nix::unistd::geteuid().is_root());
    let (a, b) = (
        PathBuf::from(&dir).join("sub"),
        PathBuf::from(&dir).join("sub-link"),
    );
    let parent = nix::unistd::getppid();
    let start = Instant::now();
    for n in 0u64.. {
        let _ = nix::fcntl::renameat2(None, &a, None, &b, nix::fcntl::RenameFlags::RENAME_EXCHANGE);
        if n % 4096 == 0
            && (nix::unistd::getppid() != parent || start.elapsed() > Duration::from_secs(120))
        {
            return;
        }
    }
}

/// Everything about the root-only directory that must never change.
fn snapshot(outside: &Path) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
    let mut v = Vec::new();
    let m = fs::symlink_metadata(outside).unwrap();
    v.push((".".into(), m.mode(), m.uid(), m.gid(), Vec::new()));
    for e in fs::read_dir(outside).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        v.push((
            e.file_name().to_string_lossy().into_owned(),
            m.mode(),
            m.uid(),
            m.gid(),
            fs::read(e.path()).unwrap_or_default(),
        ));
    }
    v.sort();
    v
}

/// `<files_root>/home/<user>/{sub, sub-link -> outside}`, the user's; `outside` root-only with
/// one file in it. Returns the user's directory.
fn lay_out(files_root: &Path, outside: &Path, user: &TestUser) -> PathBuf {
    fs::create_dir_all(outside).unwrap();
    fs::set_permissions(outside, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(outside.join("authorized_keys"), "root's own\n").unwrap();
    fs::set_permissions(
        outside.join("authorized_keys"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let home = files_root.join("home").join(&user.name);
    fs::create_dir_all(home.join("sub")).unwrap();
    std::os::unix::fs::symlink(outside, home.join("sub-link")).unwrap();
    for p in [home.clone(), home.join("sub")] {
        std::os::unix::fs::chown(&p, Some(user.uid), Some(user.gid)).unwrap();
    }
    std::os::unix::fs::lchown(home.join("sub-link"), Some(user.uid), Some(user.gid)).unwrap();
    home
}

#[test]
fn a_user_swapping_a_parent_for_a_symlink_never_gets_a_write_outside_files_root() {
    if !pipeline_support::have_root(
        "a_user_swapping_a_parent_for_a_symlink_never_gets_a_write_outside_files_root",
    ) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("tiffin-race-")
        .tempdir()
        .unwrap();
    // The user must reach its own directory under files_root.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let files_root = dir.path().join("fsroot");
    let state = dir.path().join("state");
    let repo = dir.path().join("repo");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&files_root).unwrap();
    fs::create_dir_all(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let user = TestUser::new();
    let home = lay_out(&files_root, &outside, &user);
    let rel = format!("home/{}/sub/authorized_keys", user.name);
    fs::create_dir_all(repo.join("files").join(&rel).parent().unwrap()).unwrap();
    fs::write(
        repo.join("files.toml"),
        format!(
            "[{rel:?}]\nmode = \"0600\"\nowner = \"{u}\"\ngroup = \"{u}\"\n",
            u = user.name
        ),
    )
    .unwrap();
    let before = snapshot(&outside);
    let runner = Runner::new();
    let install = |cycle: usize| {
        fs::write(repo.join("files").join(&rel), format!("key {cycle}\n")).unwrap();
        let walked = walk_tree(&repo, &repo).unwrap();
        let manifest = Manifest::new("h", cycle as u64 + 1, "now".into(), entries_of(&walked));
        files::plan(&repo, &manifest, &files_root, &state)
            .and_then(|plan| files::apply(plan, &state, &runner))
    };
    // Without the race, once.
    install(0).unwrap();
    files::keep_pending(&state, true).unwrap();

    let swapper = Swapper::start(&user, &home);
    let (mut installed, mut lost) = (0, 0);
    let started = Instant::now();
    // At least CYCLES installs; on a machine so loaded that every one of them won (or lost) the
    // race, more, until both happened (at most ten times as many).
    let mut cycle = 0;
    while cycle < CYCLES || ((installed == 0 || lost == 0) && cycle < 10 * CYCLES) {
        cycle += 1;
        let record_before = fs::read(state.join("installed-files.json")).ok();
        match install(cycle) {
            Ok(_) => {
                installed += 1;
                files::keep_pending(&state, true).unwrap();
            }
            Err(e) => {
                lost += 1;
                let msg = e.to_string();
                assert!(msg.contains("symlink"), "cycle {cycle}: {msg}");
                // Putting the user's own file back can lose the race too (and then changes
                // nothing): it is tried again, as the next rollback would.
                let retried = Instant::now();
                while let Err(e) = files::restore_pending(&state, &runner) {
                    assert!(
                        retried.elapsed() < Duration::from_secs(20),
                        "cycle {cycle}: the rollback never finished: {e}"
                    );
                    assert!(e.to_string().contains("symlink"), "cycle {cycle}: {e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(
                    fs::read(state.join("installed-files.json")).ok(),
                    record_before,
                    "cycle {cycle}: the record is rolled back"
                );
            }
        }
        assert_eq!(
            snapshot(&outside),
            before,
            "cycle {cycle}: something changed outside files_root"
        );
    }
    drop(swapper);
    eprintln!(
        "{cycle} cycles in {:?}: {installed} installed, {lost} lost the race and rolled back",
        started.elapsed()
    );
    assert!(
        installed > 0 && lost > 0,
        "the race was not exercised: {installed} installed, {lost} lost"
    );
    // What was installed is the user's, in the user's directory.
    let sub = home.join("sub");
    let real = if fs::symlink_metadata(&sub).unwrap().is_dir() {
        sub
    } else {
        home.join("sub-link")
    };
    let m = fs::metadata(real.join("authorized_keys")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (user.uid, user.gid, 0o600)
    );
}

#[test]
fn a_cycle_that_loses_the_race_fails_at_files_and_leaves_the_previous_files() {
    if !pipeline_support::have_root(
        "a_cycle_that_loses_the_race_fails_at_files_and_leaves_the_previous_files",
    ) {
        return;
    }
    let mut m = Machine::new();
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let user = TestUser::new();
    let outside = m.dir.path().join("outside");
    let home = lay_out(&m.files_root, &outside, &user);
    let rel = format!("home/{}/sub/authorized_keys", user.name);
    m.write(
        "files.toml",
        &format!(
            "[{rel:?}]\nmode = \"0600\"\nowner = \"{u}\"\ngroup = \"{u}\"\n",
            u = user.name
        ),
    );
    m.write("files/etc/aaa", "v0\n");
    m.write(&format!("files/{rel}"), "key 0\n");
    m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let before = snapshot(&outside);

    let swapper = Swapper::start(&user, &home);
    let mut failures = 0;
    for n in 1..=8 {
        m.write("files/etc/aaa", &format!("v{n}\n"));
        m.write(&format!("files/{rel}"), &format!("key {n}\n"));
        let previous = fs::read_to_string(m.files_root.join("etc/aaa")).unwrap();
        let g = m.publish();
        let (code, out) = m.run_once();
        assert_eq!(snapshot(&outside), before, "run {n}: {out}");
        if code == 0 {
            continue;
        }
        failures += 1;
        assert_eq!(code, 1, "{out}");
        let (r, _) = m.report(g, "failed");
        assert_eq!(r["failed_step"], "files", "{r}");
        assert!(r["message"].as_str().unwrap().contains("symlink"), "{r}");
        assert_eq!(
            fs::read_to_string(m.files_root.join("etc/aaa")).unwrap(),
            previous,
            "run {n}: the other file is the previous one"
        );
        if failures == 2 {
            break;
        }
    }
    drop(swapper);
    assert!(failures > 0, "no run lost the race");
    assert_eq!(m.current(), m.initial_system);
}
