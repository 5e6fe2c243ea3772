//! Plain files and secrets (docs/agent.md#files): the tree's `files/` subtree is installed under
//! `[system] files_root` (default `/`), outside the Nix store, with owner and mode from an optional
//! `files.toml` at the top of the host's tree:
//!
//! ```toml
//! ["etc/secret"]
//! mode = "0600"      # default: 0600 (0700 when executable in the repository)
//! owner = "root"     # default: root
//! group = "root"     # default: root
//! ```
//!
//! Every path is reached through directory handles (`dirfd`): no `..`, no symlink at any step,
//! and no parent directory writable by anyone but root and the file's owner. A file without a
//! rule is installed `0600` (`0700` when executable) and the directories made for it `0700`;
//! only a rule widens that. A record of what tiffin installed, with hashes, lives in
//! `<state_dir>/installed-files.json`: a file that left the repository is removed only when
//! tiffin installed it and nobody changed it since; a file tiffin did not install is never
//! overwritten (unless it already has the wanted content) and never removed. Before the first
//! change, what each path held is written to the state directory ([`undo`]).

mod dirfd;
pub mod error;
pub mod record;
mod sealed;
pub mod undo;

pub use error::FilesError;
pub use record::{InstalledFile, InstalledRecord};
pub use undo::{keep_pending, restore_pending, restore_previous};

use crate::hash;
use crate::manifest::{check_relative_path, Manifest};
use crate::runner::Runner;
use error::{io_at, refused};
use record::RECORD;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The subtree of the host's tree that is installed.
pub const FILES_DIR: &str = "files";
/// Owner and mode settings, at the top of the host's tree.
pub const FILES_TOML: &str = "files.toml";
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
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
    uid: u32,
    gid: u32,
    action: Action,
    /// The content, opened in memory, when the generation is sealed.
    data: Option<sealed::Plain>,
}

/// Everything that installing the files of a tree will do, checked before anything is written.
#[derive(Clone, Debug)]
pub struct FilesPlan {
    root: PathBuf,
    installs: Vec<Install>,
    /// Recorded files no longer in the tree.
    removals: Vec<String>,
    /// The mode of each directory tiffin may have to make: 0700, or 0755 when a file beneath it
    /// has a rule in files.toml.
    dir_modes: BTreeMap<String, u32>,
    record: InstalledRecord,
}

fn parse_mode(s: &str) -> Option<u32> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8).ok()?;
    (m <= 0o7777).then_some(m)
}

/// The mode of a file without a rule: no group or other access.
fn default_mode(manifest_mode: u32) -> u32 {
    0o600 | (manifest_mode & 0o100)
}

/// Reads `files.toml` and the tree's `files/` entries and decides what to do, refusing anything
/// unsafe. Writes nothing. A sealed generation is refused: see [`plan_opening`].
pub fn plan(
    tree: &Path,
    manifest: &Manifest,
    root: &Path,
    state_dir: &Path,
) -> Result<FilesPlan, FilesError> {
    plan_inner(tree, manifest, root, state_dir, None)
}

/// [`plan`], opening a sealed generation's files (the manifest's `sealed`) in memory with the
/// machine's key at `identity`; a file that does not open fails the plan, naming it.
pub fn plan_opening(
    tree: &Path,
    manifest: &Manifest,
    root: &Path,
    state_dir: &Path,
    identity: &Path,
) -> Result<FilesPlan, FilesError> {
    plan_inner(tree, manifest, root, state_dir, Some(identity))
}

