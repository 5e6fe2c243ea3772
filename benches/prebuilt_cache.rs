//! A machine's first install and a one-package update of the NixOS stand-in (on real Nix):
//! through the host's binary cache (`fleet publish --build`, then the agent's download and
//! import, `build = "prebuilt"`) beside a local evaluation and build of the same system (what
//! `build = "local"` does). Bytes are what the agent read from the publication (a `file://`
//! source here: the files, not the wire); a local build downloads nothing in this lab (the
//! stand-in's packages come from a /bin/sh builder), where a real NixOS would fetch from its
//! substituters. Before each measured run the system's paths are deleted from the store, so
//! both sides start from a store without them.
//!
//! Prints a table, asserts nothing. `cargo bench --bench prebuilt_cache`; `measure` is also
//! called by the suite (benches/suite.rs). `TIFFIN_BENCH_PACKAGES` (default 8) packages of
//! `TIFFIN_BENCH_PACKAGE_KIB` (default 1024) KiB each.

#[path = "common/mod.rs"]
mod common;

use common::env_or;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tiffin::agent::pipeline::build::{build_system, gcroot};
use tiffin::agent::pipeline::prebuilt;
use tiffin::config::{AgentConfig, FleetConfig};
use tiffin::fleet::{publish, BuildMode, PublishOptions};
use tiffin::manifest::Manifest;
use tiffin::publication::Publication;
use tiffin::runner::Runner;
use tiffin::source::FileSource;

const HOST: &str = "laptop";
const NIX_CONFIG: &str = "build-users-group =\nsandbox = false\nsubstituters =\n";

/// One case: seconds and bytes per run, through the cache and built locally.
#[derive(Default)]
pub struct Case {
    pub cache_s: Vec<f64>,
    pub cache_bytes: Vec<f64>,
    pub local_s: Vec<f64>,
    /// Paths the machine lacked.
    pub paths: usize,
    /// The NARs of those paths, bytes.
    pub nar_bytes: u64,
}

pub struct Results {
    pub first: Case,
    pub update: Case,
    pub packages: usize,
    pub package_kib: usize,
}

/// `None` (with the reason printed) when real Nix does not run here.
pub fn measure(runs: usize) -> Option<Results> {
    if !Command::new("nix-store")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("prebuilt_cache: real Nix is not installed; skipped");
        return None;
    }
    std::env::set_var("NIX_CONFIG", NIX_CONFIG);
    let packages = env_or("TIFFIN_BENCH_PACKAGES", 8);
    let package_kib = env_or("TIFFIN_BENCH_PACKAGE_KIB", 1024);
    let mut r = Results {
        first: Case::default(),
        update: Case::default(),
        packages,
        package_kib,
    };
    for run in 0..runs {
        let lab = Lab::new(packages, package_kib, run);
        let g1 = lab.publish(1);
        let all = closure(&g1, None);
        (r.first.paths, r.first.nar_bytes) = (all.len(), nar_bytes(&g1, &all));
        lab.time_both(&g1, &all, &mut r.first);
        let g2 = lab.publish(2);
        let changed = closure(&g2, Some(&g1));
        (r.update.paths, r.update.nar_bytes) = (changed.len(), nar_bytes(&g2, &changed));
        lab.time_both(&g2, &changed, &mut r.update);
        forget(&closure(&g2, None));
        forget(&all);
    }
    Some(r)
}

/// The store paths of `m`'s cache, without those `but` has.
fn closure(m: &Manifest, but: Option<&Manifest>) -> Vec<String> {
    let old: BTreeSet<&str> = but
        .and_then(|b| b.cache.as_ref())
        .map(|c| c.paths.iter().map(|p| p.store_path.as_str()).collect())
        .unwrap_or_default();
    m.cache
        .iter()
        .flat_map(|c| &c.paths)
        .map(|p| p.store_path.clone())
        .filter(|p| !old.contains(p.as_str()))
        .collect()
}

/// The NAR bytes of `paths` in `m`'s cache.
fn nar_bytes(m: &Manifest, paths: &[String]) -> u64 {
    let c = m.cache.as_ref().expect("a cache");
    paths
        .iter()
        .filter_map(|p| c.path(p))
        .map(|p| p.nar.size)
        .sum()
}

/// Deletes `paths` (this run's own) and what refers to them from the store.
fn forget(paths: &[String]) {
    let out = Command::new("nix-store")
        .args(["--query", "--referrers-closure"])
        .args(paths)
        .output()
        .expect("nix-store --query");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = Command::new("nix-store")
        .arg("--delete")
        .args(all.lines())
        .output();
}

struct Lab {
    dir: tempfile::TempDir,
    nonce: String,
    packages: usize,
    package_kib: usize,
}

