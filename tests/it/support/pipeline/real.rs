//! The pipeline's machine on real Nix: the NixOS stand-in (assets/nixos-standin) built by real
//! `nix build`/`nix-build`, a real system profile (`nix-env -p … --set`, real generations) and
//! real store paths; only activation is simulated, on the sandbox root `root/` (run/current-system,
//! boot-default). The fake scripts stay for the tests that stop a step at an exact point.

use super::real_nix;
use super::{Machine, HOST};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
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
            real: true,
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

/// True when the default machine runs on real Nix: always under `CI=true` (a missing Nix fails
/// the test there); elsewhere the fake NixOS stands in when Nix is missing, and says so.
pub fn default_is_real() -> bool {
    static REAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REAL.get_or_init(|| match real_nix::missing() {
        None => {
            real_nix::set_process_env();
            true
        }
        Some(why) => {
            assert!(
                !crate::support::in_ci(),
                "the pipeline tests' machine {why}; CI=true forbids falling back to the fake NixOS"
            );
            eprintln!("pipeline tests: the fake NixOS (assets/fake-nixos) stands in: {why}");
            false
        }
    })
}

/// The host's configuration before any test changes it (the machine's initial system).
pub const FIRST_CONFIGURATION: &str = "{ ... }: { networking.hostName = \"laptop\"; }\n";

/// A host's `flake.nix` on the stand-in whose modules are ./configuration.nix and every file of
/// ./knobs (one `{ standin.<knob> = …; }` each, written by [`Machine::knob`]).
pub fn knob_flake_nix(attr: &str) -> String {
    format!(
        r#"{{
  inputs.nixpkgs.url = "path:{standin}";
  outputs = {{ self, nixpkgs }}: {{
    nixosConfigurations.{attr} = nixpkgs.lib.nixosSystem {{
      system = "{system}";
      modules = [ ./configuration.nix ]
        ++ (if builtins.pathExists ./knobs
            then map (n: ./knobs + "/${{n}}") (builtins.attrNames (builtins.readDir ./knobs))
            else [ ]);
    }};
  }};
}}
"#,
        standin = real_nix::standin_dir().display(),
        system = real_nix::nix_system(),
    )
}

/// The stand-in's knob `name` as the fake NixOS's knob file.
fn fake_knob_file(name: &str) -> &'static str {
    match name {
        "failBuild" => "FAIL_BUILD",
        "noSpace" => "NO_SPACE",
        "failActivate" => "FAIL_ACTIVATE",
        "cutNetwork" => "CUT_NETWORK",
        "cutSshd" => "CUT_SSHD",
        "noSpaceBoot" => "NO_SPACE_BOOT",
        "kernel" => "NEW_KERNEL",
        other => panic!("no knob standin.{other} (see assets/nixos-standin/lib.nix)"),
    }
}

/// The file of a host's tree that turns knob `standin.<name>` on with `nix_value` (a Nix value),
/// as `(path in the tree, content)`: a module under `knobs/` of the flake of [`knob_flake_nix`]
/// on real Nix, the knob's file on the fake.
pub fn knob_file(real: bool, name: &str, nix_value: &str) -> (String, String) {
    let fake = fake_knob_file(name); // an unknown knob fails here, not in Nix
    if real {
        (
            format!("knobs/{name}.nix"),
            format!("{{ standin.{name} = {nix_value}; }}\n"),
        )
    } else if name == "kernel" {
        (
            fake.to_string(),
            format!("{}\n", nix_value.trim_matches('"')),
        )
    } else {
        (fake.to_string(), String::new())
    }
}

impl Machine {
    /// Turns on the stand-in's knob `standin.<name>` (`failBuild`, `noSpace`, `failActivate`,
    /// `cutNetwork`, `cutSshd`, `noSpaceBoot`): a module of the host's flake on real Nix, the
    /// knob's file on the fake.
    pub fn knob(&self, name: &str) {
        self.set_knob(name, "true");
    }

    /// Makes the next system's kernel `version` (a store path of its own: "reboot needed").
    pub fn kernel(&self, version: &str) {
        self.set_knob("kernel", &format!("\"{version}\""));
    }

    /// Turns a knob off again.
    pub fn unknob(&self, name: &str) {
        self.remove(&knob_file(self.real, name, "true").0);
    }

    fn set_knob(&self, name: &str, nix_value: &str) {
        assert!(
            !self.real || self.repo.join("flake.nix").exists(),
            "standin.{name}: the knobs are modules of the host's flake.nix, which this tree lacks"
        );
        let (rel, content) = knob_file(self.real, name, nix_value);
        self.write(&rel, &content);
    }
}

/// A command of `PATH` as an absolute path.
fn in_path(cmd: &str) -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{cmd} is not in PATH"))
}

/// Installs the machine's real-Nix side under `root`: `bin/` with `nix`, `nix-build`,
/// `nix-env` and `nix-store` wrappers that log their command line into `calls.log` (the tests count builds)
/// and run the real command with the tests' Nix settings, the fake `systemd-run` (it logs the
/// unit and runs the command: no systemd here), the system built by real Nix from
/// `tree/configuration.nix` set as profile generation 1 (real `nix-env --set`), running and
/// booted. `publication` is what `standin.cutNetwork` moves aside. Returns the initial system.
pub fn install_real_nixos(root: &Path, publication: &Path, tree: &Path) -> PathBuf {
    for d in ["bin", "run", "profiles"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(
        root.join("publication"),
        format!("{}\n", publication.display()),
    )
    .unwrap();
    let settings: String = real_nix::env()
        .into_iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    let log = root.join("calls.log");
    for cmd in ["nix", "nix-build", "nix-env", "nix-store"] {
        let w = root.join("bin").join(cmd);
        fs::write(
            &w,
            format!(
                "#!/bin/sh\n# Logs the command line (without nix's feature flags), then runs the real {cmd}.\n{settings}( if [ \"${{1:-}}\" = --extra-experimental-features ]; then shift 2; fi; printf '%s\\n' \"{cmd} $*\" ) >> '{log}'\nexec '{real}' \"$@\"\n",
                log = log.display(),
                real = in_path(cmd).display(),
            ),
        )
        .unwrap();
        fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let w = root.join("bin/systemd-run");
    fs::write(
        &w,
        format!(
            "#!/bin/sh\nFAKE_NIXOS_ROOT='{}' exec '{}' \"$@\"\n",
            root.display(),
            super::fake_nixos_dir().join("systemd-run").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();

    let initial = real_nix::build_classic(&tree.join("configuration.nix"));
    let out = Command::new(root.join("bin/nix-env"))
        .arg("-p")
        .arg(root.join("profiles/system"))
        .arg("--set")
        .arg(&initial)
        .output()
        .expect("nix-env --set");
    assert!(out.status.success(), "nix-env --set: {out:?}");
    for l in ["run/current-system", "run/booted-system", "boot-default"] {
        symlink(&initial, root.join(l)).unwrap();
    }
    initial
}

static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// For a test that runs the library's `Pipeline` in this process on the machine at `root`: the
/// stand-in's switch-to-configuration finds its sandbox root in the environment
/// (TIFFIN_STANDIN_ROOT), which is this process's, so one such test runs at a time, holding the
/// guard.
pub fn in_process(root: &Path) -> std::sync::MutexGuard<'static, ()> {
    let guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("TIFFIN_STANDIN_ROOT", root);
    guard
}

impl Machine {
    /// [`in_process`] for this machine.
    pub fn in_process(&self) -> std::sync::MutexGuard<'static, ()> {
        in_process(&self.root)
    }
}
