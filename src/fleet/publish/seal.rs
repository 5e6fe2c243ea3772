//! Sealing a host's tree on its way into a generation (fleet.toml `[secrets] seal = true`):
//! every file under `files/` and `files.toml` is replaced by an age file sealed to the host's key
//! (and `[secrets] recipients`). The sealed copy of the live generation is kept while the plain
//! file and the recipients are unchanged (the publisher's record, `fleet::seal_state`), so an
//! unchanged secret makes no new generation and a changed one changes one sealed file.

use super::outcome::StageError;
use crate::fleet::seal_state::{HostSeal, SealedFile};
use crate::fsutil::with_path;
use crate::hash;
use crate::manifest::{is_sealed_path, Entry, EntryKind, Manifest, Sealed, WalkedEntry};
use crate::seal::{self, Recipients};
use std::fs;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A host's tree with its secrets sealed.
pub(super) struct SealedTree {
    /// The walk, sealed files pointing at their sealed copies.
    pub walked: Vec<WalkedEntry>,
    /// For the manifest; `None` when the tree has nothing to seal.
    pub info: Option<Sealed>,
    /// What to record once this tree is live.
    pub record: HostSeal,
    /// Holds the newly sealed copies until the generation is written.
    _dir: tempfile::TempDir,
}

/// The live generation, whose sealed copies may be kept.
pub(super) struct Live<'a> {
    pub tree: PathBuf,
    pub manifest: &'a Manifest,
}

/// Seals the sealed paths of `walked` to `to`, keeping a live sealed copy whenever `previous`
/// says it holds the same plain file for the same recipients.
pub(super) fn seal_tree(
    walked: Vec<WalkedEntry>,
    to: &Recipients,
    previous: Option<&HostSeal>,
    live: Option<Live>,
) -> Result<SealedTree, StageError> {
    let dir = tempfile::Builder::new()
        .prefix("tiffin-seal-")
        .tempdir()
        .map_err(StageError::Io)?;
    let previous = previous.filter(|p| p.to == to.id());
    let mut record = HostSeal {
        to: to.id(),
        files: Default::default(),
    };
    let mut out = Vec::with_capacity(walked.len());
    for (n, w) in walked.into_iter().enumerate() {
        if w.entry.kind != EntryKind::File || !is_sealed_path(&w.entry.path) {
            out.push(w);
            continue;
        }
        let plain_sha = w.entry.sha256.clone().unwrap_or_default();
        let kept = previous
            .and_then(|p| p.files.get(&w.entry.path))
            .filter(|f| f.plain == plain_sha)
            .and_then(|f| keep(&w, f, live.as_ref()));
        let sealed = match kept {
            Some(k) => k,
            None => seal_one(&w, to, &dir.path().join(n.to_string()))?,
        };
        let sealed_sha = sealed.entry.sha256.clone().unwrap_or_default();
        record.files.insert(
            w.entry.path.clone(),
            SealedFile {
                plain: plain_sha,
                sealed: sealed_sha,
            },
        );
        out.push(sealed);
    }
    let info = (!record.files.is_empty()).then(|| Sealed {
        to: to.to.clone(),
        also: to.also.clone(),
    });
    Ok(SealedTree {
        walked: out,
        info,
        record,
        _dir: dir,
    })
}

/// The live generation's sealed copy of `w`, when it is the one the record names.
fn keep(w: &WalkedEntry, f: &SealedFile, live: Option<&Live>) -> Option<WalkedEntry> {
    let live = live?;
    let e = live.manifest.entry(&w.entry.path)?;
    if e.sha256.as_deref() != Some(f.sealed.as_str()) || live.manifest.sealed.is_none() {
        return None;
    }
    let source = live.tree.join(&w.entry.path);
    let size = e.size?;
    fs::symlink_metadata(&source)
        .ok()?
        .is_file()
        .then(|| WalkedEntry {
            entry: Entry::file(&w.entry.path, w.entry.mode, size, f.sealed.clone()),
            source,
        })
}

/// Reads the plain file (checked against the walk), seals it into `dest`.
fn seal_one(w: &WalkedEntry, to: &Recipients, dest: &Path) -> Result<WalkedEntry, StageError> {
    let plain = Zeroizing::new(fs::read(&w.source).map_err(|e| with_path(e, &w.source))?);
    if Some(hash::sha256_bytes(&plain)) != w.entry.sha256 {
        return Err(StageError::Changed {
            path: w.source.clone(),
        });
    }
    let sealed = seal::seal(&plain, to).map_err(|why| StageError::Seal {
        path: w.source.clone(),
        why,
    })?;
    fs::write(dest, &sealed).map_err(|e| with_path(e, dest))?;
    Ok(WalkedEntry {
        entry: Entry::file(
            &w.entry.path,
            w.entry.mode,
            sealed.len() as u64,
            hash::sha256_bytes(&sealed),
        ),
        source: dest.to_path_buf(),
    })
}
