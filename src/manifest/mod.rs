//! The manifest: the contract between `tiffin fleet publish` and the agent (docs/publication.md).
//!
//! Owns the manifest format, its strict parser, the directory walk that produces it, and the diff
//! of two manifests. It does no network I/O and knows nothing of chroots or agents; both sides
//! call in here so that they agree byte for byte.

pub mod cache;
mod changes;
mod diff;
mod note;
mod sealed;
mod walk;

pub use changes::Changes;
pub use diff::{apply_diff, ManifestDiff};
pub use note::{check_note, clean_note, MAX_NOTE_CHARS};
pub use sealed::{is_sealed_path, Sealed};
pub use walk::{entries_of, walk_tree, WalkError, WalkedEntry};

use crate::hash::{self, Sha256Hex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Component, Path};

/// The manifest format this build writes. Format 2 added `signed_at`; format 3 added `cache`,
/// `sealed`, `note`, `changes` and `release`. Older formats (without them) are still read, so
/// that a fleet's live generations stay valid across the upgrade; an older agent refuses format
/// 3 with "upgrade tiffin" rather than installing, say, sealed files it cannot open.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest manifest format this build reads.
pub const OLDEST_FORMAT: u32 = 1;
/// The file name of a generation's manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The largest single file a manifest may declare (a hostile manifest must not fill a disk).
pub const MAX_FILE_SIZE: u64 = 1 << 30;
/// The most entries a manifest may declare.
pub const MAX_ENTRIES: usize = 1_000_000;
/// The largest manifest file read, in bytes: the agent reads at most this much before checking
/// the signature over the raw bytes, and parses only what passed. A 300-file host's manifest is
/// about 60 KB; this is room for some 150,000 entries.
pub const MAX_MANIFEST_BYTES: u64 = 32 << 20;

/// What an entry is. Symlinks never survive publishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
}

/// One file or directory of a published tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Relative path with `/` separators, no `.` or `..` components.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Size in bytes (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 of the content (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Hex>,
}

impl Entry {
    pub fn file(path: impl Into<String>, mode: u32, size: u64, sha256: Sha256Hex) -> Self {
        Self {
            path: path.into(),
            kind: EntryKind::File,
            mode,
            size: Some(size),
            sha256: Some(sha256),
        }
    }
    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        Self {
            path: path.into(),
            kind: EntryKind::Dir,
            mode,
            size: None,
            sha256: None,
        }
    }
}

/// A generation's manifest, as stored in `gens/<N>/manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub host: String,
    pub generation: u64,
    /// RFC 3339 UTC time of publishing.
    pub published: String,
    /// Hash of the whole tree: see [`tree_hash`].
    pub tree_hash: Sha256Hex,
    /// The system store path `fleet build` produced for this tree, when built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_system: Option<String>,
    /// RFC 3339 UTC time of signing (format 2): an agent with `max_age` refuses a publication
    /// signed longer ago than that, so that a server serving a frozen, old one is noticed.
    /// Signed, like every field but `signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    /// The host's binary cache: the closure of `expected_system`, every file with its size and
    /// sha256 (`cache::CacheIndex`), so that the signature covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<cache::CacheIndex>,
    /// Set when `files/` and `files.toml` hold age files sealed to the host's key (and to whom),
    /// not the plain files: the agent opens them with its identity. Signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
    /// The admin's change note (`fleet publish -m`, default the repository's last commit
    /// subject): one line, checked by [`check_note`]. Signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What this generation changes against the previous one's `expected_system` (`publish
    /// --build`): the closure diff's summary. Signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    /// The release this generation belongs to (`fleet publish --staged`, `fleet rollout`): one
    /// id across the hosts of a staged rollout, derived from the repository's content. Signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Signature over [`Manifest::signed_bytes`], when the fleet signs. Always the line before
    /// `entries` in the canonical bytes, so that it can be checked before parsing (`crate::sign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Sorted by path; parents before children.
    pub entries: Vec<Entry>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{origin}: not a valid manifest: {source}")]
    Json {
        origin: String,
        source: serde_json::Error,
    },
    #[error("{origin}: manifest format {found} is not supported (this tiffin reads formats {OLDEST_FORMAT} to {FORMAT_VERSION}); upgrade tiffin")]
    Format { origin: String, found: u32 },
    #[error("{origin}: entry {path:?}: {why}")]
    BadEntry {
        origin: String,
        path: String,
        why: String,
    },
    #[error("{origin}: {why}")]
    Bad { origin: String, why: String },
}

impl Manifest {
    /// Builds a manifest from walked entries.
    pub fn new(host: &str, generation: u64, published: String, entries: Vec<Entry>) -> Self {
        let tree_hash = tree_hash(&entries);
        Self {
            format: FORMAT_VERSION,
            host: host.to_string(),
            generation,
            published,
            tree_hash,
            expected_system: None,
            signed_at: None,
            cache: None,
            sealed: None,
            note: None,
            changes: None,
            release: None,
            signature: None,
            entries,
        }
    }