impl Lab {
    fn new(packages: usize, package_kib: usize, run: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tiffin-bench-cache-")
            .tempdir()
            .expect("temp dir");
        let nonce = format!(
            "bench{run}x{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let host = dir.path().join("repo/hosts").join(HOST);
        fs::create_dir_all(&host).unwrap();
        let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/nixos-standin");
        fs::write(
            host.join("flake.nix"),
            format!(
                "{{\n  inputs.nixpkgs.url = \"path:{}\";\n  outputs = {{ self, nixpkgs }}: {{\n    nixosConfigurations.{HOST} = nixpkgs.lib.nixosSystem {{\n      system = \"{}-linux\";\n      modules = [ ./configuration.nix ];\n    }};\n  }};\n}}\n",
                standin.display(),
                std::env::consts::ARCH
            ),
        )
        .unwrap();
        fs::write(
            dir.path().join("repo/fleet.toml"),
            format!(
                "chroot = \"{}\"\n[hosts.{HOST}]\nkey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\n",
                dir.path().join("chroot").display()
            ),
        )
        .unwrap();
        Self {
            dir,
            nonce,
            packages,
            package_kib,
        }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Publishes generation `version` (package p0 at that version, the others at 1).
    fn publish(&self, version: usize) -> Manifest {
        let pkgs: String = (0..self.packages)
            .map(|i| format!(" p{i} = \"{}\";", if i == 0 { version } else { 1 }))
            .collect();
        fs::write(
            self.repo().join("hosts").join(HOST).join("configuration.nix"),
            format!(
                "{{ ... }}: {{ networking.hostName = \"{HOST}\"; standin.nonce = \"{}\"; standin.kernel = \"6.1-{}\"; standin.packageBytes = {}; standin.packages = {{{pkgs} }}; }}\n",
                self.nonce,
                self.nonce,
                self.package_kib * 1024
            ),
        )
        .unwrap();
        let config = FleetConfig::load(&self.repo()).expect("fleet.toml");
        let opts = PublishOptions {
            build: Some(BuildMode::Build),
            keep_owner: true,
            unsigned: true,
            ..PublishOptions::default()
        };
        publish(&self.repo(), &config, &opts).expect("publish --build");
        Publication::new(&self.dir.path().join("chroot"), HOST)
            .current_manifest()
            .expect("manifest")
            .expect("published")
    }

    fn agent(&self) -> AgentConfig {
        let state = self.dir.path().join("state");
        fs::create_dir_all(&state).unwrap();
        AgentConfig::parse(
            &format!(
                "host = \"{HOST}\"\nsource = \"file://{}\"\nstate_dir = \"{}\"\nbuild = \"prebuilt\"\n",
                self.dir.path().join("chroot").join(HOST).display(),
                state.display()
            ),
            "bench agent.toml",
        )
        .expect("agent.toml")
    }

    /// With `missing` deleted from the store each time: the cache's download and import, then
    /// a local evaluation and build.
    fn time_both(&self, m: &Manifest, missing: &[String], case: &mut Case) {
        let config = self.agent();
        let runner = Runner::new();
        forget(missing);
        let mut source = FileSource::new(self.dir.path().join("chroot").join(HOST));
        let t = Instant::now();
        let done = prebuilt::realise(&runner, &config, &mut source, m, &mut |_| {})
            .unwrap_or_else(|e| panic!("through the cache: {}", e.why));
        case.cache_s.push(t.elapsed().as_secs_f64());
        case.cache_bytes.push(done.downloaded_bytes as f64);
        let _ = gcroot::release(&config.state_dir);

        forget(missing);
        let tree = self.repo().join("hosts").join(HOST);
        let view = tiffin::agent::pipeline::build::build_view(&tree, &config.state_dir)
            .expect("build view");
        let link = gcroot::link(&config.state_dir);
        let t = Instant::now();
        build_system(
            &runner,
            &config.system,
            &view,
            HOST,
            &link,
            std::time::Duration::from_secs(600),
        )
        .expect("local build");
        case.local_s.push(t.elapsed().as_secs_f64());
        let _ = gcroot::release(&config.state_dir);
    }
}

#[allow(dead_code)]
fn main() {
    let runs = env_or("TIFFIN_BENCH_REPS", 3);
    let Some(r) = measure(runs) else { return };
    println!(
        "\n| case | paths fetched | their NARs, bytes | cache: bytes (% of NARs) | cache: s | local build: s |\n|---|---|---|---|---|---|"
    );
    for (what, c) in [
        ("first install", &r.first),
        ("one-package update", &r.update),
    ] {
        let med = |v: &[f64]| common::spread(v).median;
        println!(
            "| {what} | {} | {} | {:.0} ({:.1} %) | {:.2} | {:.2} |",
            c.paths,
            c.nar_bytes,
            med(&c.cache_bytes),
            100.0 * med(&c.cache_bytes) / c.nar_bytes.max(1) as f64,
            med(&c.cache_s),
            med(&c.local_s)
        );
    }
    println!(
        "\n{} packages of {} KiB; {runs} runs; medians.",
        r.packages, r.package_kib
    );
}
