//! Unchanged files of a new generation are copied inside the bucket (S3 CopyObject), not
//! uploaded again: every generation holds its whole tree under its own keys, but only the bytes
//! that changed cross the network. What a file holds comes from its generation's manifest
//! (sha256 and size of every tree and binary cache file); an object counts as holding it only
//! when its generation's `manifest.json` is in the bucket (a complete upload) and its size
//! matches.

use super::S3Target;
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::publication::layout::{cache_rel, manifest_rel, tree_rel};
use crate::publication::GENS;
use object_store::path::Path as Key;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// A file's content: sha256 and size.
type Content = (String, u64);

/// What the live generations' files hold, and which object in the bucket already holds what.
#[derive(Default)]
pub(super) struct Reuse {
    content: HashMap<Key, Content>,
    holder: HashMap<Content, Key>,
}

impl Reuse {
    /// From the manifests of the `live` generations (local) and of the generations the bucket
    /// holds (`remote`, its listing; the manifests of those pruned locally are read from it).
    pub(super) async fn new(
        target: &S3Target,
        host_path: &str,
        dir: &Path,
        live: &BTreeSet<u64>,
        remote: &HashMap<Key, u64>,
    ) -> Self {
        let mut r = Reuse::default();
        let gens_prefix = format!("{}/", target.key(host_path, GENS));
        let in_bucket: BTreeSet<u64> = remote
            .keys()
            .filter_map(|k| {
                let rest = k.as_ref().strip_prefix(&gens_prefix)?;
                let (n, file) = rest.split_once('/')?;
                (file == MANIFEST_FILE).then(|| n.parse().ok()).flatten()
            })
            .collect();
        for &n in live.union(&in_bucket) {
            let Some(m) = manifest(target, host_path, dir, n, live.contains(&n)).await else {
                continue;
            };
            let complete = in_bucket.contains(&n);
            for (rel, content) in files_of(n, &m) {
                let Ok(key) = Key::parse(target.key(host_path, &rel)) else {
                    continue;
                };
                if complete && remote.get(&key) == Some(&content.1) {
                    r.holder
                        .entry(content.clone())
                        .or_insert_with(|| key.clone());
                }
                r.content.insert(key, content);
            }
        }
        r
    }

    /// An object in the bucket that already holds what `key` is to hold.
    pub(super) fn source_for(&self, key: &Key) -> Option<&Key> {
        if key.filename() == Some(MANIFEST_FILE) {
            return None;
        }
        self.holder.get(self.content.get(key)?)
    }
}

/// Generation `n`'s manifest, from the local disk or else the bucket; `None` when unreadable
/// (then nothing of it is reused).
async fn manifest(
    target: &S3Target,
    host_path: &str,
    dir: &Path,
    n: u64,
    local: bool,
) -> Option<Manifest> {
    let rel = manifest_rel(n);
    let bytes = if local {
        std::fs::read(dir.join(&rel)).ok()?.into()
    } else {
        let key = Key::parse(target.key(host_path, &rel)).ok()?;
        target.store.get(&key).await.ok()?.bytes().await.ok()?
    };
    Manifest::parse(&bytes, &rel).ok()
}

/// Every file a manifest lists (tree and binary cache) with its content.
fn files_of(n: u64, m: &Manifest) -> Vec<(String, Content)> {
    let mut out: Vec<(String, Content)> = m
        .entries
        .iter()
        .filter_map(|e| Some((tree_rel(n, &e.path), (e.sha256.clone()?, e.size?))))
        .collect();
    for p in m.cache.iter().flat_map(|c| &c.paths) {
        for f in [&p.narinfo, &p.nar] {
            out.push((cache_rel(n, &f.name), (f.sha256.clone(), f.size)));
        }
    }
    out
}
