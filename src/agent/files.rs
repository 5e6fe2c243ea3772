//! Plain files and secrets (DESIGN §4): the tree's `files/` subtree is installed under
//! `[system] files_root` (default `/`), outside the Nix store, with owner and mode from an optional
//! `files.toml` at the top of the host's tree:
//!
//! ```toml
//! ["etc/secret"]
//! mode = "0600"      # default: the mode in the manifest
//! owner = "root"     # default: root
//! group = "root"     # default: root
//! ```
//!
//! Every path is checked before anything is written: no `..`, and no parent on the machine may be
//! a symlink (writing through it could land anywhere). A record of what tiffin installed, with
//! hashes, lives in `<state_dir>/installed-files.json`: a file that left the repository is removed
//! only when tiffin installed it and nobody changed it since; a file tiffin did not install is
//! never overwritten (unless it already has the wanted content) and never removed.

use crate::fsutil;
use crate::hash;
use crate::manifest::{check_relative_path, Manifest};
use crate::runner::Runner;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The subtree of the host's tree that is installed.
pub const FILES_DIR: &str = "files";
/// Owner and mode settings, at the top of the host's tree.
pub const FILES_TOML: &str = "files.toml";
const RECORD: &str = "installed-files.json";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{place}: {why}")]
    Refused { place: String, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn refused(place: impl Into<String>, why: impl Into<String>) -> FilesError {
    FilesError::Refused {
        place: place.into(),
        why: why.into(),
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
}

/// One file tiffin installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFile {
    pub sha256: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What tiffin installed under `root`, by path relative to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRecord {
    #[serde(default)]
    pub root: PathBuf,
    #[serde(default)]
    pub files: BTreeMap<String, InstalledFile>,
    /// Directories tiffin created (removed again when they become empty).
    #[serde(default)]
    pub dirs: BTreeSet<String>,
}

impl InstalledRecord {
    pub fn load(state_dir: &Path) -> Result<Self, FilesError> {
        let p = state_dir.join(RECORD);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| refused(p.display().to_string(), format!("not a valid record: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_at(&p)(e)),
        }
    }

    fn save(&self, state_dir: &Path) -> Result<(), FilesError> {
        let p = state_dir.join(RECORD);
        let mut b = serde_json::to_vec_pretty(self).map_err(|e| io_at(&p)(io::Error::other(e)))?;
        b.push(b'\n');
        fsutil::atomic_write(&p, &b, 0o600).map_err(io_at(&p))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    /// Nothing there yet.
    Create,
    /// tiffin's own file, to be brought to the wanted content, owner and mode.
    Update,
    /// A file tiffin did not install but that already has the wanted content: taken over.
    Adopt,
}

#[derive(Clone, Debug)]
struct Install {
    rel: String,
    source: PathBuf,
    sha256: String,
    mode: u32,
    owner: String,
    group: String,
    action: Action,
}

/// Everything that installing the files of a tree will do, checked before anything is written.
#[derive(Clone, Debug)]
pub struct FilesPlan {
    root: PathBuf,
    installs: Vec<Install>,
    /// Recorded files no longer in the tree.
    removals: Vec<String>,
    record: InstalledRecord,
}

fn on_disk_matches(path: &Path, r: &InstalledFile) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| {
        m.is_file() && m.mode() & 0o7777 == r.mode && m.uid() == r.uid && m.gid() == r.gid
    }) && hash::sha256_file(path).is_ok_and(|(h, _)| h == r.sha256)
}

fn parse_mode(s: &str) -> Option<u32> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8).ok()?;
    (m <= 0o7777).then_some(m)
}

/// Checks every parent of `rel` under `root` that exists on the machine: it must be a real
/// directory, not a symlink (which could lead the write anywhere).
fn check_parents(root: &Path, rel: &str) -> Result<(), FilesError> {
    let parts: Vec<&str> = rel.split('/').collect();
    let mut p = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    p.display().to_string(),
                    format!("is a symlink on this machine; refusing to install {rel} through it"),
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(refused(
                    p.display().to_string(),
                    format!("is not a directory; cannot install {rel}"),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(&p)(e)),
        }
    }
    Ok(())
}

