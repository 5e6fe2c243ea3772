//! The pipeline's machine on real Nix: the NixOS stand-in (assets/nixos-standin) built by real
//! `nix build`/`nix-build`, a real system profile (`nix-env -p … --set`, real generations) and
//! real store paths; only activation is simulated, on the sandbox root `root/` (run/current-system,
//! boot-default). The fake scripts stay for the tests that stop a step at an exact point.

use super::real_nix;
use super::{Machine, HOST};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

impl Machine {
    /// A machine running the stand-in system of `{ networking.hostName = "laptop"; }`, whose
    /// tree is a flake (`flake`) or a classic configuration.nix; `None` when real Nix is missing
    /// (then the test skips; under `CI=true` it fails instead).
    pub fn on_real_nix(test: &str, flake: bool, extra: &str) -> Option<Self> {
        if !real_nix::available(test) {
            return None;
        }
        real_nix::set_process_env();
        let dir = tempfile::Builder::new()
            .prefix("tiffin-realnix-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("nixos");
        let publication = dir.path().join("pub").join(HOST);
        let state = dir.path().join("state");
        let files_root = dir.path().join("fsroot");
        let repo = dir.path().join("repo");
        for d in [&root, &publication, &files_root, &repo] {
            fs::create_dir_all(d).unwrap();
        }
        fs::create_dir_all(publication.join("logs")).unwrap();
        fs::create_dir_all(root.join("run")).unwrap();
        fs::create_dir_all(root.join("profiles")).unwrap();
        fs::write(
            root.join("publication"),
            format!("{}\n", publication.display()),
        )
        .unwrap();
        let config = format!("{{ networking.hostName = \"{HOST}\"; }}\n");
        fs::write(repo.join("configuration.nix"), &config).unwrap();
        if flake {
            fs::write(repo.join("flake.nix"), real_nix::flake_nix(HOST)).unwrap();
        }
        // The machine before tiffin: built from the same configuration, profile generation 1.
        let first = dir.path().join("first/configuration.nix");
        fs::create_dir_all(first.parent().unwrap()).unwrap();
        fs::write(&first, &config).unwrap();
        let initial_system = real_nix::build_classic(&first);
        set_profile(&root.join("profiles/system"), &initial_system);
        for l in ["run/current-system", "run/booted-system", "boot-default"] {
            symlink(&initial_system, root.join(l)).unwrap();
        }
        let m = Self {
            config_path: dir.path().join("agent.toml"),
            dir,
            root,
            publication,
            state,
            files_root,
            repo,
            initial_system,
            next_generation: 1,
        };
        m.write_real_config(extra);
        Some(m)
    }

    /// agent.toml with the real Nix commands and no systemd-run.
    pub fn write_real_config(&self, extra: &str) {
        let verify = if extra.contains("verify_timeout") {
            ""
        } else {
            "verify_timeout = \"5s\""
        };
        let text = format!(
            r#"host = "{HOST}"
source = "file://{publication}"
state_dir = "{state}"
socket = "{state}/agent.sock"
http_trigger = ""
{verify}
{extra}

[system]
nix = "nix"
nix_build = "nix-build"
nix_env = "nix-env"
systemd_run = ""
profile = "{root}/profiles/system"
current_system = "{root}/run/current-system"
booted_system = "{root}/run/booted-system"
files_root = "{files_root}"
"#,
            publication = self.publication.display(),
            state = self.state.display(),
            root = self.root.display(),
            files_root = self.files_root.display(),
        );
        fs::write(&self.config_path, text).unwrap();
    }

    /// `tiffin agent --once` with info logging: the exit code and what it printed.
    pub fn run_once_verbose(&self) -> (i32, String) {
        let out = self
            .once_command()
            .env("RUST_LOG", "info")
            .output()
            .expect("running tiffin");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// The profile's generations as `nix-env --list-generations` counts them.
    pub fn profile_generations(&self) -> usize {
        let out = Command::new("nix-env")
            .arg("-p")
            .arg(self.root.join("profiles/system"))
            .arg("--list-generations")
            .envs(real_nix::env())
            .output()
            .expect("nix-env --list-generations");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }
}

fn set_profile(profile: &Path, system: &Path) {
    let out = Command::new("nix-env")
        .arg("-p")
        .arg(profile)
        .arg("--set")
        .arg(system)
        .envs(real_nix::env())
        .output()
        .expect("nix-env --set");
    assert!(out.status.success(), "nix-env --set: {out:?}");
}
