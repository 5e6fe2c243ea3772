//! Walks a directory into manifest entries, resolving symlinks inside a boundary.

use super::{check_relative_path, sort_entries, Entry};
use crate::hash;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One walked entry and the real file it came from (symlinks resolved).
#[derive(Clone, Debug)]
pub struct WalkedEntry {
    pub entry: Entry,
    pub source: PathBuf,
}

/// Why a tree could not be walked. Every variant names the path as found in the tree.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: symlink points outside {boundary} (to {target})")]
    Escape {
        path: PathBuf,
        target: PathBuf,
        boundary: PathBuf,
    },
    #[error("{path}: dangling symlink (its target does not exist)")]
    Dangling { path: PathBuf },
    #[error("{path}: symlink loop (it leads back to {target})")]
    Loop { path: PathBuf, target: PathBuf },
    #[error("{path}: {what} is not supported in a published tree (only files, directories and symlinks to them)")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error("{path}: file name is not usable in a manifest: {why}")]
    BadName { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalkError + '_ {
    move |source| WalkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Walks `root` (itself resolved) into sorted entries. A symlink is followed when its target
/// stays inside `boundary` (for a fleet: the repository root); one that leaves it, dangles or
/// loops is an error naming the link.
pub fn walk_tree(root: &Path, boundary: &Path) -> Result<Vec<WalkedEntry>, WalkError> {
    let boundary = fs::canonicalize(boundary).map_err(io_err(boundary))?;
    let real_root = fs::canonicalize(root).map_err(io_err(root))?;
    if !real_root.starts_with(&boundary) {
        return Err(WalkError::Escape {
            path: root.to_path_buf(),
            target: real_root,
            boundary,
        });
    }
    let meta = fs::metadata(&real_root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(WalkError::Io {
            path: root.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
        });
    }
    let mut out = Vec::new();
    let mut ancestors = HashSet::new();
    ancestors.insert(real_root.clone());
    let mut w = Walker {
        boundary: &boundary,
        out: &mut out,
    };
    w.visit(root, &real_root, "", &mut ancestors)?;
    sort_walked(&mut out);
    Ok(out)
}

/// The entries of a walk, without their sources.
pub fn entries_of(walked: &[WalkedEntry]) -> Vec<Entry> {
    let mut v: Vec<Entry> = walked.iter().map(|w| w.entry.clone()).collect();
    sort_entries(&mut v);
    v
}

fn sort_walked(v: &mut [WalkedEntry]) {
    v.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
}

struct Walker<'a> {
    boundary: &'a Path,
    out: &'a mut Vec<WalkedEntry>,
}

impl Walker<'_> {
    /// `shown` is the directory as reached through the tree (for messages), `real` its resolved path.
    fn visit(
        &mut self,
        shown: &Path,
        real: &Path,
        rel: &str,
        ancestors: &mut HashSet<PathBuf>,
    ) -> Result<(), WalkError> {
        let mut names = Vec::new();
        for item in fs::read_dir(real).map_err(io_err(shown))? {
            let item = item.map_err(io_err(shown))?;
            names.push(item.file_name());
        }
        names.sort();
        for name in names {
            let shown_child = shown.join(&name);
            let name = name.to_str().ok_or_else(|| WalkError::BadName {
                path: shown_child.clone(),
                why: "not valid UTF-8".into(),
            })?;
            let child_rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            check_relative_path(&child_rel).map_err(|why| WalkError::BadName {
                path: shown_child.clone(),
                why,
            })?;
            let child = real.join(name);
            let lmeta = fs::symlink_metadata(&child).map_err(io_err(&shown_child))?;
            let (target, meta) = if lmeta.file_type().is_symlink() {
                let target = match fs::canonicalize(&child) {
                    Ok(t) => t,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(WalkError::Dangling { path: shown_child })
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                        return Err(WalkError::Loop {
                            target: child.clone(),
                            path: shown_child,
                        })
                    }
                    Err(e) => return Err(io_err(&shown_child)(e)),
                };
                if !target.starts_with(self.boundary) {
                    return Err(WalkError::Escape {
                        path: shown_child,
                        target,
                        boundary: self.boundary.to_path_buf(),
                    });
                }
                let meta = fs::metadata(&target).map_err(io_err(&shown_child))?;
                (target, meta)
            } else {
                (child.clone(), lmeta)
            };
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                if ancestors.contains(&target) {
                    return Err(WalkError::Loop {
                        path: shown_child,
                        target,
                    });
                }
                self.out.push(WalkedEntry {
                    entry: Entry::dir(child_rel.clone(), mode),
                    source: target.clone(),
                });
                ancestors.insert(target.clone());
                self.visit(&shown_child, &target, &child_rel, ancestors)?;
                ancestors.remove(&target);
            } else if ft.is_file() {
                let (sha, size) = hash::sha256_file(&target).map_err(io_err(&shown_child))?;
                if size != meta.size() {
                    return Err(WalkError::Io {
                        path: shown_child,
                        source: io::Error::other("file changed while it was being read"),
                    });
                }
                self.out.push(WalkedEntry {
                    entry: Entry::file(child_rel, mode, size, sha),
                    source: target,
                });
            } else {
                let what = if ft.is_symlink() {
                    "a symlink"
                } else {
                    "a socket, fifo or device"
                };
                return Err(WalkError::Unsupported {
                    path: shown_child,
                    what,
                });
            }
        }
        Ok(())
    }
}
