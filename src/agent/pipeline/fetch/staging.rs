//! The tree of a fetched generation, built in `trees/.staging-<N>` from the store (or linked
//! from the previous tree), made durable, and swapped in; old trees and unused store objects
//! pruned after.

use super::dirs::{FetchDirs, LocalTree};
use super::error::{io_at, FetchError};
use super::store::ContentStore;
use crate::fsutil;
use crate::manifest::{EntryKind, Manifest};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How many materialised trees are kept (the newest and the one before).
const KEEP_TREES: usize = 2;

/// Builds `trees/.staging-<N>`, then renames it to `trees/<N>`, writes the manifest copy and
/// switches the `tree` link. Every step before the link switch is invisible.
///
/// A file the previous tree holds with the same hash and mode is hard-linked from it (and hashed
/// again); every other file is copied from the store, verified on the way. Fetched trees are
/// read-only by contract, so generations may share those inodes.
pub(super) fn materialise(
    dirs: &FetchDirs,
    store: &ContentStore,
    manifest: &Manifest,
    previous: Option<&LocalTree>,
) -> Result<PathBuf, FetchError> {
    let generation = manifest.generation;
    let staging = dirs.trees().join(format!(".staging-{generation}"));
    let final_dir = dirs.trees().join(generation.to_string());
    for d in [&staging, &final_dir] {
        if d.exists() {
            fs::remove_dir_all(d).map_err(io_at(d))?;
        }
    }
    fs::create_dir(&staging).map_err(io_at(&staging))?;
    let guard = fsutil::DirGuard::new(staging.clone());
    let mut dir_modes = Vec::new();
    let mut copied = Vec::new();
    for e in &manifest.entries {
        // Paths were validated by the manifest parser: relative, normal, parents first.
        let dest = staging.join(&e.path);
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir(&dest).map_err(io_at(&dest))?;
                dir_modes.push((dest, e.mode));
            }
            EntryKind::File => {
                if previous.is_some_and(|p| link_unchanged(p, e, &dest)) {
                    continue;
                }
                let sha = e.sha256.as_deref().unwrap_or_default();
                store.copy_out(sha, e.size.unwrap_or(0), &e.path, &dest)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(e.mode))
                    .map_err(io_at(&dest))?;
                copied.push(dest);
            }
        }
    }
    // Directory modes last, deepest first, so that a read-only directory does not stop its children.
    for (d, mode) in dir_modes.iter().rev() {
        fs::set_permissions(d, fs::Permissions::from_mode(*mode | 0o700)).map_err(io_at(d))?;
    }
    let mut new_dirs: Vec<PathBuf> = dir_modes.into_iter().map(|(d, _)| d).collect();
    new_dirs.push(staging.clone());
    sync_tree(&staging, &copied, &new_dirs)?;
    fs::rename(&staging, &final_dir).map_err(io_at(&final_dir))?;
    guard.keep();
    // Its fsync of trees/ also makes the rename above durable.
    let mpath = dirs.manifest_copy(generation);
    fsutil::atomic_write(&mpath, &manifest.to_bytes(), 0o600).map_err(io_at(&mpath))?;
    fsutil::atomic_symlink(Path::new(&format!("trees/{generation}")), &dirs.tree_link())
        .map_err(io_at(&dirs.tree_link()))?;
    Ok(final_dir)
}

/// Hard-links `e` from the previous tree when that tree holds it with the same hash and mode,
/// and the linked file still hashes right. False (and nothing left at `dest`) otherwise.
fn link_unchanged(previous: &LocalTree, e: &crate::manifest::Entry, dest: &Path) -> bool {
    let Some(old) = previous.manifest.entry(&e.path) else {
        return false;
    };
    if old.kind != EntryKind::File || old.sha256 != e.sha256 || old.mode != e.mode {
        return false;
    }
    let src = previous.tree.join(&e.path);
    let is_plain_file = fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_file());
    if !is_plain_file || fs::hard_link(&src, dest).is_err() {
        return false;
    }
    let intact = fs::metadata(dest).is_ok_and(|m| m.permissions().mode() & 0o7777 == e.mode)
        && crate::hash::sha256_file(dest)
            .is_ok_and(|(h, n)| Some(&h) == e.sha256.as_ref() && Some(n) == e.size);
    if !intact {
        let _ = fs::remove_file(dest);
    }
    intact
}

/// Makes a materialised tree durable before it is swapped in (a crash after the swap must not
/// leave holes). Linked files are already durable; a few copied files are fsynced one by one,
/// many with one `syncfs` of the state filesystem (300 fsyncs took over a second).
fn sync_tree(root: &Path, copied: &[PathBuf], new_dirs: &[PathBuf]) -> Result<(), FetchError> {
    const FSYNC_AT_MOST: usize = 32;
    if copied.len() > FSYNC_AT_MOST {
        use std::os::fd::AsRawFd;
        let dir = fs::File::open(root).map_err(io_at(root))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| io_at(root)(io::Error::from(e)))?;
        return Ok(());
    }
    for f in copied {
        fs::File::open(f)
            .and_then(|f| f.sync_all())
            .map_err(io_at(f))?;
    }
    for d in new_dirs.iter().rev() {
        fsutil::fsync_dir(d).map_err(io_at(d))?;
    }
    Ok(())
}

/// Keeps the newest trees and the store objects they use; failures here only waste space.
pub(super) fn prune(dirs: &FetchDirs, store: &ContentStore, newest: u64) {
    let Ok(rd) = fs::read_dir(dirs.trees()) else {
        return;
    };
    let mut gens: Vec<u64> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    gens.sort_unstable_by(|a, b| b.cmp(a));
    let keep: Vec<u64> = gens
        .iter()
        .copied()
        .filter(|g| *g <= newest)
        .take(KEEP_TREES)
        .collect();
    for g in gens.iter().filter(|g| !keep.contains(g)) {
        let _ = fs::remove_dir_all(dirs.trees().join(g.to_string()));
        let _ = fs::remove_file(dirs.manifest_copy(*g));
    }
    let manifests: Vec<Manifest> = keep
        .iter()
        .filter_map(|g| fs::read(dirs.manifest_copy(*g)).ok())
        .filter_map(|b| Manifest::parse(&b, "").ok())
        .collect();
    let wanted: HashSet<&str> = manifests
        .iter()
        .flat_map(|m| m.files().filter_map(|e| e.sha256.as_deref()))
        .collect();
    let _ = store.prune(&wanted);
}
