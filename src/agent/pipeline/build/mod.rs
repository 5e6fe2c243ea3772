//! Step 3: build the fetched tree into a system store path, flake or not (docs/agent.md).

pub mod gcroot;
pub mod nix_version;

use super::files::{FILES_DIR, FILES_TOML};
use super::system::command_failure_within;
use crate::config::SystemConfig;
use crate::runner::Runner;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Builds the tree and returns the system's store path (`nix build --json`'s out path, or the
/// last line `nix-build` prints). The result is linked at `out_link`, a GC root (see
/// [`gcroot`]). The build is killed (its whole process group) after `timeout`
/// (`build_timeout`).
pub fn build_system(
    runner: &Runner,
    sys: &SystemConfig,
    tree: &Path,
    host: &str,
    out_link: &Path,
    timeout: Duration,
) -> Result<String, String> {
    let kind = BuildKind::detect(tree, host);
    let tree_s = tree.to_string_lossy();
    let link_s = out_link.to_string_lossy();
    let out = match &kind {
        BuildKind::Flake { attr } => runner.run(
            &sys.nix,
            &crate::nixcli::flake_build_args(tree, attr, Some(out_link)),
            Some(timeout),
        ),
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
                    "--out-link",
                    &link_s,
                ],
                Some(timeout),
            )
        }
    }
    .map_err(|e| e.to_string())?;
    if let Some(why) = command_failure_within(&out, "build_timeout") {
        return Err(if out.success() || out.timed_out {
            why
        } else {
            crate::nixcli::describe_failure(&out)
        });
    }
    let path = match kind {
        BuildKind::Flake { .. } => {
            crate::nixcli::out_path_from_json(&out.stdout).unwrap_or_default()
        }
        BuildKind::Classic => crate::nixcli::last_line(&out.stdout),
    };
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

/// The tree Nix is given: the fetched tree without `files/` and `files.toml`, in
/// `<state_dir>/build` (hard links where possible). A `path:` flake copies its whole directory into the world-readable Nix
/// store, and the secrets under `files/` must never land there.
pub fn build_view(tree: &Path, state_dir: &Path) -> io::Result<PathBuf> {
    let dest = state_dir.join("build");
    if fs::symlink_metadata(&dest).is_ok() {
        fs::remove_dir_all(&dest).map_err(|e| crate::fsutil::with_path(e, &dest))?;
    }
    copy_tree(tree, &dest, true)?;
    Ok(dest)
}

/// True for what the build view leaves out, by path relative to the tree (`/`-separated):
/// `files/` and `files.toml` at its top. `fleet build` and `publish --build` stage the same view.
pub fn left_out_of_build(rel: &str) -> bool {
    let top = rel.split('/').next().unwrap_or(rel);
    top == FILES_DIR || top == FILES_TOML
}

fn copy_tree(src: &Path, dst: &Path, top: bool) -> io::Result<()> {
    let with = |p: &Path| {
        let p = p.to_path_buf();
        move |e| crate::fsutil::with_path(e, &p)
    };
    fs::create_dir(dst).map_err(with(dst))?;
    for e in fs::read_dir(src).map_err(with(src))? {
        let e = e.map_err(with(src))?;
        let name = e.file_name();
        if top && name.to_str().is_some_and(left_out_of_build) {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        let ft = e.file_type().map_err(with(&from))?;
        if ft.is_dir() {
            copy_tree(&from, &to, false)?;
        } else if ft.is_file() {
            // Fetched trees are never modified in place, so a hard link is as good as a copy.
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(with(&from))?;
            }
        }
        // A fetched tree holds only files and directories (the manifest has no symlinks).
    }
    let perms = fs::metadata(src).map_err(with(src))?.permissions();
    fs::set_permissions(dst, perms).map_err(with(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_view_leaves_out_files_and_files_toml_only_at_the_top() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        fs::create_dir_all(tree.join("files/etc")).unwrap();
        fs::create_dir_all(tree.join("modules/files")).unwrap();
        fs::write(tree.join("files/etc/secret"), "s").unwrap();
        fs::write(tree.join("files.toml"), "").unwrap();
        fs::write(tree.join("flake.nix"), "{}").unwrap();
        fs::write(tree.join("modules/files/x.nix"), "{}").unwrap();
        let state = d.path().join("state");
        fs::create_dir(&state).unwrap();
        for _ in 0..2 {
            let v = build_view(&tree, &state).unwrap();
            assert!(v.join("flake.nix").is_file());
            assert!(v.join("modules/files/x.nix").is_file());
            assert!(!v.join("files").exists() && !v.join("files.toml").exists());
        }
    }
}