/// Reads `files.toml` and the tree's `files/` entries and decides what to do, refusing anything
/// unsafe. Writes nothing.
pub fn plan(
    tree: &Path,
    manifest: &Manifest,
    root: &Path,
    state_dir: &Path,
) -> Result<FilesPlan, FilesError> {
    let rules_path = tree.join(FILES_TOML);
    let rules: BTreeMap<String, FileRule> = match fs::read_to_string(&rules_path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            refused(
                crate::config::toml_error(FILES_TOML, &text, &e),
                "fix files.toml in the host's directory",
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(io_at(&rules_path)(e)),
    };
    let prefix = format!("{FILES_DIR}/");
    let in_tree: BTreeMap<&str, &crate::manifest::Entry> = manifest
        .files()
        .filter_map(|e| e.path.strip_prefix(&prefix).map(|rel| (rel, e)))
        .collect();
    for key in rules.keys() {
        check_relative_path(key).map_err(|why| {
            refused(
                format!("{FILES_TOML}: [{key:?}]"),
                format!("{why}: paths are relative to files/ and may not leave it; refused"),
            )
        })?;
        if !in_tree.contains_key(key.as_str()) {
            return Err(refused(
                format!("{FILES_TOML}: [{key:?}]"),
                format!("no such file under {FILES_DIR}/"),
            ));
        }
    }
    let mut record = InstalledRecord::load(state_dir)?;
    if !record.files.is_empty() && record.root != root {
        return Err(refused(
            format!("[system] files_root = {:?}", root.display().to_string()),
            format!(
                "files were installed under {} before; remove {} after cleaning up to change it",
                record.root.display(),
                state_dir.join(RECORD).display()
            ),
        ));
    }
    record.root = root.to_path_buf();

    let mut installs = Vec::new();
    for (rel, entry) in &in_tree {
        check_relative_path(rel).map_err(|why| refused(format!("{FILES_DIR}/{rel}"), why))?;
        check_parents(root, rel)?;
        let rule = rules.get(*rel).cloned().unwrap_or_default();
        let mode = match &rule.mode {
            Some(m) => parse_mode(m).ok_or_else(|| {
                refused(
                    format!("{FILES_TOML}: [{rel:?}] mode"),
                    format!("{m:?} is not an octal mode like \"0600\""),
                )
            })?,
            None => entry.mode & 0o7777,
        };
        let target = root.join(rel);
        let sha256 = entry.sha256.clone().unwrap_or_default();
        let action = match fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Action::Create,
            Err(e) => return Err(io_at(&target)(e)),
            Ok(m) if !m.is_file() => {
                return Err(refused(
                    target.display().to_string(),
                    "exists and is not a regular file (a symlink or directory); tiffin does not replace it",
                ))
            }
            Ok(_) if record.files.contains_key(*rel) => Action::Update,
            Ok(_) => {
                let (h, _) = hash::sha256_file(&target).map_err(io_at(&target))?;
                if h != sha256 {
                    return Err(refused(
                        target.display().to_string(),
                        "exists and was not installed by tiffin; refusing to overwrite it \
                         (remove it on the machine, or publish it with the same content first)",
                    ));
                }
                Action::Adopt
            }
        };
        installs.push(Install {
            rel: rel.to_string(),
            source: tree.join(FILES_DIR).join(rel),
            sha256,
            mode,
            owner: rule.owner.unwrap_or_else(|| "root".into()),
            group: rule.group.unwrap_or_else(|| "root".into()),
            action,
        });
    }
    let removals = record
        .files
        .keys()
        .filter(|k| !in_tree.contains_key(k.as_str()))
        .cloned()
        .collect();
    Ok(FilesPlan {
        root: root.to_path_buf(),
        installs,
        removals,
        record,
    })
}

fn resolve_owner(owner: &str, group: &str) -> Result<(u32, u32), String> {
    let uid = match owner.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::User::from_name(owner)
            .map_err(|e| format!("looking up user {owner:?}: {e}"))?
            .ok_or_else(|| format!("no user {owner:?} on this machine"))?
            .uid
            .as_raw(),
    };
    let gid = match group.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::Group::from_name(group)
            .map_err(|e| format!("looking up group {group:?}: {e}"))?
            .ok_or_else(|| format!("no group {group:?} on this machine"))?
            .gid
            .as_raw(),
    };
    Ok((uid, gid))
}

/// A file as it was before tiffin replaced or removed it.
#[derive(Clone, Debug)]
struct SavedFile {
    data: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// What applying a plan changed, kept in memory so that a rollback of the system puts the files
/// back as well (a published file can cut a machine off as surely as a system can).
#[derive(Clone, Debug, Default)]
pub struct FilesUndo {
    root: PathBuf,
    /// Each path touched, with what was there before (`None`: nothing).
    before: Vec<(String, Option<SavedFile>)>,
    created_dirs: Vec<String>,
    record: Option<InstalledRecord>,
}

impl FilesUndo {
    /// True when applying changed nothing.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.created_dirs.is_empty()
    }

    fn remember(&mut self, root: &Path, rel: &str) -> Result<(), FilesError> {
        if self.before.iter().any(|(r, _)| r == rel) {
            return Ok(());
        }
        let p = root.join(rel);
        let saved = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Some(SavedFile {
                data: fs::read(&p).map_err(io_at(&p))?,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            }),
            _ => None,
        };
        self.before.push((rel.to_string(), saved));
        Ok(())
    }
}

/// Carries out a plan; the record is saved even when it stops half-way, so that what was
/// installed stays known. `undo` learns what was there before each change, also when it fails.
/// Returns how many files were written or removed.
pub fn apply(
    plan: FilesPlan,
    state_dir: &Path,
    runner: &Runner,
    undo: &mut FilesUndo,
) -> Result<usize, FilesError> {
    let mut record = plan.record.clone();
    if let Ok(before) = InstalledRecord::load(state_dir) {
        undo.record.get_or_insert(before);
    }
    undo.root = plan.root.clone();
    let r = apply_inner(&plan, &mut record, runner, undo);
    let saved = record.save(state_dir);
    let n = r?;
    saved?;
    Ok(n)
}