    /// Parses and validates manifest bytes. `origin` names where they came from, for errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Bad {
                origin: origin.into(),
                why: format!(
                    "manifest is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                    bytes.len()
                ),
            });
        }
        // Read the format first so that a newer format gets the right message, not a field error.
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
            origin: origin.into(),
            source,
        })?;
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&head.format) {
            return Err(ManifestError::Format {
                origin: origin.into(),
                found: head.format,
            });
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
            origin: origin.into(),
            source,
        })?;
        m.validate(origin)?;
        Ok(m)
    }

    /// Checks every rule of the format; `parse` calls it, publishers call it before writing.
    pub fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        let bad = |why: String| ManifestError::Bad {
            origin: origin.into(),
            why,
        };
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&self.format) {
            return Err(ManifestError::Format {
                origin: origin.into(),
                found: self.format,
            });
        }
        if self.format < 2 && self.signed_at.is_some() {
            return Err(bad(format!(
                "signed_at needs manifest format 2, this one is format {}",
                self.format
            )));
        }
        if self.format < 3 {
            let added = [
                ("cache", self.cache.is_some()),
                ("sealed", self.sealed.is_some()),
                ("note", self.note.is_some()),
                ("changes", self.changes.is_some()),
                ("release", self.release.is_some()),
            ];
            if let Some((field, _)) = added.iter().find(|(_, set)| *set) {
                return Err(bad(format!(
                    "{field} needs manifest format 3, this one is format {}",
                    self.format
                )));
            }
        }
        if let Some(t) = &self.signed_at {
            humantime::parse_rfc3339(t)
                .map_err(|e| bad(format!("signed_at {t:?} is not an RFC 3339 time: {e}")))?;
        }
        if let Some(s) = &self.sealed {
            s.check().map_err(|why| bad(format!("sealed: {why}")))?;
        }
        if let Some(n) = &self.note {
            check_note(n).map_err(bad)?;
        }
        if let Some(c) = &self.changes {
            c.check().map_err(bad)?;
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(bad(format!(
                "{} entries, more than the {MAX_ENTRIES} allowed",
                self.entries.len()
            )));
        }
        if !hash::is_sha256_hex(&self.tree_hash) {
            return Err(bad(format!(
                "tree_hash {:?} is not a sha256",
                self.tree_hash
            )));
        }
        let mut seen = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        let mut previous: Option<&str> = None;
        for e in &self.entries {
            let bad_entry = |why: String| ManifestError::BadEntry {
                origin: origin.into(),
                path: e.path.clone(),
                why,
            };
            check_relative_path(&e.path).map_err(bad_entry)?;
            if !seen.insert(e.path.as_str()) {
                return Err(bad_entry("appears more than once".into()));
            }
            if previous.is_some_and(|p| p > e.path.as_str()) {
                return Err(bad_entry("entries are not sorted by path".into()));
            }
            previous = Some(e.path.as_str());
            if e.mode & !0o7777 != 0 {
                return Err(bad_entry(format!("mode {:o} has bits beyond 7777", e.mode)));
            }
            if let Some((parent, _)) = e.path.rsplit_once('/') {
                if !dirs.contains(parent) {
                    return Err(bad_entry(format!(
                        "its parent {parent:?} is not a directory listed before it"
                    )));
                }
            }
            match e.kind {
                EntryKind::Dir => {
                    if e.size.is_some() || e.sha256.is_some() {
                        return Err(bad_entry("a directory has no size or sha256".into()));
                    }
                    dirs.insert(e.path.as_str());
                }
                EntryKind::File => {
                    let size = e
                        .size
                        .ok_or_else(|| bad_entry("a file needs a size".into()))?;
                    if size > MAX_FILE_SIZE {
                        return Err(bad_entry(format!(
                            "size {size} is more than the {MAX_FILE_SIZE} bytes allowed"
                        )));
                    }
                    match &e.sha256 {
                        Some(h) if hash::is_sha256_hex(h) => {}
                        Some(h) => {
                            return Err(bad_entry(format!("sha256 {h:?} is not 64 hex digits")))
                        }
                        None => return Err(bad_entry("a file needs a sha256".into())),
                    }
                }
            }
        }
        if let Some(c) = &self.cache {
            c.validate(self.expected_system.as_deref(), MAX_FILE_SIZE)
                .map_err(bad)?;
        }
        let expect = tree_hash(&self.entries);
        if expect != self.tree_hash {
            return Err(bad(format!(
                "tree_hash {} does not match its entries ({expect})",
                self.tree_hash
            )));
        }
        Ok(())
    }

    /// The canonical serialisation: pretty JSON, fields in declaration order, entries sorted,
    /// trailing newline. Same manifest → same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        v.push(b'\n');
        v
    }

    /// The bytes a signature covers: the canonical serialisation without the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.signature = None;
        m.to_bytes()
    }

    /// Looks up an entry by path.
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The files of the tree.
    pub fn files(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.kind == EntryKind::File)
    }

    /// Total bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.files().filter_map(|e| e.size).sum()
    }
}

/// The hash of a tree: sha256 over one canonical line per entry, in the manifest's order.
/// It ignores host, generation and time, so the same content always has the same hash.
pub fn tree_hash(entries: &[Entry]) -> Sha256Hex {
    let mut h = hash::Hasher::new();
    for e in entries {
        let line = match e.kind {
            EntryKind::Dir => format!("d {:o} {}\n", e.mode, e.path),
            EntryKind::File => format!(
                "f {:o} {} {} {}\n",
                e.mode,
                e.size.unwrap_or(0),
                e.sha256.as_deref().unwrap_or(""),
                e.path
            ),
        };
        h.update(line.as_bytes());
    }
    h.finish()
}

/// Checks that a manifest path is relative, normal and harmless: no leading `/`, no `.` or `..`,
/// no empty components, no control characters.
pub fn check_relative_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.starts_with('/') {
        return Err("absolute path".into());
    }
    if p.chars().any(|c| c.is_control()) {
        return Err("control character in path".into());
    }
    for part in p.split('/') {
        match part {
            "" => return Err("empty path component".into()),
            "." | ".." => return Err(format!("{part:?} component")),
            _ => {}
        }
    }
    for c in Path::new(p).components() {
        if !matches!(c, Component::Normal(_)) {
            return Err("not a plain relative path".into());
        }
    }
    Ok(())
}

/// Sort order of entries: by path bytes, which puts a directory before everything inside it.
pub fn sort_entries(entries: &mut [Entry]) {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
}

#[cfg(test)]
mod tests;
