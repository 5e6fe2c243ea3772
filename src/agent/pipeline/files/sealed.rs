//! A sealed generation's `files/` and `files.toml` (the manifest's `sealed`), opened in memory
//! with the machine's own key (agent.toml `identity`) while the files are planned: nothing plain
//! is written before the install step puts each file in place, and a file that does not open
//! (sealed to another key, altered, truncated) fails the plan, naming it, before anything changes.

use super::error::{io_at, refused, FilesError};
use crate::hash;
use crate::manifest::{is_sealed_path, Entry, Manifest};
use crate::seal::{self, Identity};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// An opened file's content; never printed.
#[derive(Clone)]
pub(super) struct Plain(Arc<Zeroizing<Vec<u8>>>);

impl Plain {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Plain({} bytes)", self.0.len())
    }
}

/// Every sealed file of a generation, opened, by its path in the tree.
pub(super) struct Opened {
    files: BTreeMap<String, Plain>,
}

impl Opened {
    /// The content of `path` (`files/…` or `files.toml`).
    pub(super) fn get(&self, path: &str) -> Option<&Plain> {
        self.files.get(path)
    }

    /// The text of the rules file `name` (`files.toml`), when the generation has one.
    pub(super) fn rules(&self, name: &str) -> Result<Option<String>, FilesError> {
        self.get(name)
            .map(|p| {
                String::from_utf8(p.bytes().to_vec())
                    .map_err(|_| refused(name, "is not UTF-8 text once opened"))
            })
            .transpose()
    }

    /// `e` as the plain file it holds: its size and hash.
    pub(super) fn plain_entry(&self, e: &Entry) -> Option<Entry> {
        let p = self.get(&e.path)?;
        Some(Entry::file(
            &e.path,
            e.mode,
            p.bytes().len() as u64,
            hash::sha256_bytes(p.bytes()),
        ))
    }
}

/// Opens the sealed files of `tree` with the key at `identity`; `None` when the generation is
/// not sealed.
pub(super) fn open_tree(
    tree: &Path,
    manifest: &Manifest,
    identity: Option<&Path>,
) -> Result<Option<Opened>, FilesError> {
    let Some(sealed) = &manifest.sealed else {
        return Ok(None);
    };
    let mut sealed_files = manifest.files().filter(|e| is_sealed_path(&e.path));
    let Some(first) = sealed_files.next() else {
        return Ok(Some(Opened {
            files: BTreeMap::new(),
        }));
    };
    let to = format!("sealed to {}", sealed.to);
    let identity = identity
        .ok_or_else(|| refused(&first.path, format!("{to}, and no identity to open it")))?;
    let id =
        Identity::load(identity).map_err(|why| refused(&first.path, format!("{to}: {why}")))?;
    let mut files = BTreeMap::new();
    for e in std::iter::once(first).chain(sealed_files) {
        let path = tree.join(&e.path);
        let data = std::fs::read(&path).map_err(io_at(&path))?;
        if Some(hash::sha256_bytes(&data)) != e.sha256 {
            return Err(refused(
                &e.path,
                "does not match its manifest hash; nothing installed",
            ));
        }
        let plain = seal::open(&data, &id)
            .map_err(|why| refused(&e.path, format!("{to}: {why}; nothing installed")))?;
        files.insert(e.path.clone(), Plain(Arc::new(plain)));
    }
    Ok(Some(Opened { files }))
}
