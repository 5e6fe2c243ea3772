//! What a mirror lacks of one generation, from the primary's disk alone: the new generation is
//! started on the mirror as a hard-linked copy of a base generation both sides hold, and only
//! the files whose inode differs from the base's on the primary travel (`publish` hard-links a
//! host's unchanged files from its live generation, so an unchanged file is the same inode).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry of a generation directory on the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    pub dir: bool,
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
    /// (device, inode): the same file on the primary's disk.
    pub id: (u64, u64),
}

/// Relative path (with `/`) → entry, for everything under `root`.
pub type Listing = BTreeMap<String, Local>;

/// Lists a generation directory without following symlinks (a generation holds none).
pub fn list(root: &Path) -> io::Result<Listing> {
    let mut out = Listing::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| crate::fsutil::with_path(e, &dir))?;
        for e in rd {
            let e = e.map_err(|e| crate::fsutil::with_path(e, &dir))?;
            let name = e.file_name().into_string().map_err(|n| {
                io::Error::other(format!(
                    "{}: a name that is not UTF-8: {n:?}",
                    dir.display()
                ))
            })?;
            let path = e.path();
            let md = fs::symlink_metadata(&path).map_err(|e| crate::fsutil::with_path(e, &path))?;
            let rel_path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = md.file_type();
            if !ft.is_dir() && !ft.is_file() {
                return Err(io::Error::other(format!(
                    "{}: neither a file nor a directory; a generation holds only those",
                    path.display()
                )));
            }
            if ft.is_dir() {
                stack.push((path, rel_path.clone()));
            }
            out.insert(
                rel_path,
                Local {
                    dir: ft.is_dir(),
                    mode: md.mode() & 0o7777,
                    size: md.len(),
                    mtime: md.mtime(),
                    id: (md.dev(), md.ino()),
                },
            );
        }
    }
    Ok(out)
}

/// One path's entry (a file or directory) on the primary.
pub fn list_one(path: &Path) -> io::Result<Local> {
    let md = fs::symlink_metadata(path).map_err(|e| crate::fsutil::with_path(e, path))?;
    Ok(Local {
        dir: md.is_dir(),
        mode: md.mode() & 0o7777,
        size: md.len(),
        mtime: md.mtime(),
        id: (md.dev(), md.ino()),
    })
}

/// What turns a hard-linked copy of the base into the new generation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Directories to create, parents first.
    pub mkdirs: Vec<String>,
    /// Files to send (whatever the copy holds at that path is removed first).
    pub send: Vec<String>,
    /// Files to remove, then directories, deepest first.
    pub remove_files: Vec<String>,
    pub remove_dirs: Vec<String>,
    /// Files already there through the base (not sent).
    pub linked: usize,
}

/// The generations of `generations` (ascending) that the mirror lacks, each with the newest
/// generation below it that both sides will hold by then: the one its copy starts from.
pub fn missing(
    generations: &[u64],
    have: &std::collections::BTreeSet<u64>,
) -> Vec<(u64, Option<u64>)> {
    let mut held = have.clone();
    let mut out = Vec::new();
    for &g in generations.iter().filter(|g| !have.contains(g)) {
        let base = held
            .iter()
            .rev()
            .find(|b| **b < g && generations.contains(b))
            .copied();
        out.push((g, base));
        held.insert(g);
    }
    out
}

/// The plan for `new`, starting from a copy of `base` (empty when the mirror has none).
pub fn plan(new: &Listing, base: &Listing) -> Plan {
    let mut p = Plan::default();
    for (path, e) in new {
        match (e.dir, base.get(path)) {
            (true, Some(b)) if b.dir => {}
            (true, _) => p.mkdirs.push(path.clone()),
            (false, Some(b)) if !b.dir && b.id == e.id => p.linked += 1,
            (false, _) => p.send.push(path.clone()),
        }
    }
    for (path, b) in base {
        let kept = new.get(path).is_some_and(|e| e.dir == b.dir);
        if !kept {
            if b.dir {
                p.remove_dirs.push(path.clone());
            } else {
                p.remove_files.push(path.clone());
            }
        }
    }
    // A directory replaced by a file (or the reverse) goes before the new one comes.
    p.remove_dirs
        .sort_by(|a, b| b.len().cmp(&a.len()).then(b.cmp(a)));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64) -> Local {
        Local {
            dir: false,
            mode: 0o640,
            size: 1,
            mtime: 0,
            id: (1, ino),
        }
    }
    fn dir() -> Local {
        Local {
            dir: true,
            mode: 0o750,
            size: 0,
            mtime: 0,
            id: (1, 0),
        }
    }

    #[test]
    fn only_files_that_are_not_the_base_s_inode_are_sent() {
        let base: Listing = [
            ("tree".to_string(), dir()),
            ("tree/a".into(), file(1)),
            ("tree/b".into(), file(2)),
            ("tree/old".into(), dir()),
            ("tree/old/x".into(), file(3)),
            ("manifest.json".into(), file(4)),
        ]
        .into();
        let new: Listing = [
            ("tree".to_string(), dir()),
            ("tree/a".into(), file(1)),
            ("tree/b".into(), file(5)),
            ("tree/new".into(), dir()),
            ("tree/new/y".into(), file(6)),
            ("manifest.json".into(), file(7)),
        ]
        .into();
        let p = plan(&new, &base);
        assert_eq!(p.linked, 1);
        assert_eq!(p.send, ["manifest.json", "tree/b", "tree/new/y"]);
        assert_eq!(p.mkdirs, ["tree/new"]);
        assert_eq!(p.remove_files, ["tree/old/x"]);
        assert_eq!(p.remove_dirs, ["tree/old"]);
        let fresh = plan(&new, &Listing::new());
        assert_eq!(fresh.send.len(), 4);
        assert_eq!(fresh.mkdirs, ["tree", "tree/new"]);
    }
}
