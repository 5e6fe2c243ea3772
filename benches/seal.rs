//! Sealing's cost in `fleet publish`: 20 hosts × 50 secrets of 1 KiB under `files/` (and a
//! files.toml), published plain and sealed (`[secrets] seal = true`): every file new, nothing
//! changed, one secret per host changed. Prints a table, asserts nothing. Run with
//! `cargo bench --bench seal`; `TIFFIN_BENCH_HOSTS`, `TIFFIN_BENCH_FILES` change the size.

use std::fs;
use std::path::Path;
use std::time::Instant;
use tiffin::config::FleetConfig;
use tiffin::fleet::{publish, PublishOptions};

#[path = "common/mod.rs"]
mod common;

use common::env_or;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9g5bH4raYbZQ1D94NRxk8sAOw40KMQIsLHUMyrpwMs bench";

fn make_fleet(root: &Path, hosts: usize, files: usize, seal: bool) {
    let mut toml = format!(
        "chroot = \"{}\"\n[secrets]\nseal = {seal}\n",
        root.join("chroot").display()
    );
    for h in 0..hosts {
        let name = format!("h{h:03}");
        toml.push_str(&format!("[hosts.{name}]\nkey = \"{KEY}\"\n"));
        write_secrets(root, &name, files, 0);
        fs::write(
            root.join("hosts").join(&name).join("files.toml"),
            "[\"etc/s000\"]\nmode = \"0640\"\n",
        )
        .expect("write files.toml");
    }
    fs::create_dir_all(root.join("chroot")).expect("mkdir chroot");
    fs::write(root.join("fleet.toml"), toml).expect("write fleet.toml");
}

fn write_secrets(root: &Path, host: &str, files: usize, round: usize) {
    let dir = root.join("hosts").join(host).join("files/etc");
    fs::create_dir_all(&dir).expect("mkdir");
    for f in 0..files {
        if round > 0 && f > 0 {
            break;
        }
        let body = format!("{host} {f} {round} {}\n", "x".repeat(1000));
        fs::write(dir.join(format!("s{f:03}")), body).expect("write secret");
    }
}

fn timed(root: &Path, config: &FleetConfig) -> f64 {
    let opts = PublishOptions {
        keep_owner: true,
        unsigned: true,
        ..Default::default()
    };
    let t = Instant::now();
    let r = publish(root, config, &opts).expect("publish");
    assert_eq!(r.failed(), 0, "{:?}", r.hosts.iter().find(|h| h.failed()));
    t.elapsed().as_secs_f64()
}

fn main() {
    let hosts = env_or("TIFFIN_BENCH_HOSTS", 20);
    let files = env_or("TIFFIN_BENCH_FILES", 50);
    println!(
        "fleet publish, {hosts} hosts × {files} secrets of 1 KiB (+ files.toml), 4 hosts at a time"
    );
    println!();
    println!("| case | plain s | sealed s | sealed / plain |");
    println!("|---|---|---|---|");
    let mut rows: Vec<(&str, [f64; 2])> = vec![
        ("every file new", [0.0; 2]),
        ("nothing changed", [0.0; 2]),
        ("one secret per host changed", [0.0; 2]),
    ];
    for (i, seal) in [false, true].into_iter().enumerate() {
        let t = tempfile::tempdir().expect("temp dir");
        make_fleet(t.path(), hosts, files, seal);
        let config = FleetConfig::load(t.path()).expect("fleet.toml");
        rows[0].1[i] = timed(t.path(), &config);
        rows[1].1[i] = timed(t.path(), &config);
        for h in 0..hosts {
            write_secrets(t.path(), &format!("h{h:03}"), files, 1);
        }
        rows[2].1[i] = timed(t.path(), &config);
    }
    for (what, [plain, sealed]) in rows {
        println!(
            "| {what} | {plain:.3} | {sealed:.3} | {:.2} |",
            sealed / plain
        );
    }
}
