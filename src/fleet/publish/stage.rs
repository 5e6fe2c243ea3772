//! A host's tree on its way into a generation: walked from the fleet repository (symlinks
//! resolved inside it, never-published paths refused), then written into a directory with
//! every copied byte checked against the walk, unchanged files hard-linked from the live
//! generation.

use super::outcome::{StageError, GEN_DIR_MODE, GEN_FILE_MODE};
use crate::config::FleetConfig;
use crate::fleet::users::Ownership;
use crate::fsutil::{self, with_path};
use crate::hash;
use crate::manifest::{walk_tree, EntryKind, Manifest, WalkedEntry};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Walks a host's directory with the repository as the symlink boundary, refusing a tree that
/// reaches something never published (the signing key, `keys/`, `.git`, `never_publish`).
pub(super) fn walk_host(
    fleet_dir: &Path,
    config: &FleetConfig,
    host: &str,
) -> Result<Vec<WalkedEntry>, StageError> {
    let src = fleet_dir.join(config.hosts[host].dir_or_default(host));
    match fs::symlink_metadata(&src) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StageError::MissingHostDir { path: src })
        }
        Err(e) => return Err(with_path(e, &src).into()),
        Ok(_) => {}
    }
    let walked = walk_tree(&src, fleet_dir)?;
    let forbidden = crate::fleet::never_publish::forbidden(fleet_dir, config);
    crate::fleet::never_publish::check(&src, &walked, &forbidden)?;
    Ok(walked)
}

/// The entries Nix is given: the tree without `files/` and `files.toml`, as the agent builds it
/// (a `path:` flake is copied whole into the world-readable store).
pub(super) fn build_view(walked: &[WalkedEntry]) -> Vec<WalkedEntry> {
    walked
        .iter()
        .filter(|w| !crate::agent::pipeline::build::left_out_of_build(&w.entry.path))
        .cloned()
        .collect()
}

/// Stages the build view of a host's tree (without `files/` and `files.toml`) with its source
/// modes into `dest`, returning the whole walk.
/// The `tree_hash` a publication of the host's directory would carry now (the walk of
/// `publish`, never-published paths refused): what a release id is made of.
pub fn host_tree_hash(
    fleet_dir: &Path,
    config: &FleetConfig,
    host: &str,
) -> Result<String, StageError> {
    let walked = walk_host(fleet_dir, config, host)?;
    Ok(crate::manifest::tree_hash(&crate::manifest::entries_of(
        &walked,
    )))
}

pub fn stage_host(
    fleet_dir: &Path,
    config: &FleetConfig,
    host: &str,
    dest: &Path,
) -> Result<Vec<WalkedEntry>, StageError> {
    let walked = walk_host(fleet_dir, config, host)?;
    materialize(
        &build_view(&walked),
        dest,
        Modes::Source,
        Ownership::Publisher,
        None,
    )?;
    Ok(walked)
}

/// Which modes a materialised tree gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Modes {
    /// As in the repository: a tree to build from, like the one the agent builds.
    Source,
    /// A generation: directories 0750, files 0640.
    Publication,
}

/// Files of the live generation by content, so that unchanged files are hard-linked into the new
/// generation instead of copied (generations are immutable, so sharing inodes is safe).
pub(super) struct Reuse {
    tree: PathBuf,
    by_sha: HashMap<String, String>,
}

impl Reuse {
    pub(super) fn new(tree: PathBuf, m: &Manifest) -> Self {
        let by_sha = m
            .files()
            .filter_map(|e| Some((e.sha256.clone()?, e.path.clone())))
            .collect();
        Self { tree, by_sha }
    }

    /// The live copy of this content, when it is exactly what the new generation needs.
    pub(super) fn find(&self, sha: &str, size: u64, owner: Option<(u32, u32)>) -> Option<PathBuf> {
        let p = self.tree.join(self.by_sha.get(sha)?);
        let m = fs::symlink_metadata(&p).ok()?;
        let (uid, gid) = owner.unwrap_or((m.uid(), m.gid()));
        (m.is_file()
            && m.len() == size
            && m.mode() & 0o7777 == GEN_FILE_MODE
            && m.uid() == uid
            && m.gid() == gid)
            .then_some(p)
    }
}

/// Writes the walked tree into `dest` (which must not exist), checking every copied byte against
/// the hash the walk recorded.
pub(super) fn materialize(
    walked: &[WalkedEntry],
    dest: &Path,
    modes: Modes,
    owner: Ownership,
    reuse: Option<&Reuse>,
) -> Result<(), StageError> {
    let dir_mode = |m: u32| match modes {
        Modes::Source => m | 0o700,
        Modes::Publication => GEN_DIR_MODE,
    };
    let owner_ids = owner.tree();
    make_dir(dest, dir_mode(0o755), owner_ids)?;
    for w in walked {
        let to = dest.join(&w.entry.path);
        match w.entry.kind {
            EntryKind::Dir => make_dir(&to, dir_mode(w.entry.mode), owner_ids)?,
            EntryKind::File => {
                let sha = w.entry.sha256.as_deref().unwrap_or_default();
                let size = w.entry.size.unwrap_or(0);
                let linked = modes == Modes::Publication
                    && reuse
                        .and_then(|r| r.find(sha, size, owner_ids))
                        .is_some_and(|from| fs::hard_link(from, &to).is_ok());
                if !linked {
                    let mode = match modes {
                        Modes::Source => w.entry.mode,
                        Modes::Publication => GEN_FILE_MODE,
                    };
                    copy_verified(&w.source, &to, sha, size, mode, owner_ids)?;
                }
            }
        }
    }
    Ok(())
}