fn plan_inner(
    tree: &Path,
    manifest: &Manifest,
    root: &Path,
    state_dir: &Path,
    identity: Option<&Path>,
) -> Result<FilesPlan, FilesError> {
    let prefix = format!("{FILES_DIR}/");
    let opened = sealed::open_tree(tree, manifest, identity)?;
    let plain: Vec<crate::manifest::Entry> = match &opened {
        Some(o) => manifest.files().filter_map(|e| o.plain_entry(e)).collect(),
        None => manifest.files().cloned().collect(),
    };
    let in_tree: BTreeMap<&str, &crate::manifest::Entry> = plain
        .iter()
        .filter_map(|e| e.path.strip_prefix(&prefix).map(|rel| (rel, e)))
        .collect();
    let rules = load_rules(tree, &in_tree, opened.as_ref())?;
    let record = load_record(state_dir, root)?;
    let handle = if in_tree.is_empty() && record.files.is_empty() {
        None
    } else {
        Some(dirfd::Dir::open_root(root)?)
    };
    let mut installs = Vec::new();
    let mut dir_modes = BTreeMap::new();
    for (rel, entry) in &in_tree {
        check_relative_path(rel).map_err(|why| refused(format!("{FILES_DIR}/{rel}"), why))?;
        let dir_mode = if rules.contains_key(*rel) {
            0o755
        } else {
            0o700
        };
        let parts: Vec<&str> = rel.split('/').collect();
        for n in 0..parts.len() - 1 {
            let m = dir_modes.entry(parts[..=n].join("/")).or_insert(0o700);
            *m |= dir_mode;
        }
        let handle = handle.as_ref().expect("opened when there are files");
        let rule = rules.get(*rel);
        let mut install = plan_install(tree, root, rel, entry, rule, handle, &record)?;
        install.data = opened.as_ref().and_then(|o| o.get(&entry.path)).cloned();
        installs.push(install);
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
        dir_modes,
        record,
    })
}

/// The tree's `files.toml` (none: no rules), each key checked against the files under `files/`.
fn load_rules(
    tree: &Path,
    in_tree: &BTreeMap<&str, &crate::manifest::Entry>,
    opened: Option<&sealed::Opened>,
) -> Result<BTreeMap<String, FileRule>, FilesError> {
    let rules_path = tree.join(FILES_TOML);
    let text = match opened {
        Some(o) => o
            .rules(FILES_TOML)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
        None => fs::read_to_string(&rules_path),
    };
    let rules: BTreeMap<String, FileRule> = match text {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            refused(
                crate::config::toml_error(FILES_TOML, &text, &e),
                "fix files.toml in the host's directory",
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(io_at(&rules_path)(e)),
    };
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
    Ok(rules)
}

/// The record of installed files, for `root`: installed files pin `files_root`.
fn load_record(state_dir: &Path, root: &Path) -> Result<InstalledRecord, FilesError> {
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
    Ok(record)
}

/// What to do with the file `rel` of the tree: its mode and owner (from `rule`), and whether it
/// is created, updated (tiffin's), or adopted (there already, with the same content). A file
/// that is there with other content and is not tiffin's is refused.
fn plan_install(
    tree: &Path,
    root: &Path,
    rel: &str,
    entry: &crate::manifest::Entry,
    rule: Option<&FileRule>,
    handle: &dirfd::Dir,
    record: &InstalledRecord,
) -> Result<Install, FilesError> {
    let mode = match rule.and_then(|r| r.mode.as_ref()) {
        Some(m) => parse_mode(m).ok_or_else(|| {
            refused(
                format!("{FILES_TOML}: [{rel:?}] mode"),
                format!("{m:?} is not an octal mode like \"0600\""),
            )
        })?,
        None => default_mode(entry.mode),
    };
    let rule = rule.cloned().unwrap_or_default();
    let owner = rule.owner.unwrap_or_else(|| "root".into());
    let group = rule.group.unwrap_or_else(|| "root".into());
    let (uid, gid) = resolve_owner(&owner, &group)
        .map_err(|why| refused(format!("{FILES_TOML}: [{rel:?}]"), why))?;
    let sha256 = entry.sha256.clone().unwrap_or_default();
    let existing = match handle.parent_of(rel, Some(uid), None)? {
        Some((dir, name)) => dir.read(name)?,
        None => None,
    };
    let action = match existing {
        None => Action::Create,
        Some(_) if record.files.contains_key(rel) => Action::Update,
        Some(e) => {
            if hash::sha256_bytes(&e.data) != sha256 {
                return Err(refused(
                    root.join(rel).display().to_string(),
                    "exists and was not installed by tiffin; refusing to overwrite it \
                     (remove it on the machine, or publish it with the same content first)",
                ));
            }
            Action::Adopt
        }
    };
    Ok(Install {
        rel: rel.to_string(),
        source: tree.join(FILES_DIR).join(rel),
        sha256,
        mode,
        owner,
        group,
        uid,
        gid,
        action,
        data: None,
    })
}

fn resolve_owner(owner: &str, group: &str) -> Result<(u32, u32), String> {
    // Files go in place before the new system is activated: a user it creates does not exist yet.
    let later =
        "files are installed before the new system is activated, so the user or group must \
                 exist already (publish it in an earlier generation, or give a number)";
    let uid = match owner.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::User::from_name(owner)
            .map_err(|e| format!("looking up user {owner:?}: {e}"))?
            .ok_or_else(|| format!("no user {owner:?} on this machine; {later}"))?
            .uid
            .as_raw(),
    };
    let gid = match group.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::Group::from_name(group)
            .map_err(|e| format!("looking up group {group:?}: {e}"))?
            .ok_or_else(|| format!("no group {group:?} on this machine; {later}"))?
            .gid
            .as_raw(),
    };
    Ok((uid, gid))
}

