//! Step 3: build the fetched tree into a system store path, flake or not (DESIGN §3).

use super::system::command_failure;
use crate::config::SystemConfig;
use crate::runner::Runner;
use std::path::Path;

/// How the tree is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildKind {
    /// `flake.nix` at the top of the tree.
    Flake { attr: String },
    /// `configuration.nix` through `<nixpkgs/nixos>`.
    Classic,
}

impl BuildKind {
    pub fn detect(tree: &Path, host: &str) -> Self {
        if tree.join("flake.nix").is_file() {
            BuildKind::Flake {
                attr: host.to_string(),
            }
        } else {
            BuildKind::Classic
        }
    }
}

/// Builds the tree and returns the system's store path (the last line of stdout).
pub fn build_system(
    runner: &Runner,
    sys: &SystemConfig,
    tree: &Path,
    host: &str,
) -> Result<String, String> {
    let kind = BuildKind::detect(tree, host);
    let tree_s = tree.to_string_lossy();
    let out = match &kind {
        BuildKind::Flake { attr } => {
            let installable =
                format!("path:{tree_s}#nixosConfigurations.{attr}.config.system.build.toplevel");
            runner.run(
                &sys.nix,
                &["build", "--no-link", "--print-out-paths", &installable],
                None,
            )
        }
        BuildKind::Classic => {
            let config = format!("nixos-config={tree_s}/configuration.nix");
            runner.run(
                &sys.nix_build,
                &[
                    "<nixpkgs/nixos>",
                    "-A",
                    "system",
                    "-I",
                    &config,
                    "--no-out-link",
                ],
                None,
            )
        }
    }
    .map_err(|e| e.to_string())?;
    if let Some(why) = command_failure(&out) {
        return Err(why);
    }
    let path = out
        .stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string();
    if !path.starts_with('/')
        || !Path::new(&path)
            .join("bin/switch-to-configuration")
            .exists()
    {
        return Err(format!(
            "`{}` did not print a system store path with bin/switch-to-configuration (got {path:?})",
            out.command
        ));
    }
    Ok(path)
}
