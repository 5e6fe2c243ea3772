//! The difference between two manifests: what the agent must fetch and what it must remove.

use super::{sort_entries, Entry, Manifest};
use std::collections::BTreeMap;

/// Entries added, changed (new version) and removed (paths) from one manifest to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestDiff {
    pub added: Vec<Entry>,
    pub changed: Vec<Entry>,
    pub removed: Vec<String>,
}

impl ManifestDiff {
    /// Computes what turns `old` into `new`.
    pub fn between(old: &[Entry], new: &[Entry]) -> Self {
        let old_by: BTreeMap<&str, &Entry> = old.iter().map(|e| (e.path.as_str(), e)).collect();
        let new_by: BTreeMap<&str, &Entry> = new.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut d = ManifestDiff::default();
        for (p, e) in &new_by {
            match old_by.get(p) {
                None => d.added.push((*e).clone()),
                Some(o) if o != e => d.changed.push((*e).clone()),
                Some(_) => {}
            }
        }
        for p in old_by.keys() {
            if !new_by.contains_key(p) {
                d.removed.push((*p).to_string());
            }
        }
        d
    }

    /// Computes the diff of two manifests' entries.
    pub fn of(old: &Manifest, new: &Manifest) -> Self {
        Self::between(&old.entries, &new.entries)
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Applies a diff to a list of entries: the result is sorted like a walked tree.
pub fn apply_diff(base: &[Entry], diff: &ManifestDiff) -> Vec<Entry> {
    let mut by: BTreeMap<String, Entry> =
        base.iter().map(|e| (e.path.clone(), e.clone())).collect();
    for p in &diff.removed {
        by.remove(p);
    }
    for e in diff.added.iter().chain(&diff.changed) {
        by.insert(e.path.clone(), e.clone());
    }
    let mut out: Vec<Entry> = by.into_values().collect();
    sort_entries(&mut out);
    out
}
