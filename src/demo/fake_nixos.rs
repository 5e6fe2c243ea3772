//! The simulated NixOS of `assets/fake-nixos/`: shell scripts standing in for `nix`,
//! `nix-build`, `nix-env`, `systemd-run` and `switch-to-configuration`, acting on a fake store,
//! profile and current/booted links under one directory. They are embedded so that `tiffin demo`
//! runs from the binary alone; the tests run the same files from the source tree.

use crate::fleet::users::sh_quote;
use crate::fsutil::{self, with_path};
use crate::runner::Runner;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every script, by name. `lib.sh` is sourced by the others.
const SCRIPTS: [(&str, &str); 7] = [
    ("lib.sh", include_str!("../../assets/fake-nixos/lib.sh")),
    ("init", include_str!("../../assets/fake-nixos/init")),
    ("nix", include_str!("../../assets/fake-nixos/nix")),
    (
        "nix-build",
        include_str!("../../assets/fake-nixos/nix-build"),
    ),
    ("nix-env", include_str!("../../assets/fake-nixos/nix-env")),
    (
        "switch-to-configuration",
        include_str!("../../assets/fake-nixos/switch-to-configuration"),
    ),
    (
        "systemd-run",
        include_str!("../../assets/fake-nixos/systemd-run"),
    ),
];

/// The commands the agent (and the demo) call, as wrappers in `<root>/bin` that set
/// `FAKE_NIXOS_ROOT`, so that no environment has to be passed along.
const COMMANDS: [&str; 5] = ["nix", "nix-build", "nix-env", "systemd-run", "init"];

/// A simulated NixOS machine on disk.
#[derive(Clone, Debug)]
pub struct FakeNixos {
    /// `$FAKE_NIXOS_ROOT`: store, profiles, run/current-system, boot-default, calls.log.
    pub root: PathBuf,
    /// Where the scripts are.
    pub scripts: PathBuf,
}

impl FakeNixos {
    /// Writes the scripts into `scripts` and the wrappers into `root/bin`; `publication` is the
    /// host's `file://` publication, which a system built with the `CUT_NETWORK` knob moves aside
    /// when activated (the machine is cut off the server) and back when another one is.
    pub fn install(scripts: &Path, root: &Path, publication: &Path) -> io::Result<Self> {
        fs::create_dir_all(scripts).map_err(|e| with_path(e, scripts))?;
        for (name, text) in SCRIPTS {
            let mode = if name == "lib.sh" { 0o644 } else { 0o755 };
            fsutil::atomic_write(&scripts.join(name), text.as_bytes(), mode)?;
        }
        let bin = root.join("bin");
        fs::create_dir_all(&bin).map_err(|e| with_path(e, &bin))?;
        let quoted_root = sh_quote(&root.to_string_lossy());
        for cmd in COMMANDS {
            let wrapper = format!(
                "#!/bin/sh\nFAKE_NIXOS_ROOT={quoted_root} exec {} \"$@\"\n",
                sh_quote(&scripts.join(cmd).to_string_lossy())
            );
            fsutil::atomic_write(&bin.join(cmd), wrapper.as_bytes(), 0o755)?;
        }
        fsutil::atomic_write(
            &root.join("publication"),
            format!("{}\n", publication.display()).as_bytes(),
            0o644,
        )?;
        Ok(Self {
            root: root.to_path_buf(),
            scripts: scripts.to_path_buf(),
        })
    }

    pub fn bin(&self, cmd: &str) -> PathBuf {
        self.root.join("bin").join(cmd)
    }

    /// Makes the machine run (and be booted into) the system built from `tree` for `host`, as
    /// before tiffin's first cycle. Returns that system's store path.
    pub fn init(&self, tree: &Path, host: &str) -> anyhow::Result<String> {
        let init = self.bin("init");
        let out = Runner::new().run(
            &init.to_string_lossy(),
            &[tree.as_os_str(), host.as_ref()],
            Some(Duration::from_secs(60)),
        )?;
        if !out.success() {
            anyhow::bail!(
                "the simulated NixOS did not start: {}",
                out.describe_failure()
            );
        }
        Ok(out.stdout.trim().to_string())
    }

    /// The system the machine runs now.
    pub fn current_system(&self) -> Option<PathBuf> {
        fs::canonicalize(self.root.join("run/current-system")).ok()
    }

    /// The `[system]` table of an agent.toml that drives this machine; `files_root` is where the
    /// host tree's `files/` goes.
    pub fn system_section(&self, files_root: &Path) -> String {
        let q = |p: PathBuf| toml_string(&p.to_string_lossy());
        format!(
            "[system]\nnix = {}\nnix_build = {}\nnix_env = {}\nsystemd_run = {}\nprofile = {}\n\
             current_system = {}\nbooted_system = {}\nfiles_root = {}\n",
            q(self.bin("nix")),
            q(self.bin("nix-build")),
            q(self.bin("nix-env")),
            q(self.bin("systemd-run")),
            q(self.root.join("profiles/system")),
            q(self.root.join("run/current-system")),
            q(self.root.join("run/booted-system")),
            q(files_root.to_path_buf()),
        )
    }
}

/// A TOML basic string holding `s` (quotes and backslashes escaped).
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_machine_runs_the_system_built_from_its_tree() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
        let m = FakeNixos::install(
            &d.path().join("scripts"),
            &d.path().join("it's root"),
            &d.path().join("pub"),
        )
        .unwrap();
        let sys = m.init(&tree, "laptop").unwrap();
        assert!(sys.ends_with("-nixos-system-laptop"), "{sys}");
        assert_eq!(m.current_system().unwrap(), PathBuf::from(&sys));
        let section = m.system_section(Path::new("/x"));
        let parsed: toml::Value = toml::from_str(&section).unwrap();
        assert_eq!(
            parsed["system"]["nix"].as_str().unwrap(),
            m.bin("nix").to_str().unwrap()
        );
    }
}
