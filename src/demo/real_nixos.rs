//! The demo's laptop on real Nix, when the Nix installed here can build: the NixOS stand-in of
//! `assets/nixos-standin/` (embedded), evaluated and built by real `nix build`, with a real
//! system profile (`nix-env -p … --set`). Only activation is simulated: the stand-in's
//! `switch-to-configuration` moves links under the machine's root, which it finds in
//! `$TIFFIN_STANDIN_ROOT` (set for the demo process and everything it starts).

use super::fake_nixos::toml_string;
use crate::agent::pipeline::{build, commit};
use crate::config::SystemConfig;
use crate::fsutil::{self, with_path};
use crate::runner::Runner;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long building and installing the laptop's first system may take.
const FIRST_SYSTEM_LIMIT: Duration = Duration::from_secs(600);

/// The stand-in's files, by path under its directory.
const STANDIN: [(&str, &str); 4] = [
    (
        "lib.nix",
        include_str!("../../assets/nixos-standin/lib.nix"),
    ),
    (
        "flake.nix",
        include_str!("../../assets/nixos-standin/flake.nix"),
    ),
    (
        "nixos/default.nix",
        include_str!("../../assets/nixos-standin/nixos/default.nix"),
    ),
    (
        "switch-to-configuration.sh",
        include_str!("../../assets/nixos-standin/switch-to-configuration.sh"),
    ),
];

/// Where the stand-in's `switch-to-configuration` finds the machine's root.
pub const ROOT_ENV: &str = "TIFFIN_STANDIN_ROOT";

/// The Nix version when the Nix installed here builds for this user (a one-line derivation is
/// built as a probe), else why not.
pub fn usable() -> Result<String, String> {
    let runner = Runner::new();
    let limit = Some(Duration::from_secs(60));
    let version = runner
        .run("nix", &["--version"], limit)
        .map_err(|e| format!("no `nix` ({e})"))?;
    if !version.success() {
        return Err(version.describe_failure());
    }
    let probe = runner
        .run(
            "nix-build",
            &[
                "--no-out-link",
                "-E",
                "derivation { name = \"tiffin-demo-probe\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo > $out\" ]; }",
            ],
            limit,
        )
        .map_err(|e| format!("no `nix-build` ({e})"))?;
    if !probe.success() {
        return Err(format!(
            "Nix cannot build here: {}",
            crate::nixcli::describe_failure(&probe)
                .lines()
                .next()
                .unwrap_or_default()
        ));
    }
    Ok(version.stdout.trim().to_string())
}

/// The demo's laptop on real Nix.
#[derive(Clone, Debug)]
pub struct RealNixos {
    /// run/current-system, run/booted-system, profiles/system, boot-default, calls.log.
    pub root: PathBuf,
    /// The stand-in (`<nixpkgs>` and the hosts' flake input).
    pub standin: PathBuf,
}

impl RealNixos {
    /// Writes the stand-in into `standin` and prepares `root`; `publication` is what a
    /// `standin.cutNetwork` system moves aside when activated.
    pub fn install(standin: &Path, root: &Path, publication: &Path) -> io::Result<Self> {
        write_standin(standin)?;
        for d in [root.join("run"), root.join("profiles")] {
            fs::create_dir_all(&d).map_err(|e| with_path(e, &d))?;
        }
        fsutil::atomic_write(
            &root.join("publication"),
            format!("{}\n", publication.display()).as_bytes(),
            0o644,
        )?;
        std::env::set_var(ROOT_ENV, root);
        Ok(Self {
            root: root.to_path_buf(),
            standin: standin.to_path_buf(),
        })
    }

    /// Makes the machine run (and be booted into) the system built from `tree` for `host`
    /// (profile generation 1). Returns that system's store path.
    pub fn init(&self, tree: &Path, host: &str) -> anyhow::Result<String> {
        let runner = Runner::new();
        let sys = self.system_config(Path::new("/"));
        let view = build::build_view(tree, &self.root)?;
        let result = self.root.join("init-result");
        let system = build::build_system(&runner, &sys, &view, host, &result, FIRST_SYSTEM_LIMIT)
            .map_err(|e| anyhow::anyhow!("building the laptop's first system: {e}"))?;
        commit::set_profile(&runner, &sys, &system, FIRST_SYSTEM_LIMIT)
            .map_err(|e| anyhow::anyhow!("setting the laptop's profile: {e}"))?;
        for link in ["run/current-system", "run/booted-system", "boot-default"] {
            fsutil::atomic_symlink(Path::new(&system), &self.root.join(link))?;
        }
        // The profile holds the system now.
        let _ = fs::remove_file(&result);
        let _ = fs::remove_dir_all(&view);
        Ok(system)
    }

    fn system_config(&self, files_root: &Path) -> SystemConfig {
        SystemConfig {
            nix: "nix".into(),
            nix_build: "nix-build".into(),
            nix_env: "nix-env".into(),
            systemd_run: String::new(),
            profile: self.root.join("profiles/system"),
            current_system: self.root.join("run/current-system"),
            booted_system: self.root.join("run/booted-system"),
            files_root: files_root.to_path_buf(),
            ..SystemConfig::default()
        }
    }

    /// The `[system]` table of an agent.toml that drives this machine.
    pub fn system_section(&self, files_root: &Path) -> String {
        let s = self.system_config(files_root);
        let q = |p: &Path| toml_string(&p.to_string_lossy());
        format!(
            "[system]\nnix = \"nix\"\nnix_build = \"nix-build\"\nnix_env = \"nix-env\"\nsystemd_run = \"\"\n\
             profile = {}\ncurrent_system = {}\nbooted_system = {}\nfiles_root = {}\n",
            q(&s.profile),
            q(&s.current_system),
            q(&s.booted_system),
            q(&s.files_root),
        )
    }
}

/// Writes the embedded stand-in into `dir`.
pub fn write_standin(dir: &Path) -> io::Result<()> {
    for (rel, text) in STANDIN {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| with_path(e, parent))?;
        }
        fsutil::atomic_write(&p, text.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// The `system` Nix builds for on this machine.
pub fn nix_system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}
