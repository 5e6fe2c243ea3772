//! Building a host's system with Nix (docs/agent.md step 3), for `fleet build` and
//! `fleet publish --build/--dry-build`. Flake when the host's tree has a `flake.nix`, else
//! `nix-build '<nixpkgs/nixos>'` on its `configuration.nix`. Every command goes through the runner.

use crate::config::BuildConfig;
use crate::runner::Runner;
use std::path::Path;

/// Build for real, or only evaluate (`--dry-run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildMode {
    Build,
    DryRun,
}

/// Why a host's build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{tree}: neither flake.nix nor configuration.nix; cannot build this host")]
    NoEntryPoint { tree: String },
    #[error("build failed: {0}")]
    Failed(String),
    #[error("build failed: {0}")]
    Spawn(std::io::Error),
    #[error("build printed no store path: `{command}` wrote {stdout:?}")]
    NoStorePath { command: String, stdout: String },
}

/// The command line that builds the system of the tree at `tree`.
pub fn build_command(
    tools: &BuildConfig,
    tree: &Path,
    attr: &str,
    mode: BuildMode,
) -> Result<(String, Vec<String>), BuildError> {
    let dry = mode == BuildMode::DryRun;
    if tree.join("flake.nix").is_file() {
        let mut args = crate::nixcli::flake_build_args(tree, attr, None);
        if dry {
            args.push("--dry-run".into());
        }
        Ok((tools.nix.clone(), args))
    } else if tree.join("configuration.nix").is_file() {
        let mut args: Vec<String> = vec![
            "<nixpkgs/nixos>".into(),
            "-A".into(),
            "system".into(),
            "-I".into(),
            format!("nixos-config={}", tree.join("configuration.nix").display()),
            "--no-out-link".into(),
        ];
        if dry {
            args.push("--dry-run".into());
        }
        Ok((tools.nix_build.clone(), args))
    } else {
        Err(BuildError::NoEntryPoint {
            tree: tree.display().to_string(),
        })
    }
}

/// Builds (or dry-builds) the system of a staged tree; a real build returns its store path.
pub fn build_system(
    tools: &BuildConfig,
    runner: &Runner,
    tree: &Path,
    attr: &str,
    mode: BuildMode,
) -> Result<Option<String>, BuildError> {
    let (program, args) = build_command(tools, tree, attr, mode)?;
    let out = runner
        .run_in(&program, &args, Some(tree), None)
        .map_err(BuildError::Spawn)?;
    if !out.success() {
        return Err(BuildError::Failed(crate::nixcli::describe_failure(&out)));
    }
    if mode == BuildMode::DryRun {
        return Ok(None);
    }
    let path = if tree.join("flake.nix").is_file() {
        crate::nixcli::out_path_from_json(&out.stdout)
    } else {
        Some(crate::nixcli::last_line(&out.stdout))
            .filter(|p| p.starts_with('/') && !p.contains(char::is_whitespace))
    };
    match path {
        Some(p) => Ok(Some(p)),
        None => Err(BuildError::NoStorePath {
            command: out.command,
            stdout: out.stdout,
        }),
    }
}
