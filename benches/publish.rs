//! Publishing 200 hosts × 300 files (20 of them shared from common/ through a symlink): every
//! file new, nothing changed, one shared module changed — next to `rsync -rltgoDL --delete` of
//! each host directory into a chroot (what bento does), in the same run, on the same disk.
//! Prints a table, asserts nothing. Run with `make bench` (release build).
//! `TIFFIN_BENCH_HOSTS`, `TIFFIN_BENCH_FILES`, `TIFFIN_BENCH_REPS` shrink or grow it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tiffin::config::FleetConfig;
use tiffin::fleet::{publish, PublishOptions};

const JOBS: usize = 4;
const SHARED: usize = 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic pseudo-random text so that files differ.
fn body(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut s = String::with_capacity(len + 32);
    s.push_str("{ config, ... }: {\n");
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("  # {x:016x}\n"));
    }
    s.push_str("}\n");
    s
}

fn make_fleet(root: &Path, hosts: usize, files: usize) -> (u64, usize) {
    let mut bytes = 0u64;
    let own = files.saturating_sub(SHARED);
    for m in 0..SHARED {
        let b = body(m as u64, 2048);
        bytes += b.len() as u64 * hosts as u64;
        let p = root.join(format!("common/modules/m{m:02}.nix"));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, b).expect("write");
    }
    let mut toml = format!("chroot = \"{}\"\n", root.join("chroot-tiffin").display());
    for h in 0..hosts {
        let name = format!("h{h:03}");
        let dir = root.join("hosts").join(&name);
        for f in 0..own {
            let b = body((h * 100_000 + f) as u64 + 1000, 512 + (f % 7) * 512);
            bytes += b.len() as u64;
            let p = dir.join(format!("sub{}/f{f:03}.nix", f % 10));
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, b).expect("write");
        }
        symlink("../../common", dir.join("common")).expect("symlink");
        toml.push_str(&format!(
            "[hosts.{name}]\nkey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@{name}\"\n"
        ));
    }
    fs::write(root.join("fleet.toml"), toml).expect("write fleet.toml");
    (bytes, hosts * (own + SHARED))
}

/// Flushes what earlier steps left dirty, so that no step pays for another's writeback.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn tiffin_publish(root: &Path, config: &FleetConfig) -> f64 {
    settle();
    let t = Instant::now();
    let r = publish(root, config, &PublishOptions::default()).expect("publish");
    assert_eq!(
        r.failed(),
        0,
        "publish failed: {:?}",
        r.hosts.iter().find(|h| h.failed())
    );
    t.elapsed().as_secs_f64()
}

/// `rsync -rltgoDL --delete hosts/<h>/ <chroot>/<h>/tree/` for every host, JOBS at a time.
fn rsync_all(root: &Path, hosts: usize, dest: &Path) -> f64 {
    let names: Vec<String> = (0..hosts).map(|h| format!("h{h:03}")).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    settle();
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..JOBS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(name) = names.get(i) else { break };
                let to: PathBuf = dest.join(name).join("tree");
                fs::create_dir_all(&to).expect("mkdir");
                let st = Command::new("rsync")
                    .arg("-rltgoDL")
                    .arg("--delete")
                    .arg(format!("{}/", root.join("hosts").join(name).display()))
                    .arg(format!("{}/", to.display()))
                    .status()
                    .expect("run rsync");
                assert!(st.success(), "rsync {name}");
            });
        }
    });
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let hosts = env_or("TIFFIN_BENCH_HOSTS", 200);
    let files = env_or("TIFFIN_BENCH_FILES", 300);
    let reps = env_or("TIFFIN_BENCH_REPS", 3).max(1);
    let rsync_ok = Command::new("rsync").arg("--version").output().is_ok();
    let dir = tempfile::Builder::new()
        .prefix("tiffin-bench-publish-")
        .tempdir_in("/var/tmp")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir");
    let root = dir.path();
    let (bytes, total_files) = make_fleet(root, hosts, files);
    let mut config = FleetConfig::load(root).expect("fleet.toml");
    // Every host publishes as the current user: fleet.toml refuses one user for several hosts,
    // and 200 system users are not worth creating for a benchmark (the chown work is the same).
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("current user");
    for h in config.hosts.values_mut() {
        h.user = Some(me.clone());
    }
    let tiffin_chroot = root.join("chroot-tiffin");
    let rsync_chroot = root.join("chroot-rsync");

    let (mut tc, mut rc, mut tn, mut rn, mut tm, mut rm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for rep in 0..reps {
        let _ = fs::remove_dir_all(&tiffin_chroot);
        let _ = fs::remove_dir_all(&rsync_chroot);
        tc.push(tiffin_publish(root, &config));
        if rsync_ok {
            rc.push(rsync_all(root, hosts, &rsync_chroot));
        }
        tn.push(tiffin_publish(root, &config));
        if rsync_ok {
            rn.push(rsync_all(root, hosts, &rsync_chroot));
        }
        fs::write(
            root.join("common/modules/m00.nix"),
            body(7_000 + rep as u64, 2048),
        )
        .expect("write");
        tm.push(tiffin_publish(root, &config));
        if rsync_ok {
            rm.push(rsync_all(root, hosts, &rsync_chroot));
        }
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "publish: {hosts} hosts × {files} files ({SHARED} shared through common/), {total_files} files, {mb:.1} MB; {JOBS} hosts at a time; median of {reps}"
    );
    println!();
    println!("| case | tiffin fleet publish s | rsync -rltgoDL --delete s | tiffin / rsync |");
    println!("|---|---|---|---|");
    for (case, t, r) in [
        ("everything new (cold)", tc, rc),
        ("nothing changed", tn, rn),
        ("one shared module changed", tm, rm),
    ] {
        let t = median(t);
        if r.is_empty() {
            println!("| {case} | {t:.2} | rsync not installed | - |");
        } else {
            let r = median(r);
            println!("| {case} | {t:.2} | {r:.2} | {:.2} |", t / r);
        }
    }
    println!();
    println!(
        "tiffin hashes every file, writes a manifest, makes each new generation durable (syncfs) and switches it atomically; rsync compares size+mtime, writes in place and does not sync."
    );
}