/// True when `e` is already what `wanted` describes.
fn matches(e: &dirfd::Existing, wanted: &InstalledFile) -> bool {
    e.meta.mode == wanted.mode
        && e.meta.uid == wanted.uid
        && e.meta.gid == wanted.gid
        && hash::sha256_bytes(&e.data) == wanted.sha256
}

fn wanted(i: &Install) -> InstalledFile {
    InstalledFile {
        sha256: i.sha256.clone(),
        mode: i.mode,
        uid: i.uid,
        gid: i.gid,
    }
}

/// Reads what the plan is about to change and writes it, as the undo record of the cycle,
/// to the state directory.
fn write_undo(plan: &FilesPlan, root: &dirfd::Dir, state_dir: &Path) -> Result<(), FilesError> {
    let mut u = undo::FilesUndo {
        root: plan.root.clone(),
        record: Some(InstalledRecord::load(state_dir)?),
        ..Default::default()
    };
    for i in &plan.installs {
        let existing = match root.parent_of(&i.rel, Some(i.uid), None)? {
            Some((dir, name)) => dir.read(name)?,
            None => None,
        };
        if existing.is_some_and(|e| matches(&e, &wanted(i))) {
            continue;
        }
        u.created_dirs.extend(root.missing_dirs(&i.rel)?);
        u.remember(root, &i.rel)?;
    }
    for rel in &plan.removals {
        if let Some(r) = plan.record.files.get(rel) {
            if removable(root, rel, r)? {
                u.remember(root, rel)?;
            }
        }
    }
    u.save_pending(state_dir)
}

