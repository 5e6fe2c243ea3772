//! The host's binary cache in a generation (`gens/<N>/cache/`, docs/publication.md#the-binary-cache):
//! the closure of `expected_system`, one narinfo and one compressed NAR per store path, as
//! `nix copy --to file://…` lays them out. The manifest lists every file with its size and sha256,
//! so the fleet's signature covers the whole closure; an agent checks each file against this list
//! as it is written and before Nix sees it.

use crate::hash::{self, Sha256Hex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The directory of a generation that holds its binary cache.
pub const CACHE_DIR: &str = "cache";
/// The Nix store a cache's paths live in (the only one tiffin publishes for).
pub const STORE_DIR: &str = "/nix/store";

/// One file of the cache: its name relative to `cache/`, size and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub name: String,
    pub size: u64,
    pub sha256: Sha256Hex,
}

/// One store path of the closure with its two files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePath {
    /// `/nix/store/<hash>-<name>`.
    pub store_path: String,
    /// `<hash>.narinfo`.
    pub narinfo: CacheFile,
    /// `nar/<file hash>.nar[.<compression>]`, the narinfo's `URL`.
    pub nar: CacheFile,
}

/// The closure of a generation's `expected_system`, sorted by store path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheIndex {
    pub paths: Vec<CachePath>,
}

impl CachePath {
    /// The store path's hash part (`/nix/store/<hash>-name` → `<hash>`).
    pub fn hash_part(&self) -> &str {
        hash_part(&self.store_path).unwrap_or_default()
    }
}

/// The hash part of a store path, when it is one.
pub fn hash_part(store_path: &str) -> Option<&str> {
    let base = store_path.strip_prefix(STORE_DIR)?.strip_prefix('/')?;
    let (h, name) = base.split_once('-')?;
    (h.len() == 32
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b)))
    .then_some(h)
}

impl CacheIndex {
    /// Bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.paths.iter().map(|p| p.narinfo.size + p.nar.size).sum()
    }

    /// The entry of a store path.
    pub fn path(&self, store_path: &str) -> Option<&CachePath> {
        self.paths
            .binary_search_by(|p| p.store_path.as_str().cmp(store_path))
            .ok()
            .map(|i| &self.paths[i])
    }

    /// Every rule of the index; `Err` says which path or file breaks which. `expected_system`
    /// must be one of its paths.
    pub fn validate(&self, expected_system: Option<&str>, max_file: u64) -> Result<(), String> {
        let mut names = BTreeSet::new();
        let mut previous: Option<&str> = None;
        for p in &self.paths {
            let at = |why: String| format!("cache path {:?}: {why}", p.store_path);
            let Some(h) = hash_part(&p.store_path) else {
                return Err(at(format!("not a store path under {STORE_DIR}/")));
            };
            if previous.is_some_and(|q| q >= p.store_path.as_str()) {
                return Err(at("paths are not sorted, or one appears twice".into()));
            }
            previous = Some(&p.store_path);
            if p.narinfo.name != format!("{h}.narinfo") {
                return Err(at(format!(
                    "narinfo {:?} is not {h}.narinfo",
                    p.narinfo.name
                )));
            }
            if !is_nar_name(&p.nar.name) {
                return Err(at(format!(
                    "NAR {:?} is not nar/<name>.nar[.<compression>]",
                    p.nar.name
                )));
            }
            for f in [&p.narinfo, &p.nar] {
                if f.size > max_file {
                    return Err(at(format!(
                        "{}: size {} is more than the {max_file} bytes allowed",
                        f.name, f.size
                    )));
                }
                if !hash::is_sha256_hex(&f.sha256) {
                    return Err(at(format!("{}: sha256 is not 64 hex digits", f.name)));
                }
            }
            if !names.insert(p.narinfo.name.as_str()) {
                return Err(at(format!("{} appears twice", p.narinfo.name)));
            }
        }
        let Some(system) = expected_system else {
            return Err("a cache needs an expected_system".into());
        };
        if self.path(system).is_none() {
            return Err(format!("the cache does not hold expected_system {system}"));
        }
        Ok(())
    }
}

/// `nar/<letters and digits>.nar` with an optional compression suffix.
fn is_nar_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nar/") else {
        return false;
    };
    let Some((stem, ext)) = rest.split_once(".nar") else {
        return false;
    };
    !stem.is_empty()
        && stem.bytes().all(|b| b.is_ascii_alphanumeric())
        && matches!(ext, "" | ".xz" | ".zst" | ".bz2" | ".br" | ".gz")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> CacheFile {
        CacheFile {
            name: name.into(),
            size: 10,
            sha256: "a".repeat(64),
        }
    }

    fn path(h: char, name: &str) -> CachePath {
        let hash: String = std::iter::repeat(h).take(32).collect();
        CachePath {
            store_path: format!("/nix/store/{hash}-{name}"),
            narinfo: file(&format!("{hash}.narinfo")),
            nar: file(&format!("nar/{hash}x.nar.zst")),
        }
    }

    #[test]
    fn a_good_index_passes_and_every_broken_rule_is_named() {
        let idx = CacheIndex {
            paths: vec![path('a', "linux-6.1"), path('b', "nixos-system-laptop")],
        };
        let sys = idx.paths[1].store_path.clone();
        idx.validate(Some(&sys), 1 << 30).unwrap();
        assert!(idx.validate(None, 1 << 30).is_err());
        assert!(idx
            .validate(Some("/nix/store/other"), 1 << 30)
            .unwrap_err()
            .contains("does not hold"));
        let mut bad = idx.clone();
        bad.paths[0].nar.name = "../../etc/shadow".into();
        assert!(bad
            .validate(Some(&sys), 1 << 30)
            .unwrap_err()
            .contains("NAR"));
        let mut bad = idx.clone();
        bad.paths[0].narinfo.name = "x.narinfo".into();
        assert!(bad.validate(Some(&sys), 1 << 30).is_err());
        let mut bad = idx.clone();
        bad.paths.swap(0, 1);
        assert!(bad
            .validate(Some(&sys), 1 << 30)
            .unwrap_err()
            .contains("sorted"));
        let mut bad = idx.clone();
        bad.paths[0].store_path = "/srv/x".into();
        assert!(bad.validate(Some(&sys), 1 << 30).is_err());
        assert!(idx.validate(Some(&sys), 5).unwrap_err().contains("size"));
    }
}
