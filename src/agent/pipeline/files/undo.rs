//! The undo record of files/: what each changed path held before, written to the state directory
//! before the first file changes, so that a rollback puts the previous files back also when the
//! agent was killed (or the machine lost power) in the middle.
//!
//! Two records live in the state directory: `files-undo.json` for the cycle in progress (restored
//! by a rollback or by the resolution of an interrupted cycle, dropped when the cycle is
//! committed) and `files-undo-previous.json`, the way back to the files of the generation a
//! manual `rollback` returns to.

use super::dirfd::{Create, Dir, Meta};
use super::error::{io_at, FilesError};
use super::record::InstalledRecord;
use crate::fsutil;
use crate::runner::Runner;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const PENDING: &str = "files-undo.json";
const PREVIOUS: &str = "files-undo-previous.json";

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// A file as it was before tiffin replaced or removed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    pub meta: Meta,
}

/// What installing files changes, as it was before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesUndo {
    pub root: PathBuf,
    /// Each path that changes, with what it held before (`None`: nothing).
    pub before: BTreeMap<String, Option<SavedFile>>,
    /// Directories that did not exist (removed again when empty).
    pub created_dirs: BTreeSet<String>,
    /// Owner and mode of the directories of every saved file, to make them again if they went.
    pub parents: BTreeMap<String, Meta>,
    /// The record of installed files before.
    pub record: Option<InstalledRecord>,
}