/// True when `rel` is a regular file with the content tiffin recorded.
fn removable(root: &dirfd::Dir, rel: &str, r: &InstalledFile) -> Result<bool, FilesError> {
    let existing = match root.parent_of(rel, None, None) {
        Ok(Some((dir, name))) => dir.read(name),
        Ok(None) => return Ok(false),
        Err(e) => Err(e),
    };
    match existing {
        Ok(e) => Ok(e.is_some_and(|e| hash::sha256_bytes(&e.data) == r.sha256)),
        Err(FilesError::Refused { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Carries out a plan. Before the first change, what each path held is written to the state
/// directory ([`restore_pending`] puts it back); the record of installed files is saved even
/// when it stops half-way, so that what was installed stays known. Returns how many files were
/// written or removed.
pub fn apply(plan: FilesPlan, state_dir: &Path, runner: &Runner) -> Result<usize, FilesError> {
    if plan.installs.is_empty() && plan.removals.is_empty() && plan.record.dirs.is_empty() {
        return Ok(0);
    }
    let root = dirfd::Dir::open_root(&plan.root)?;
    write_undo(&plan, &root, state_dir)?;
    let mut record = plan.record.clone();
    let r = apply_inner(&plan, &root, &mut record, runner);
    let saved = record.save(state_dir);
    let n = r?;
    saved?;
    Ok(n)
}

fn apply_inner(
    plan: &FilesPlan,
    root: &dirfd::Dir,
    record: &mut InstalledRecord,
    runner: &Runner,
) -> Result<usize, FilesError> {
    let mut changed = 0;
    for i in &plan.installs {
        if install(plan, root, i, record, runner)? {
            changed += 1;
        }
    }
    changed += remove_gone(plan, root, record, runner)?;
    remove_empty_dirs(root, record);
    Ok(changed)
}

/// Installs one file (and the directories it needs); false when it was in place already.
fn install(
    plan: &FilesPlan,
    root: &dirfd::Dir,
    i: &Install,
    record: &mut InstalledRecord,
    runner: &Runner,
) -> Result<bool, FilesError> {
    let dir_meta = |d: &str| dirfd::Meta {
        mode: plan.dir_modes.get(d).copied().unwrap_or(0o700),
        uid: 0,
        gid: 0,
    };
    let target = plan.root.join(&i.rel);
    let place = target.display().to_string();
    let wanted = wanted(i);
    let mut made = Vec::new();
    let create = dirfd::Create {
        meta: &dir_meta,
        made: &mut made,
    };
    let opened = root.parent_of(&i.rel, Some(i.uid), Some(create));
    record.dirs.extend(made);
    let (dir, name) = opened?.expect("missing directories are made");
    let existing = dir.read(name)?;
    if existing.as_ref().is_some_and(|e| matches(e, &wanted)) {
        record.files.insert(i.rel.clone(), wanted);
        return Ok(false);
    }
    if i.action == Action::Update {
        if let (Some(old), Some(e)) = (record.files.get(&i.rel), &existing) {
            if hash::sha256_bytes(&e.data) != old.sha256 {
                runner.note(&format!(
                    "files: {place} was changed on this machine; replaced by the published one"
                ));
            }
        }
    }
    let read;
    let data = match &i.data {
        Some(plain) => plain.bytes(),
        None => {
            read = fs::read(&i.source).map_err(io_at(&i.source))?;
            &read[..]
        }
    };
    if hash::sha256_bytes(data) != i.sha256 {
        return Err(refused(
            i.source.display().to_string(),
            "does not match its manifest hash; not installed",
        ));
    }
    let meta = dirfd::Meta {
        mode: i.mode,
        uid: i.uid,
        gid: i.gid,
    };
    dir.write(name, data, meta)?;
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
    Ok(true)
}

/// Removes the files gone from the repository that tiffin installed and nobody changed since;
/// returns how many.
fn remove_gone(
    plan: &FilesPlan,
    root: &dirfd::Dir,
    record: &mut InstalledRecord,
    runner: &Runner,
) -> Result<usize, FilesError> {
    let mut removed = 0;
    for rel in &plan.removals {
        let target = plan.root.join(rel);
        let Some(r) = record.files.remove(rel) else {
            continue;
        };
        if removable(root, rel, &r)? {
            if let Some((dir, name)) = root.parent_of(rel, None, None)? {
                dir.remove_file(name)?;
            }
            runner.note(&format!(
                "files: removed {} (gone from the repository)",
                target.display()
            ));
            removed += 1;
        } else if root
            .parent_of(rel, None, None)
            .ok()
            .flatten()
            .is_some_and(|(dir, name)| !matches!(dir.read(name), Ok(None)))
        {
            runner.note(&format!(
                "files: left {} alone: gone from the repository but changed on this machine since tiffin installed it",
                target.display()
            ));
        }
    }
    Ok(removed)
}

/// Directories tiffin created and that are now empty go too, deepest first.
fn remove_empty_dirs(root: &dirfd::Dir, record: &mut InstalledRecord) {
    let dirs: Vec<String> = record.dirs.iter().rev().cloned().collect();
    for d in dirs {
        let gone = match root.parent_of(&d, None, None) {
            Ok(Some((dir, name))) => dir.remove_empty_dir(name),
            Ok(None) => true,
            Err(_) => false,
        };
        if gone {
            record.dirs.remove(&d);
        }
    }
}
