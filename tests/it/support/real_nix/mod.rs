//! Real Nix in the tests: the settings every Nix command a test causes runs with, the NixOS
//! stand-in (assets/nixos-standin) it builds, and store checks. Use with `mod real_nix;`.
//!
//! Nix runs as root in single-user mode with no build users, no sandbox and no substituters
//! (nothing is fetched: every store path comes from a /bin/sh builder). Under `CI=true` a
//! missing Nix fails the test; elsewhere the test is skipped with the reason printed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `NIX_CONFIG` every Nix command of a test runs with. It enables no experimental feature:
/// tiffin must name the ones it needs on its command lines, as on Debian's or a stock NixOS's Nix.
pub const NIX_CONFIG: &str = "build-users-group =\nsandbox = false\nsubstituters =\n";

/// The NixOS stand-in's directory (`<nixpkgs>` for classic builds, a flake input for flakes).
pub fn standin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/nixos-standin")
}

/// The environment a process that runs Nix needs: the settings and `<nixpkgs>` = the stand-in.
pub fn env() -> Vec<(&'static str, String)> {
    vec![
        ("NIX_CONFIG", NIX_CONFIG.to_string()),
        ("NIX_PATH", format!("nixpkgs={}", standin_dir().display())),
    ]
}

/// Sets [`env`] in this test process, for library calls that run Nix (every test sets the same
/// values, so concurrent tests agree).
pub fn set_process_env() {
    for (k, v) in env() {
        std::env::set_var(k, v);
    }
}

/// True when real Nix (`nix`, `nix-build`, `nix-env`, `nix-store`) runs; false (skip, with the
/// reason printed) when not, except under `CI=true`, where a missing Nix fails the test.
pub fn available(test: &str) -> bool {
    crate::support::prerequisite(test, missing())
}

/// `None` when real Nix (`nix`, `nix-build`, `nix-env`, `nix-store`) runs, else why not.
pub fn missing() -> Option<String> {
    let ok = Command::new("nix")
        .arg("--version")
        .envs(env())
        .output()
        .is_ok_and(|o| o.status.success())
        && ["nix-build", "nix-env", "nix-store"].iter().all(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let why = "needs real Nix (nix, nix-build, nix-env, nix-store; `packaging/deps.sh` installs Debian's nix-bin)";
    (!ok).then(|| why.to_string())
}

/// The `system` Nix builds for here (`x86_64-linux`, `aarch64-linux`…).
pub fn nix_system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}

/// A host's `flake.nix` on the stand-in: `nixosConfigurations.<attr>` from ./configuration.nix.
pub fn flake_nix(attr: &str) -> String {
    format!(
        r#"{{
  inputs.nixpkgs.url = "path:{standin}";
  outputs = {{ self, nixpkgs }}: {{
    nixosConfigurations.{attr} = nixpkgs.lib.nixosSystem {{
      system = "{system}";
      modules = [ ./configuration.nix ];
    }};
  }};
}}
"#,
        standin = standin_dir().display(),
        system = nix_system(),
    )
}

/// Store paths (top-level entries of /nix/store) any file of which contains `marker`.
pub fn store_paths_containing(marker: &str) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-r", "-l", "-F", "--", marker, "/nix/store"])
        .output()
        .expect("run grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('/').take(4).collect::<Vec<_>>().join("/"))
        .collect()
}

/// Builds the stand-in system of a classic `configuration.nix` (without a GC root) and returns
/// its store path.
pub fn build_classic(configuration: &Path) -> PathBuf {
    let out = Command::new("nix-build")
        .args(["<nixpkgs/nixos>", "-A", "system", "-I"])
        .arg(format!("nixos-config={}", configuration.display()))
        .arg("--no-out-link")
        .envs(env())
        .output()
        .expect("run nix-build");
    assert!(
        out.status.success(),
        "nix-build of {}: {}",
        configuration.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A unique string no store path holds yet.
pub fn unique_marker(what: &str) -> String {
    let mut b = [0u8; 12];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    format!("tiffin-{what}-{}", hex::encode(b))
}