fn load(path: &Path) -> Result<Option<FilesUndo>, FilesError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            super::error::refused(
                path.display().to_string(),
                format!("not a valid undo record of files/: {e}"),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn save(undo: &FilesUndo, path: &Path) -> Result<(), FilesError> {
    let mut b = serde_json::to_vec(undo).map_err(|e| io_at(path)(io::Error::other(e)))?;
    b.push(b'\n');
    fsutil::atomic_write(path, &b, 0o600).map_err(io_at(path))
}

fn remove(path: &Path) -> Result<(), FilesError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(path)(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fsutil::fsync_dir(dir).map_err(io_at(dir))
}

impl FilesUndo {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.created_dirs.is_empty()
    }

    /// Remembers what `rel` holds now (with its directories' owner and mode).
    pub fn remember(&mut self, root: &Dir, rel: &str) -> Result<(), FilesError> {
        if self.before.contains_key(rel) {
            return Ok(());
        }
        let saved = match root.parent_of(rel, None, None)? {
            Some((dir, name)) => dir.read(name)?.map(|e| SavedFile {
                data: e.data,
                meta: e.meta,
            }),
            None => None,
        };
        if saved.is_some() {
            for (d, m) in root.dir_metas(rel)? {
                self.parents.entry(d).or_insert(m);
            }
        }
        self.before.insert(rel.to_string(), saved);
        Ok(())
    }

    /// Writes this record as the undo of the cycle in progress. A record left by a rollback
    /// that could not put everything back is kept: this one is joined to it.
    pub fn save_pending(self, state_dir: &Path) -> Result<(), FilesError> {
        let path = state_dir.join(PENDING);
        match load(&path)? {
            Some(mut earlier) => {
                earlier.absorb(self);
                save(&earlier, &path)
            }
            None => save(&self, &path),
        }
    }

    /// Adds `later` (a change made after this one) so that restoring undoes both: the older
    /// state of each path wins.
    fn absorb(&mut self, later: FilesUndo) {
        if self.root.as_os_str().is_empty() {
            self.root = later.root;
        }
        for (rel, saved) in later.before {
            if self.before.contains_key(&rel) {
                continue;
            }
            // Beneath a directory the older change made, there was nothing.
            let in_made_dir = self
                .created_dirs
                .iter()
                .any(|d| rel.starts_with(&format!("{d}/")));
            self.before
                .insert(rel, if in_made_dir { None } else { saved });
        }
        self.created_dirs.extend(later.created_dirs);
        for (d, m) in later.parents {
            self.parents.entry(d).or_insert(m);
        }
        if self.record.is_none() {
            self.record = later.record;
        }
    }

    /// Puts back what the change this record describes did: replaced files get their old
    /// content, owner and mode, new files and the directories made for them go, and the record
    /// of installed files is the old one again. Every path is tried, also after a failure (the
    /// first is returned); repeating it is harmless.
    fn restore(&self, state_dir: &Path, runner: &Runner) -> Result<(), FilesError> {
        if self.root.as_os_str().is_empty() {
            return Ok(());
        }
        let root = Dir::open_root(&self.root)?;
        let mut first_error = None;
        for (rel, saved) in &self.before {
            if let Err(e) = self.restore_one(&root, rel, saved.as_ref(), runner) {
                runner.note(&format!("files: rollback: {e}"));
                first_error.get_or_insert(e);
            }
        }
        // What an agent killed while writing left behind.
        let mut by_dir: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for rel in self.before.keys() {
            let (d, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            by_dir.entry(d).or_default().push(name);
        }
        for (d, names) in by_dir {
            let probe = format!("{d}/.");
            let opened = match d {
                "" => root.parent_of(".", None, None),
                _ => root.parent_of(&probe, None, None),
            };
            if let Ok(Some((dir, _))) = opened {
                if let Err(e) = dir.remove_temps_of(&names) {
                    runner.note(&format!("files: rollback: {e}"));
                }
            }
        }
        for d in self.created_dirs.iter().rev() {
            if let Ok(Some((dir, name))) = root.parent_of(d, None, None) {
                dir.remove_empty_dir(name);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        match &self.record {
            Some(r) => r.save(state_dir),
            None => Ok(()),
        }
    }

    fn restore_one(
        &self,
        root: &Dir,
        rel: &str,
        saved: Option<&SavedFile>,
        runner: &Runner,
    ) -> Result<(), FilesError> {
        let place = self.root.join(rel);
        let Some(s) = saved else {
            if let Some((dir, name)) = root.parent_of(rel, None, None)? {
                if dir.remove_file(name)? {
                    runner.note(&format!("files: rollback removed {}", place.display()));
                }
            }
            return Ok(());
        };
        let dir_meta = |d: &str| {
            self.parents.get(d).copied().unwrap_or(Meta {
                mode: 0o700,
                uid: 0,
                gid: 0,
            })
        };
        let mut made = Vec::new();
        let create = Create {
            meta: &dir_meta,
            made: &mut made,
        };
        if let Some((dir, name)) = root.parent_of(rel, None, Some(create))? {
            dir.write(name, &s.data, s.meta)?;
            runner.note(&format!("files: rollback restored {}", place.display()));
        }
        Ok(())
    }
}

/// Puts back the files of the cycle in progress (after a failure, or when an interrupted cycle
/// goes back to the previous system) and drops its record. False when there was none.
pub fn restore_pending(state_dir: &Path, runner: &Runner) -> Result<bool, FilesError> {
    let path = state_dir.join(PENDING);
    let Some(undo) = load(&path)? else {
        return Ok(false);
    };
    undo.restore(state_dir, runner)?;
    remove(&path)?;
    Ok(true)
}

/// Puts back the files of the generation a manual rollback returns to, and drops the record.
pub fn restore_previous(state_dir: &Path, runner: &Runner) -> Result<bool, FilesError> {
    let path = state_dir.join(PREVIOUS);
    let Some(undo) = load(&path)? else {
        return Ok(false);
    };
    undo.restore(state_dir, runner)?;
    remove(&path)?;
    Ok(true)
}

/// The cycle in progress is committed: its undo record becomes the way back for a manual
/// rollback. `new_previous`: the system before it is now the one a rollback returns to (the
/// record replaces the older one); otherwise the rollback still returns to the same system as
/// before, so the two records are joined.
pub fn keep_pending(state_dir: &Path, new_previous: bool) -> Result<(), FilesError> {
    let pending = state_dir.join(PENDING);
    let previous = state_dir.join(PREVIOUS);
    let Some(later) = load(&pending)? else {
        return Ok(());
    };
    if new_previous {
        fs::rename(&pending, &previous).map_err(io_at(&previous))?;
        return fsutil::fsync_dir(state_dir).map_err(io_at(state_dir));
    }
    let mut joined = load(&previous)?.unwrap_or_default();
    joined.absorb(later);
    save(&joined, &previous)?;
    remove(&pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(data: &str) -> Option<SavedFile> {
        Some(SavedFile {
            data: data.as_bytes().to_vec(),
            meta: Meta {
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
        })
    }

    #[test]
    fn a_committed_files_only_change_joins_the_way_back_and_the_older_state_wins() {
        let state = tempfile::tempdir().unwrap();
        let first = FilesUndo {
            root: "/r".into(),
            before: [("a".to_string(), saved("v1"))].into(),
            created_dirs: ["d".to_string()].into(),
            record: Some(InstalledRecord::default()),
            ..Default::default()
        };
        first.save_pending(state.path()).unwrap();
        keep_pending(state.path(), true).unwrap();
        assert!(!state.path().join(PENDING).exists());

        let mut later_record = InstalledRecord::default();
        later_record.dirs.insert("d".into());
        let later = FilesUndo {
            root: "/r".into(),
            before: [
                ("a".to_string(), saved("v2")),
                ("d/x".to_string(), saved("made by the first")),
                ("b".to_string(), None),
            ]
            .into(),
            record: Some(later_record),
            ..Default::default()
        };
        later.save_pending(state.path()).unwrap();
        keep_pending(state.path(), false).unwrap();
        let joined = load(&state.path().join(PREVIOUS)).unwrap().unwrap();
        assert_eq!(joined.before["a"], saved("v1"));
        assert_eq!(joined.before["d/x"], None, "its directory did not exist");
        assert_eq!(joined.before["b"], None);
        assert_eq!(joined.record, Some(InstalledRecord::default()));

        // A new system: the way back is this cycle's alone.
        let next = FilesUndo {
            root: "/r".into(),
            before: [("a".to_string(), saved("v3"))].into(),
            ..Default::default()
        };
        next.clone().save_pending(state.path()).unwrap();
        keep_pending(state.path(), true).unwrap();
        assert_eq!(load(&state.path().join(PREVIOUS)).unwrap(), Some(next));
    }

    #[test]
    fn an_unfinished_rollback_is_not_forgotten_by_the_next_cycle() {
        let state = tempfile::tempdir().unwrap();
        let stuck = FilesUndo {
            root: "/r".into(),
            before: [("a".to_string(), saved("v1"))].into(),
            ..Default::default()
        };
        stuck.save_pending(state.path()).unwrap();
        let next = FilesUndo {
            root: "/r".into(),
            before: [("a".to_string(), saved("v2")), ("b".to_string(), None)].into(),
            ..Default::default()
        };
        next.save_pending(state.path()).unwrap();
        let pending = load(&state.path().join(PENDING)).unwrap().unwrap();
        assert_eq!(pending.before["a"], saved("v1"));
        assert_eq!(pending.before["b"], None);
    }
}