/// Puts back what [`apply`] changed: replaced files get their old content, owner and mode,
/// new files and the directories made for them go, and the record is the old one again.
pub fn restore(undo: FilesUndo, state_dir: &Path, runner: &Runner) -> Result<(), FilesError> {
    let root = &undo.root;
    for (rel, saved) in undo.before.iter().rev() {
        check_parents(root, rel)?;
        let target = root.join(rel);
        match saved {
            None => match fs::remove_file(&target) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&target)(e)),
                _ => runner.note(&format!("files: rollback removed {}", target.display())),
            },
            Some(s) => {
                fsutil::atomic_write_with(&target, s.mode, |f| {
                    std::os::unix::fs::fchown(&*f, Some(s.uid), Some(s.gid))?;
                    io::Write::write_all(f, &s.data)
                })
                .map_err(io_at(&target))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(s.mode))
                    .map_err(io_at(&target))?;
                runner.note(&format!("files: rollback restored {}", target.display()));
            }
        }
    }
    for d in undo.created_dirs.iter().rev() {
        let _ = fs::remove_dir(root.join(d));
    }
    match undo.record {
        Some(r) => r.save(state_dir),
        None => Ok(()),
    }
}

fn apply_inner(
    plan: &FilesPlan,
    record: &mut InstalledRecord,
    runner: &Runner,
    undo: &mut FilesUndo,
) -> Result<usize, FilesError> {
    let root = &plan.root;
    let mut changed = 0;
    for i in &plan.installs {
        // Checked again: the activation that just ran may have changed the machine.
        check_parents(root, &i.rel)?;
        let target = root.join(&i.rel);
        let place = target.display().to_string();
        let (uid, gid) = resolve_owner(&i.owner, &i.group)
            .map_err(|why| refused(format!("{FILES_TOML}: [{:?}]", i.rel), why))?;
        let wanted = InstalledFile {
            sha256: i.sha256.clone(),
            mode: i.mode,
            uid,
            gid,
        };
        if on_disk_matches(&target, &wanted) {
            record.files.insert(i.rel.clone(), wanted);
            continue;
        }
        if i.action == Action::Update {
            if let Some(old) = record.files.get(&i.rel) {
                if !hash::sha256_file(&target).is_ok_and(|(h, _)| h == old.sha256) {
                    runner.note(&format!(
                        "files: {place} was changed on this machine; replaced by the published one"
                    ));
                }
            }
        }
        // Create missing parents one by one, remembering which ones tiffin made.
        let parts: Vec<&str> = i.rel.split('/').collect();
        let mut dir = root.to_path_buf();
        for (n, part) in parts[..parts.len() - 1].iter().enumerate() {
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                        .map_err(io_at(&dir))?;
                    record.dirs.insert(parts[..=n].join("/"));
                    undo.created_dirs.push(parts[..=n].join("/"));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_at(&dir)(e)),
            }
        }
        undo.remember(root, &i.rel)?;
        let data = fs::read(&i.source).map_err(io_at(&i.source))?;
        if hash::sha256_bytes(&data) != i.sha256 {
            return Err(refused(
                i.source.display().to_string(),
                "does not match its manifest hash; not installed",
            ));
        }
        fsutil::atomic_write_with(&target, i.mode, |f| {
            // Owner before content: a secret never sits under another owner with its data.
            std::os::unix::fs::fchown(&*f, Some(uid), Some(gid))?;
            io::Write::write_all(f, &data)
        })
        .map_err(io_at(&target))?;
        // The mode again: chown clears set-id bits.
        fs::set_permissions(&target, fs::Permissions::from_mode(i.mode)).map_err(io_at(&target))?;
        runner.note(&format!(
            "files: installed {place} ({:o} {}:{}){}",
            i.mode,
            i.owner,
            i.group,
            if i.action == Action::Adopt {
                ", taken over: it already had this content"
            } else {
                ""
            }
        ));
        record.files.insert(i.rel.clone(), wanted);
        changed += 1;
    }
    for rel in &plan.removals {
        let target = root.join(rel);
        let Some(r) = record.files.remove(rel) else {
            continue;
        };
        match fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Ok(m) if m.is_file() && hash::sha256_file(&target).is_ok_and(|(h, _)| h == r.sha256) => {
                undo.remember(root, rel)?;
                fs::remove_file(&target).map_err(io_at(&target))?;
                runner.note(&format!("files: removed {} (gone from the repository)", target.display()));
                changed += 1;
            }
            _ => runner.note(&format!(
                "files: left {} alone: gone from the repository but changed on this machine since tiffin installed it",
                target.display()
            )),
        }
    }
    // Directories tiffin created and that are now empty go too, deepest first.
    let dirs: Vec<String> = record.dirs.iter().rev().cloned().collect();
    for d in dirs {
        let p = root.join(&d);
        if fs::remove_dir(&p).is_ok() || !p.exists() {
            record.dirs.remove(&d);
        }
    }
    Ok(changed)
}
