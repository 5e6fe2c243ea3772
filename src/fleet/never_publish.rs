//! What no host's tree may reach, through whatever symlink: the signing key, `keys/`, the
//! repository's `.git` and every path fleet.toml lists under `never_publish`. A host whose tree
//! reaches one is refused with an error naming the link (or the path) it is reached through.

use crate::config::FleetConfig;
use crate::manifest::WalkedEntry;
use std::fs;
use std::path::{Path, PathBuf};

/// A host's tree reaches something that is never published.
#[derive(Debug, thiserror::Error)]
#[error("{link}: reaches {target} ({what}), which is never published; remove the link or move the file out of the way")]
pub struct Reached {
    /// The symlink in the host's tree (or the path itself when no link leads there).
    pub link: PathBuf,
    pub target: PathBuf,
    pub what: String,
}

/// The never-published paths of a fleet (resolved; those that do not exist cannot be reached).
pub fn forbidden(fleet_dir: &Path, config: &FleetConfig) -> Vec<(PathBuf, String)> {
    let (key, _) = config.signing_key_path(fleet_dir);
    let mut v = vec![
        (key, "the signing key".to_string()),
        (fleet_dir.join("keys"), "the keys/ directory".to_string()),
        (fleet_dir.join(".git"), "the repository's .git".to_string()),
        (
            super::seal_state::SealState::path(fleet_dir),
            "the record of sealed files".to_string(),
        ),
    ];
    for p in &config.never_publish {
        v.push((
            fleet_dir.join(p),
            format!(
                "fleet.toml never_publish entry {:?}",
                p.display().to_string()
            ),
        ));
    }
    v.into_iter()
        .filter_map(|(p, what)| Some((fs::canonicalize(p).ok()?, what)))
        .collect()
}

/// Refuses the walk of `host_dir` when the directory or any entry resolves into a forbidden path.
pub fn check(
    host_dir: &Path,
    walked: &[WalkedEntry],
    forbidden: &[(PathBuf, String)],
) -> Result<(), Reached> {
    let hit = |real: &Path| forbidden.iter().find(|(f, _)| real.starts_with(f));
    if let Some((f, what)) = fs::canonicalize(host_dir).ok().as_deref().and_then(hit) {
        return Err(Reached {
            link: first_link(host_dir, ""),
            target: f.clone(),
            what: what.clone(),
        });
    }
    for w in walked {
        if let Some((_, what)) = hit(&w.source) {
            return Err(Reached {
                link: first_link(host_dir, &w.entry.path),
                target: w.source.clone(),
                what: what.clone(),
            });
        }
    }
    Ok(())
}

/// The first symlink on the way from `host_dir` to `host_dir/rel`, else that path itself.
fn first_link(host_dir: &Path, rel: &str) -> PathBuf {
    let is_link = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    let mut p = host_dir.to_path_buf();
    if is_link(&p) {
        return p;
    }
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        if is_link(&p) {
            return p;
        }
    }
    p
}