pub(super) fn make_dir(p: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .map_err(|e| with_path(e, p))?;
    set_owner_mode(p, owner, mode)
}

/// Copies `from` to a new file `to`, hashing on the way; a mismatch with the walk is an error.
fn copy_verified(
    from: &Path,
    to: &Path,
    sha: &str,
    size: u64,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), StageError> {
    let mut src = File::open(from).map_err(|e| with_path(e, from))?;
    let mut dst = fsutil::create_new(to, mode)?;
    // Explicitly: the umask may have taken bits off the mode given at creation.
    dst.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| with_path(e, to))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&dst, Some(uid), Some(gid)).map_err(|e| with_path(e, to))?;
    }
    let mut hasher = hash::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(with_path(e, from).into()),
        };
        hasher.update(&buf[..k]);
        dst.write_all(&buf[..k]).map_err(|e| with_path(e, to))?;
        n += k as u64;
    }
    if n != size || hasher.finish() != sha {
        return Err(StageError::Changed {
            path: from.to_path_buf(),
        });
    }
    Ok(())
}

/// Sets owner (when given) and mode, touching nothing that is already right.
pub(crate) fn set_owner_mode(p: &Path, owner: Option<(u32, u32)>, mode: u32) -> io::Result<()> {
    let m = fs::symlink_metadata(p).map_err(|e| with_path(e, p))?;
    if let Some((uid, gid)) = owner {
        if m.uid() != uid || m.gid() != gid {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| with_path(e, p))?;
        }
    }
    if m.mode() & 0o7777 != mode {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| with_path(e, p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;

    /// A walked file `path` under `src` holding `body`.
    fn file(src: &Path, path: &str, body: &[u8]) -> WalkedEntry {
        let source = src.join(path);
        fs::write(&source, body).unwrap();
        WalkedEntry {
            entry: Entry::file(path, 0o644, body.len() as u64, hash::sha256_bytes(body)),
            source,
        }
    }

    #[test]
    fn a_generation_tree_gets_publication_modes_whatever_the_source_had() {
        let t = tempfile::tempdir().unwrap();
        let walked = vec![file(t.path(), "a.nix", b"{ }\n")];
        let dest = t.path().join("tree");
        materialize(
            &walked,
            &dest,
            Modes::Publication,
            Ownership::Publisher,
            None,
        )
        .unwrap();
        let m = fs::metadata(dest.join("a.nix")).unwrap();
        assert_eq!(m.mode() & 0o7777, GEN_FILE_MODE);
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, GEN_DIR_MODE);
        assert_eq!(fs::read(dest.join("a.nix")).unwrap(), b"{ }\n");
    }

    #[test]
    fn a_file_changed_after_the_walk_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let walked = vec![file(t.path(), "a.nix", b"{ }\n")];
        fs::write(t.path().join("a.nix"), b"{ x = 1; }\n").unwrap();
        let dest = t.path().join("tree");
        let e = materialize(&walked, &dest, Modes::Source, Ownership::Publisher, None).unwrap_err();
        assert!(
            matches!(&e, StageError::Changed { path } if path.ends_with("a.nix")),
            "{e}"
        );
    }

    #[test]
    fn unchanged_content_is_hard_linked_from_the_live_generation() {
        let t = tempfile::tempdir().unwrap();
        let walked = vec![file(t.path(), "a.nix", b"same\n")];
        let live = t.path().join("live");
        materialize(
            &walked,
            &live,
            Modes::Publication,
            Ownership::Publisher,
            None,
        )
        .unwrap();
        let m = Manifest::new(
            "h",
            1,
            "2026-01-01T00:00:00Z".into(),
            vec![walked[0].entry.clone()],
        );
        let reuse = Reuse::new(live.clone(), &m);
        let next = t.path().join("next");
        materialize(
            &walked,
            &next,
            Modes::Publication,
            Ownership::Publisher,
            Some(&reuse),
        )
        .unwrap();
        let (a, b) = (
            fs::metadata(live.join("a.nix")).unwrap(),
            fs::metadata(next.join("a.nix")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "linked, not copied");

        // A live copy whose mode was altered is not reused.
        fs::set_permissions(live.join("a.nix"), fs::Permissions::from_mode(0o666)).unwrap();
        let again = t.path().join("again");
        materialize(
            &walked,
            &again,
            Modes::Publication,
            Ownership::Publisher,
            Some(&reuse),
        )
        .unwrap();
        assert_ne!(fs::metadata(again.join("a.nix")).unwrap().ino(), a.ino());
    }

    #[test]
    fn the_build_view_leaves_out_files_and_files_toml() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("files")).unwrap();
        let walked = vec![
            file(t.path(), "configuration.nix", b"{ }\n"),
            file(t.path(), "files.toml", b""),
            file(t.path(), "files/secret", b"x"),
        ];
        let kept: Vec<_> = build_view(&walked)
            .into_iter()
            .map(|w| w.entry.path)
            .collect();
        assert_eq!(kept, ["configuration.nix"]);
    }
}
